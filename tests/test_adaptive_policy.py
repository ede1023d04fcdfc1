"""PolicyBuilder.with_adaptive_bulkhead / with_adaptive_rate: each attempt of
a policy inside the adaptive limits, its outcome their signal."""

from __future__ import annotations

import asyncio

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience.policy import AdaptiveBulkheadPolicy, AdaptivePolicy
from virtrigaud_resilience.providers import mark_reached

NO_WAIT = vr.RetryConfig(max_attempts=3, base_delay=0.0, max_delay=0.0, jitter=False)


def test_each_attempt_holds_a_slot_and_is_its_sample() -> None:
    clock = vr.ManualClock()
    ab = vr.AdaptiveBulkhead(vr.AIMD(10), clock=clock, min_samples=1, min_window=0.1,
                             max_window=0.1)
    policy = vr.PolicyBuilder("p").with_retry(NO_WAIT).with_adaptive_bulkhead(ab) \
        .with_clock(clock).build()
    assert type(policy) is AdaptiveBulkheadPolicy and policy.adaptive_bulkhead is ab
    seen = []

    def call() -> str:
        seen.append(ab.in_flight)
        clock.advance(0.2)
        if len(seen) < 3:
            raise vr.UnavailableError("down")  # a drop: the window closes and backs off
        return "ok"

    assert policy.execute(call) == "ok"
    assert seen == [1, 1, 1] and ab.in_flight == 0
    assert ab.limit == 8  # two drop windows: 10 -> 9 -> 8; the success (1 in flight) holds


def test_a_full_adaptive_bulkhead_is_a_retryable_refusal_not_a_sample() -> None:
    clock = vr.ManualClock()
    ab = vr.AdaptiveBulkhead(vr.AIMD(1), clock=clock, min_samples=1)
    policy = vr.PolicyBuilder("p").with_adaptive_bulkhead(ab).with_clock(clock).build()
    held = ab.acquire()
    with pytest.raises(vr.RateLimitError, match="adaptive bulkhead full"):
        policy.execute(lambda: None)
    held.ignore()
    assert ab._take_window()[0] == 0  # the refusal recorded nothing


def test_the_adaptive_rate_learns_from_the_providers_throttles_only() -> None:
    clock = vr.ManualClock()
    bucket = vr.TokenBucket(20, 1, clock=clock)
    policy = vr.PolicyBuilder("p").with_rate_limiter(bucket).with_adaptive_rate() \
        .with_clock(clock).build()
    assert type(policy) is AdaptivePolicy  # no adaptive bulkhead: the native execute
    rate = policy.adaptive_rate
    assert rate is not None and rate.bucket is bucket
    policy.execute(lambda: None)
    with pytest.raises(vr.RateLimitError, match="rate limit exceeded"):
        policy.execute(lambda: None)  # our own bucket refuses: burst 1
    assert rate.throttles == 0
    clock.advance(1.0)

    def throttled() -> None:
        raise mark_reached(vr.RateLimitError("quota", retry_after=0.0))

    with pytest.raises(vr.RateLimitError, match="quota"):
        policy.execute(throttled)
    assert rate.throttles == 1 and bucket.qps < 20


def test_with_adaptive_rate_needs_a_limiter() -> None:
    with pytest.raises(ValueError, match="with_adaptive_rate.. needs a rate limiter"):
        vr.PolicyBuilder("p").with_adaptive_rate().build()
    with pytest.raises(TypeError, match="PolicyBuilder adaptive_bulkhead must be"):
        vr.PolicyBuilder("p").with_adaptive_bulkhead(vr.Bulkhead(3))  # type: ignore[arg-type]


def test_a_coroutine_refused_by_execute_leaves_nothing_held() -> None:
    ab = vr.AdaptiveBulkhead(vr.AIMD(2), min_samples=1)
    policy = vr.PolicyBuilder("p").with_adaptive_bulkhead(ab).build()

    async def coro() -> None:
        pass

    with pytest.raises(TypeError):
        policy.execute(coro)
    assert ab.in_flight == 0


async def test_async_attempts_queue_for_a_slot() -> None:
    clock = vr.ManualClock()
    ab = vr.AdaptiveBulkhead(vr.AIMD(1), clock=clock, max_queue=4, min_samples=1)
    policy = vr.PolicyBuilder("p").with_adaptive_bulkhead(ab).build()
    peak = []

    async def call(i: int) -> int:
        peak.append(ab.in_flight)
        await asyncio.sleep(0)
        return i

    assert await asyncio.gather(*(policy.execute_async(call, i) for i in range(4))) == \
        [0, 1, 2, 3]
    assert max(peak) == 1 and ab.in_flight == 0


# ------------------------------------------------ Config and ResilientProvider --


def test_rate_limit_adaptive_is_a_bool() -> None:
    assert vr.Config.from_env({"RATE_LIMIT_ADAPTIVE": "true"}).rate_limit.adaptive is True
    assert vr.Config().rate_limit.adaptive is False
    with pytest.raises(TypeError, match="RateLimitConfig adaptive must be a bool"):
        vr.RateLimitConfig(adaptive=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="RATE_LIMIT_ADAPTIVE must be one of true, false"):
        vr.Config.from_env({"RATE_LIMIT_ADAPTIVE": "yes"})


