"""PolicyBuilder.with_fallback: the answer instead of the final error, sync and async.

Time is a ManualClock: backoff sleeps advance virtual time, nothing sleeps.
"""

from __future__ import annotations

import asyncio
import types
import uuid
from typing import Any

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience.fallback import fallback_counts
from virtrigaud_resilience.policy import FallbackPolicy

RETRY3 = vr.RetryConfig(max_attempts=3, base_delay=0.5, jitter=False)
MODES = ["sync", "async"]


class Failing:
    """A call that raises a fresh ``make()`` every time, counting calls."""

    def __init__(self, make: Any = lambda: vr.UnavailableError("down")) -> None:
        self.make = make
        self.calls = 0
        self.raised: list[BaseException] = []

    def __call__(self) -> Any:
        self.calls += 1
        error = self.make()
        self.raised.append(error)
        raise error

    async def call_async(self) -> Any:
        await asyncio.sleep(0)
        return self()


def run(policy: vr.Policy, call: Failing, mode: str) -> Any:
    if mode == "sync":
        return policy.execute(call)
    return asyncio.run(policy.execute_async(call.call_async))


def builder(clock: vr.ManualClock, name: str = "fb") -> vr.PolicyBuilder:
    return vr.PolicyBuilder(name).with_clock(clock)


@pytest.mark.parametrize("mode", MODES)
def test_a_value_answers_after_the_retries_ran_out(clock: vr.ManualClock, mode: str) -> None:
    policy = builder(clock).with_retry(RETRY3).with_fallback("cached").build()
    call = Failing()
    assert run(policy, call, mode) == "cached"
    assert call.calls == 3
    assert clock.now() == pytest.approx(0.5 + 1.0)  # both backoff sleeps, then the fallback


@pytest.mark.parametrize("mode", MODES)
def test_a_function_receives_the_final_error(clock: vr.ManualClock, mode: str) -> None:
    seen: list[BaseException] = []

    def answer(error: BaseException) -> str:
        seen.append(error)
        return "default"

    policy = builder(clock).with_retry(RETRY3).with_fallback(answer).build()
    call = Failing()
    assert run(policy, call, mode) == "default"
    assert seen == [call.raised[-1]]
    assert getattr(seen[0], "attempts", None) == 3


@pytest.mark.parametrize("mode", MODES)
def test_the_success_path_returns_the_calls_result(clock: vr.ManualClock, mode: str) -> None:
    policy = builder(clock).with_retry(RETRY3).with_fallback("cached").build()

    async def ok() -> str:
        return "fresh"

    result = policy.execute(lambda: "fresh") if mode == "sync" else asyncio.run(
        policy.execute_async(ok))
    assert result == "fresh"


def test_the_success_path_is_the_policys_native_one() -> None:
    # The fallback lives in the Python continuation only: execute on the
    # subclass is the native method (a specialised copy), never a wrapper,
    # and so is execute_async (its native awaitable).
    assert isinstance(FallbackPolicy.__dict__["execute"], types.MethodDescriptorType)
    assert isinstance(FallbackPolicy.__dict__["execute_async"], types.MethodDescriptorType)


@pytest.mark.parametrize("mode", MODES)
def test_on_an_error_type_leaves_other_errors_raised(clock: vr.ManualClock, mode: str) -> None:
    policy = (builder(clock).with_retry(RETRY3)
              .with_fallback("cached", on=vr.ErrorType.UNAVAILABLE).build())
    not_found = Failing(lambda: vr.NotFoundError("vm gone"))
    with pytest.raises(vr.NotFoundError):
        run(policy, not_found, mode)
    assert not_found.calls == 1
    assert run(policy, Failing(), mode) == "cached"


