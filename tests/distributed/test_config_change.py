"""Rolling config changes: buckets of one key built with different rates converge.

Each exact bucket registers the config it was built with (its emission
interval and burst, so its tolerance) and the server time of its first
registration in the members set next to the key; every member decides with
the newest (the latest born's), logs the mismatch once with both values and
counts it. The tests shorten the registration interval.
"""

from __future__ import annotations

import logging
import time

import pytest
from test_fair_share import learn

from virtrigaud_resilience.distributed import RedisTokenBucket, connect
from virtrigaud_resilience.distributed import exact as exact_module


@pytest.fixture(autouse=True)
def _register_often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exact_module, "_REGISTER_EVERY", 0.02)


def test_the_fleet_converges_to_the_newest_config(redis_url: str, key: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="virtrigaud_resilience")
    old = RedisTokenBucket(connect(redis_url), key, qps=100, burst=10)
    assert old.try_acquire()  # registered first: born first
    time.sleep(0.01)
    new = RedisTokenBucket(connect(redis_url), key, qps=400, burst=40)
    learn([old, new], 2)
    deadline = time.monotonic() + 5.0
    while (old.qps, old.burst) != (400, 40):
        assert time.monotonic() < deadline, (old.qps, old.burst)
        old.try_acquire()
        time.sleep(0.025)
    assert (new.qps, new.burst) == (400, 40) and new.config_changes == 0
    assert old.config_changes == 1
    for _ in range(20):  # logged once, whatever the decisions since
        old.try_acquire()
        time.sleep(0.025)
    mismatches = [r for r in caplog.records
                  if getattr(r, "redis_state", None) == "config_mismatch"]
    assert len(mismatches) == 1 and old.config_changes == 1
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    import virtrigaud_resilience as vr

    vr.metrics.register(registry)
    assert registry.get_sample_value("virtrigaud_distributed_transitions_total", {
        "provider_type": "", "provider": "", "to": "newer_config"}) >= 1
    message = mismatches[0].getMessage()
    assert "newest config is qps=400, burst=40" in message
    assert "built with qps=100, burst=10" in message
    # Nobody starves: after a burst period at the one config, both are granted.
    time.sleep(40 / 400)
    assert old.try_acquire() and new.try_acquire()
    assert old._local is not None and old._local.burst == 40 // 2  # its fair share, resized


def test_a_config_from_no_bucket_is_ignored(redis_url: str, key: str) -> None:
    import redis

    b = RedisTokenBucket(connect(redis_url), key, qps=100, burst=10)
    admin = redis.Redis.from_url(redis_url)
    admin.zadd(key + ":members", {"forged 0 0 99999999999999": 9e15})  # newest, impossible
    admin.close()
    for _ in range(5):
        assert b.try_acquire()
        time.sleep(0.025)
    assert (b.qps, b.burst) == (100, 10) and b.config_changes == 0
