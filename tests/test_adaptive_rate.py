"""AdaptiveRate: CUBIC on a TokenBucket's rate, as botocore's adaptive retry mode.

The reference below transcribes botocore's CubicCalculator, RateClocker and
ClientRateLimiter.on_receiving_response (written independently of
adaptive_rate.py); with update_interval=0 the controller must set the
bucket's rate the reference computes after every response. All on a
ManualClock: deterministic, no real waiting.
"""

from __future__ import annotations

import math
import time

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience.providers import mark_never_sent, mark_reached
from virtrigaud_resilience.bench.adaptive import quota_run


class ReferenceBotocore:
    """botocore.retries.adaptive + bucket, with our floor and ceiling."""

    def __init__(self, start: float, ceiling: float, floor: float = 0.5) -> None:
        self.ceiling, self.floor = ceiling, floor
        # CubicCalculator(starting_max_rate=0.5, start_time, 0.4, 0.7)
        self.w_max, self.scale, self.beta = 0.5, 0.4, 0.7
        self.k = ((self.w_max * (1 - self.beta)) / self.scale) ** (1 / 3.0)
        self.last_fail = start
        # RateClocker(clock, smoothing=0.8, time_bucket_range=0.5)
        self.measured, self.count = 0.0, 0
        self.last_bucket = math.floor(start)
        self.enabled = False
        self.rate = ceiling

    def record(self, t: float) -> float:
        bucket = math.floor(t * 2) / 2
        self.count += 1
        if bucket > self.last_bucket:
            current = self.count / float(bucket - self.last_bucket)
            self.measured = current * 0.8 + self.measured * 0.2
            self.count = 0
            self.last_bucket = bucket
        return self.measured

    def response(self, t: float, throttled: bool) -> None:
        measured = self.record(t)
        if not throttled:
            if not self.enabled:
                return
            new = self.scale * ((t - self.last_fail) - self.k) ** 3 + self.w_max
        else:
            rate_to_use = measured if not self.enabled else min(measured, self.rate)
            self.w_max = rate_to_use
            self.k = ((self.w_max * (1 - self.beta)) / self.scale) ** (1 / 3.0)
            self.last_fail = t
            new = rate_to_use * self.beta
            self.enabled = True
        self.rate = max(self.floor, min(new, 2 * measured, self.ceiling))


def test_the_rate_follows_botocore_response_by_response() -> None:
    clock = vr.ManualClock(100.0)
    bucket = vr.TokenBucket(100, 100, clock=clock)
    rate = vr.AdaptiveRate(bucket, update_interval=0)
    reference = ReferenceBotocore(clock.now(), 100.0)
    # Responses 37 ms apart (27/s), throttled in bursts: the rate falls to
    # the floor's side, climbs along the curve and reaches twice the
    # measured rate (54/s) within each calm stretch.
    moved = set()
    capped = 0
    for i in range(6000):
        clock.advance(0.037)
        throttled = i % 600 in (0, 1, 2, 300)
        bucket.reserve()  # the call's token: the controller counts the bucket's tokens
        if throttled:
            rate.on_throttle()
        else:
            rate.on_success()
        reference.response(clock.now(), throttled)
        if reference.enabled:
            assert rate.rate == pytest.approx(reference.rate, rel=1e-6, abs=1e-6), i
            moved.add(round(rate.rate, 1))
            capped += rate.rate == pytest.approx(2 * rate.measured_rate)
    assert len(moved) > 20  # the rate moved: the comparison means something
    assert capped > 100  # and the 2x cap bound it


def test_never_above_the_configured_rate_nor_below_floor() -> None:
    clock = vr.ManualClock()
    bucket = vr.TokenBucket(20, 20, clock=clock)
    rate = vr.AdaptiveRate(bucket, floor=2.0, update_interval=0)
    for _ in range(40):  # throttle after throttle: down to the floor, not below
        clock.advance(0.01)
        bucket.reserve()
        rate.on_throttle()
    assert rate.rate == pytest.approx(2.0)
    for _ in range(20000):  # a long calm: back up to 20, not beyond
        clock.advance(0.01)
        bucket.reserve()
        rate.on_success()
    assert rate.rate == pytest.approx(20.0)


def test_only_the_providers_rate_limit_is_a_throttle() -> None:
    clock = vr.ManualClock()
    rate = vr.AdaptiveRate(vr.TokenBucket(20, 20, clock=clock))
    rate.observe(vr.RateLimitError("rate limit exceeded (ours)"))   # our bucket's refusal
    rate.observe(mark_reached(mark_never_sent(vr.RateLimitError("bulkhead full"))))
    rate.observe(vr.UnavailableError("down"))
    assert rate.throttles == 0 and not rate.enabled
    rate.observe(mark_reached(vr.RateLimitError("quota")))
    assert rate.throttles == 1 and rate.enabled