@pytest.mark.parametrize("mode", MODES)
def test_on_takes_builtin_errors_by_their_taxonomy_type(clock: vr.ManualClock, mode: str) -> None:
    policy = builder(clock).with_fallback("late", on=(vr.ErrorType.TIMEOUT, KeyError)).build()
    assert run(policy, Failing(lambda: TimeoutError("slow")), mode) == "late"
    assert run(policy, Failing(lambda: KeyError("k")), mode) == "late"
    with pytest.raises(ValueError):
        run(policy, Failing(lambda: ValueError("bad")), mode)


@pytest.mark.parametrize("mode", MODES)
def test_on_a_predicate(clock: vr.ManualClock, mode: str) -> None:
    policy = builder(clock).with_fallback(0, on=lambda e: "soft" in str(e)).build()
    assert run(policy, Failing(lambda: RuntimeError("soft failure")), mode) == 0
    with pytest.raises(RuntimeError, match="hard"):
        run(policy, Failing(lambda: RuntimeError("hard failure")), mode)


def open_breaker(clock: vr.ManualClock) -> vr.CircuitBreaker:
    cb = vr.CircuitBreaker("fb-open", "fake", "prod",
                           vr.BreakerConfig(failure_threshold=1, reset_timeout=3600.0),
                           clock=clock)
    with pytest.raises(vr.UnavailableError):
        cb.call(Failing())
    assert cb.state is vr.BreakerState.OPEN
    return cb


@pytest.mark.parametrize("mode", MODES)
def test_an_open_breakers_rejection_falls_back_when_on_includes_it(
        clock: vr.ManualClock, mode: str) -> None:
    seen: list[BaseException] = []
    policy = (builder(clock).with_retry(RETRY3).with_circuit_breaker(open_breaker(clock))
              .with_fallback(lambda e: seen.append(e) or "cached",
                             on=vr.CircuitOpenError).build())
    call = Failing()
    assert run(policy, call, mode) == "cached"
    assert call.calls == 0
    assert isinstance(seen[0], vr.CircuitOpenError)


@pytest.mark.parametrize("mode", MODES)
def test_a_rejection_on_does_not_include_is_raised(clock: vr.ManualClock, mode: str) -> None:
    policy = (builder(clock).with_circuit_breaker(open_breaker(clock))
              .with_fallback("cached", on=vr.ErrorType.NOT_FOUND).build())
    with pytest.raises(vr.CircuitOpenError):
        run(policy, Failing(), mode)


@pytest.mark.parametrize("mode", MODES)
def test_a_rate_limited_call_falls_back(clock: vr.ManualClock, mode: str) -> None:
    bucket = vr.TokenBucket(qps=0.001, burst=1, clock=clock)
    assert bucket.try_acquire()
    policy = (builder(clock).with_rate_limiter(bucket)
              .with_fallback("later", on=vr.ErrorType.RATE_LIMIT).build())
    call = Failing()
    assert run(policy, call, mode) == "later"
    assert call.calls == 0


def test_a_full_bulkheads_rejection_falls_back(clock: vr.ManualClock) -> None:
    policy = builder(clock).with_bulkhead(1).with_fallback("busy", on=vr.RateLimitError).build()
    release = asyncio.Event()

    async def hold() -> str:
        await release.wait()
        return "held"

    async def main() -> tuple[str, str]:
        holder = asyncio.ensure_future(policy.execute_async(hold))
        await asyncio.sleep(0)
        second = await policy.execute_async(Failing().call_async)
        release.set()
        return await holder, second

    assert asyncio.run(main()) == ("held", "busy")


@pytest.mark.parametrize("mode", MODES)
def test_the_fallbacks_own_error_has_the_final_error_as_context(
        clock: vr.ManualClock, mode: str) -> None:
    def broken(error: BaseException) -> Any:
        raise LookupError("no cached copy")

    policy = builder(clock).with_retry(RETRY3).with_fallback(broken).build()
    call = Failing()
    with pytest.raises(LookupError) as caught:
        run(policy, call, mode)
    assert caught.value.__context__ is call.raised[-1]


