"""CircuitBreaker: every rule of the breaker table in DESIGN.md, on a ManualClock.

Nothing here sleeps: time moves only through ``clock.advance``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience import BreakerState

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN
LOGGER = "virtrigaud_resilience"
NAME = "provider-test"

#: The ErrorTypes the breaker counts as failures by default (the infra failures).
COUNTED = {vr.ErrorType.RETRYABLE, vr.ErrorType.UNAVAILABLE, vr.ErrorType.TIMEOUT}


class Boom(Exception):
    """A plain (non-provider) failure: counts toward opening."""


def fail() -> None:
    raise Boom("boom")


def ok() -> str:
    return "ok"


async def ok_async() -> str:
    return "ok"


async def fail_async() -> None:
    raise Boom("boom")


def make(
    clock: vr.ManualClock,
    threshold: int = 3,
    reset: float = 60.0,
    half_open: int = 2,
    **kwargs: object,
) -> vr.CircuitBreaker:
    config = vr.BreakerConfig(
        failure_threshold=threshold, reset_timeout=reset, half_open_max_calls=half_open, **kwargs
    )
    return vr.CircuitBreaker(NAME, "fake", "unit", config, clock=clock)


def trip(cb: vr.CircuitBreaker) -> None:
    """Opens a closed breaker with exactly failure_threshold failures."""
    assert cb.state is CLOSED
    for _ in range(cb.failure_threshold):
        with pytest.raises(Boom):
            cb.call(fail)
    assert cb.state is OPEN


def to_half_open(cb: vr.CircuitBreaker, clock: vr.ManualClock) -> vr.Permit:
    """Trips the breaker, waits out reset_timeout and returns the first probe's permit."""
    trip(cb)
    clock.advance(cb.reset_timeout)
    permit = cb.try_acquire()
    assert permit is not None
    assert cb.state is HALF_OPEN
    return permit


# ------------------------------------------------------------------ defaults --


def test_config_defaults_are_the_guides() -> None:
    config = vr.BreakerConfig()
    assert (config.failure_threshold, config.reset_timeout, config.half_open_max_calls) == (
        10,
        60.0,
        3,
    )
    assert config.failure_predicate is None
    cb = vr.CircuitBreaker("provider-vsphere", "vsphere", "prod")
    assert (cb.failure_threshold, cb.reset_timeout, cb.half_open_max_calls) == (10, 60.0, 3)
    assert cb.config == config
    assert (cb.name, cb.provider_type, cb.provider) == ("provider-vsphere", "vsphere", "prod")
    assert cb.state is CLOSED
    assert cb.failures == 0


def test_default_breaker_opens_after_ten_failures_and_probes_after_sixty_seconds(
    clock: vr.ManualClock,
) -> None:
    cb = vr.CircuitBreaker("provider-vsphere", "vsphere", "prod", clock=clock)
    for i in range(9):
        with pytest.raises(Boom):
            cb.call(fail)
        assert cb.failures == i + 1
    assert cb.state is CLOSED
    with pytest.raises(Boom):
        cb.call(fail)
    assert cb.state is OPEN
    clock.advance(59.999)
    with pytest.raises(vr.CircuitOpenError):
        cb.call(ok)
    clock.advance(0.001)
    assert cb.call(ok) == "ok"
    assert cb.state is HALF_OPEN  # 1 of the 3 probes admitted
    assert cb.call(ok) == "ok"
    assert cb.state is HALF_OPEN
    assert cb.call(ok) == "ok"
    assert cb.state is CLOSED


def test_config_accepts_timedelta_and_go_duration() -> None:
    from datetime import timedelta

    assert vr.BreakerConfig(reset_timeout=timedelta(minutes=2)).reset_timeout == 120.0
    assert vr.BreakerConfig(reset_timeout="1m30s").reset_timeout == 90.0


# -------------------------------------------------------------------- closed --


def test_call_passes_arguments_and_returns_result(clock: vr.ManualClock) -> None:
    cb = make(clock)

    def f(a: int, b: int, *, c: int) -> tuple[int, int, int]:
        return a, b, c

    assert cb.call(f, 1, 2, c=3) == (1, 2, 3)
    assert cb.call(lambda: None) is None


def test_call_reraises_the_same_exception(clock: vr.ManualClock) -> None:
    cb = make(clock)
    error = Boom("original")

    def f() -> None:
        raise error

    with pytest.raises(Boom) as info:
        cb.call(f)
    assert info.value is error


def test_closed_counts_consecutive_failures(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=5)
    for i in range(4):
        with pytest.raises(Boom):
            cb.call(fail)
        assert cb.failures == i + 1
        assert cb.state is CLOSED


@pytest.mark.parametrize("threshold", [1, 2, 7])
def test_failures_reaching_threshold_open(clock: vr.ManualClock, threshold: int) -> None:
    cb = make(clock, threshold=threshold)
    for _ in range(threshold - 1):
        with pytest.raises(Boom):
            cb.call(fail)
    assert cb.state is CLOSED
    with pytest.raises(Boom):
        cb.call(fail)
    assert cb.state is OPEN
    assert cb.failures == 0  # the count belongs to the closed state


