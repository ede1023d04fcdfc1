"""Steps of the server's clock (TIME), simulated with server_clock's test hook.

A member finds a step by comparing the server's TIME with what its own
monotonic clock says TIME should be since its last reply. The leased table's
expiries then move with the step, once: a forward step (+10 s) frees no
share still in use (the sum of the leases in force never exceeds the rate,
and admissions stay within qps*w + burst), a backward one (-5 s) holds no
share longer (a member joining after it gets its share within a lease, not
a lease plus the step). The exact bucket, blocked by a backward step (its
next token seems 5 s away), is unblocked at the first registration after it:
within one emission interval plus the step's first second.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from test_faults import eventually
from test_lost_table import BURST, QPS, TIMESTAMP_SLACK, most_in_a_window

from virtrigaud_resilience.distributed import (
    LeasedTokenBucket,
    RedisGuard,
    RedisTokenBucket,
    connect,
)
from virtrigaud_resilience.distributed import exact as exact_module
from virtrigaud_resilience.distributed.server_clock import TEST_TIME_OFFSET

LEASE, REFRESH = 2.0, 0.5


def step_leased_clock(url: str, key: str, seconds: float) -> None:
    admin = redis.Redis.from_url(url)
    admin.hset(key, TEST_TIME_OFFSET, round(seconds * 1e6))
    admin.close()


@pytest.mark.parametrize("step", [10.0, -5.0])
def test_the_leased_fleet_keeps_its_bound_through_a_clock_step(redis_url: str, key: str,
                                                               step: float) -> None:
    client = connect(redis_url)
    guard = RedisGuard(client, probe_interval=0.05)

    def member() -> LeasedTokenBucket:
        return LeasedTokenBucket(client, key, qps=QPS, burst=BURST, lease=LEASE,
                                 refresh=REFRESH, guard=guard)

    buckets = [member() for _ in range(3)]
    admitted: list[float] = []
    shares: list[float] = []
    stop = threading.Event()

    def hammer(bucket: LeasedTokenBucket) -> None:
        while not stop.is_set():
            if bucket.try_acquire():
                admitted.append(time.monotonic())
            else:
                time.sleep(0.0005)

    threads = [threading.Thread(target=hammer, args=(b,)) for b in buckets]
    try:
        eventually(lambda: all(b.members == 3 for b in buckets), within=3.0)
        for t in threads:
            t.start()
        time.sleep(2 * REFRESH)
        step_leased_clock(redis_url, key, step)
        stepped = time.monotonic()
        if step > 0:
            # The leases in force never sum to more than the rate.
            while time.monotonic() - stepped < LEASE + 2 * REFRESH:
                shares.append(sum(b.qps for b in buckets))
                time.sleep(0.005)
            assert max(shares) <= QPS * 1.0001, max(shares)  # (rates: whole ns per token)
        else:
            late = member()  # the others' leases were granted before the step
            threads.append(threading.Thread(target=hammer, args=(late,)))
            threads[-1].start()
            buckets.append(late)
            # Its share within a lease and two refreshes (the others' lowered
            # leases are held one lease), not that plus the 5 s of the step.
            waited = eventually(lambda: late.qps >= QPS / 8, within=LEASE + 2 * REFRESH + 1.5)
            assert waited < abs(step)
        stop.set()
        for t in threads:
            t.join()
        for width in (0.5, 1.0, 2.0):
            assert most_in_a_window(admitted, width) <= QPS * width + BURST + TIMESTAMP_SLACK
    finally:
        stop.set()
        for b in buckets:
            b.close()
        client.close()


def test_a_backward_step_blocks_the_exact_bucket_one_interval_at_most(
        monkeypatch: pytest.MonkeyPatch, redis_url: str, key: str) -> None:
    # Every take registers, so every take sees the simulated step (the hook
    # lives in the members set, which only registrations read): the step is
    # found by the first take after it, where by default it is found within
    # the second after it.
    monkeypatch.setattr(exact_module, "_REGISTER_EVERY", 0.0)
    # The key lives until the bucket is full again (by Redis's own clock,
    # which the hook does not step): a 5 s burst keeps it through the test.
    qps, burst = 20.0, 100
    b = RedisTokenBucket(connect(redis_url), key, qps=qps, burst=burst)
    while b.try_acquire():  # drained: the next token is one interval away
        pass
    admin = redis.Redis.from_url(redis_url)
    admin.zadd(key + ":members", {TEST_TIME_OFFSET: 9e15 - 5e6})  # TIME 5 s back
    admin.close()
    stepped = time.monotonic()
    assert b.try_acquire() is False  # the step is found; the bucket is capped at empty-now
    eventually(b.try_acquire, within=3.0)
    # One emission interval (50 ms), plus a loaded machine's delays; not 5 s.
    assert time.monotonic() - stepped < 1 / qps + 1.0
    assert b.shared and b.members == 1
    b.client.close()
