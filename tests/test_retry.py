"""Retrier, retry and retry_async: what is retried, how long it sleeps, what is raised.

Everything that sleeps does so on a ManualClock (virtual time), except the
few ``vr.retry``/``vr.retry_async`` tests, which use the system clock with
millisecond delays.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import virtrigaud_resilience as vr

RETRYABLE = [vr.ErrorType.RETRYABLE, vr.ErrorType.UNAVAILABLE, vr.ErrorType.RATE_LIMIT,
             vr.ErrorType.TIMEOUT]
NOT_RETRYABLE = [vr.ErrorType.NOT_FOUND, vr.ErrorType.INVALID_SPEC, vr.ErrorType.UNAUTHORIZED,
                 vr.ErrorType.NOT_SUPPORTED, vr.ErrorType.QUOTA_EXCEEDED, vr.ErrorType.CONFLICT]

#: What an asyncio deadline raises: the builtin TimeoutError (3.11+) or, on 3.10,
#: asyncio.TimeoutError.
ASYNC_TIMEOUT = (TimeoutError, asyncio.TimeoutError)

NO_JITTER = vr.RetryConfig(max_attempts=5, base_delay=0.5, max_delay=30.0, multiplier=2.0,
                           jitter=False)


class Flaky:
    """Raises the given errors in turn, then returns ``result``; records calls."""

    def __init__(self, *errors: BaseException, result: object = "ok",
                 clock: vr.ManualClock | None = None) -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0
        self.attempts: list[int] = []
        self.times: list[float] = []
        self.clock = clock

    def _step(self) -> object:
        self.calls += 1
        self.attempts.append(vr.current_attempt())
        if self.clock is not None:
            self.times.append(self.clock.now())
        if self.errors:
            raise self.errors.pop(0)
        return self.result

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self._step()

    async def call_async(self, *args: object, **kwargs: object) -> object:
        await asyncio.sleep(0)
        return self._step()


class Always:
    """Raises ``make()`` on every call."""

    def __init__(self, make, clock: vr.ManualClock | None = None) -> None:
        self.make = make
        self.calls = 0
        self.errors: list[BaseException] = []
        self.times: list[float] = []
        self.clock = clock

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        if self.clock is not None:
            self.times.append(self.clock.now())
        exc = self.make()
        self.errors.append(exc)
        raise exc

    async def call_async(self, *args: object, **kwargs: object) -> object:
        return self()


def run(retrier: vr.Retrier, fn, mode: str, *args, **kwargs):
    """Runs fn through retrier.call (sync) or retrier.call_async (async)."""
    if mode == "sync":
        return retrier.call(fn, *args, **kwargs)
    return asyncio.run(retrier.call_async(fn.call_async, *args, **kwargs))


MODES = ["sync", "async"]


# ------------------------------------------------------- what is retried --


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("error_type", RETRYABLE)
def test_retryable_types_are_retried(clock: vr.ManualClock, mode: str,
                                     error_type: vr.ErrorType) -> None:
    fn = Flaky(vr.new_error(error_type, "a"), vr.new_error(error_type, "b"), clock=clock)
    retrier = vr.Retrier(NO_JITTER, clock=clock)
    assert run(retrier, fn, mode) == "ok"
    assert fn.calls == 3
    assert retrier.retries == 2
    assert retrier.exhausted == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("error_type", NOT_RETRYABLE)
def test_non_retryable_types_are_raised_at_once(clock: vr.ManualClock, mode: str,
                                                error_type: vr.ErrorType) -> None:
    err = vr.new_error(error_type, "nope")
    fn = Flaky(err, clock=clock)
    retrier = vr.Retrier(NO_JITTER, clock=clock)
    with pytest.raises(vr.ProviderError) as info:
        run(retrier, fn, mode)
    assert info.value is err
    assert fn.calls == 1
    assert clock.now() == 0.0
    assert retrier.retries == 0
    assert retrier.exhausted == 0
    assert not hasattr(err, "attempts")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("exc", [ValueError("v"), RuntimeError("r"), TimeoutError("t"),
                                 ConnectionError("c"), OSError("o"), KeyError("k")])
def test_non_provider_errors_are_not_retried(clock: vr.ManualClock, mode: str,
                                             exc: Exception) -> None:
    fn = Flaky(exc, clock=clock)
    retrier = vr.Retrier(NO_JITTER, clock=clock)
    with pytest.raises(type(exc)) as info:
        run(retrier, fn, mode)
    assert info.value is exc
    assert fn.calls == 1
    assert clock.now() == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_retryable_flag_overrides_the_type(clock: vr.ManualClock, mode: str) -> None:
    # "plus any error created with retryable=True"; and retryable=False opts out.
    fn = Flaky(vr.NotFoundError("not yet", retryable=True), clock=clock)
    assert run(vr.Retrier(NO_JITTER, clock=clock), fn, mode) == "ok"
    assert fn.calls == 2

    err = vr.UnavailableError("down for good", retryable=False)
    fn = Flaky(err, clock=clock)
    with pytest.raises(vr.UnavailableError) as info:
        run(vr.Retrier(NO_JITTER, clock=clock), fn, mode)
    assert info.value is err
    assert fn.calls == 1


def test_classified_builtin_errors_are_retried(clock: vr.ManualClock) -> None:
    calls = []

    def fn():
        calls.append(1)
        if len(calls) < 3:
            raise vr.classify(ConnectionError("reset"))
        return "ok"

    assert vr.Retrier(NO_JITTER, clock=clock).call(fn) == "ok"
    assert len(calls) == 3


# ----------------------------------------------------------- the delays --


@pytest.mark.parametrize("mode", MODES)
def test_delay_table_without_jitter(clock: vr.ManualClock, mode: str) -> None:
    delays: list[tuple[int, float]] = []
    fn = Always(lambda: vr.UnavailableError("down"), clock=clock)
    retrier = vr.Retrier(NO_JITTER, clock=clock, on_retry=lambda a, e, d: delays.append((a, d)))
    with pytest.raises(vr.UnavailableError):
        run(retrier, fn, mode)
    assert fn.calls == 5
    assert [d for _, d in delays] == [0.5, 1.0, 2.0, 4.0]
    assert [a for a, _ in delays] == [1, 2, 3, 4]
    # attempts start at 0, 0.5, 1.5, 3.5, 7.5; no sleep after the last one
    assert fn.times == [0.0, 0.5, 1.5, 3.5, 7.5]
    assert clock.now() == 7.5


def test_delays_are_capped_at_max_delay(clock: vr.ManualClock) -> None:
    cfg = vr.RetryConfig(max_attempts=7, base_delay=1.0, max_delay=5.0, multiplier=3.0,
                         jitter=False)
    delays: list[float] = []
    fn = Always(lambda: vr.RetryableError("x"), clock=clock)
    with pytest.raises(vr.RetryableError):
        vr.Retrier(cfg, clock=clock, on_retry=lambda a, e, d: delays.append(d)).call(fn)
    assert delays == [1.0, 3.0, 5.0, 5.0, 5.0, 5.0]
    assert clock.now() == 24.0


@pytest.mark.parametrize("mode", MODES)
def test_jitter_adds_zero_to_ten_percent(clock: vr.ManualClock, mode: str) -> None:
    cfg = vr.RetryConfig(max_attempts=8, base_delay=0.5, max_delay=30.0, multiplier=2.0,
                         jitter=True)
    expected = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    seen: list[list[float]] = []
    for _ in range(20):
        delays: list[float] = []
        fn = Always(lambda: vr.UnavailableError("down"))
        retrier = vr.Retrier(cfg, clock=clock,
                             on_retry=lambda a, e, d, out=delays: out.append(d))
        start = clock.now()
        with pytest.raises(vr.UnavailableError):
            run(retrier, fn, mode)
        assert len(delays) == 7
        for d, base in zip(delays, expected):
            assert base <= d <= base * 1.1
        # the clock moved by exactly the delays reported
        assert clock.now() - start == pytest.approx(sum(delays), abs=1e-6)
        seen.append(delays)
    # jitter is random: not every run is identical, and not every delay is the base
    assert len({tuple(s) for s in seen}) > 1
    assert any(d > base for s in seen for d, base in zip(s, expected))


@pytest.mark.parametrize("mode", MODES)
def test_seeded_jitter_repeats_itself(clock: vr.ManualClock, mode: str) -> None:
    """RetryConfig(seed=...): every retrier built from the config draws the
    same jittered delays (what makes a seeded simulation reproducible)."""
    def delays_of(config: vr.RetryConfig) -> list[float]:
        delays: list[float] = []
        retrier = vr.Retrier(config, clock=clock, on_retry=lambda a, e, d: delays.append(d))
        with pytest.raises(vr.UnavailableError):
            run(retrier, Always(lambda: vr.UnavailableError("down")), mode)
        return delays

    seeded = vr.RetryConfig(max_attempts=6, jitter=True, seed=7)
    first = delays_of(seeded)
    assert first == delays_of(seeded) == delays_of(seeded.replace())
    assert first != delays_of(seeded.replace(seed=8))
    for d, base in zip(first, [0.5, 1.0, 2.0, 4.0, 8.0]):
        assert base <= d <= base * 1.1
    assert any(d > base for d, base in zip(first, [0.5, 1.0, 2.0, 4.0, 8.0]))
    assert seeded != vr.RetryConfig(max_attempts=6, jitter=True)  # the seed is part of it


@pytest.mark.parametrize("mode", MODES)
def test_rate_limit_retry_after_raises_the_delay(clock: vr.ManualClock, mode: str) -> None:
    delays: list[float] = []
    fn = Flaky(vr.RateLimitError("slow down", retry_after=5.0),
               vr.RateLimitError("slow down", retry_after=0.1),  # shorter than backoff
               vr.RateLimitError("no hint"), clock=clock)
    retrier = vr.Retrier(NO_JITTER, clock=clock, on_retry=lambda a, e, d: delays.append(d))
    assert run(retrier, fn, mode) == "ok"
    assert delays == [5.0, 1.0, 2.0]
    assert fn.times == [0.0, 5.0, 6.0, 8.0]


def test_retry_after_with_jitter_is_at_least_retry_after(clock: vr.ManualClock) -> None:
    delays: list[float] = []
    fn = Flaky(*[vr.RateLimitError("x", retry_after=5) for _ in range(3)], clock=clock)
    cfg = vr.RetryConfig(max_attempts=4, base_delay=0.5, jitter=True)
    vr.Retrier(cfg, clock=clock, on_retry=lambda a, e, d: delays.append(d)).call(fn)
    assert len(delays) == 3
    assert all(d >= 5.0 for d in delays)


# --------------------------------------------------- running out of attempts --


@pytest.mark.parametrize("mode", MODES)
def test_last_error_reraised_unchanged(clock: vr.ManualClock, mode: str) -> None:
    root = OSError("connection reset")
    fn = Always(lambda: vr.UnavailableError("down", root), clock=clock)
    retrier = vr.Retrier(NO_JITTER, clock=clock)
    with pytest.raises(vr.UnavailableError) as info:
        run(retrier, fn, mode)
    err = info.value
    assert err is fn.errors[-1]
    assert len(fn.errors) == 5
    assert type(err) is vr.UnavailableError
    assert err.message == "down"
    assert err.__cause__ is root
    assert err.cause is root
    assert err.attempts == 5
    assert retrier.exhausted == 1
    assert retrier.retries == 4
    # earlier errors are not chained onto the last one
    assert err.__context__ is None or err.__context__ is root


def test_attempts_is_max_attempts_for_every_config(clock: vr.ManualClock) -> None:
    for n in (1, 2, 3, 7):
        fn = Always(lambda: vr.RetryableError("x"), clock=clock)
        with pytest.raises(vr.RetryableError) as info:
            vr.Retrier(NO_JITTER.replace(max_attempts=n), clock=clock).call(fn)
        assert info.value.attempts == n
        assert fn.calls == n


@pytest.mark.parametrize("mode", MODES)
def test_no_sleep_after_the_last_attempt(clock: vr.ManualClock, mode: str) -> None:
    cfg = vr.RetryConfig(max_attempts=3, base_delay=10.0, max_delay=100.0, jitter=False)
    fn = Always(lambda: vr.RetryableError("x"), clock=clock)
    with pytest.raises(vr.RetryableError):
        run(vr.Retrier(cfg, clock=clock), fn, mode)
    assert fn.times == [0.0, 10.0, 30.0]
    assert clock.now() == 30.0  # not 70: the 40 s delay after attempt 3 never ran


def test_success_on_the_last_attempt(clock: vr.ManualClock) -> None:
    fn = Flaky(*[vr.OperationTimeoutError("t") for _ in range(4)], clock=clock)
    retrier = vr.Retrier(NO_JITTER, clock=clock)
    assert retrier.call(fn) == "ok"
    assert fn.calls == 5
    assert retrier.exhausted == 0
    assert retrier.retries == 4
    assert clock.now() == 7.5


def test_success_first_time_does_not_sleep(clock: vr.ManualClock) -> None:
    retrier = vr.Retrier(NO_JITTER, clock=clock)
    assert retrier.call(lambda x, *, y: x + y, 1, y=2) == 3
    assert clock.now() == 0.0
    assert retrier.retries == 0


def test_args_and_kwargs_are_forwarded_each_attempt(clock: vr.ManualClock) -> None:
    seen = []

    def fn(a, b, *, c, fn=None, config=None):
        seen.append((a, b, c, fn, config))
        if len(seen) < 2:
            raise vr.RetryableError("x")
        return a + b + c

    r = vr.Retrier(NO_JITTER, clock=clock)
    assert r.call(fn, 1, 2, c=3, fn="f", config="cfg") == 6
    assert seen == [(1, 2, 3, "f", "cfg")] * 2


# ------------------------------------------------------ overall timeout --


# Regression: the deadline wrapper (now timeouts.call_until) used to catch every
# TimeoutError (asyncio.TimeoutError is the builtin TimeoutError, and
# OperationTimeoutError subclasses it), so an async call with an
# overall timeout wrapped the retrier's own OperationTimeoutError, and any TimeoutError the
# function raised, into a new "deadline exceeded" although no deadline had expired.


@pytest.mark.parametrize("mode", MODES)
def test_timeout_never_sleeps_past_the_deadline(clock: vr.ManualClock, mode: str) -> None:
    fn = Always(lambda: vr.UnavailableError("down"), clock=clock)
    retrier = vr.Retrier(NO_JITTER, clock=clock, timeout=3.0)
    with pytest.raises(vr.OperationTimeoutError) as info:
        run(retrier, fn, mode)
    # attempts at 0, 0.5, 1.5; the next delay (2 s) would end at 3.5 > 3
    assert fn.times == [0.0, 0.5, 1.5]
    assert clock.now() == 1.5
    err = info.value
    assert isinstance(err, TimeoutError)
    assert err.__cause__ is fn.errors[-1]
    assert err.__cause__.attempts == 3
    assert vr.is_retryable(err)


@pytest.mark.parametrize(("timeout", "calls"), [(0.25, 1), (0.5, 1), (1.0, 2), (2.9, 3),
                                              (7.5, 4), (7.6, 5)])
def test_timeout_bounds_total_virtual_time(clock: vr.ManualClock, timeout: float,
                                           calls: int) -> None:
    fn = Always(lambda: vr.RetryableError("x"), clock=clock)
    expected = vr.RetryableError if calls == 5 else vr.OperationTimeoutError
    with pytest.raises(expected):
        vr.Retrier(NO_JITTER, clock=clock, timeout=timeout).call(fn)
    assert fn.calls == calls
    assert clock.now() < timeout


async def test_async_timeout_keeps_the_functions_own_timeout_errors(
        clock: vr.ManualClock) -> None:
    # The deadline (100 s) is far away; the provider itself reports timeouts.
    errors: list[BaseException] = []

    async def provider_times_out():
        errors.append(vr.OperationTimeoutError("provider timed out"))
        raise errors[-1]

    with pytest.raises(vr.OperationTimeoutError) as info:
        await vr.Retrier(NO_JITTER.replace(max_attempts=3), clock=clock,
                         timeout=100.0).call_async(provider_times_out)
    assert info.value is errors[-1]
    assert info.value.attempts == 3


async def test_async_timeout_passes_builtin_timeout_error_through(
        clock: vr.ManualClock) -> None:
    # A builtin TimeoutError is not retryable: raised at once, unchanged, as without timeout.
    err = TimeoutError("socket timed out")

    async def fn():
        raise err

    with pytest.raises(TimeoutError) as info:
        await vr.Retrier(NO_JITTER, clock=clock, timeout=100.0).call_async(fn)
    assert info.value is err


def test_timeout_larger_than_the_budget_lets_attempts_run_out(clock: vr.ManualClock) -> None:
    fn = Always(lambda: vr.RetryableError("x"), clock=clock)
    with pytest.raises(vr.RetryableError) as info:
        vr.Retrier(NO_JITTER, clock=clock, timeout=100.0).call(fn)
    assert info.value.attempts == 5
    assert clock.now() == 7.5


def test_timeout_counts_time_spent_inside_attempts(clock: vr.ManualClock) -> None:
    calls = []

    def slow():
        calls.append(clock.now())
        clock.advance(2.0)  # the attempt itself takes 2 s of virtual time
        raise vr.UnavailableError("slow and down")

    with pytest.raises(vr.OperationTimeoutError) as info:
        vr.Retrier(NO_JITTER, clock=clock, timeout=5.0).call(slow)
    # t=0 attempt ends at 2, sleep .5 -> 2.5, attempt ends at 4.5, 4.5+1 >= 5: give up
    assert calls == [0.0, 2.5]
    assert clock.now() == 4.5
    assert isinstance(info.value.__cause__, vr.UnavailableError)


def test_timeout_retry_after_past_the_deadline(clock: vr.ManualClock) -> None:
    # The error says "come back in 60 s" and the budget ends in 10: give up at once and
    # hand the error itself, retry_after intact, to the caller to requeue.
    fn = Always(lambda: vr.RateLimitError("x", retry_after=60.0), clock=clock)
    retrier = vr.Retrier(NO_JITTER, clock=clock, timeout=10.0)
    with pytest.raises(vr.RateLimitError) as info:
        retrier.call(fn)
    assert fn.calls == 1
    assert clock.now() == 0.0
    assert info.value is fn.errors[0]
    assert info.value.retry_after == 60.0
    assert info.value.attempts == 1
    assert retrier.exhausted == 1


def test_timeout_does_not_touch_non_retryable_errors(clock: vr.ManualClock) -> None:
    err = vr.InvalidSpecError("bad")
    with pytest.raises(vr.InvalidSpecError) as info:
        vr.Retrier(NO_JITTER, clock=clock, timeout=1.0).call(Flaky(err))
    assert info.value is err


def test_success_within_timeout(clock: vr.ManualClock) -> None:
    fn = Flaky(vr.RetryableError("a"), vr.RetryableError("b"), clock=clock)
    assert vr.Retrier(NO_JITTER, clock=clock, timeout=2.0).call(fn) == "ok"
    assert clock.now() == 1.5


async def test_async_timeout_cancels_a_hanging_attempt() -> None:
    # System clock: the deadline is 20 ms; the attempt would take 10 s.
    started = []

    async def hang():
        started.append(1)
        await asyncio.sleep(10)

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(vr.OperationTimeoutError) as info:
        await vr.Retrier(NO_JITTER, timeout=0.02).call_async(hang)
    assert loop.time() - t0 < 1.0
    assert started == [1]
    assert isinstance(info.value.__cause__, ASYNC_TIMEOUT)


# -------------------------------------------------------------- on_retry --


@pytest.mark.parametrize("mode", MODES)
def test_on_retry_gets_attempt_error_and_delay(clock: vr.ManualClock, mode: str) -> None:
    errors = [vr.RetryableError("a"), vr.UnavailableError("b"), vr.OperationTimeoutError("c")]
    fn = Flaky(*errors, clock=clock)
    calls: list[tuple[int, BaseException, float, float]] = []
    retrier = vr.Retrier(NO_JITTER, clock=clock,
                         on_retry=lambda a, e, d: calls.append((a, e, d, clock.now())))
    assert run(retrier, fn, mode) == "ok"
    assert [(a, d) for a, _, d, _ in calls] == [(1, 0.5), (2, 1.0), (3, 2.0)]
    assert [e for _, e, _, _ in calls] == errors
    # called before the sleep it announces
    assert [t for *_, t in calls] == [0.0, 0.5, 1.5]


def test_on_retry_not_called_without_a_retry(clock: vr.ManualClock) -> None:
    calls = []

    def hook(*args: object) -> None:
        calls.append(args)

    vr.Retrier(NO_JITTER, clock=clock, on_retry=hook).call(lambda: 1)
    with pytest.raises(vr.NotFoundError):
        vr.Retrier(NO_JITTER, clock=clock, on_retry=hook).call(Flaky(vr.NotFoundError("x")))
    with pytest.raises(vr.RetryableError):
        vr.Retrier(NO_JITTER.replace(max_attempts=1), clock=clock, on_retry=hook).call(
            Flaky(vr.RetryableError("x")))
    assert calls == []


@pytest.mark.parametrize("mode", MODES)
def test_raising_on_retry_is_logged_and_ignored(clock: vr.ManualClock, mode: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    hook_calls = []

    def hook(attempt, exc, delay):
        hook_calls.append(attempt)
        raise RuntimeError("hook broke")

    fn = Flaky(vr.RetryableError("a"), vr.RetryableError("b"), clock=clock)
    with caplog.at_level(logging.ERROR, logger="virtrigaud_resilience"):
        assert run(vr.Retrier(NO_JITTER, clock=clock, on_retry=hook), fn, mode) == "ok"
    assert hook_calls == [1, 2]
    assert fn.calls == 3
    assert clock.now() == 1.5
    failures = [r for r in caplog.records if "on_retry" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info and r.exc_info[0] is RuntimeError for r in failures)


def test_on_retry_must_be_callable() -> None:
    with pytest.raises(TypeError, match="on_retry"):
        vr.Retrier(NO_JITTER, on_retry=42)  # type: ignore[arg-type]


# ------------------------------------------------------- current_attempt --


@pytest.mark.parametrize("mode", MODES)
def test_current_attempt_counts_from_zero(clock: vr.ManualClock, mode: str) -> None:
    fn = Flaky(*[vr.RetryableError(str(i)) for i in range(3)], clock=clock)
    run(vr.Retrier(NO_JITTER, clock=clock), fn, mode)
    assert fn.attempts == [0, 1, 2, 3]
    assert vr.current_attempt() == 0


def test_current_attempt_outside_any_loop_and_after_failure(clock: vr.ManualClock) -> None:
    assert vr.current_attempt() == 0
    fn = Flaky(*[vr.RetryableError(str(i)) for i in range(9)], clock=clock)
    with pytest.raises(vr.RetryableError):
        vr.Retrier(NO_JITTER, clock=clock).call(fn)
    assert fn.attempts == [0, 1, 2, 3, 4]
    assert vr.current_attempt() == 0


def test_current_attempt_nested_loops(clock: vr.ManualClock) -> None:
    outer_seen, inner_seen = [], []
    outer_failures = [vr.RetryableError("o")]

    def inner():
        inner_seen.append(vr.current_attempt())
        if len(inner_seen) % 2:
            raise vr.RetryableError("i")
        return "inner"

    def outer():
        outer_seen.append(vr.current_attempt())
        vr.Retrier(NO_JITTER, clock=clock).call(inner)
        outer_seen.append(vr.current_attempt())  # restored after the inner loop
        if outer_failures:
            raise outer_failures.pop()
        return "outer"

    assert vr.Retrier(NO_JITTER, clock=clock).call(outer) == "outer"
    assert outer_seen == [0, 0, 1, 1]
    assert inner_seen == [0, 1, 0, 1]


async def test_current_attempt_is_per_task(clock: vr.ManualClock) -> None:
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def make(name: str, failures: int):
        left = [failures]

        async def fn():
            seen[name].append(vr.current_attempt())
            await asyncio.sleep(0)
            seen[name].append(vr.current_attempt())
            if left[0]:
                left[0] -= 1
                raise vr.RetryableError(name)
            return name

        return fn

    r = vr.Retrier(NO_JITTER, clock=clock)
    assert await asyncio.gather(r.call_async(make("a", 2)), r.call_async(make("b", 0))) == [
        "a", "b"]
    assert seen == {"a": [0, 0, 1, 1, 2, 2], "b": [0, 0]}


# ---------------------------------------------------------- cancellation --


def test_keyboard_interrupt_stops_at_once(clock: vr.ManualClock) -> None:
    hook = []
    fn = Flaky(KeyboardInterrupt(), clock=clock)
    retrier = vr.Retrier(NO_JITTER, clock=clock, on_retry=lambda *a: hook.append(a))
    with pytest.raises(KeyboardInterrupt):
        retrier.call(fn)
    assert fn.calls == 1
    assert hook == []
    assert clock.now() == 0.0
    assert retrier.retries == 0


def test_keyboard_interrupt_after_retries_stops_at_once(clock: vr.ManualClock) -> None:
    fn = Flaky(vr.RetryableError("a"), KeyboardInterrupt(), clock=clock)
    with pytest.raises(KeyboardInterrupt):
        vr.Retrier(NO_JITTER, clock=clock).call(fn)
    assert fn.calls == 2
    assert clock.now() == 0.5


@pytest.mark.parametrize("mode", MODES)
def test_cancelled_error_raised_by_the_function_stops_at_once(clock: vr.ManualClock,
                                                              mode: str) -> None:
    fn = Flaky(asyncio.CancelledError(), clock=clock)
    with pytest.raises(asyncio.CancelledError):
        run(vr.Retrier(NO_JITTER, clock=clock), fn, mode)
    assert fn.calls == 1
    assert clock.now() == 0.0


async def test_task_cancel_during_an_attempt_stops_at_once(clock: vr.ManualClock) -> None:
    entered = asyncio.Event()
    calls = []

    async def hang():
        calls.append(1)
        entered.set()
        await asyncio.Event().wait()

    retrier = vr.Retrier(NO_JITTER, clock=clock)
    task = asyncio.create_task(retrier.call_async(hang))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == [1]
    assert retrier.retries == 0
    assert clock.now() == 0.0


async def test_task_cancel_during_backoff_sleep_stops_at_once() -> None:
    # System clock, 20 ms backoff: cancel while sleeping between attempts.
    calls = []
    announced = []

    async def fail():
        calls.append(1)
        raise vr.RetryableError("x")

    cfg = vr.RetryConfig(max_attempts=5, base_delay=0.02, max_delay=0.02, jitter=False)
    retrier = vr.Retrier(cfg, on_retry=lambda *a: announced.append(a))
    task = asyncio.create_task(retrier.call_async(fail))
    for _ in range(50):
        await asyncio.sleep(0)
        if announced:
            break
    await asyncio.sleep(0)  # now inside the 20 ms backoff sleep
    assert calls == [1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.03)  # past the backoff: no second attempt was made
    assert calls == [1]
    assert retrier.retries == 1
    assert retrier.exhausted == 0


# --------------------------------------------------------------- presets --


@pytest.mark.parametrize(("preset", "attempts", "base", "cap", "mult"), [
    (vr.RetryConfig.default, 5, 0.5, 30.0, 2.0),
    (vr.RetryConfig.aggressive, 10, 0.1, 10.0, 1.5),
    (vr.RetryConfig.conservative, 3, 1.0, 60.0, 3.0),
    (vr.RetryConfig.none, 1, None, None, None),
])
def test_presets_drive_the_loop(clock: vr.ManualClock, preset, attempts: int, base, cap,
                                mult) -> None:
    cfg = preset()
    assert cfg.max_attempts == attempts
    delays: list[float] = []
    fn = Always(lambda: vr.UnavailableError("down"), clock=clock)
    with pytest.raises(vr.UnavailableError) as info:
        vr.Retrier(cfg, clock=clock, on_retry=lambda a, e, d: delays.append(d)).call(fn)
    assert fn.calls == attempts
    assert info.value.attempts == attempts
    assert len(delays) == attempts - 1
    for n, d in enumerate(delays):
        nominal = min(base * mult**n, cap)
        assert nominal <= d <= nominal * 1.1 + 1e-12
    assert clock.now() == pytest.approx(sum(delays), abs=1e-6)


def test_preset_values_match_the_guide() -> None:
    a = vr.RetryConfig.aggressive()
    c = vr.RetryConfig.conservative()
    d = vr.RetryConfig.default()
    assert (a.max_attempts, a.base_delay, a.max_delay, a.multiplier) == (10, 0.1, 10.0, 1.5)
    assert (c.max_attempts, c.base_delay, c.max_delay, c.multiplier) == (3, 1.0, 60.0, 3.0)
    assert (d.max_attempts, d.base_delay, d.max_delay, d.multiplier, d.jitter) == (
        5, 0.5, 30.0, 2.0, True)
    assert vr.RetryConfig.none().max_attempts == 1
    assert vr.RetryConfig() == d


def test_default_config_when_none(clock: vr.ManualClock) -> None:
    r = vr.Retrier(None, clock=clock)
    assert r.config == vr.RetryConfig.default()
    fn = Always(lambda: vr.RetryableError("x"))
    with pytest.raises(vr.RetryableError) as info:
        r.call(fn)
    assert info.value.attempts == 5
    assert 7.5 <= clock.now() <= 7.5 * 1.1


def test_config_must_be_a_retry_config() -> None:
    with pytest.raises(TypeError, match="config"):
        vr.Retrier({"max_attempts": 3})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock"):
        vr.Retrier(NO_JITTER, clock=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        vr.Retrier(NO_JITTER, timeout=0)
    with pytest.raises(ValueError, match="timeout"):
        vr.Retrier(NO_JITTER, timeout=-1)


@pytest.mark.parametrize("strategy", vr.STRATEGIES)
def test_every_strategy_stays_within_max_delay(clock: vr.ManualClock, strategy: str) -> None:
    cfg = vr.RetryConfig(max_attempts=8, base_delay=0.5, max_delay=4.0, strategy=strategy)
    delays: list[float] = []
    fn = Always(lambda: vr.RetryableError("x"))
    with pytest.raises(vr.RetryableError):
        vr.Retrier(cfg, clock=clock, on_retry=lambda a, e, d: delays.append(d)).call(fn)
    assert len(delays) == 7
    limit = 4.0 * 1.1 if strategy == "exponential" else 4.0
    assert all(0.0 <= d <= limit for d in delays)
    assert clock.now() == pytest.approx(sum(delays), abs=1e-6)


# -------------------------------------------------------------- counters --


def test_counters_accumulate_over_calls(clock: vr.ManualClock) -> None:
    r = vr.Retrier(NO_JITTER.replace(max_attempts=3), clock=clock)
    r.call(Flaky(vr.RetryableError("a")))                       # 1 retry
    with pytest.raises(vr.RetryableError):
        r.call(Always(lambda: vr.RetryableError("b")))          # 2 retries, exhausted
    with pytest.raises(vr.NotFoundError):
        r.call(Flaky(vr.NotFoundError("c")))                    # 0
    r.call(lambda: 1)                                           # 0
    with pytest.raises(vr.RetryableError):
        r.call(Always(lambda: vr.RetryableError("d")))          # 2 retries, exhausted
    assert r.retries == 5
    assert r.exhausted == 2


def test_giving_up_at_the_timeout_counts_as_exhausted(clock: vr.ManualClock) -> None:
    # As tenacity's stop_after_delay: the time budget ran out, retrying stopped.
    r = vr.Retrier(NO_JITTER, clock=clock, timeout=1.0)
    with pytest.raises(vr.OperationTimeoutError):
        r.call(Always(lambda: vr.RetryableError("x")))
    assert r.retries == 1
    assert r.exhausted == 1


def test_no_retries_configured_is_never_exhausted(clock: vr.ManualClock) -> None:
    r = vr.Retrier(vr.RetryConfig.none(), clock=clock)
    with pytest.raises(vr.RetryableError):
        r.call(Always(lambda: vr.RetryableError("x")))
    assert (r.retries, r.exhausted) == (0, 0)


# --------------------------------------------------- retry / retry_async --
# These use the system clock: delays are a millisecond or two.

FAST = vr.RetryConfig(max_attempts=3, base_delay=0.001, max_delay=0.002, jitter=False)


def test_retry_function() -> None:
    fn = Flaky(vr.UnavailableError("a"), vr.RetryableError("b"))
    assert vr.retry(FAST, fn, 1, k=2) == "ok"
    assert fn.calls == 3
    assert fn.attempts == [0, 1, 2]


def test_retry_function_passes_args() -> None:
    calls = []

    def add(a, b, *, c=0):
        calls.append((a, b, c))
        return a + b + c

    assert vr.retry(FAST, add, 1, 2, c=3) == 6
    assert calls == [(1, 2, 3)]


def test_retry_function_exhausts() -> None:
    fn = Always(lambda: vr.UnavailableError("down"))
    with pytest.raises(vr.UnavailableError) as info:
        vr.retry(FAST, fn)
    assert info.value is fn.errors[-1]
    assert info.value.attempts == 3


def test_retry_function_non_retryable() -> None:
    fn = Flaky(ValueError("bad"))
    with pytest.raises(ValueError):
        vr.retry(FAST, fn)
    assert fn.calls == 1


def test_retry_function_none_config_is_the_default() -> None:
    # default config: a non-retryable error means no sleep at all
    fn = Flaky(vr.ConflictError("dup"))
    with pytest.raises(vr.ConflictError):
        vr.retry(None, fn)
    assert fn.calls == 1


async def test_retry_async_function() -> None:
    fn = Flaky(vr.UnavailableError("a"), vr.RetryableError("b"))
    assert await vr.retry_async(FAST, fn.call_async) == "ok"
    assert fn.calls == 3
    assert fn.attempts == [0, 1, 2]


async def test_retry_async_function_exhausts_and_non_retryable() -> None:
    fn = Always(lambda: vr.OperationTimeoutError("t"))
    with pytest.raises(vr.OperationTimeoutError) as info:
        await vr.retry_async(FAST, fn.call_async)
    assert info.value is fn.errors[-1]
    assert info.value.attempts == 3
    fn2 = Flaky(vr.QuotaExceededError("full"))
    with pytest.raises(vr.QuotaExceededError):
        await vr.retry_async(FAST, fn2.call_async)
    assert fn2.calls == 1


async def test_retry_async_passes_args() -> None:
    async def add(a, b, *, c=0):
        return a + b + c

    assert await vr.retry_async(FAST, add, 1, 2, c=3) == 6


# -------------------------------------------------------------- retry_on --


class Transient(Exception):
    pass


@pytest.mark.parametrize("retry_on", [ConnectionError, (KeyError, ConnectionError),
                                      lambda e: isinstance(e, ConnectionError)],
                         ids=["type", "tuple", "predicate"])
def test_retry_on_retries_more_than_the_taxonomy(clock: vr.ManualClock, retry_on: object) -> None:
    config = NO_JITTER.replace(retry_on=retry_on)
    fn = Flaky(ConnectionRefusedError("down"), ConnectionResetError("reset"), clock=clock)
    assert vr.Retrier(config, clock=clock).call(fn) == "ok"
    assert fn.calls == 3
    # what retry_on does not name is still not retried
    other = Flaky(Transient("x"), clock=clock)
    with pytest.raises(Transient):
        vr.Retrier(config, clock=clock).call(other)
    assert other.calls == 1
    # the taxonomy is still retried
    assert vr.Retrier(config, clock=clock).call(Flaky(vr.UnavailableError("u"))) == "ok"


@pytest.mark.parametrize("bad, message", [
    (KeyboardInterrupt, "Exception subclasses"),
    ((ConnectionError, asyncio.CancelledError), "Exception subclasses"),
    ((ConnectionError, "x"), "Exception subclasses"),
    (42, "exception type, a tuple of them or a callable"),
    ("ConnectionError", "exception type, a tuple of them or a callable"),
])
def test_retry_on_is_validated(bad: object, message: str) -> None:
    with pytest.raises(TypeError, match=rf"RetryConfig retry_on must be .*{message}"):
        vr.RetryConfig(retry_on=bad)  # type: ignore[arg-type]


# ------------------------------------------------------- async refused by retry --


async def _async_ok() -> str:
    return "never"


def test_retry_refuses_an_async_function() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match=r"retry_async"):
            vr.retry(NO_JITTER, _async_ok)  # type: ignore[arg-type]


# --------------------------------------------------- one Retrier per config --


def test_retry_reuses_one_retrier_per_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    retry_module = importlib.import_module("virtrigaud_resilience.retry")
    # Every Retrier registers itself as it is built: count constructions (a
    # Retrier built per call and dropped at once leaves the census as it was,
    # so its size cannot tell).
    built: list[object] = []
    track = retry_module.RETRIERS.track
    monkeypatch.setattr(retry_module.RETRIERS, "track",
                        lambda obj: (built.append(obj), track(obj)))
    config = vr.RetryConfig(max_attempts=2, base_delay=0.0, max_delay=0.0)
    assert vr.retry(config, int, "7") == 7
    for _ in range(100):
        assert vr.retry(config, int, "7") == 7
    assert len(built) == 1  # one Retrier for the config, none per call
    assert retry_module._retrier_for(config) is built[0]
    assert vr.retry(None, int, "1") == 1  # None: the default config, cached too
    assert vr.retry(None, int, "1") == 1
    assert len(built) <= 2
    with pytest.raises(TypeError, match="config"):
        vr.retry({"max_attempts": 3}, int, "1")  # type: ignore[arg-type]


def test_retry_cache_stays_bounded_and_evicts_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    retry_module = importlib.import_module("virtrigaud_resilience.retry")
    monkeypatch.setattr(retry_module, "_RETRIERS_BY_CONFIG", {})
    configs = [vr.RetryConfig(max_attempts=1 + i, base_delay=0.0, max_delay=0.0)
               for i in range(retry_module._RETRIERS_CACHE_SIZE + 1)]
    first = retry_module._retrier_for(configs[0])
    for config in configs[1:]:
        assert vr.retry(config, int, "3") == 3
    assert len(retry_module._RETRIERS_BY_CONFIG) == retry_module._RETRIERS_CACHE_SIZE
    assert configs[0] not in retry_module._RETRIERS_BY_CONFIG  # the oldest went
    assert retry_module._retrier_for(configs[0]) is not first  # built again
    assert retry_module._retrier_for(configs[-1]) is retry_module._retrier_for(configs[-1])


# ------------------------------------- a deadline that coincides with a cancel --


@pytest.mark.skipif(not hasattr(asyncio.Task, "cancelling"), reason="Task.cancelling: 3.11+")
async def test_retrier_timeout_coinciding_with_an_outside_cancel_stays_cancelled(
        deadline_with_outside_cancel: None) -> None:
    calls: list[int] = []

    async def slow() -> None:
        calls.append(1)
        await asyncio.Event().wait()

    task = asyncio.create_task(vr.Retrier(NO_JITTER, timeout=0.005).call_async(slow))
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5.0)  # bounded: a regression must fail, not hang
    assert calls == [1]