def test_success_resets_the_failure_count(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=3)
    for _ in range(2):
        with pytest.raises(Boom):
            cb.call(fail)
    assert cb.failures == 2
    cb.call(ok)
    assert cb.failures == 0
    for _ in range(2):
        with pytest.raises(Boom):
            cb.call(fail)
    assert cb.state is CLOSED  # 2 consecutive, not 4
    with pytest.raises(Boom):
        cb.call(fail)
    assert cb.state is OPEN


# ---------------------------------------------------------------------- open --


def test_open_rejects_without_calling(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)
    trip(cb)
    calls: list[int] = []
    with pytest.raises(vr.CircuitOpenError) as info:
        cb.call(calls.append, 1)
    assert calls == []
    exc = info.value
    assert isinstance(exc, vr.UnavailableError)
    assert isinstance(exc, vr.ProviderError)
    assert exc.type is vr.ErrorType.UNAVAILABLE
    assert exc.retryable and vr.is_retryable(exc)
    assert NAME in str(exc)
    assert (exc.breaker, exc.provider_type, exc.provider) == (NAME, "fake", "unit")
    assert cb.rejected == 1


async def test_open_rejects_call_async_without_awaiting(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)
    trip(cb)
    calls: list[int] = []

    async def f() -> None:
        calls.append(1)

    with pytest.raises(vr.CircuitOpenError):
        await cb.call_async(f)
    assert calls == []
    assert cb.rejected == 1


@pytest.mark.parametrize("elapsed", [0.0, 0.25, 20.5, 59.0])
def test_open_error_retry_after_is_the_time_left(clock: vr.ManualClock, elapsed: float) -> None:
    cb = make(clock, threshold=1, reset=60.0)
    trip(cb)
    clock.advance(elapsed)
    with pytest.raises(vr.CircuitOpenError) as info:
        cb.call(ok)
    assert info.value.retry_after == pytest.approx(60.0 - elapsed, abs=1e-9)
    assert cb.remaining_open == pytest.approx(60.0 - elapsed, abs=1e-9)


def test_open_until_reset_timeout_exactly(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, reset=60.0)
    trip(cb)
    clock.advance(60.0 - 1e-9)  # one nanosecond short
    with pytest.raises(vr.CircuitOpenError):
        cb.call(ok)
    assert cb.state is OPEN
    clock.advance(1e-9)
    assert cb.call(ok) == "ok"
    assert cb.state is HALF_OPEN


def test_open_timeout_counts_from_the_opening_failure(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=2, reset=60.0)
    with pytest.raises(Boom):
        cb.call(fail)
    clock.advance(30.0)
    with pytest.raises(Boom):
        cb.call(fail)  # opens at t = 30
    clock.advance(59.0)  # t = 89: 60 s after the first failure, 59 after the opening one
    with pytest.raises(vr.CircuitOpenError):
        cb.call(ok)
    clock.advance(1.0)
    assert cb.call(ok) == "ok"


def test_zero_reset_timeout_probes_at_once(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, reset=0.0, half_open=1)
    trip(cb)
    assert cb.call(ok) == "ok"
    assert cb.state is CLOSED


# ----------------------------------------------------------------- half-open --


def test_admitting_call_moves_to_half_open_and_is_the_first_probe(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, half_open=2)
    trip(cb)
    clock.advance(60.0)
    seen: list[tuple[BreakerState, int]] = []

    def probe() -> str:
        seen.append((cb.state, cb.half_open_calls))
        return "probed"

    assert cb.call(probe) == "probed"
    assert seen == [(HALF_OPEN, 1)]
    assert cb.state is HALF_OPEN  # 1 of 2 probes admitted
    assert cb.transitions == (0, 1, 1)


def test_half_open_admits_up_to_max_then_rejects(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, half_open=3)
    first = to_half_open(cb, clock)
    permits = [first, cb.try_acquire(), cb.try_acquire()]
    assert all(p is not None for p in permits)
    assert cb.half_open_calls == 3
    assert cb.try_acquire() is None
    calls: list[int] = []
    with pytest.raises(vr.CircuitOpenError) as info:
        cb.call(calls.append, 1)
    assert calls == []
    assert info.value.retry_after is None  # no timer while half-open
    assert cb.state is HALF_OPEN
    for permit in permits:
        permit.release()  # type: ignore[union-attr]
    assert cb.half_open_calls == 0


@pytest.mark.parametrize("failing", [0, 1, 2])
def test_any_half_open_failure_reopens(clock: vr.ManualClock, failing: int) -> None:
    cb = make(clock, threshold=1, half_open=3)
    permits = [to_half_open(cb, clock), cb.try_acquire(), cb.try_acquire()]
    assert all(p is not None for p in permits)
    permits[failing].failure()  # type: ignore[union-attr]
    assert cb.state is OPEN
    assert cb.try_acquire() is None
    for permit in permits:  # the others are stale now: reporting them changes nothing
        if not permit.reported:  # type: ignore[union-attr]
            permit.release()  # type: ignore[union-attr]
    assert cb.state is OPEN


