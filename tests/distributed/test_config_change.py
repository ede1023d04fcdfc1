"""Rolling config changes: buckets of one key built with different rates converge.

Each exact bucket registers the config it was built with (its qps and
burst) and the server time of its first registration in the members set
next to the key; each leased bucket does in its field of the lease table.
Every member decides with the newest (the latest born's), logs the mismatch
once with both values and counts it. The exact tests shorten the
registration interval.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from test_fair_share import learn
from test_faults import eventually
from test_fleet_faults import TIMESTAMP_SLACK, most_in_a_window

from virtrigaud_resilience.distributed import LeasedTokenBucket, RedisTokenBucket, connect
from virtrigaud_resilience.distributed import exact as exact_module


@pytest.fixture
def _register_often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exact_module, "_REGISTER_EVERY", 0.02)


def newer_config_transitions() -> float:
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    import virtrigaud_resilience as vr

    vr.metrics.register(registry)
    return registry.get_sample_value("virtrigaud_distributed_transitions_total", {
        "provider_type": "", "provider": "", "to": "newer_config"}) or 0.0


@pytest.mark.usefixtures("_register_often")
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
    assert newer_config_transitions() >= 1
    message = mismatches[0].getMessage()
    assert "newest config is qps=400, burst=40" in message
    assert "built with qps=100, burst=10" in message
    # Nobody starves: after a burst period at the one config, both are granted.
    time.sleep(40 / 400)
    assert old.try_acquire() and new.try_acquire()
    assert old._local is not None and old._local.burst == 40 // 2  # its fair share, resized


@pytest.mark.usefixtures("_register_often")
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


LEASE, REFRESH = 1.0, 0.2


@pytest.mark.parametrize(("old_config", "new_config"), [((100.0, 10), (300.0, 30)),
                                                        ((300.0, 30), (100.0, 10))])
def test_a_leased_fleet_converges_to_the_newest_config(
        redis_url: str, key: str, caplog: pytest.LogCaptureFixture,
        old_config: tuple[float, int], new_config: tuple[float, int]) -> None:
    caplog.set_level(logging.WARNING, logger="virtrigaud_resilience")
    client = connect(redis_url)
    counted_before = newer_config_transitions()

    def member(config: tuple[float, int]) -> LeasedTokenBucket:
        return LeasedTokenBucket(client, key, qps=config[0], burst=config[1], lease=LEASE,
                                 refresh=REFRESH)

    old = member(old_config)  # its first lease: born first
    assert old.shared
    new = member(new_config)
    buckets = [old, new]
    admitted: list[float] = []
    stop = threading.Event()

    def hammer(bucket: LeasedTokenBucket) -> None:
        while not stop.is_set():
            if bucket.try_acquire():
                admitted.append(time.monotonic())
            else:
                time.sleep(0.0005)

    threads = [threading.Thread(target=hammer, args=(b,)) for b in buckets]
    shares: list[float] = []
    try:
        for t in threads:
            t.start()
        eventually(lambda: (old.fleet_qps, old.fleet_burst) == new_config, within=3.0)
        converged = time.monotonic()
        # The leases granted under the old config are over within a lease;
        # from then on the fleet runs at the newest config: no more (each
        # share within it, admissions within qps*w + burst), and most of it.
        while time.monotonic() < converged + LEASE + 2 * REFRESH:
            time.sleep(0.01)
        measured = time.monotonic()
        while time.monotonic() < measured + 1.5:
            shares.append(old.qps + new.qps)
            time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join()
        qps, burst = new_config
        assert max(shares) <= qps * 1.0001, max(shares)  # (rates: whole ns per token)
        after = [t for t in admitted if t >= measured]
        for width in (0.5, 1.0):
            assert most_in_a_window(after, width) <= qps * width + burst + TIMESTAMP_SLACK
        assert len(after) >= 0.6 * qps * (max(after) - measured)
        assert (new.fleet_qps, new.fleet_burst) == new_config and new.config_changes == 0
        assert old.config_changes == 1
        mismatches = [r for r in caplog.records
                      if getattr(r, "redis_state", None) == "config_mismatch"]
        assert len(mismatches) == 1  # the old member's, once, however many leases since
        message = mismatches[0].getMessage()
        assert f"newest config is qps={qps:g}, burst={burst}" in message
        assert f"built with qps={old_config[0]:g}, burst={old_config[1]}" in message
        assert newer_config_transitions() >= counted_before + 1
    finally:
        stop.set()
        for b in buckets:
            b.close()
        client.close()


def test_a_leased_member_with_an_impossible_config_is_ignored(redis_url: str, key: str) -> None:
    import redis

    admin = redis.Redis.from_url(redis_url)
    seconds, micros = admin.time()
    now_us = (seconds - 1_600_000_000) * 1_000_000 + micros  # the scripts' clock
    # A member holding a lease that wants nothing, whose config is the newest
    # but none a bucket could have (qps above 1e9; then a fractional burst).
    for forged in ("forged 1e12 5 99999999999999", "forged 100 2.5 99999999999999"):
        admin.hset(key, forged, f"0 0 0 {now_us + 60_000_000} 0 0 0")
        b = LeasedTokenBucket(connect(redis_url), key, qps=100, burst=10)
        try:
            assert b.shared and (b.fleet_qps, b.fleet_burst) == (100, 10)
            assert b.qps == pytest.approx(100 / 2) and b.config_changes == 0  # two members
        finally:
            b.close()
            b.client.close()
        admin.delete(key)
    admin.close()