def test_an_async_fallback_is_awaited(clock: vr.ManualClock) -> None:
    async def cached(error: BaseException) -> str:
        await asyncio.sleep(0)
        return f"cached after {type(error).__name__}"

    policy = builder(clock).with_fallback(cached).build()
    assert asyncio.run(policy.execute_async(Failing().call_async)) == \
        "cached after UnavailableError"


def test_a_sync_call_refuses_an_async_fallback(clock: vr.ManualClock) -> None:
    async def cached(error: BaseException) -> str:
        return "never"

    policy = builder(clock).with_fallback(cached).build()
    with pytest.raises(TypeError, match="execute_async") as caught:
        policy.execute(Failing())
    assert isinstance(caught.value.__context__, vr.UnavailableError)


def test_a_cancellation_never_falls_back(clock: vr.ManualClock) -> None:
    answered: list[BaseException] = []
    policy = builder(clock).with_fallback(lambda e: answered.append(e)).build()

    async def hang() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.ensure_future(policy.execute_async(hang))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert answered == []


def test_a_policy_with_a_timeout_falls_back_on_its_python_path(clock: vr.ManualClock) -> None:
    policy = (builder(clock).with_retry(RETRY3).with_timeout(60.0)
              .with_fallback("cached").build())
    call = Failing()
    assert policy.execute(call) == "cached"
    assert call.calls == 3


def test_the_decorator_falls_back(clock: vr.ManualClock) -> None:
    policy = builder(clock).with_fallback(lambda e: "decorated").build()

    @policy
    def fetch(vm: str) -> str:
        raise vr.UnavailableError(vm)

    assert fetch("vm-1") == "decorated"


def test_fallbacks_are_counted_by_policy_and_reason(clock: vr.ManualClock) -> None:
    name = f"fb-{uuid.uuid4().hex[:8]}"
    policy = (builder(clock, name).with_circuit_breaker(open_breaker(clock))
              .with_fallback("x").build())
    plain = builder(clock, name).with_fallback("x").build()
    policy.execute(Failing())
    plain.execute(Failing(lambda: vr.NotFoundError("gone")))
    plain.execute(Failing(lambda: ValueError("odd")))
    plain.execute(Failing(lambda: ValueError("odd")))
    counts = {reason: n for (policy_name, reason), n in fallback_counts().items()
              if policy_name == name}
    assert counts == {"CircuitOpen": 1, "NotFound": 1, "Other": 2}


def test_the_metric_series(clock: vr.ManualClock) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    name = f"fb-{uuid.uuid4().hex[:8]}"
    registry = prometheus_client.CollectorRegistry()
    vr.metrics.register(registry)
    try:
        builder(clock, name).with_fallback("x").build().execute(Failing())
        value = registry.get_sample_value("virtrigaud_fallback_total",
                                          {"policy": name, "reason": "Unavailable"})
    finally:
        vr.metrics.unregister(registry)
    assert value == 1


@pytest.mark.parametrize(("answer", "match"), [
    (ValueError("x"), "not an exception"),
    (ValueError, "not an exception"),
    (asyncio.sleep(0), "not an awaitable"),
])
def test_a_fallback_that_is_neither_callable_nor_a_value(answer: Any, match: str) -> None:
    with pytest.raises(TypeError, match=f"PolicyBuilder fallback .*{match}"):
        vr.PolicyBuilder("bad").with_fallback(answer)


@pytest.mark.parametrize(("on", "error"), [
    (KeyboardInterrupt, TypeError),
    ((vr.ErrorType.TIMEOUT, 42), TypeError),
    ("Timeout", TypeError),
    ((), ValueError),
])
def test_a_bad_on(on: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="PolicyBuilder on"):
        vr.PolicyBuilder("bad").with_fallback("x", on=on)


def test_without_a_fallback_build_makes_a_plain_policy() -> None:
    assert type(vr.PolicyBuilder("plain").build()) is vr.Policy