def test_half_open_failure_restarts_the_timeout(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, reset=60.0, half_open=2)
    trip(cb)  # t = 0
    clock.advance(60.0)
    assert cb.call(ok) == "ok"  # t = 60, half-open
    clock.advance(10.0)
    with pytest.raises(Boom):
        cb.call(fail)  # t = 70, re-opens
    assert cb.state is OPEN
    clock.advance(59.0)  # t = 129
    with pytest.raises(vr.CircuitOpenError) as info:
        cb.call(ok)
    assert info.value.retry_after == pytest.approx(1.0, abs=1e-9)
    clock.advance(1.0)  # t = 130
    assert cb.call(ok) == "ok"
    assert cb.state is HALF_OPEN


def test_half_open_closes_when_all_admitted_and_one_succeeds(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, half_open=3)
    permits = [to_half_open(cb, clock), cb.try_acquire(), cb.try_acquire()]
    assert all(p is not None for p in permits)
    permits[1].success()  # type: ignore[union-attr]
    assert cb.state is CLOSED
    assert cb.failures == 0
    # the other probes' outcomes are stale now: they move nothing
    permits[0].failure()  # type: ignore[union-attr]
    permits[2].failure()  # type: ignore[union-attr]
    assert cb.state is CLOSED
    assert cb.failures == 0


def test_half_open_success_before_all_admitted_does_not_close(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, half_open=3)
    permit = to_half_open(cb, clock)
    permit.success()
    assert cb.state is HALF_OPEN
    assert cb.call(ok) == "ok"  # 2 of 3
    assert cb.state is HALF_OPEN
    assert cb.call(ok) == "ok"  # 3 of 3
    assert cb.state is CLOSED


def test_single_probe_success_closes(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, half_open=1)
    trip(cb)
    clock.advance(60.0)
    assert cb.call(ok) == "ok"
    assert cb.state is CLOSED
    assert cb.transitions == (1, 1, 1)


# ----------------------------------------------------- failure classification --


@pytest.mark.parametrize("error_type", list(vr.ErrorType))
def test_default_classification_of_provider_errors(
    clock: vr.ManualClock, error_type: vr.ErrorType
) -> None:
    cb = make(clock, threshold=1)
    error = vr.new_error(error_type, "provider said no")
    assert error.type is error_type

    def f() -> None:
        raise error

    with pytest.raises(vr.ProviderError) as info:
        cb.call(f)
    assert info.value is error
    if error_type in COUNTED:
        assert cb.state is OPEN
        assert (cb.failures_total, cb.successes) == (1, 0)
    else:
        assert cb.state is CLOSED
        assert (cb.failures_total, cb.successes) == (0, 1)
    assert vr.default_failure_predicate(error) is (error_type in COUNTED)


@pytest.mark.parametrize("error_type", list(vr.ErrorType))
def test_plain_provider_error_is_classified_by_type(
    clock: vr.ManualClock, error_type: vr.ErrorType
) -> None:
    cb = make(clock, threshold=1)

    def f() -> None:
        raise vr.ProviderError(error_type, "x")

    with pytest.raises(vr.ProviderError):
        cb.call(f)
    assert (cb.state is OPEN) is (error_type in COUNTED)


def test_business_error_resets_the_failure_count(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=3)
    for _ in range(2):
        with pytest.raises(Boom):
            cb.call(fail)

    def gone() -> None:
        raise vr.NotFoundError("vm gone")

    with pytest.raises(vr.NotFoundError):
        cb.call(gone)
    assert cb.failures == 0  # the provider answered


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("x"), ValueError("x"), TimeoutError("x"), ConnectionError("x"), OSError("x"), Boom()],
    ids=type,
)
def test_non_provider_errors_count(clock: vr.ManualClock, exc: Exception) -> None:
    cb = make(clock, threshold=1)

    def f() -> None:
        raise exc

    with pytest.raises(type(exc)):
        cb.call(f)
    assert cb.state is OPEN
    assert vr.default_failure_predicate(exc) is True


def test_failure_predicate_overrides_the_default(clock: vr.ManualClock) -> None:
    seen: list[BaseException] = []

    def only_not_found(exc: BaseException) -> bool:
        seen.append(exc)
        return isinstance(exc, vr.NotFoundError)

    cb = make(clock, threshold=1, failure_predicate=only_not_found)
    error = ValueError("not counted now")

    def raise_value_error() -> None:
        raise error

    with pytest.raises(ValueError):
        cb.call(raise_value_error)
    assert seen == [error]
    assert cb.state is CLOSED
    assert cb.successes == 1

    def gone() -> None:
        raise vr.NotFoundError("gone")

    with pytest.raises(vr.NotFoundError):
        cb.call(gone)
    assert cb.state is OPEN


def test_failure_predicate_never_counting_keeps_breaker_closed(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, failure_predicate=lambda exc: False)
    for _ in range(5):
        with pytest.raises(Boom):
            cb.call(fail)
    assert cb.state is CLOSED
    assert (cb.successes, cb.failures_total) == (5, 0)


def test_failure_predicate_not_consulted_for_cancellation(clock: vr.ManualClock) -> None:
    seen: list[BaseException] = []
    cb = make(clock, threshold=1, failure_predicate=lambda exc: seen.append(exc) or True)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cb.call(interrupted)
    assert seen == []
    assert cb.state is CLOSED
    assert cb.released == 1


