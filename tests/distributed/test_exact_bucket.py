"""RedisTokenBucket against a real redis-server: exact GCRA semantics, sync and asyncio.

Rates here are slow (a token per 100 ms or more) so that the few
milliseconds between two decisions never refill a token: the tests can
count tokens exactly without a fake clock (time comes from the server).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
import redis.asyncio
import virtrigaud_resilience as vr
from redis.cluster import RedisCluster
from virtrigaud_resilience.distributed import RedisTokenBucket, connect
from virtrigaud_resilience.distributed.exact import GCRA


def bucket(url: str, key: str, **options: Any) -> RedisTokenBucket:
    options.setdefault("qps", 5)
    options.setdefault("burst", 3)
    return RedisTokenBucket(connect(url), key, **options)


def assert_waits(value: float, high: float, since: float, eps: float = 0.005) -> None:
    """``value`` (a retry_after or a reservation's delay) is the wait ``high``
    would be if Redis had decided at ``since`` (time.monotonic(), taken before
    the first take), less the time passed since: a loaded machine only makes
    it smaller. ``eps`` covers the server's clock against ours."""
    elapsed = time.monotonic() - since
    assert high - elapsed - eps < value <= high, (value, high, elapsed)


def test_grants_the_burst_then_refuses_until_a_token_refills(redis_url: str, key: str) -> None:
    b = bucket(redis_url, key, qps=10, burst=3)
    t0 = time.monotonic()
    assert [b.try_acquire() for _ in range(5)] == [True, True, True, False, False]
    assert_waits(b.retry_after(), 0.1, t0)
    time.sleep(0.11)
    assert b.try_acquire() is True
    assert b.try_acquire() is False
    assert b._counters() == (4, 3, 0)
    assert b.shared


def test_n_tokens_at_once(redis_url: str, key: str) -> None:
    b = bucket(redis_url, key, qps=5, burst=4)
    t0 = time.monotonic()
    assert b.try_acquire(3) is True
    assert b.try_acquire(2) is False  # 1 left: nothing taken
    assert b.try_acquire(1) is True
    assert_waits(b.retry_after(1), 0.2, t0)
    assert_waits(b.retry_after(2), 0.4, t0)


def test_two_buckets_on_one_key_share_the_tokens(redis_url: str, key: str) -> None:
    a, b = bucket(redis_url, key), bucket(redis_url, key)
    assert [a.try_acquire(), b.try_acquire(), a.try_acquire(), b.try_acquire()] == [
        True, True, True, False]


def test_reserve_waits_in_line_and_cancel_gives_tokens_back(redis_url: str, key: str) -> None:
    b = bucket(redis_url, key, qps=5, burst=1)
    t0 = time.monotonic()
    first = b.reserve()
    assert first.delay == 0 and first.shared
    second = b.reserve(1)
    assert_waits(second.delay, 0.2, t0)
    third = b.reserve(1)
    assert_waits(third.delay, 0.4, t0)
    assert third.cancel() == 1  # the last in line: its whole token comes back
    assert third.cancel() == 0  # idempotent
    assert second.cancel() == 1
    assert_waits(b.retry_after(), 0.2, t0)  # as if only `first` had been taken
    assert first.cancel() == 0  # its time had come: spent


def test_a_reservations_wait_honours_the_testing_switch(redis_url: str, key: str) -> None:
    """vr.testing.set(sleep=False): a shared reservation's wait returns at
    once, sync and async, as the local bucket's token waits do."""
    b = bucket(redis_url, key, qps=0.5, burst=1)  # a token every 2 s
    b.reserve()
    with vr.testing.set(sleep=False):
        t0 = time.monotonic()
        b.reserve().wait()
        asyncio.run(b.reserve().wait_async())
        assert time.monotonic() - t0 < 1.0  # two waits of 2 s and 4 s skipped


def test_cancel_keeps_what_later_reservations_took(redis_url: str, key: str) -> None:
    b = bucket(redis_url, key, qps=5, burst=1)
    t0 = time.monotonic()
    b.reserve()
    second = b.reserve()
    b.reserve()  # reserved after `second`
    assert second.cancel() == 0  # its token is the third one's now
    assert_waits(b.retry_after(), 0.6, t0)  # three tokens still taken


def test_acquire_waits_for_a_token_or_gives_up_at_once(redis_url: str, key: str) -> None:
    # A token every 200 ms: the give-up below holds while less than 190 ms
    # passed since the first acquire, room enough for a loaded machine.
    b = bucket(redis_url, key, qps=5, burst=1)
    started = time.monotonic()
    assert b.acquire() is True
    assert b.acquire(timeout=0.01) is False  # the wait would be ~200 ms
    # It gave up at once rather than waiting for the token: the token has not
    # come yet now that it returned. (Redis's clock, not a bound on ours, which
    # a loaded machine could break either way; a plain round trip's duration
    # is just as noisy there.)
    assert b.retry_after() > 0
    assert b.acquire(timeout=1.0) is True
    assert time.monotonic() - started >= 0.19  # it waited for the token
    assert b._counters() == (1, 1, 1)


def test_the_key_expires_once_the_bucket_is_full_again(redis_url: str, key: str) -> None:
    b = bucket(redis_url, key, qps=10, burst=5)
    client = redis.Redis.from_url(redis_url)
    t0 = time.monotonic()
    assert b.try_acquire(5)
    taken = time.monotonic()
    ttl = client.pttl(key)
    # 5 tokens at 10/s: full again in 500 ms, less the time since the take.
    assert 500 - (time.monotonic() - t0) * 1000 - 5 < ttl <= 501
    assert client.exists(key) == 1
    time.sleep(max(0.0, taken + 0.52 - time.monotonic()))  # past the TTL set before `taken`
    assert client.exists(key) == 0
    assert b.try_acquire(5)  # and a missing key is a full bucket


def test_a_lost_script_is_loaded_again(redis_url: str, key: str) -> None:
    b = bucket(redis_url, key, qps=5, burst=2)
    assert b.try_acquire()
    client = redis.Redis.from_url(redis_url)
    client.script_flush()
    assert client.script_exists(GCRA.sha) == [False]
    assert b.try_acquire() is True  # NOSCRIPT answered by SCRIPT LOAD, then decided
    assert client.script_exists(GCRA.sha) == [True]
    assert b.try_acquire() is False
    assert b.shared


def test_a_client_without_the_fast_path_decides_the_same(redis_url: str, key: str) -> None:
    # A single-connection client goes through redis-py's execute_command.
    client = redis.Redis.from_url(redis_url, single_connection_client=True)
    b = RedisTokenBucket(client, key, qps=5, burst=2)
    assert b._pipe is None
    assert [b.try_acquire() for _ in range(3)] == [True, True, False]
    client.script_flush()
    assert b.try_acquire() is False and b.shared


def test_redis_cluster_client(cluster_server: Any, key: str) -> None:
    cluster = RedisCluster.from_url(cluster_server.url)
    b = RedisTokenBucket(cluster, "{fleet}:" + key, qps=5, burst=2)
    t0 = time.monotonic()
    assert [b.try_acquire() for _ in range(3)] == [True, True, False]
    assert_waits(b.retry_after(), 0.2, t0)
    assert_waits(b.reserve().delay, 0.2, t0)
    cluster.script_flush()
    assert b.try_acquire() is False and b.shared
    cluster.close()


async def test_asyncio_redis_cluster_client(cluster_server: Any, key: str) -> None:
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    cluster = AsyncRedisCluster.from_url(cluster_server.url)
    b = RedisTokenBucket(cluster, "{fleet}:" + key, qps=5, burst=2)
    assert await asyncio.gather(*(b.try_acquire_async() for _ in range(3))) == [True, True, False]
    assert b.shared
    await cluster.aclose()


def test_sync_methods_need_a_sync_client_and_say_so(redis_url: str, key: str) -> None:
    b = RedisTokenBucket(redis.asyncio.Redis.from_url(redis_url), key, qps=5, burst=2)
    for call, instead in ((lambda: b.try_acquire(), "try_acquire_async"),
                          (lambda: b.reserve(), "reserve_async"),
                          (lambda: b.acquire(), "acquire_async"),
                          (lambda: b.retry_after(), "retry_after_async")):
        with pytest.raises(TypeError, match=f"sync client.*{instead}"):
            call()
    sync = bucket(redis_url, key)
    with pytest.raises(TypeError, match="asyncio client.*bucket.try_acquire()"):
        asyncio.run(sync.try_acquire_async())
    with pytest.raises(TypeError, match="asyncio client.*bucket.acquire()"):
        asyncio.run(sync.acquire_async())


# ------------------------------------------------------------------ asyncio --


async def test_concurrent_async_decisions_are_exact(redis_url: str, key: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    b = RedisTokenBucket(client, key, qps=1, burst=50)
    t0 = time.monotonic()
    granted = await asyncio.gather(*(b.try_acquire_async() for _ in range(200)))
    assert sum(granted) == 50
    assert granted[:50] == [True] * 50  # decided in arrival order
    assert b._counters() == (50, 150, 0)
    assert_waits(await b.retry_after_async(), 1.0, t0)
    await client.aclose()


async def test_concurrent_decisions_share_round_trips(redis_url: str, key: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    b = RedisTokenBucket(client, key, qps=1e6, burst=1_000_000)
    assert await b.try_acquire_async()  # the script is loaded

    async def script_calls() -> int:
        stats = await client.info("commandstats")
        return int(stats["cmdstat_evalsha"]["calls"])

    before = await script_calls()
    assert all(await asyncio.gather(*(b.try_acquire_async() for _ in range(300))))
    assert await script_calls() - before <= 2  # one batch (512 at most per call)
    await client.aclose()


async def test_async_reserve_acquire_and_cancel(redis_url: str, key: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    b = RedisTokenBucket(client, key, qps=5, burst=1)  # a token every 200 ms
    t0 = time.monotonic()
    assert await b.acquire_async() is True
    assert await b.acquire_async(timeout=0.01) is False
    reservation = await b.reserve_async()
    assert_waits(reservation.delay, 0.2, t0)
    assert await reservation.cancel_async() == 1
    async with b:  # waits for the token cancelled above
        pass
    assert await b.try_acquire_async() is False
    await client.aclose()


async def test_a_cancelled_waiter_gives_its_tokens_back(redis_url: str, key: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    b = RedisTokenBucket(client, key, qps=2, burst=1)
    t0 = time.monotonic()
    assert await b.try_acquire_async()
    taken = time.monotonic()  # Redis took the token between t0 and now
    waiter = asyncio.create_task(b.acquire_async())  # waits ~0.5 s for the next token
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    # One token's wait is 0.5 s from the take, two tokens' 1 s: the refund
    # (in the background) has come once retry_after is at most the former
    # less the time passed. Until 1 s after the take the two differ.
    while True:
        asked = time.monotonic()
        retry_after = await b.retry_after_async()
        one_token_at_most = max(0.0, 0.5 - (asked - taken)) + 0.005
        if retry_after <= one_token_at_most or time.monotonic() - t0 > 0.9:
            break
        await asyncio.sleep(0.01)
    assert retry_after <= one_token_at_most  # one token's wait, not two
    assert_waits(retry_after, 0.5, t0)
    await client.aclose()


def test_counts_show_in_the_prometheus_collector(redis_url: str, key: str) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    vr.metrics.register(registry)
    b = bucket(redis_url, key, qps=5, burst=2, provider_type="vsphere", provider=key)
    for _ in range(3):
        b.try_acquire()
    b.reserve()
    labels = {"provider_type": "vsphere", "provider": key}
    value = registry.get_sample_value
    assert value("virtrigaud_rate_limiter_requests_total", {**labels, "outcome": "admitted"}) == 2
    assert value("virtrigaud_rate_limiter_requests_total", {**labels, "outcome": "rejected"}) == 1
    assert value("virtrigaud_rate_limiter_requests_total", {**labels, "outcome": "waited"}) == 1
    assert value("virtrigaud_distributed_fallback_total", {**labels, "outcome": "admitted"}) == 0
    assert value("virtrigaud_distributed_transitions_total", {**labels, "to": "fallback"}) == 0
