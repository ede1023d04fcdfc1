"""PolicyBuilder.with_adaptive_bulkhead / with_adaptive_rate: each attempt of
a policy inside the adaptive limits, its outcome their signal."""

from __future__ import annotations

import asyncio

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience.policy import AdaptivePolicy
from virtrigaud_resilience.providers import mark_reached

NO_WAIT = vr.RetryConfig(max_attempts=3, base_delay=0.0, max_delay=0.0, jitter=False)


def test_each_attempt_holds_a_slot_and_is_its_sample() -> None:
    clock = vr.ManualClock()
    ab = vr.AdaptiveBulkhead(vr.AIMD(10), clock=clock, min_samples=1, min_window=0.1,
                             max_window=0.1)
    policy = vr.PolicyBuilder("p").with_retry(NO_WAIT).with_adaptive_bulkhead(ab) \
        .with_clock(clock).build()
    assert isinstance(policy, AdaptivePolicy) and policy.adaptive_bulkhead is ab
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
    assert isinstance(policy, AdaptivePolicy)
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