def test_retry_after_makes_the_bucket_spend_nothing_until_then() -> None:
    clock = vr.ManualClock()
    bucket = vr.TokenBucket(20, 20, clock=clock)
    rate = vr.AdaptiveRate(bucket)
    for _ in range(10):
        clock.advance(0.05)
        bucket.reserve()
        rate.on_success()
    rate.on_throttle(retry_after=2.0)
    assert rate.pauses == 1
    clock.advance(1.99)
    assert not bucket.try_acquire()
    clock.advance(0.02)
    assert bucket.try_acquire()
    rate.on_success()  # the first success after the pause restores the learned rate
    assert bucket.qps >= rate.floor and bucket.burst >= 1
    assert bucket.qps < 20


def test_a_retry_after_shorter_than_the_token_spacing_changes_nothing() -> None:
    clock = vr.ManualClock()
    bucket = vr.TokenBucket(10, 10, clock=clock)
    rate = vr.AdaptiveRate(bucket)
    rate.on_throttle(retry_after=0.001)
    assert rate.pauses == 0


@pytest.mark.parametrize("headers", [
    {"RateLimit-Remaining": "0", "RateLimit-Reset": "3"},
    {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "3"},
])
def test_spent_quota_headers_pause_until_the_reset(headers: dict[str, str]) -> None:
    clock = vr.ManualClock()
    bucket = vr.TokenBucket(20, 20, clock=clock)
    rate = vr.AdaptiveRate(bucket)
    rate.observe_headers(headers)
    assert rate.pauses == 1 and rate.throttles == 0
    clock.advance(2.9)
    assert not bucket.try_acquire()
    clock.advance(0.2)
    assert bucket.try_acquire()


def test_an_x_ratelimit_reset_may_be_a_unix_time() -> None:
    clock = vr.ManualClock()
    bucket = vr.TokenBucket(20, 20, clock=clock)
    rate = vr.AdaptiveRate(bucket)
    rate.observe_headers({"X-RateLimit-Remaining": "0",
                          "X-RateLimit-Reset": str(int(time.time()) + 30)})
    clock.advance(20)
    assert not bucket.try_acquire()


def test_quota_left_changes_nothing_and_malformed_headers_are_counted() -> None:
    clock = vr.ManualClock()
    bucket = vr.TokenBucket(20, 20, clock=clock)
    rate = vr.AdaptiveRate(bucket)
    rate.observe_headers({"RateLimit-Remaining": "5", "RateLimit-Reset": "3"})
    assert rate.pauses == 0 and rate.malformed_headers == 0
    for bad in ({"RateLimit-Remaining": "zero", "RateLimit-Reset": "3"},
                {"RateLimit-Remaining": "0", "RateLimit-Reset": "nan"},
                {"RateLimit-Remaining": "0"},
                {"X-RateLimit-Remaining": "-1", "X-RateLimit-Reset": "1"},
                {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1e400"}):
        rate.observe_headers(bad)
    assert rate.malformed_headers == 5 and rate.pauses == 0
    assert bucket.try_acquire()


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"beta": 0.0}, ValueError, r"AdaptiveRate beta must be in \(0, 1\)"),
    ({"beta": 1.0}, ValueError, r"AdaptiveRate beta must be in \(0, 1\)"),
    ({"beta": float("nan")}, ValueError, "AdaptiveRate beta must be finite"),
    ({"floor": 0}, ValueError, "AdaptiveRate floor must be > 0"),
    ({"floor": 25}, ValueError, r"AdaptiveRate floor must be <= the bucket's rate \(20\)"),
    ({"floor": float("inf")}, ValueError, "AdaptiveRate floor must be finite"),
    ({"scale": -1}, ValueError, "AdaptiveRate scale must be > 0"),
    ({"scale": "0.4"}, TypeError, "AdaptiveRate scale must be a number"),
    ({"update_interval": float("nan")}, ValueError, "AdaptiveRate update_interval"),
])
def test_bad_input_names_the_field(kwargs: dict[str, object], error: type[Exception],
                                   message: str) -> None:
    with pytest.raises(error, match=message):
        vr.AdaptiveRate(vr.TokenBucket(20, 20), **kwargs)  # type: ignore[arg-type]


