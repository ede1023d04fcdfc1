"""pytest-benchmark cases for the Redis paths: `pytest benchmarks/ --benchmark-enable`.

Absolute timings against a redis-server started on a free loopback port
(skipped without one); the ratios against a bare GET and the peers come
from benchmarks/compare_redis.py, which measures them in one run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import virtrigaud_resilience as vr

testing = pytest.importorskip("virtrigaud_resilience.distributed.testing")
if testing.redis_server_path() is None:
    pytest.skip("redis-server is not installed", allow_module_level=True)

from virtrigaud_resilience.distributed import (  # noqa: E402
    LeasedTokenBucket,
    RedisTokenBucket,
    connect,
)

HUGE = {"qps": 1e9, "burst": 1_000_000}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with testing.RedisServer() as server:
        yield server.url


@pytest.fixture
def key() -> str:
    return f"bench:{uuid.uuid4().hex}"


@pytest.mark.benchmark(group="redis")
def test_bare_get_round_trip(benchmark: Any, url: str, key: str) -> None:
    client = connect(url)
    client.set(key, "v")
    assert benchmark(client.get, key) == b"v"


@pytest.mark.benchmark(group="redis")
def test_exact_try_acquire(benchmark: Any, url: str, key: str) -> None:
    bucket = RedisTokenBucket(connect(url), key, **HUGE)
    assert benchmark(bucket.try_acquire) is True
    assert bucket.shared


@pytest.mark.benchmark(group="leased")
def test_local_try_acquire(benchmark: Any) -> None:
    bucket = vr.TokenBucket(**HUGE)
    assert benchmark(bucket.try_acquire) is True


@pytest.mark.benchmark(group="leased")
def test_leased_try_acquire(benchmark: Any, url: str, key: str) -> None:
    with LeasedTokenBucket(connect(url), key, **HUGE) as bucket:
        bucket._set_rate(1, 1_000_000)  # full at once: measure deciding, not waiting
        assert benchmark(bucket.try_acquire) is True