async def provider_quota_answers(adaptive: bool) -> tuple[int, float, object]:
    """A ResilientProvider at 20/s over the fake's 15/s quota, called in a
    loop for 120 virtual seconds: (quota answers, the bucket's rate, the provider)."""
    from virtrigaud_resilience.providers import ResilientProvider
    from virtrigaud_resilience.providers.fake import FaultInjectingProvider, Quota

    clock = vr.ManualClock()
    fake = FaultInjectingProvider(1, clock=clock, latency=0.01, quota=Quota(15, 20))
    config = vr.Config.from_env({"RATE_LIMIT_QPS": "20", "RATE_LIMIT_BURST": "20",
                                 "RATE_LIMIT_ADAPTIVE": "true" if adaptive else "false",
                                 "RETRY_BASE_DELAY": "10ms", "RETRY_MAX_ATTEMPTS": "5"})
    provider = ResilientProvider(fake, "libvirt", "lab", config, clock=clock, wait=True)
    while clock.now() < 120:
        await provider.validate()
    return fake.injected[vr.ErrorType.RATE_LIMIT], provider.limiter.qps, provider


async def test_resilient_provider_learns_the_quota_with_rate_limit_adaptive() -> None:
    static_answers, static_rate, _ = await provider_quota_answers(adaptive=False)
    answers, rate, provider = await provider_quota_answers(adaptive=True)
    assert static_rate == 20
    assert rate < 20
    assert answers * 5 < static_answers, (answers, static_answers)
    # Every operation reports to the one controller of the shared bucket.
    controller = vr.AdaptiveRate.for_bucket(provider.limiter)  # type: ignore[attr-defined]
    policies = [provider.policy(op) for op in ("validate", "describe", "create")]  # type: ignore[attr-defined]
    assert all(isinstance(p, AdaptivePolicy) and p.adaptive_rate is controller
               for p in policies)


def _counting_rate(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call the policies make into any AdaptiveRate, by method name."""
    calls: list[str] = []
    for name in ("refresh", "on_success", "observe", "on_throttle"):
        original = getattr(vr.AdaptiveRate, name)

        def counted(self: vr.AdaptiveRate, *args: object, _name: str = name,
                    _original: object = original, **kwargs: object) -> object:
            calls.append(_name)
            return _original(self, *args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(vr.AdaptiveRate, name, counted)
    return calls


async def test_a_success_never_reaches_the_adaptive_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The success path stays native: no Python frame between the policy
    and the call, and the controller hears nothing of a success."""
    calls = _counting_rate(monkeypatch)
    policy = vr.PolicyBuilder("p").with_retry(NO_WAIT) \
        .with_rate_limiter(vr.TokenBucket(1000, 1000)).with_adaptive_rate().build()
    assert type(type(policy).__dict__["execute"]).__name__ == "method_descriptor"
    assert type(type(policy).__dict__["execute_async"]).__name__ == "method_descriptor"

    async def ok_async() -> str:
        return "ok"

    for _ in range(50):
        assert policy.execute(lambda: "ok") == "ok"
        assert await policy.execute_async(ok_async) == "ok"
    assert calls == []
    assert policy.limiter is not None and policy.limiter.admitted == 100  # what it measures


def sending_at_20_per_second(clock: vr.ManualClock, retry: vr.RetryConfig | None) -> tuple[
        vr.Policy, vr.TokenBucket, vr.AdaptiveRate]:
    """A policy with an adaptive rate on a bucket of 20/s that has sent
    20 calls/s for 2 s (the measured rate a throttle decreases from)."""
    bucket = vr.TokenBucket(20, 20, clock=clock)
    builder = vr.PolicyBuilder("p").with_rate_limiter(bucket).with_adaptive_rate()
    if retry is not None:
        builder.with_retry(retry)
    policy = builder.with_clock(clock).build()
    rate = policy.adaptive_rate  # type: ignore[attr-defined]
    assert rate is not None
    for _ in range(40):
        clock.advance(0.05)
        policy.execute(lambda: None)
    return policy, bucket, rate


@pytest.mark.parametrize("use_async", [False, True])
async def test_every_attempts_throttle_reaches_the_rate_once(use_async: bool) -> None:
    """The first attempt's throttle (the native path's failure) and each
    retry's: one throttle each, never counted twice."""
    clock = vr.ManualClock()
    policy, bucket, rate = sending_at_20_per_second(clock, NO_WAIT)

    def throttled() -> None:
        clock.advance(1.0)  # apart: each throttle is a new signal
        raise mark_reached(vr.RateLimitError("quota", retry_after=0.0))

    async def throttled_async() -> None:
        throttled()

    with pytest.raises(vr.RateLimitError, match="quota"):
        if use_async:
            await policy.execute_async(throttled_async)
        else:
            policy.execute(throttled)
    assert rate.throttles == 3 and bucket.qps < 20


def test_the_growth_comes_when_the_limiter_binds(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a throttle, the rate grows along CUBIC's curve at the next
    refusal of the limiter (the first moment its rate matters), not on a
    success."""
    clock = vr.ManualClock()
    policy, bucket, rate = sending_at_20_per_second(clock, None)

    def throttled() -> None:
        raise mark_reached(vr.RateLimitError("quota", retry_after=0.0))

    with pytest.raises(vr.RateLimitError):
        policy.execute(throttled)
    lowered = rate.rate
    assert lowered < 20
    refused = changed_on_success = 0
    for _ in range(100):  # 20 calls/s offered for 5 s
        clock.advance(0.05)
        before = rate.rate
        try:
            policy.execute(lambda: None)
        except vr.RateLimitError:
            refused += 1
        else:
            changed_on_success += rate.rate != before
    assert refused > 0 and changed_on_success == 0
    assert rate.rate > lowered
