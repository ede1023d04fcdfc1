"""The exact bucket through a backward step of the server's clock (simulated: server_clock's hook).

A member finds a step by comparing the server's TIME with what its own
monotonic clock says TIME should be since its last reply. The exact bucket,
blocked by a backward step (its next token seems 5 s away), is unblocked at
the first registration after it: within one emission interval plus the
step's first second. (The leased fleet through steps, as processes:
test_fleet_faults.py.)
"""

from __future__ import annotations

import time

import pytest
import redis
from test_faults import eventually

from virtrigaud_resilience.distributed import RedisTokenBucket, connect
from virtrigaud_resilience.distributed import exact as exact_module
from virtrigaud_resilience.distributed.server_clock import TEST_TIME_OFFSET


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
