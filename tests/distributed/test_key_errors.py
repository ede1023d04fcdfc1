"""One key's problem stays with its key; a permission is reported as one.

A key holding another type, or a value that is not ours, raises
RedisKeyError naming the key for that key's decisions only: the client breaker stays
closed and every other key decides on Redis. A key holding our format with
impossible values (nan, inf, 1e300, a negative time) is repaired. An ACL user
without scripting fails at ``from_url(check=True)``, naming the permission,
and, unchecked, gets UnauthorizedError (logged once), never a fallback.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from typing import Any

import pytest
import redis
from test_faults import eventually

import virtrigaud_resilience as vr
from virtrigaud_resilience.distributed import (
    LeasedTokenBucket,
    RedisClientBreaker,
    RedisKeyError,
    RedisTokenBucket,
    connect,
)
from virtrigaud_resilience.ratelimit import MIN_QPS


def opened(client_breaker: RedisClientBreaker) -> int:
    return client_breaker.breaker.transitions[2]


def test_a_key_of_another_type_is_that_keys_error(redis_url: str, key: str) -> None:
    client = connect(redis_url)
    client.hset(key, "owner", "someone else")
    bad = RedisTokenBucket(client, key, qps=10, burst=5)
    good = RedisTokenBucket(client, key + ":other", qps=10, burst=5)
    for call in (bad.try_acquire, bad.reserve, bad.acquire, bad.retry_after):
        with pytest.raises(RedisKeyError, match=f"key {key!r} on Redis 127.0.0.1:") as info:
            call()
        assert "WRONGTYPE" in info.value.reason and info.value.key == key
    assert good.try_acquire() is True and good.shared
    # No outage, no fallback, no flapping:
    assert bad.client_breaker.up and opened(bad.client_breaker) == 0
    assert client.hget(key, "owner") == b"someone else"  # left as it was
    client.close()


async def test_a_key_of_another_type_async(redis_url: str, key: str) -> None:
    client = connect(redis_url, asynchronous=True)
    await client.rpush(key, "x")
    bad = RedisTokenBucket(client, key, qps=10, burst=5)
    good = RedisTokenBucket(client, key + ":other", qps=10, burst=5)
    results = await asyncio.gather(bad.try_acquire_async(), good.try_acquire_async(),
                                   return_exceptions=True)
    assert isinstance(results[0], RedisKeyError) and results[1] is True
    with pytest.raises(RedisKeyError):
        await bad.retry_after_async()
    assert bad.client_breaker.up and opened(bad.client_breaker) == 0
    await client.aclose()


def test_a_value_that_is_not_ours_is_refused_not_overwritten(redis_url: str, key: str) -> None:
    client = connect(redis_url)
    client.set(key, "hello")
    b = RedisTokenBucket(client, key, qps=10, burst=5)
    with pytest.raises(RedisKeyError, match="not a GCRA time: hello"):
        b.try_acquire()
    assert client.get(key) == b"hello" and b.client_breaker.up
    client.close()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e300", "-5", "-1e300"])
def test_impossible_values_of_our_format_are_repaired(redis_url: str, key: str,
                                                      value: str) -> None:
    client = connect(redis_url)
    client.set(key, value)
    b = RedisTokenBucket(client, key, qps=10, burst=5)
    assert b.retry_after() == 0.0  # as if absent: a full bucket
    assert [b.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    repaired = float(client.get(key))
    assert math.isfinite(repaired) and repaired > 0
    assert 0 < b.retry_after() <= 0.1 + 0.05
    client.close()


def test_reserve_past_the_wait_limit_raises_as_the_local_bucket_does(
        redis_url: str, key: str) -> None:
    client = connect(redis_url)
    shared = RedisTokenBucket(client, key, qps=MIN_QPS, burst=1000)
    local = vr.TokenBucket(MIN_QPS, 1000)
    for bucket in (shared, local):
        for _ in range(66):  # 66 x 1000 tokens at one per 73 minutes: ~9 years
            assert bucket.reserve(1000).delay >= 0
        with pytest.raises(ValueError, match="cannot reserve 1000 tokens: the wait would "
                                             "exceed limits"):
            bucket.reserve(1000)
    client.close()


def test_a_lease_table_of_another_type_falls_back_that_bucket_only(
        redis_url: str, key: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="virtrigaud_resilience")
    client = connect(redis_url)
    client.set(key, "not a hash")
    bad = LeasedTokenBucket(client, key, qps=100, burst=10, local_share=0.5)
    good = LeasedTokenBucket(client, key + ":other", qps=100, burst=10)
    try:
        assert bad.mode == "fallback" and bad.qps == pytest.approx(50)
        assert good.shared and good.client_breaker.up
        errors = [r for r in caplog.records if getattr(r, "redis_state", None) == "refresh_error"]
        assert len(errors) == 1 and key in errors[0].getMessage()
        assert "WRONGTYPE" in str(errors[0].exc_info[1])
        assert client.get(key) == b"not a hash"
    finally:
        bad.close()
        good.close()
    client.close()


def test_malformed_lease_fields_are_dropped(redis_url: str, key: str) -> None:
    client = connect(redis_url)
    # Garbage, impossible values, and a lease that would never expire: none is a lease.
    client.hset(key, mapping={"ghost": "garbage", "nan": "1 nan 3 4 5 6 7",
                              "short": "1 2 3", "forever": "10 50 5 1e200 0 0 0"})
    b = LeasedTokenBucket(client, key, qps=100, burst=10)
    try:
        assert b.shared and b.qps == pytest.approx(100) and b.burst == 10 and b.members == 1
        assert set(client.hkeys(key)) == {b._registered_as.encode(), b"~epoch"}
    finally:
        b.close()
    client.close()


@pytest.fixture
def no_scripting_user(redis_server: Any) -> tuple[str, str]:
    """A user that may run every command but scripts; and one limited to keys ``allowed:*``."""
    admin = redis.Redis.from_url(redis_server.url)
    name = f"u{uuid.uuid4().hex[:8]}"
    admin.execute_command("ACL", "SETUSER", name + "-noscript", "on", ">pw", "~*", "&*",
                          "+@all", "-@scripting")
    admin.execute_command("ACL", "SETUSER", name + "-keys", "on", ">pw", "~allowed:*", "&*",
                          "+@all")
    admin.close()
    base = f"127.0.0.1:{redis_server.port}/0"
    return f"redis://{name}-noscript:pw@{base}", f"redis://{name}-keys:pw@{base}"


def test_from_url_checks_that_the_scripts_can_run(no_scripting_user: tuple[str, str],
                                                  key: str) -> None:
    noscript, keys_only = no_scripting_user
    with pytest.raises(vr.UnauthorizedError, match=r"refuses the scripts .* no permissions "
                                                   r"to run the 'script\|load' command"):
        RedisTokenBucket.from_url(noscript, key, qps=10, burst=5)
    with pytest.raises(vr.UnauthorizedError, match="access one of the keys"):
        LeasedTokenBucket.from_url(keys_only, "denied:" + key, qps=10, burst=5)
    b = RedisTokenBucket.from_url(keys_only, "allowed:" + key, qps=10, burst=5)
    assert b.try_acquire() is True
    b.client.close()


def test_a_permission_error_is_reported_as_one_once(
        no_scripting_user: tuple[str, str], key: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="virtrigaud_resilience")
    b = RedisTokenBucket.from_url(no_scripting_user[0], key, qps=10, burst=5, check=False)
    for _ in range(3):
        with pytest.raises(vr.UnauthorizedError, match="evalsha") as info:
            b.try_acquire()
        assert isinstance(info.value.cause, redis.exceptions.NoPermissionError)
    assert b.client_breaker.up and opened(b.client_breaker) == 0
    assert b._fallback_counters()[:2] == (0, 0)
    refused = [r for r in caplog.records if getattr(r, "redis_state", None) == "refused"]
    assert len(refused) == 1
    b.client.close()


def test_a_key_error_does_not_wedge_a_healthy_probe(own_server: Any, key: str) -> None:
    # The client breaker closed again after an outage: the bad key still raises its own error.
    client = connect(own_server.url)
    client_breaker = RedisClientBreaker(client, probe_interval=0.05)
    client.hset(key, "x", "y")
    bad = RedisTokenBucket(client, key, qps=10, burst=5, client_breaker=client_breaker)
    good = RedisTokenBucket(client, key + ":ok", qps=10, burst=5, client_breaker=client_breaker)
    own_server.kill()
    assert good.try_acquire() is True and not client_breaker.up  # the fallback's
    own_server.start()
    eventually(lambda: client_breaker.up, within=3.0)
    client.hset(key, "x", "y")  # the restarted server is empty: the foreign hash again
    with pytest.raises(RedisKeyError):
        bad.try_acquire()
    assert good.try_acquire() is True and client_breaker.up and opened(client_breaker) == 1
    client.close()