def test_raising_failure_predicate_counts_as_failure_and_keeps_the_error(
    clock: vr.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    unraisable: list[type[BaseException] | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: unraisable.append(args.exc_type))

    def broken(exc: BaseException) -> bool:
        raise ZeroDivisionError("predicate bug")

    cb = make(clock, threshold=1, failure_predicate=broken)
    with pytest.raises(Boom):
        cb.call(fail)
    assert cb.state is OPEN
    assert cb.failures_total == 1
    assert unraisable == [ZeroDivisionError]


# --------------------------------------------------------------- cancellation --


@pytest.mark.parametrize("cancel", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_cancelled_call_in_half_open_releases_the_slot(
    clock: vr.ManualClock, cancel: type[BaseException]
) -> None:
    cb = make(clock, threshold=1, half_open=1)
    trip(cb)
    clock.advance(60.0)

    def interrupted() -> None:
        raise cancel

    with pytest.raises(cancel):
        cb.call(interrupted)
    assert cb.state is HALF_OPEN
    assert cb.half_open_calls == 0
    assert (cb.released, cb.successes, cb.failures_total) == (1, 0, 1)
    assert cb.call(ok) == "ok"  # the slot is free again
    assert cb.state is CLOSED


def test_cancelled_call_in_closed_counts_nothing(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=3)
    for _ in range(2):
        with pytest.raises(Boom):
            cb.call(fail)

    def interrupted() -> None:
        raise KeyboardInterrupt

    for _ in range(5):
        with pytest.raises(KeyboardInterrupt):
            cb.call(interrupted)
    assert cb.failures == 2  # neither reset nor incremented
    assert (cb.successes, cb.failures_total, cb.released) == (0, 2, 5)
    assert cb.state is CLOSED


async def test_cancelled_call_async_releases_the_half_open_slot(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, half_open=1)
    trip(cb)
    clock.advance(60.0)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(cb.call_async(hang))
    await started.wait()
    assert cb.state is HALF_OPEN and cb.half_open_calls == 1
    with pytest.raises(vr.CircuitOpenError):
        await cb.call_async(ok_async)  # the only slot is held
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cb.half_open_calls == 0
    assert (cb.released, cb.successes, cb.failures_total) == (1, 0, 1)
    assert await cb.call_async(ok_async) == "ok"
    assert cb.state is CLOSED


async def test_call_async_raising_cancelled_error_counts_nothing(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await cb.call_async(cancelled)
    assert cb.state is CLOSED
    assert (cb.released, cb.successes, cb.failures_total) == (1, 0, 0)


async def test_cancelled_async_guard_releases(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, half_open=1)
    trip(cb)
    clock.advance(60.0)
    with pytest.raises(asyncio.CancelledError):
        async with cb.guard():
            raise asyncio.CancelledError
    assert cb.half_open_calls == 0
    assert cb.released == 1
    assert cb.state is HALF_OPEN


def test_permit_release_frees_the_slot(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, half_open=1)
    permit = to_half_open(cb, clock)
    assert cb.try_acquire() is None
    permit.release()
    assert cb.half_open_calls == 0
    again = cb.try_acquire()
    assert again is not None
    again.success()
    assert cb.state is CLOSED


# ------------------------------------------------------------ stale outcomes --


def test_stale_success_after_open_moves_nothing(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)
    old = cb.try_acquire()  # admitted while closed
    assert old is not None
    trip(cb)
    old.success()
    assert cb.state is OPEN
    assert cb.successes == 1  # counted, but stale


def test_stale_failure_while_open_does_not_restart_the_timeout(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, reset=60.0)
    old = cb.try_acquire()
    assert old is not None
    trip(cb)  # opens at t = 0
    clock.advance(30.0)
    old.failure()
    assert cb.failures_total == 2
    clock.advance(30.0)  # t = 60: 60 s after the opening failure
    assert cb.call(ok) == "ok"
    assert cb.state is HALF_OPEN


def test_stale_closed_failure_does_not_reopen_half_open(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, half_open=2)
    old = cb.try_acquire()
    assert old is not None
    probe = to_half_open(cb, clock)
    old.failure()
    assert cb.state is HALF_OPEN
    probe.success()
    assert cb.state is HALF_OPEN  # 1 of 2 admitted
    assert cb.call(ok) == "ok"
    assert cb.state is CLOSED


def test_stale_half_open_failure_after_reset_moves_nothing(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, half_open=2)
    probe = to_half_open(cb, clock)
    cb.reset()
    probe.failure()
    assert cb.state is CLOSED
    assert cb.failures == 0


def test_stale_release_does_not_free_a_new_half_open_slot(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, reset=60.0, half_open=2)
    stale = to_half_open(cb, clock)
    second = cb.try_acquire()
    assert second is not None
    second.failure()  # re-opens: `stale` belongs to the old half-open period
    clock.advance(60.0)
    fresh = cb.try_acquire()
    assert fresh is not None
    assert cb.half_open_calls == 1
    stale.release()
    assert cb.half_open_calls == 1
    last = cb.try_acquire()  # the second fresh slot (held: a dropped permit releases)
    assert last is not None
    assert cb.try_acquire() is None
    fresh.release()
    last.release()


def test_stale_success_from_closed_does_not_close_half_open(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, half_open=1)
    old = cb.try_acquire()
    assert old is not None
    probe = to_half_open(cb, clock)
    old.success()
    assert cb.state is HALF_OPEN
    probe.release()


# --------------------------------------------------------- reset, force_open --


def test_reset_closes_an_open_breaker(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)
    trip(cb)
    cb.reset()
    assert cb.state is CLOSED
    assert cb.failures == 0
    assert cb.call(ok) == "ok"


def test_reset_closes_a_half_open_breaker(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, half_open=3)
    probe = to_half_open(cb, clock)
    assert cb.half_open_calls == 1
    cb.reset()
    assert cb.state is CLOSED
    assert cb.half_open_calls == 0
    probe.failure()  # stale
    assert cb.state is CLOSED


def test_reset_forgets_failures_without_a_transition(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=3)
    events: list[tuple[BreakerState, BreakerState]] = []
    cb.add_listener(lambda b, old, new: events.append((old, new)))
    for _ in range(2):
        with pytest.raises(Boom):
            cb.call(fail)
    cb.reset()
    assert cb.failures == 0
    assert events == []
    assert cb.transitions == (0, 0, 0)


def test_force_open_holds_open_until_reset(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=3, reset=1.0)
    cb.force_open()
    assert cb.state is OPEN
    assert cb.held_open
    clock.advance(10**6)
    calls: list[int] = []
    with pytest.raises(vr.CircuitOpenError) as info:
        cb.call(calls.append, 1)
    assert calls == []
    assert info.value.retry_after is None
    assert cb.try_acquire() is None
    assert cb.state is OPEN
    cb.reset()
    assert cb.state is CLOSED
    assert not cb.held_open
    assert cb.call(ok) == "ok"


def test_force_open_notifies_closed_to_open(clock: vr.ManualClock) -> None:
    cb = make(clock)
    events: list[tuple[BreakerState, BreakerState]] = []
    cb.add_listener(lambda b, old, new: events.append((old, new)))
    cb.force_open()
    cb.reset()
    assert events == [(CLOSED, OPEN), (OPEN, CLOSED)]
    assert cb.transitions == (1, 0, 1)


def test_force_open_of_a_half_open_breaker(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, half_open=2)
    probe = to_half_open(cb, clock)
    cb.force_open()
    probe.success()  # stale
    assert cb.state is OPEN and cb.held_open
    clock.advance(3600.0)
    assert cb.try_acquire() is None


def test_force_open_of_an_open_breaker_is_no_state_change(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)
    events: list[tuple[BreakerState, BreakerState]] = []
    cb.add_listener(lambda b, old, new: events.append((old, new)))
    trip(cb)
    cb.force_open()
    assert cb.state is OPEN and cb.held_open
    assert events == [(CLOSED, OPEN)]
    assert cb.transitions == (0, 0, 1)


# --------------------------------------------------------------------- guard --


def test_guard_records_success_and_failure(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=2)
    with cb.guard():
        pass
    assert cb.successes == 1
    for _ in range(2):
        with pytest.raises(Boom), cb.guard():
            raise Boom
    assert cb.state is OPEN
    ran: list[int] = []
    with pytest.raises(vr.CircuitOpenError), cb.guard():
        ran.append(1)
    assert ran == []


def test_guard_classifies_business_errors_as_success(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)
    with pytest.raises(vr.ConflictError), cb.guard():
        raise vr.ConflictError("exists")
    assert cb.state is CLOSED
    assert cb.successes == 1


async def test_async_guard(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)
    async with cb.guard():
        await asyncio.sleep(0)
    assert cb.successes == 1
    with pytest.raises(Boom):
        async with cb.guard():
            raise Boom
    assert cb.state is OPEN
    ran: list[int] = []
    with pytest.raises(vr.CircuitOpenError):
        async with cb.guard():
            ran.append(1)
    assert ran == []


# ----------------------------------------------------------------- decorator --


def test_decorator_on_sync_function(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)

    @cb
    def create_vm(name: str, *, cpus: int = 1) -> str:
        """Creates a VM."""
        if name == "bad":
            raise Boom
        return f"{name}:{cpus}"

    assert create_vm.__name__ == "create_vm"
    assert create_vm.__doc__ == "Creates a VM."
    assert create_vm("a", cpus=2) == "a:2"
    with pytest.raises(Boom):
        create_vm("bad")
    assert cb.state is OPEN
    with pytest.raises(vr.CircuitOpenError):
        create_vm("a")


async def test_decorator_on_async_function(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)

    @cb
    async def describe_vm(name: str) -> str:
        if name == "bad":
            raise Boom
        return name.upper()

    assert describe_vm.__name__ == "describe_vm"
    assert inspect.iscoroutinefunction(describe_vm)
    assert await describe_vm("a") == "A"
    with pytest.raises(Boom):
        await describe_vm("bad")
    assert cb.state is OPEN
    with pytest.raises(vr.CircuitOpenError):
        await describe_vm("a")


async def test_call_async_passes_arguments(clock: vr.ManualClock) -> None:
    cb = make(clock)

    async def f(a: int, *, b: int) -> int:
        return a + b

    assert await cb.call_async(f, 1, b=2) == 3
    with pytest.raises(Boom):
        await cb.call_async(fail_async)
    assert cb.failures == 1


# --------------------------------------------------------------- try_acquire --


def test_try_acquire_returns_permit_or_none(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)
    permit = cb.try_acquire()
    assert isinstance(permit, vr.Permit)
    permit.failure()
    assert cb.state is OPEN
    assert cb.try_acquire() is None
    assert cb.rejected == 1


def test_permit_record_classifies(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)
    p = cb.try_acquire()
    assert p is not None
    p.record(None)
    p = cb.try_acquire()
    assert p is not None
    p.record(vr.NotFoundError("gone"))
    assert (cb.successes, cb.state) == (2, CLOSED)
    p = cb.try_acquire()
    assert p is not None
    p.record(KeyboardInterrupt())
    assert cb.released == 1
    p = cb.try_acquire()
    assert p is not None
    p.record(vr.UnavailableError("down"))
    assert cb.state is OPEN


REPORTS = {
    "success": lambda p: p.success(),
    "failure": lambda p: p.failure(),
    "release": lambda p: p.release(),
    "record": lambda p: p.record(Boom()),
    "record_none": lambda p: p.record(None),
}


@pytest.mark.parametrize("first", list(REPORTS))
@pytest.mark.parametrize("second", list(REPORTS))
def test_permit_reported_twice_raises(clock: vr.ManualClock, first: str, second: str) -> None:
    cb = make(clock, threshold=10)
    permit = cb.try_acquire()
    assert permit is not None
    REPORTS[first](permit)
    before = (cb.successes, cb.failures_total, cb.released)
    with pytest.raises(RuntimeError, match="already reported"):
        REPORTS[second](permit)
    assert (cb.successes, cb.failures_total, cb.released) == before


# ------------------------------------------------------------------ counters --


def test_counters_over_a_full_cycle(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=2, reset=60.0, half_open=1)
    assert cb.transitions == (0, 0, 0)
    assert cb.last_transition_ns == 0
    cb.call(ok)
    clock.advance(1.0)
    for _ in range(2):
        with pytest.raises(Boom):
            cb.call(fail)
    assert cb.last_transition_ns == 1_000_000_000
    for _ in range(3):
        with pytest.raises(vr.CircuitOpenError):
            cb.call(ok)
    clock.advance(60.0)
    cb.call(ok)
    assert cb.state is CLOSED
    assert cb.successes == 2
    assert cb.failures_total == 2
    assert cb.rejected == 3
    assert cb.released == 0
    assert cb.transitions == (1, 1, 1)
    assert cb.last_transition_ns == 61_000_000_000


def test_counters_count_every_reopen(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, reset=5.0, half_open=1)
    for _ in range(3):
        with pytest.raises(Boom):
            cb.call(fail)
        clock.advance(5.0)
    assert cb.transitions == (0, 2, 3)
    assert cb.failures_total == 3


# ----------------------------------------------------------------- listeners --


def test_listener_sees_every_transition(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, half_open=1)
    events: list[tuple[object, BreakerState, BreakerState, BreakerState]] = []
    cb.add_listener(lambda b, old, new: events.append((b, old, new, b.state)))
    trip(cb)
    clock.advance(60.0)
    with pytest.raises(Boom):
        cb.call(fail)
    clock.advance(60.0)
    cb.call(ok)
    assert [(old, new) for _, old, new, _ in events] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]
    for breaker, old, new, state_then in events:
        assert breaker is cb
        assert type(old) is BreakerState and type(new) is BreakerState
        assert state_then is new  # listeners run after the change


def test_remove_listener(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)
    events: list[object] = []

    def listener(b: object, old: BreakerState, new: BreakerState) -> None:
        events.append(new)

    cb.add_listener(listener)
    cb.remove_listener(listener)
    trip(cb)
    assert events == []
    with pytest.raises(ValueError):
        cb.remove_listener(listener)


def test_global_listener_sees_every_breaker(clock: vr.ManualClock) -> None:
    events: list[tuple[str, BreakerState, BreakerState]] = []

    def listener(b: vr.CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
        events.append((b.name, old, new))

    a = vr.CircuitBreaker("a", config=vr.BreakerConfig(failure_threshold=1), clock=clock)
    b = vr.CircuitBreaker("b", config=vr.BreakerConfig(failure_threshold=1), clock=clock)
    vr.events.on_state_change(listener)
    try:
        with pytest.raises(Boom):
            a.call(fail)
        with pytest.raises(Boom):
            b.call(fail)
        b.reset()
    finally:
        vr.events.remove_listener(listener)
    a.reset()  # after removal: not seen
    assert events == [("a", CLOSED, OPEN), ("b", CLOSED, OPEN), ("b", OPEN, CLOSED)]


def test_raising_listener_is_logged_and_never_breaks_the_call(
    clock: vr.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cb = make(clock, threshold=1, half_open=1)
    later: list[BreakerState] = []

    def broken(b: object, old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("listener bug")

    cb.add_listener(broken)
    cb.add_listener(lambda b, old, new: later.append(new))
    with pytest.raises(Boom):  # the call's own error, not the listener's
        cb.call(fail)
    assert cb.state is OPEN
    clock.advance(60.0)
    assert cb.call(ok) == "ok"  # half-open then closed: two failing notifications
    assert cb.state is CLOSED
    assert later == [OPEN, HALF_OPEN, CLOSED]
    errors = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert len(errors) == 3
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in errors)


def test_raising_global_listener_never_breaks_the_call(
    clock: vr.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    def broken(b: object, old: BreakerState, new: BreakerState) -> None:
        raise ValueError("global listener bug")

    cb = make(clock, threshold=1)
    vr.events.on_state_change(broken)
    try:
        with pytest.raises(Boom):
            cb.call(fail)
    finally:
        vr.events.remove_listener(broken)
    assert cb.state is OPEN
    assert any(
        r.name == LOGGER and r.levelno == logging.ERROR and isinstance(r.exc_info[1], ValueError)
        for r in caplog.records
        if r.exc_info
    )


def test_transitions_are_logged(clock: vr.ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    cb = make(clock, threshold=1, half_open=1)
    trip(cb)
    clock.advance(60.0)
    cb.call(ok)
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO, logging.INFO]
    assert all(NAME in r.getMessage() for r in records)
    assert "OPEN" in records[0].getMessage()
    assert "HALF_OPEN" in records[1].getMessage()
    assert "CLOSED" in records[2].getMessage()


def test_add_listener_rejects_non_callable(clock: vr.ManualClock) -> None:
    cb = make(clock)
    with pytest.raises(TypeError, match="listener"):
        cb.add_listener(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="listener"):
        vr.events.on_state_change("nope")  # type: ignore[arg-type]


def test_repr_names_breaker_and_state(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)
    trip(cb)
    text = repr(cb)
    assert NAME in text and "OPEN" in text


# ------------------------------------------------------------ async refused --


async def _coroutine_function() -> str:
    return "never"


class _AsyncCall:
    async def __call__(self) -> str:
        return "never"


@pytest.mark.parametrize("fn", [_coroutine_function, _AsyncCall()], ids=["function", "__call__"])
def test_call_refuses_an_async_function(clock: vr.ManualClock, fn: object) -> None:
    # Before: the breaker recorded a success and handed back an un-awaited coroutine.
    cb = make(clock, threshold=1, half_open=1)
    probe = to_half_open(cb, clock)
    probe.success()  # closed again
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the coroutine is closed: no "never awaited"
        with pytest.raises(TypeError, match=r"call_async") as info:
            cb.call(fn)  # type: ignore[arg-type]
    assert "_coroutine_function" in str(info.value) or "__call__" in str(info.value)
    assert (cb.successes, cb.failures_total, cb.released) == (1, 1, 1)


def test_decorating_an_async_callable_object_makes_an_async_wrapper(clock: vr.ManualClock) -> None:
    cb = make(clock)
    wrapped = cb(_AsyncCall())
    assert inspect.iscoroutinefunction(wrapped)
    assert asyncio.run(wrapped()) == "never"
    assert cb.successes == 1


# ------------------------------------------- a deadline is a Timeout failure --


async def _hang() -> None:
    await asyncio.Event().wait()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout: Python 3.11+")
async def test_call_async_cut_off_by_asyncio_timeout_is_a_failure() -> None:
    cb = vr.CircuitBreaker(NAME, "fake", "unit", vr.BreakerConfig(failure_threshold=2))
    for _ in range(2):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.005):
                await cb.call_async(_hang)
    assert cb.state is OPEN
    assert (cb.failures_total, cb.released) == (2, 0)


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="asyncio.wait_for runs in the caller's task from Python 3.12")
async def test_call_async_cut_off_by_wait_for_is_a_failure() -> None:
    cb = vr.CircuitBreaker(NAME, "fake", "unit", vr.BreakerConfig(failure_threshold=1))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(cb.call_async(_hang), 0.005)
    assert cb.state is OPEN


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout: Python 3.11+")
async def test_guard_and_permit_cut_off_by_a_deadline_are_failures() -> None:
    cb = vr.CircuitBreaker(NAME, "fake", "unit", vr.BreakerConfig(failure_threshold=5))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.005), cb.guard():
            await _hang()
    permit = cb.try_acquire()
    assert permit is not None
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.005), permit:
            await _hang()
    assert cb.failures_total == 2


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout: Python 3.11+")
async def test_a_deadline_inside_an_async_context_manager_is_found() -> None:
    import contextlib

    @contextlib.asynccontextmanager
    async def budget(seconds: float):  # type: ignore[no-untyped-def]
        async with asyncio.timeout(seconds):
            yield

    cb = vr.CircuitBreaker(NAME, "fake", "unit", vr.BreakerConfig(failure_threshold=1))
    with pytest.raises(TimeoutError):
        async with budget(0.005):
            await cb.call_async(_hang)
    assert cb.state is OPEN


async def test_outside_cancellation_of_call_async_records_nothing() -> None:
    cb = vr.CircuitBreaker(NAME, "fake", "unit", vr.BreakerConfig(failure_threshold=1))
    task = asyncio.create_task(cb.call_async(_hang))
    await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (cb.state, cb.failures_total, cb.released) == (CLOSED, 0, 1)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout: Python 3.11+")
async def test_an_expired_timeout_left_behind_is_not_mistaken_for_a_deadline() -> None:
    cb = vr.CircuitBreaker(NAME, "fake", "unit", vr.BreakerConfig(failure_threshold=1))

    async def caller() -> None:
        try:
            async with asyncio.timeout(0.001) as old:  # expires and is handled
                await asyncio.sleep(1)
        except TimeoutError:
            pass
        assert old.expired()
        await cb.call_async(_hang)  # then cancelled from outside

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (cb.state, cb.failures_total) == (CLOSED, 0)


# ------------------------------------------------- generations never wrap --


def test_a_permit_older_than_two_to_the_24_transitions_is_still_stale(clock: vr.ManualClock) -> None:
    # The generation used to be 24 bits: after 2**24 resets an old permit's failure
    # counted again (and opened this threshold-1 breaker).
    cb = make(clock, threshold=1)
    old = cb.try_acquire()
    assert old is not None
    reset = cb.reset
    for _ in range(1 << 24):
        reset()
    assert cb.generation == 1 << 24
    old.failure()
    assert cb.state is CLOSED
    assert cb.failures == 0


# -------------------------------------------------------- half-open lease --


def test_lost_probes_are_reclaimed_after_the_lease(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, reset=10.0, half_open=2, half_open_lease=30.0)
    lost = [to_half_open(cb, clock)]
    clock.advance(5.0)
    second = cb.try_acquire()
    assert second is not None
    lost.append(second)   # both slots held by probes whose outcome never comes
    clock.advance(29.0)   # 29 s after the newest probe: still within its lease
    assert cb.try_acquire() is None
    clock.advance(1.0)
    fresh = cb.try_acquire()  # a new round of probes, this call its first
    assert fresh is not None
    assert cb.reclaimed == 1
    assert cb.state is HALF_OPEN
    assert cb.half_open_calls == 1
    for probe in lost:     # the lost probes' outcomes no longer count
        probe.failure()
    assert cb.state is HALF_OPEN
    fresh.success()
    last = cb.try_acquire()
    assert last is not None
    last.success()
    assert cb.state is CLOSED


def test_without_a_lease_lost_probes_wedge_the_breaker(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, reset=10.0, half_open=1, half_open_lease=None)
    held = to_half_open(cb, clock)
    clock.advance(1e6)
    assert cb.try_acquire() is None  # documented: None means no lease
    assert cb.half_open_lease is None
    held.release()


def test_default_lease_is_five_minutes() -> None:
    assert vr.BreakerConfig().half_open_lease == 300.0
    assert vr.CircuitBreaker("x").half_open_lease == 300.0


def test_a_dropped_permit_gives_its_slot_back_with_a_warning(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1, reset=10.0, half_open=1)
    trip(cb)
    clock.advance(10.0)
    with pytest.warns(ResourceWarning, match="without an outcome"):
        permit = cb.try_acquire()
        assert permit is not None and cb.half_open_calls == 1
        del permit  # never reported
    assert (cb.half_open_calls, cb.released) == (0, 1)
    again = cb.try_acquire()
    assert again is not None  # the slot is free for the next probe
    again.success()
    assert cb.state is CLOSED


def test_permit_as_a_context_manager_records_the_outcome(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=2)
    permit = cb.try_acquire()
    assert permit is not None
    with permit:
        pass
    assert permit.reported and cb.successes == 1
    permit = cb.try_acquire()
    assert permit is not None
    with pytest.raises(Boom), permit:
        raise Boom("down")
    assert cb.failures == 1
    permit = cb.try_acquire()
    assert permit is not None
    with permit:
        permit.release()  # reported inside: the exit adds nothing
    assert (cb.successes, cb.failures_total, cb.released) == (1, 1, 1)


# ------------------------------------------------------ subclass overrides --


def test_a_subclass_override_of_call_wins(clock: vr.ManualClock) -> None:
    seen: list[object] = []

    class Logged(vr.CircuitBreaker):
        def call(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def,override]
            seen.append(fn)
            return super().call(fn, *args, **kwargs)

    class Child(Logged):
        pass

    for cls in (Logged, Child):
        assert cls("x", clock=clock).call(abs, -2) == 2
    assert seen == [abs, abs]


# ---------------------------------------- hooks that interrupt are not swallowed --


def test_a_listener_raising_keyboard_interrupt_propagates(clock: vr.ManualClock) -> None:
    cb = make(clock, threshold=1)

    def interrupt(breaker: object, old: object, new: object) -> None:
        raise KeyboardInterrupt

    cb.add_listener(interrupt)
    with pytest.raises(KeyboardInterrupt) as info:
        cb.call(fail)
    assert isinstance(info.value.__context__, Boom)  # the call's own error, chained
    assert cb.state is OPEN  # recorded before the interrupt


def test_a_failure_predicate_raising_system_exit_propagates(clock: vr.ManualClock) -> None:
    def stop(exc: BaseException) -> bool:
        raise SystemExit(3)

    cb = vr.CircuitBreaker("x", config=vr.BreakerConfig(failure_threshold=1,
                                                        failure_predicate=stop), clock=clock)
    with pytest.raises(SystemExit):
        cb.call(fail)
    assert cb.failures_total == 1  # an unanswerable classification counts as a failure


def test_a_listener_raising_a_plain_exception_is_still_logged_and_swallowed(
        clock: vr.ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    cb = make(clock, threshold=1)
    cb.add_listener(lambda b, o, n: 1 / 0)
    with pytest.raises(Boom):
        cb.call(fail)
    assert "listener" in caplog.text
