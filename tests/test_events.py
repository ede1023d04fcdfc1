"""Process-wide events (``vr.events``) and the breaker's transition logging.

Every global listener a test adds goes through the ``listeners`` fixture, which
removes it afterwards, so no test leaks into another. Time moves only through
a ManualClock; nothing sleeps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience import BreakerState

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN
LOGGER = "virtrigaud_resilience"


class Boom(Exception):
    """A plain failure: counts toward opening a breaker."""


class ListenerBug(Exception):
    """What a broken listener raises."""


def fail() -> None:
    raise Boom("boom")


def ok() -> str:
    return "ok"


def broken(*args: object) -> None:
    raise ListenerBug("listener bug")


def flaky(failures: int) -> Callable[[], str]:
    """Raises UnavailableError ``failures`` times, then returns "done"."""
    left = [failures]

    def call() -> str:
        if left[0] > 0:
            left[0] -= 1
            raise vr.UnavailableError(f"down ({left[0]} left)")
        return "done"

    return call


def breaker(clock: vr.ManualClock, name: str = "cb", threshold: int = 1, half_open: int = 1,
            provider_type: str = "vsphere", provider: str = "prod") -> vr.CircuitBreaker:
    config = vr.BreakerConfig(failure_threshold=threshold, reset_timeout=30.0,
                              half_open_max_calls=half_open)
    return vr.CircuitBreaker(name, provider_type, provider, config, clock=clock)


def outage(cb: vr.CircuitBreaker, clock: vr.ManualClock) -> None:
    """closed -> open -> half-open -> closed, for a threshold-1, one-probe breaker."""
    with pytest.raises(Boom):
        cb.call(fail)
    clock.advance(cb.reset_timeout)
    assert cb.call(ok) == "ok"
    assert cb.state is CLOSED


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]


def assert_logged_listener_bugs(caplog: pytest.LogCaptureFixture, count: int,
                                description: str) -> None:
    records = errors_logged(caplog)
    assert len(records) == count
    for record in records:
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], ListenerBug)
        assert description in record.getMessage()
        assert "failed" in record.getMessage()


Register = Callable[[Callable[..., Any]], Callable[..., Any]]


@pytest.fixture
def listeners() -> Iterator[list[Callable[..., Any]]]:
    """Global listeners to remove after the test (append what you register)."""
    added: list[Callable[..., Any]] = []
    try:
        yield added
    finally:
        for listener in added:
            vr.events.remove_listener(listener)


def listen(added: list[Callable[..., Any]], register: Register,
           listener: Callable[..., Any]) -> Callable[..., Any]:
    added.append(listener)
    return register(listener)


# ------------------------------------------------------------- state change --


def test_on_state_change_sees_every_breaker(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[tuple[str, BreakerState, BreakerState]] = []

    def record(b: vr.CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
        assert type(old) is BreakerState and type(new) is BreakerState
        seen.append((b.name, old, new))

    assert listen(listeners, vr.events.on_state_change, record) is record
    a, b = breaker(clock, "a"), breaker(clock, "b")
    outage(a, clock)
    b.force_open()
    b.reset()
    assert seen == [("a", CLOSED, OPEN), ("a", OPEN, HALF_OPEN), ("a", HALF_OPEN, CLOSED),
                    ("b", CLOSED, OPEN), ("b", OPEN, CLOSED)]


def test_on_state_change_as_decorator_and_removal(clock: vr.ManualClock) -> None:
    seen: list[BreakerState] = []

    @vr.events.on_state_change
    def record(b: vr.CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
        seen.append(new)

    try:
        assert callable(record)
        cb = breaker(clock)
        with pytest.raises(Boom):
            cb.call(fail)
        assert seen == [OPEN]
    finally:
        assert vr.events.remove_listener(record) is True
    assert vr.events.remove_listener(record) is False
    cb.reset()
    assert seen == [OPEN]


def test_state_change_from_policies_and_async_calls(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[tuple[str, BreakerState]] = []
    listen(listeners, vr.events.on_state_change, lambda b, old, new: seen.append((b.name, new)))
    cb = breaker(clock, "policy-breaker")
    policy = vr.PolicyBuilder("p").with_circuit_breaker(cb).with_clock(clock).build()
    with pytest.raises(Boom):
        policy.execute(fail)
    with pytest.raises(vr.CircuitOpenError):
        policy.execute(ok)
    assert seen == [("policy-breaker", OPEN)]


async def test_state_change_from_async_calls(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[BreakerState] = []
    listen(listeners, vr.events.on_state_change, lambda b, old, new: seen.append(new))
    cb = breaker(clock)

    async def fail_async() -> None:
        raise Boom("boom")

    async def ok_async() -> str:
        return "ok"

    with pytest.raises(Boom):
        await cb.call_async(fail_async)
    clock.advance(30)
    assert await cb.call_async(ok_async) == "ok"
    assert seen == [OPEN, HALF_OPEN, CLOSED]


def test_per_breaker_listeners_run_before_global_ones(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    order: list[str] = []
    listen(listeners, vr.events.on_state_change, lambda b, old, new: order.append("global"))
    cb = breaker(clock)
    cb.add_listener(lambda b, old, new: order.append("own-1"))
    cb.add_listener(lambda b, old, new: order.append("own-2"))
    with pytest.raises(Boom):
        cb.call(fail)
    assert order == ["own-1", "own-2", "global"]
    other = breaker(clock, "other")  # its own listeners are its own
    with pytest.raises(Boom):
        other.call(fail)
    assert order == ["own-1", "own-2", "global", "global"]


def test_removing_a_listener_registered_for_every_event(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    calls: list[tuple[Any, ...]] = []

    def anything(*args: Any) -> None:
        calls.append(args)

    for register in (vr.events.on_state_change, vr.events.on_rate_limited, vr.events.on_retry):
        listen(listeners, register, anything)
    listen(listeners, vr.events.on_state_change, anything)  # twice: called twice
    cb = breaker(clock)
    with pytest.raises(Boom):
        cb.call(fail)
    assert len(calls) == 2
    assert vr.events.remove_listener(anything) is True
    assert vr.events.remove_listener(anything) is False
    cb.reset()
    bucket = vr.TokenBucket(1.0, 1, clock=clock)
    bucket.try_acquire()
    assert not bucket.try_acquire()
    assert vr.Retrier(vr.RetryConfig(max_attempts=2, base_delay=0.01), clock=clock).call(
        flaky(1)) == "done"
    assert len(calls) == 2


def test_listener_removing_itself_while_called(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[BreakerState] = []

    def once(b: vr.CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
        seen.append(new)
        vr.events.remove_listener(once)

    listen(listeners, vr.events.on_state_change, once)
    outage(breaker(clock), clock)
    assert seen == [OPEN]


# ------------------------------------------------------------- rate limited --


def test_on_rate_limited_when_try_acquire_refuses(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[tuple[vr.TokenBucket, int]] = []

    def record(bucket: vr.TokenBucket, n: int) -> None:
        seen.append((bucket, n))

    assert listen(listeners, vr.events.on_rate_limited, record) is record
    bucket = vr.TokenBucket(1.0, 5, clock=clock, provider_type="vsphere", provider="prod")
    assert bucket.try_acquire(5)
    assert seen == []  # not on success
    assert not bucket.try_acquire(3)
    assert not bucket.try_acquire()
    assert seen == [(bucket, 3), (bucket, 1)]
    assert seen[0][0].provider_type == "vsphere" and seen[0][0].provider == "prod"
    clock.advance(1)
    assert bucket.try_acquire()
    assert len(seen) == 2


def test_on_rate_limited_when_acquire_must_refuse(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[tuple[vr.TokenBucket, int]] = []
    listen(listeners, vr.events.on_rate_limited, lambda b, n: seen.append((b, n)))
    bucket = vr.TokenBucket(1.0, 4, clock=clock)
    assert bucket.acquire(4, timeout=0)  # full: no wait needed
    assert not bucket.acquire(2, timeout=0)
    assert not bucket.acquire(2, timeout=1.5)  # needs 2 s
    assert seen == [(bucket, 2), (bucket, 2)]
    assert bucket.acquire(2, timeout=2.0)  # waits through the clock: not a refusal
    assert bucket.reserve().delay > 0  # reserve never refuses
    assert len(seen) == 2


def test_on_rate_limited_from_a_policy(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[tuple[vr.TokenBucket, int]] = []
    listen(listeners, vr.events.on_rate_limited, lambda b, n: seen.append((b, n)))
    bucket = vr.TokenBucket(1.0, 1, clock=clock)
    policy = vr.PolicyBuilder("limited").with_rate_limiter(bucket).with_clock(clock).build()
    assert policy.execute(ok) == "ok"
    assert seen == []
    with pytest.raises(vr.RateLimitError):
        policy.execute(ok)
    assert seen == [(bucket, 1)]

    # With retries, each attempt that finds no token is reported.
    retrying = (vr.PolicyBuilder("limited-retry")
                .with_retry(vr.RetryConfig(max_attempts=3, base_delay=0.01, jitter=False))
                .with_rate_limiter(bucket).with_clock(clock).build())
    assert retrying.execute(ok) == "ok"  # the retry waits retry_after for the token
    assert seen == [(bucket, 1), (bucket, 1)]


def test_on_rate_limited_from_a_waiting_policy_past_max_wait(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[tuple[vr.TokenBucket, int]] = []
    listen(listeners, vr.events.on_rate_limited, lambda b, n: seen.append((b, n)))
    bucket = vr.TokenBucket(1.0, 1, clock=clock)
    policy = (vr.PolicyBuilder("waits").with_rate_limiter(bucket, wait=True, max_wait=0.5)
              .with_clock(clock).build())
    assert policy.execute(ok) == "ok"
    with pytest.raises(vr.RateLimitError):
        policy.execute(ok)
    assert len(seen) >= 1 and all(s == (bucket, 1) for s in seen)


def test_waiting_policy_reports_only_real_refusals(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[tuple[vr.TokenBucket, int]] = []
    listen(listeners, vr.events.on_rate_limited, lambda b, n: seen.append((b, n)))
    bucket = vr.TokenBucket(1.0, 1, clock=clock)
    waits = vr.PolicyBuilder("waits-ok").with_rate_limiter(bucket, wait=True).with_clock(clock)
    policy = waits.build()
    assert policy.execute(ok) == "ok"
    assert policy.execute(ok) == "ok"  # waited 1 s on the clock for its token
    assert clock.now() == 1.0
    no_refusal = list(seen)
    impatient = (vr.PolicyBuilder("waits-short").with_rate_limiter(bucket, wait=True, max_wait=0.5)
                 .with_clock(clock).build())
    with pytest.raises(vr.RateLimitError):
        impatient.execute(ok)
    assert (no_refusal, seen) == ([], [(bucket, 1)])


async def test_on_rate_limited_from_an_async_policy(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[tuple[vr.TokenBucket, int]] = []
    listen(listeners, vr.events.on_rate_limited, lambda b, n: seen.append((b, n)))
    bucket = vr.TokenBucket(1.0, 1, clock=clock)
    policy = vr.PolicyBuilder("limited-async").with_rate_limiter(bucket).with_clock(clock).build()

    async def ok_async() -> str:
        return "ok"

    assert await policy.execute_async(ok_async) == "ok"
    with pytest.raises(vr.RateLimitError):
        await policy.execute_async(ok_async)
    assert seen == [(bucket, 1)]


def test_on_rate_limited_from_the_limiter_registry(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[tuple[str, str, int]] = []
    listen(listeners, vr.events.on_rate_limited,
           lambda b, n: seen.append((b.provider_type, b.provider, n)))
    limiters = vr.RateLimiterRegistry(qps=1.0, burst=1, clock=clock)
    limiters.check("libvirt", "lab")
    with pytest.raises(vr.RateLimitError):
        limiters.check("libvirt", "lab")
    with pytest.raises(vr.RateLimitError):
        limiters.wait("libvirt", "lab", max_wait=0.1)
    assert seen == [("libvirt", "lab", 1), ("libvirt", "lab", 1)]


def test_on_rate_limited_not_called_after_removal(clock: vr.ManualClock) -> None:
    seen: list[int] = []

    def record(bucket: vr.TokenBucket, n: int) -> None:
        seen.append(n)

    vr.events.on_rate_limited(record)
    try:
        bucket = vr.TokenBucket(1.0, 1, clock=clock)
        bucket.try_acquire()
        assert not bucket.try_acquire()
        assert seen == [1]
    finally:
        assert vr.events.remove_listener(record) is True
    assert not bucket.try_acquire()
    assert not bucket.acquire(timeout=0)
    assert seen == [1]
    assert vr.events.remove_listener(record) is False


def test_rate_limit_listener_removing_itself(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[int] = []

    def once(bucket: vr.TokenBucket, n: int) -> None:
        seen.append(n)
        vr.events.remove_listener(once)  # uninstalls the native hook while it runs

    listen(listeners, vr.events.on_rate_limited, once)
    bucket = vr.TokenBucket(1.0, 1, clock=clock)
    bucket.try_acquire()
    assert not bucket.try_acquire()
    assert not bucket.try_acquire()
    assert seen == [1]


# -------------------------------------------------------------------- retry --


def test_on_retry_before_each_sleep(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[tuple[str, int, str, float, float]] = []

    def record(retrier: vr.Retrier, attempt: int, error: BaseException, delay: float) -> None:
        assert isinstance(retrier, vr.Retrier)
        seen.append((retrier.name, attempt, str(error), delay, clock.now()))

    assert listen(listeners, vr.events.on_retry, record) is record
    policy = (vr.PolicyBuilder("create-vm")
              .with_retry(vr.RetryConfig(max_attempts=5, base_delay=0.5, jitter=False))
              .with_clock(clock).build())
    assert policy.execute(flaky(2)) == "done"
    assert seen == [("create-vm", 1, "Unavailable: down (1 left)", 0.5, 0.0),
                    ("create-vm", 2, "Unavailable: down (0 left)", 1.0, 0.5)]
    assert clock.now() == 1.5
    assert seen[0][0] == policy.retrier.name == policy.name


def test_on_retry_not_called_without_a_retry(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[int] = []
    listen(listeners, vr.events.on_retry, lambda r, attempt, e, d: seen.append(attempt))
    retrier = vr.Retrier(vr.RetryConfig(max_attempts=2, base_delay=0.01), clock=clock)
    assert retrier.call(ok) == "ok"
    with pytest.raises(vr.NotFoundError):  # not retryable
        retrier.call(lambda: (_ for _ in ()).throw(vr.NotFoundError("gone")))
    with pytest.raises(vr.UnavailableError):  # no sleep after the last attempt
        retrier.call(flaky(10))
    assert seen == [1]


def test_per_retrier_hook_runs_before_global_listeners(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    order: list[tuple[str, int, float]] = []
    listen(listeners, vr.events.on_retry,
           lambda retrier, attempt, error, delay: order.append(("global", attempt, delay)))
    retrier = vr.Retrier(vr.RetryConfig(max_attempts=3, base_delay=0.25, jitter=False),
                         clock=clock, name="own",
                         on_retry=lambda attempt, error, delay: order.append(
                             ("own", attempt, delay)))
    assert retrier.call(flaky(2)) == "done"
    assert order == [("own", 1, 0.25), ("global", 1, 0.25), ("own", 2, 0.5), ("global", 2, 0.5)]

    # The policy's builder hook, too.
    order.clear()
    policy = (vr.PolicyBuilder("built")
              .with_retry(vr.RetryConfig(max_attempts=2, base_delay=0.25, jitter=False),
                          on_retry=lambda attempt, error, delay: order.append(
                              ("own", attempt, delay)))
              .with_clock(clock).build())
    assert policy.execute(flaky(1)) == "done"
    assert order == [("own", 1, 0.25), ("global", 1, 0.25)]


async def test_on_retry_async(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]]
) -> None:
    seen: list[tuple[str, int]] = []
    listen(listeners, vr.events.on_retry, lambda r, attempt, e, d: seen.append((r.name, attempt)))
    policy = (vr.PolicyBuilder("async-policy")
              .with_retry(vr.RetryConfig(max_attempts=3, base_delay=0.01))
              .with_clock(clock).build())
    call = flaky(2)

    async def attempt() -> str:
        return call()

    assert await policy.execute_async(attempt) == "done"
    assert seen == [("async-policy", 1), ("async-policy", 2)]


# --------------------------------------------------- listeners that raise --


def test_raising_state_listener_is_logged_and_the_call_unchanged(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    listen(listeners, vr.events.on_state_change, broken)
    later: list[BreakerState] = []
    listen(listeners, vr.events.on_state_change, lambda b, old, new: later.append(new))
    cb = breaker(clock)
    with pytest.raises(Boom):  # the call's own error, not the listener's
        cb.call(fail)
    clock.advance(30)
    assert cb.call(ok) == "ok"  # its own result
    assert later == [OPEN, HALF_OPEN, CLOSED]  # the next listener still ran
    assert_logged_listener_bugs(caplog, 3, "circuit breaker state listener")


def test_raising_rate_limit_listener_is_logged_and_the_call_unchanged(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    listen(listeners, vr.events.on_rate_limited, broken)
    bucket = vr.TokenBucket(1.0, 1, clock=clock)
    assert bucket.try_acquire() is True
    assert bucket.try_acquire() is False
    assert bucket.acquire(timeout=0) is False
    policy = vr.PolicyBuilder("raising-limit").with_rate_limiter(bucket).build()
    with pytest.raises(vr.RateLimitError, match="rate limit exceeded") as info:
        policy.execute(ok)
    assert not isinstance(info.value.__context__, ListenerBug)
    assert_logged_listener_bugs(caplog, 3, "rate limit listener")


def test_raising_retry_listeners_are_logged_and_the_call_unchanged(
    clock: vr.ManualClock, listeners: list[Callable[..., Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    listen(listeners, vr.events.on_retry, broken)
    retrier = vr.Retrier(vr.RetryConfig(max_attempts=3, base_delay=0.01), clock=clock,
                         on_retry=broken)
    assert retrier.call(flaky(2)) == "done"
    assert_logged_listener_bugs(caplog, 4, "listener")
    messages = [r.getMessage() for r in errors_logged(caplog)]
    assert sum("on_retry listener" in m for m in messages) == 2
    assert sum(m.startswith("retry listener") for m in messages) == 2

    caplog.clear()
    with pytest.raises(vr.UnavailableError, match="down") as info:
        retrier.call(flaky(10))
    assert info.value.attempts == 3  # type: ignore[attr-defined]
    assert len(errors_logged(caplog)) == 4


@pytest.mark.parametrize(
    "register", [vr.events.on_state_change, vr.events.on_rate_limited, vr.events.on_retry],
    ids=["state", "rate_limited", "retry"],
)
@pytest.mark.parametrize(
    ("bad", "type_name"), [(42, "int"), ("nope", "str"), (None, "NoneType")],
)
def test_non_callable_listener_refused(register: Register, bad: object, type_name: str) -> None:
    with pytest.raises(TypeError, match=f"listener must be callable, got {type_name}"):
        register(bad)  # type: ignore[arg-type]
    assert vr.events.remove_listener(bad) is False  # type: ignore[arg-type]


def test_non_callable_per_object_hooks_refused(clock: vr.ManualClock) -> None:
    with pytest.raises(TypeError, match="listener must be callable, got int"):
        breaker(clock).add_listener(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_retry must be callable, got str"):
        vr.Retrier(on_retry="nope")  # type: ignore[arg-type]


# ------------------------------------------------------------------ logging --


def test_transitions_are_logged_with_structured_fields(
    clock: vr.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    cb = breaker(clock, "provider-vsphere", provider_type="vsphere", provider="prod-eu")
    outage(cb, clock)
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO, logging.INFO]
    transitions = [("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED")]
    for record, (old, new) in zip(records, transitions):
        message = record.getMessage()
        for part in ("provider-vsphere", "vsphere", "prod-eu", old, new):
            assert part in message
        assert record.breaker == "provider-vsphere"  # type: ignore[attr-defined]
        assert record.provider_type == "vsphere"  # type: ignore[attr-defined]
        assert record.provider == "prod-eu"  # type: ignore[attr-defined]
        assert record.old_state == old  # type: ignore[attr-defined]
        assert record.new_state == new  # type: ignore[attr-defined]


def test_force_open_and_reset_are_logged(
    clock: vr.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    cb = breaker(clock, "manual")
    cb.force_open()
    cb.reset()
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [(r.levelno, r.new_state) for r in records] == [  # type: ignore[attr-defined]
        (logging.WARNING, "OPEN"), (logging.INFO, "CLOSED")]


def test_nothing_logged_for_successful_calls(
    clock: vr.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    cb = breaker(clock, threshold=3)
    for _ in range(10):
        assert cb.call(ok) == "ok"
    with pytest.raises(Boom):  # a failure below the threshold: no transition either
        cb.call(fail)
    assert cb.call(ok) == "ok"
    bucket = vr.TokenBucket(1.0, 1, clock=clock)
    assert bucket.try_acquire()
    assert not bucket.try_acquire()
    assert [r for r in caplog.records if r.name == LOGGER] == []


# ------------------------------------------- interrupts are never swallowed --


def test_a_rate_limit_listener_raising_keyboard_interrupt_propagates_and_leaks_nothing() -> None:
    clock = vr.ManualClock()
    bucket = vr.TokenBucket(qps=1, burst=1, clock=clock)
    bulkhead = vr.Bulkhead(1)
    breaker = vr.CircuitBreaker("ki", "fake", "prod", clock=clock)
    policy = (vr.PolicyBuilder("ki").with_circuit_breaker(breaker).with_rate_limiter(bucket)
              .with_bulkhead(bulkhead).with_clock(clock).build())
    assert bucket.try_acquire()

    def interrupt(b: vr.TokenBucket, n: int) -> None:
        raise KeyboardInterrupt

    vr.events.on_rate_limited(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            bucket.try_acquire()
        with pytest.raises(KeyboardInterrupt):
            policy.execute(lambda: "never")  # refused natively, then interrupted
    finally:
        vr.events.remove_listener(interrupt)
    assert (bulkhead.in_flight, breaker.half_open_calls, breaker.successes) == (0, 0, 0)
    clock.advance(1.0)
    assert policy.execute(lambda: "ok") == "ok"
