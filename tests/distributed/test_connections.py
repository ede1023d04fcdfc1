"""Connections: no primitive holds one for life; many buckets share a client's pool.

A client built by ``connect`` has redis-py's default pool (100 connections).
Sync exact buckets share one pipe per client (one held connection between
them all), asyncio ones and leased ones borrow from the pool per command, a
pool out of connections is a limit of this process (the decision falls
back; the client breaker stays closed), and a restart costs one failed command
whatever the number of buckets.
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
from typing import Any

from test_faults import eventually

from virtrigaud_resilience.distributed import (
    LeasedTokenBucket,
    RedisClientBreaker,
    RedisTokenBucket,
    connect,
)


def in_use(client: Any) -> int:
    return len(client.connection_pool._in_use_connections)


def opened(client_breaker: RedisClientBreaker) -> int:
    return client_breaker.breaker.transitions[2]  # transitions to open


def test_ten_thousand_buckets_on_one_client(redis_url: str) -> None:
    client = connect(redis_url)
    assert client.connection_pool.max_connections == 100  # redis-py's default
    client_breaker = RedisClientBreaker.of(client)
    prefix = f"test:{uuid.uuid4().hex}"
    buckets = [RedisTokenBucket(client, f"{prefix}:{i}", qps=0.01, burst=1)
               for i in range(10_000)]
    assert all(b.try_acquire() for b in buckets)  # each its own key: one token each
    assert not any(b.try_acquire() for b in buckets[:100])
    assert client_breaker.up and opened(client_breaker) == 0
    assert in_use(client) <= 1  # the client's pipe, shared by all
    assert len(client_breaker._on_loss) == 1  # one callback: the pipe's
    # Dropped: nothing stays behind (the pipe lives with the client).
    del buckets
    gc.collect()
    assert in_use(client) <= 1
    client.close()


def test_a_restart_costs_one_failed_command_whatever_the_number_of_buckets(
        own_server: Any) -> None:
    client = connect(own_server.url)
    client_breaker = RedisClientBreaker(client, probe_interval=0.05)
    buckets = [RedisTokenBucket(client, f"k:{i}", qps=1000, burst=50, client_breaker=client_breaker)
               for i in range(200)]
    assert all(b.try_acquire() for b in buckets)
    own_server.kill()
    assert all(isinstance(b.try_acquire(), bool) for b in buckets)
    assert not client_breaker.up and opened(client_breaker) == 1
    own_server.start()
    eventually(lambda: client_breaker.up, within=3.0)
    # Every bucket decides on Redis again at its next call: none meets a dead connection.
    assert all(b.try_acquire() for b in buckets)
    assert client_breaker.up and opened(client_breaker) == 1
    assert all(b.shared for b in buckets[:1])
    client.close()


def test_an_exhausted_pool_falls_back_for_that_decision_without_opening_the_guard(
        redis_url: str, key: str) -> None:
    client = connect(redis_url, max_connections=2)
    pool = client.connection_pool
    taken = [pool.get_connection(), pool.get_connection()]  # someone else's commands
    b = RedisTokenBucket(client, key, qps=10, burst=1, fallback="allow")
    assert b.try_acquire() is True and b.try_acquire() is True  # the fallback's ("allow")
    assert b.client_breaker.up and opened(b.client_breaker) == 0  # Redis is fine: the pool was full
    for conn in taken:
        pool.release(conn)
    assert b.try_acquire() is True and b.try_acquire() is False  # Redis decides again
    client.close()


def test_many_leased_buckets_on_one_client_recover_together(own_server: Any) -> None:
    client = connect(own_server.url)
    client_breaker = RedisClientBreaker(client, probe_interval=0.05)
    threads_before = threading.active_count()
    buckets = [LeasedTokenBucket(client, f"lease:{i}", qps=100, burst=10, lease=0.9,
                                 refresh=0.3, client_breaker=client_breaker) for i in range(150)]
    try:
        assert all(b.shared for b in buckets)
        own_server.kill()
        eventually(lambda: all(b.mode == "fallback" for b in buckets), within=5.0)
        own_server.start()
        # 150 refreshes at once (more than the pool's 100 connections): those
        # the pool refuses try again within a tenth of a refresh; the client breaker
        # does not flap.
        eventually(lambda: client_breaker.up, within=3.0)
        back = eventually(lambda: all(b.shared for b in buckets), within=5.0)
        assert back < 1.5
        assert opened(client_breaker) == 1
    finally:
        for b in buckets:
            b.close()
    del buckets
    gc.collect()
    # Closed and dropped: their threads end and no connection stays checked out.
    eventually(lambda: threading.active_count() <= threads_before + 1, within=5.0)
    assert in_use(client) == 0
    client.close()
