"""Redis Cluster dies, hangs and comes back: every client family is handled by the client breaker.

A cluster client raises ``RedisClusterException`` and its subclasses (not
``redis.RedisError``) when no node answers: those, like every error of
redis-py, the OS's and timeouts, open the client breaker; decisions keep the bounds
of test_faults.py (the one that meets the failure within ``BUDGET``, every
later one local), and shared accounting resumes within a probe interval
(exact) or a refresh (leased) of the node's return. Each test runs its own
one-node cluster (``own_cluster``), owning every slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from test_faults import BUDGET, LOCAL, decide_many, eventually, redis_log, timed

from virtrigaud_resilience.distributed import (
    LeasedTokenBucket,
    RedisClientBreaker,
    RedisTokenBucket,
    connect,
)

KEY = "{fleet}:cluster-faults"


def fail_fast_bucket(url: str, **options: Any) -> RedisTokenBucket:
    client = connect(url, cluster=True)
    assert isinstance(client, RedisCluster)
    client_breaker = RedisClientBreaker(client, probe_interval=0.05)
    return RedisTokenBucket(client, KEY, qps=1000, burst=50, client_breaker=client_breaker,
                            **options)


def test_exact_bucket_on_a_cluster_killed_paused_restarted(
        own_cluster: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="virtrigaud_resilience")
    b = fail_fast_bucket(own_cluster.url, local_share=0.5)
    assert all(b.try_acquire() for _ in range(10)) and b.shared

    own_cluster.kill()
    times = decide_many(b, 200)  # each a bool: no RedisClusterException escapes
    assert times[0] < BUDGET and max(times[1:]) < LOCAL
    assert not b.shared and len(redis_log(caplog, "lost")) == 1

    own_cluster.start()  # the same port; the node keeps its slots (nodes.conf)
    assert eventually(lambda: b.shared, within=3.0) < 1.0
    assert b.try_acquire() is True

    own_cluster.pause()
    try:
        times = decide_many(b, 50)
        assert times[0] < BUDGET and max(times[1:]) < LOCAL
        assert not b.shared
    finally:
        own_cluster.resume()
    assert eventually(lambda: b.shared, within=3.0) < 1.0
    assert b.try_acquire() is True
    assert b._fallback_counters()[2:] == (2, 2)
    b.client.close()


async def test_async_exact_bucket_on_a_cluster_killed_and_restarted(own_cluster: Any) -> None:
    client = connect(own_cluster.url, asynchronous=True, cluster=True)
    client_breaker = RedisClientBreaker(client, probe_interval=0.05)
    b = RedisTokenBucket(client, KEY, qps=1000, burst=50, client_breaker=client_breaker,
                         local_share=0.5)
    assert all(await asyncio.gather(*(b.try_acquire_async() for _ in range(10))))
    own_cluster.kill()
    started = time.monotonic()
    granted = await asyncio.gather(*(b.try_acquire_async() for _ in range(100)))
    assert time.monotonic() - started < BUDGET and not b.shared
    assert 25 <= sum(granted) < 100  # the local bucket decided (half the burst, then 500/s)
    started = time.monotonic()
    for _ in range(20):
        await b.try_acquire_async()
    assert time.monotonic() - started < LOCAL
    own_cluster.start()
    started = time.monotonic()
    while not b.shared and time.monotonic() - started < 3.0:
        await asyncio.sleep(0.005)
    assert b.shared and time.monotonic() - started < 1.0
    assert await b.try_acquire_async() is True
    await client.aclose()


def test_a_cluster_client_with_its_own_retries_never_raises_raw(own_cluster: Any) -> None:
    # redis-py's defaults: it retries the lost node itself (1-2 s) before it
    # raises RedisClusterUnreachableError; that stall is the client's, but
    # what it raises is the client breaker's to handle, and every later decision is local.
    client = RedisCluster.from_url(own_cluster.url)
    client_breaker = RedisClientBreaker(client, probe_interval=0.05)
    b = RedisTokenBucket(client, KEY, qps=1000, burst=50, client_breaker=client_breaker,
                         fallback="allow")
    assert b.try_acquire() is True
    own_cluster.kill()
    assert b.try_acquire() is True  # the fallback's: nothing raw escaped
    assert isinstance(client_breaker.last_error, redis.exceptions.RedisClusterException)
    assert not client_breaker.up
    times = decide_many(b, 50)
    assert max(times) < LOCAL
    own_cluster.start()
    eventually(lambda: client_breaker.up, within=5.0)
    client.close()


class FlakyPing(redis.Redis):
    """A real client whose PING fails in ways no outage of ours looks like."""

    failures: list[BaseException]

    def ping(self, **kwargs: Any) -> Any:
        if self.failures:
            raise self.failures.pop(0)
        return super().ping(**kwargs)


def test_the_probe_survives_any_exception(own_server: Any,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="virtrigaud_resilience")
    client = FlakyPing.from_url(own_server.url, socket_timeout=0.25)
    client.failures = [redis.exceptions.RedisClusterUnreachableError("no node"),
                       RuntimeError("a bug"), RuntimeError("a bug again"),
                       redis.exceptions.SlotNotCoveredError("slot 7")]
    client_breaker = RedisClientBreaker(client, probe_interval=0.05)
    b = RedisTokenBucket(client, KEY, qps=1000, burst=50, client_breaker=client_breaker)
    own_server.kill()
    assert isinstance(b.try_acquire(), bool) and not client_breaker.up
    own_server.start()
    # Four failed probes (the RuntimeErrors back off: 0.1 s, then 0.2 s), then back.
    eventually(lambda: client_breaker.up, within=5.0)
    assert client.failures == []
    unexpected = redis_log(caplog, "probe_error")
    assert len(unexpected) == 1 and "RuntimeError" in str(unexpected[0].exc_info)
    assert b.try_acquire() is True


def test_leased_bucket_on_a_cluster_killed_and_restarted(own_cluster: Any) -> None:
    client = connect(own_cluster.url, cluster=True)
    client_breaker = RedisClientBreaker(client, probe_interval=0.05)
    b = LeasedTokenBucket(client, KEY, qps=100, burst=10, lease=0.6, refresh=0.2,
                          local_share=0.5, client_breaker=client_breaker)
    try:
        assert b.shared
        own_cluster.kill()
        lost = time.monotonic()
        eventually(lambda: b.mode == "fallback", within=2.0)
        # Its last refresh was at most a refresh (0.2 s) before the kill.
        assert 0.6 - 0.2 - 0.05 < time.monotonic() - lost < 0.6 + 0.5
        assert b.qps == pytest.approx(50)
        own_cluster.start()
        assert eventually(lambda: b.shared, within=3.0) < 1.0  # a probe, then a refresh
    finally:
        b.close()
        client.close()


def test_a_leased_refresh_stuck_on_a_paused_cluster_falls_back_on_time(
        own_cluster: Any) -> None:
    # A client with long timeouts and its own retries: the refresh under way
    # when the node stops hangs for seconds; the lease still ends when it expires.
    client = RedisCluster.from_url(own_cluster.url, socket_timeout=5)
    b = LeasedTokenBucket(client, KEY, qps=100, burst=10, lease=0.6, refresh=0.2,
                          local_share=0.5,
                          client_breaker=RedisClientBreaker(client, probe_interval=0.05))
    try:
        eventually(lambda: b.shared, within=2.0)
        own_cluster.pause()
        paused = time.monotonic()
        try:
            eventually(lambda: b.mode == "fallback", within=3.0)
            # Never later than the lease's end: at most 0.6 s after the last
            # refresh that got through (plus a loaded machine's wake-up).
            assert time.monotonic() - paused < 0.6 + 0.25
            assert b.qps == pytest.approx(50)
        finally:
            own_cluster.resume()
        eventually(lambda: b.shared, within=15.0)
    finally:
        b.close()
        client.close()