def test_the_bucket_must_be_a_bucket() -> None:
    with pytest.raises(TypeError, match="AdaptiveRate bucket must be a TokenBucket"):
        vr.AdaptiveRate(object())  # type: ignore[arg-type]
    rate = vr.AdaptiveRate(vr.TokenBucket(20, 20))
    with pytest.raises(ValueError, match="AdaptiveRate retry_after must be finite"):
        rate.on_throttle(float("inf"))


async def test_call_async_observes_the_outcome() -> None:
    clock = vr.ManualClock()
    rate = vr.AdaptiveRate(vr.TokenBucket(20, 20, clock=clock))

    async def throttled() -> None:
        raise mark_reached(vr.RateLimitError("quota"))

    with pytest.raises(vr.RateLimitError):
        await rate.call_async(throttled)
    assert rate.throttles == 1
    assert rate.call(lambda: 3) == 3


def test_the_demos_quota_is_learned() -> None:
    """The bench's scenario (bench/adaptive.py): a greedy caller through a
    20/s bucket to a provider whose quota is 15/s, burst 20."""
    static_share, _ = quota_run(adaptive=False)
    share, admitted = quota_run(adaptive=True)
    assert static_share > 0.2       # today: a quarter of the calls answered RateLimit
    assert share <= 0.03            # the target
    assert admitted >= 0.9 * 15


def test_a_burst_of_throttles_of_calls_sent_together_decreases_once() -> None:
    clock = vr.ManualClock()
    bucket = vr.TokenBucket(20, 20, clock=clock)
    rate = vr.AdaptiveRate(bucket, update_interval=0)
    for _ in range(20):
        clock.advance(0.05)
        bucket.reserve()
        rate.on_success()
    sent = bucket._now_ns()
    clock.advance(0.05)
    rate.on_throttle(sent_ns=sent)
    once = rate.rate
    for _ in range(5):  # sent before that decrease: it already corrected their rate
        rate.on_throttle(sent_ns=sent)
    assert rate.rate == once and rate.throttles == 6
    clock.advance(0.05)
    rate.on_throttle(sent_ns=bucket._now_ns())  # within its time bucket: not seen yet
    assert rate.rate == once
    clock.advance(0.5)
    rate.on_throttle(sent_ns=bucket._now_ns())  # sent after it took effect: a new signal
    assert rate.rate < once
    clock.advance(0.05)
    rate.on_throttle()  # no send time: botocore's rule, every throttle decreases
    assert rate.throttles == 9


def test_tokens_reserved_before_a_decrease_count_as_sent_before_it() -> None:
    clock = vr.ManualClock()
    bucket = vr.TokenBucket(20, 1, clock=clock)
    rate = vr.AdaptiveRate(bucket, update_interval=0)
    for _ in range(20):
        clock.advance(0.05)
        bucket.reserve()
        rate.on_success()
    for _ in range(10):  # ten callers queued for tokens: half a second of them
        bucket.reserve()
    rate.on_throttle(sent_ns=bucket._now_ns())
    once = rate.rate
    clock.advance(0.2)  # one of the reserved calls goes out now, and is throttled
    rate.on_throttle(sent_ns=bucket._now_ns())
    assert rate.rate == once


def test_the_metrics_show_the_learned_rate_throttles_and_malformed_headers() -> None:
    pytest.importorskip("prometheus_client")
    from virtrigaud_resilience.metrics import ResilienceCollector

    clock = vr.ManualClock()
    bucket = vr.TokenBucket(20, 20, clock=clock, provider_type="libvirt", provider="metrics-t")
    rate = vr.AdaptiveRate(bucket)
    bulkhead = vr.AdaptiveBulkhead(vr.AIMD(7), provider_type="libvirt", provider="metrics-t")
    for _ in range(10):
        clock.advance(0.05)
        bucket.reserve()
        rate.on_success()
    rate.on_throttle()
    rate.observe_headers({"RateLimit-Remaining": "x", "RateLimit-Reset": "1"})
    labels = {"provider_type": "libvirt", "provider": "metrics-t"}
    found = {}
    for family in ResilienceCollector().collect():
        for sample in family.samples:
            if sample.labels == labels:
                found[sample.name] = sample.value
    assert found["virtrigaud_adaptive_rate_qps"] == pytest.approx(rate.rate)
    assert found["virtrigaud_adaptive_rate_throttles_total"] == 1
    assert found["virtrigaud_adaptive_rate_malformed_headers_total"] == 1
    assert found["virtrigaud_adaptive_bulkhead_limit"] == 7
    assert bulkhead.limit == 7
