"""The exact bucket's outage fallback: a fair share of the rate, 1 / the fleet's membership.

Buckets register as members on decisions they make anyway (no extra round
trip); the tests shorten the registration interval (and, where it matters,
how long a member counts) so the fleet is learnt in milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from virtrigaud_resilience.distributed import RedisClientBreaker, RedisTokenBucket, connect
from virtrigaud_resilience.distributed import exact as exact_module
from virtrigaud_resilience.distributed.scripts import companion_key

QPS, BURST = 300, 30


def approx(qps: float) -> Any:
    return pytest.approx(qps, rel=1e-6)  # a rate is kept as whole nanoseconds per token


@pytest.fixture(autouse=True)
def _register_often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exact_module, "_REGISTER_EVERY", 0.02)


def bucket(url: str, key: str, **options: Any) -> RedisTokenBucket:
    client = connect(url)
    return RedisTokenBucket(client, key, qps=QPS, burst=BURST,
                            client_breaker=RedisClientBreaker(client, probe_interval=0.05),
                            **options)


def learn(buckets: list[RedisTokenBucket], members: int) -> None:
    """Decides on every bucket until each has learnt ``members``."""
    deadline = time.monotonic() + 5.0
    while any(b.members != members for b in buckets):
        assert time.monotonic() < deadline, [b.members for b in buckets]
        for b in buckets:
            b.try_acquire()
        time.sleep(0.025)


def test_the_outage_fallback_is_a_fair_share_of_the_last_known_fleet(
        own_server: Any, key: str) -> None:
    fleet = [bucket(own_server.url, key) for _ in range(3)]
    whole = bucket(own_server.url, key, local_share=1.0)  # a fourth member, at its own share
    assert all(b.members == 1 for b in fleet)  # nothing learnt before a decision
    learn([*fleet, whole], 4)
    for b in fleet:
        assert b._local is not None
        assert (b._local.qps, b._local.burst) == (approx(QPS / 4), BURST // 4)
    assert whole._local is not None and (whole._local.qps, whole._local.burst) == (approx(QPS), BURST)

    own_server.kill()
    for b in fleet:
        b.try_acquire()  # meets the failure: the client breaker opens
    assert not any(b.shared for b in fleet)
    started = time.monotonic()
    admitted = 0
    while time.monotonic() - started < 0.5:
        admitted += sum(b.try_acquire() for b in fleet)
        time.sleep(0.001)
    elapsed = time.monotonic() - started
    # Three fair shares: at most 3 * (burst / 4 + qps / 4 * t) (+1 each: a token
    # refilling as the window starts), and each share's burst was granted.
    assert 3 * (BURST // 4) <= admitted <= 3 * (BURST // 4 + QPS / 4 * elapsed + 1)
    assert admitted < QPS * elapsed + BURST  # the fleet's promise kept while Redis is down


def test_a_member_that_stops_deciding_stops_counting(
        monkeypatch: pytest.MonkeyPatch, redis_url: str, key: str) -> None:
    monkeypatch.setattr(exact_module, "_MEMBER_TTL_US", 200_000)
    first, second = bucket(redis_url, key), bucket(redis_url, key)
    learn([first, second], 2)
    assert first._local is not None and first._local.qps == approx(QPS / 2)
    time.sleep(0.3)  # the second no longer decides: it counted 0.2 s
    learn([first], 1)
    assert first._local.qps == approx(QPS) and first._local.burst == BURST


def test_an_asyncio_bucket_registers_on_its_batches(redis_url: str, key: str) -> None:
    sync = bucket(redis_url, key)

    async def run() -> int:
        client = connect(redis_url, asynchronous=True)
        b = RedisTokenBucket(client, key, qps=QPS, burst=BURST)
        try:
            deadline = time.monotonic() + 5.0
            while b.members != 2 or sync.members != 2:
                assert time.monotonic() < deadline, (b.members, sync.members)
                await asyncio.gather(*(b.try_acquire_async() for _ in range(3)))
                sync.try_acquire()
                await asyncio.sleep(0.025)
            return b.members
        finally:
            await client.aclose()

    assert asyncio.run(run()) == 2


@pytest.mark.parametrize("key, expected", [
    ("rate", "{rate}:members"),
    ("{vsphere-prod}:rate", "{vsphere-prod}:rate:members"),
    ("a{b", "{a{b}:members"),
    ("a}b", None),
    ("{}x", None),
])
def test_the_members_key_shares_the_slot_of_the_key(key: str, expected: str | None) -> None:
    from redis.crc import key_slot

    assert companion_key(key, ":members", cluster=True) == expected
    if expected is not None:
        assert key_slot(expected.encode()) == key_slot(key.encode())
    # Off Cluster: named by appending, so an ACL pattern on the key covers it.
    assert companion_key(key, ":members", cluster=False) == key + ":members"


def test_a_cluster_key_with_no_slot_mate_keeps_the_whole_rate(cluster_server: Any) -> None:
    client = connect(cluster_server.url, cluster=True)
    b = RedisTokenBucket(client, "fair-share}test", qps=QPS, burst=BURST)
    for _ in range(5):
        assert b.try_acquire()
    assert b.members == 1 and b._local is not None and b._local.qps == approx(QPS)
    other = RedisTokenBucket(client, "{fair-share}:rate", qps=QPS, burst=BURST)
    peer = RedisTokenBucket(connect(cluster_server.url, cluster=True), "{fair-share}:rate",
                            qps=QPS, burst=BURST)
    learn([other, peer], 2)  # a tagged key's members on Cluster
    client.close()
