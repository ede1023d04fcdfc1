"""An AdaptiveRate on a LeasedTokenBucket (issue 24), against a real redis-server.

Each member reports its learned rate as its demand: the fleet's shares add
up to the provider's quota, not to each member's guess of it. The members
are buckets of this process (threads), each with its own client, as in
test_leased_bucket.py; the provider's quota is one TokenBucket they share.
"""

from __future__ import annotations

import threading
import time

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience.distributed import LeasedTokenBucket, connect
from virtrigaud_resilience.providers import mark_reached

#: The fleet's configured rate is four times the provider's quota.
QUOTA, FLEET_QPS, MEMBERS = 20.0, 80.0, 3
SECONDS = 12.0


def member(url: str, key: str) -> LeasedTokenBucket:
    return LeasedTokenBucket(connect(url), key, qps=FLEET_QPS, burst=8, lease=0.6,
                             refresh=0.2)


class Provider:
    """A quota of QUOTA calls/s for the whole fleet: a throttle beyond it."""

    def __init__(self) -> None:
        self.quota = vr.TokenBucket(QUOTA, 4)
        self.calls: list[tuple[float, bool]] = []  # (when, throttled)
        self._lock = threading.Lock()

    def call(self) -> None:
        admitted = self.quota.try_acquire()
        with self._lock:
            self.calls.append((time.monotonic(), not admitted))
        if not admitted:
            raise mark_reached(vr.RateLimitError("quota exceeded"))

    def rates(self, since: float) -> tuple[float, float]:
        """(calls reaching the provider per second, of them answered) since ``since``."""
        with self._lock:
            recent = [throttled for t, throttled in self.calls if t >= since]
        span = time.monotonic() - since
        return len(recent) / span, recent.count(False) / span


def greedy(policy: vr.Policy, provider: Provider, until: float) -> None:
    """Calls as fast as the member's lease allows (a refusal: 5 ms later)."""
    while time.monotonic() < until:
        try:
            policy.execute(provider.call)
        except vr.RateLimitError:
            time.sleep(0.005)


def test_the_fleet_converges_on_the_providers_quota(redis_url: str, key: str) -> None:
    provider = Provider()
    buckets = [member(redis_url, key) for _ in range(MEMBERS)]
    try:
        rates = [vr.AdaptiveRate.for_bucket(b) for b in buckets]
        assert all(r.leased and r.ceiling == FLEET_QPS for r in rates)
        policies = [vr.PolicyBuilder(f"m{i}").with_rate_limiter(b).with_adaptive_rate(r).build()
                    for i, (b, r) in enumerate(zip(buckets, rates))]
        start = time.monotonic()
        threads = [threading.Thread(target=greedy, args=(p, provider, start + SECONDS))
                   for p in policies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent, answered = provider.rates(since=start + SECONDS * 2 / 3)
    finally:
        for b in buckets:
            b.close()
    # Static, the fleet would send its configured 80/s (three quarters of
    # it throttled). Each member learned to ask for its part of the quota:
    assert all(r.throttles > 0 for r in rates)
    assert sent <= 1.6 * QUOTA, (sent, answered, [r.rate for r in rates])
    assert answered >= 0.6 * QUOTA, (sent, answered, [r.rate for r in rates])
    assert sum(r.rate for r in rates) < FLEET_QPS  # the demands reported, below the config


def test_report_demand_caps_the_members_share(redis_url: str, key: str) -> None:
    capped, other = member(redis_url, key), member(redis_url, key)
    try:
        capped.report_demand(10.0)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (capped.qps <= 10.0 and other.qps >= 65):
            capped.try_acquire()
            other.try_acquire()
            time.sleep(0.01)
        assert capped.qps <= 10.0 and other.qps >= 65  # what it leaves goes to the other
        with pytest.raises(ValueError, match="LeasedTokenBucket qps"):
            capped.report_demand(float("nan"))
    finally:
        capped.close()
        other.close()
