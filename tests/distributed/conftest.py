"""Fixtures for the Redis-backed tests: real redis-server processes on loopback.

Skipped when redis-server (or redis-py) is absent, unless REQUIRE_REDIS=1
(as in CI): then their absence fails the suite. Every test uses keys of its
own (``key`` fixture), so the session's server is shared safely; a test that
kills, pauses or restarts a server gets its own (``own_server``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

REQUIRED = os.environ.get("REQUIRE_REDIS") == "1"


def _need(what: str) -> None:
    if REQUIRED:
        pytest.fail(f"REQUIRE_REDIS=1 but {what}", pytrace=False)
    pytest.skip(what)


try:
    import redis  # noqa: F401
    from virtrigaud_resilience.distributed.testing import RedisServer, redis_server_path
except ImportError as exc:  # redis-py missing: every test here skips (or fails)
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None


def _server(**options: Any) -> Iterator[Any]:
    if _IMPORT_ERROR is not None:
        _need(f"redis-py is not installed ({_IMPORT_ERROR})")
    if redis_server_path() is None:
        _need("redis-server is not installed")
    server = RedisServer(**options).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server(_cluster_starting: Future[Any]) -> Iterator[Any]:
    """One redis-server for the session (never killed by a test)."""
    yield from _server()


@pytest.fixture
def own_server() -> Iterator[Any]:
    """A redis-server of the test's own, to kill, pause and restart."""
    yield from _server()


@pytest.fixture
def own_cluster() -> Iterator[Any]:
    """A one-node Redis Cluster of the test's own, to kill, pause and restart."""
    yield from _server(cluster=True)


@pytest.fixture(scope="session")
def _cluster_starting() -> Iterator[Future[Any]]:
    """A one-node cluster, started in the background with the session's
    server: Redis takes 2 s to call a new cluster ready, other tests run
    meanwhile."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        starting = pool.submit(_start_cluster)
        yield starting
        server = starting.result() if not starting.exception() else None
        if server is not None:
            server.close()


def _start_cluster() -> Any:
    if _IMPORT_ERROR is not None or redis_server_path() is None:
        return None
    return RedisServer(cluster=True).start()


@pytest.fixture(scope="session")
def cluster_server(redis_server: Any, _cluster_starting: Future[Any]) -> Any:
    """A one-node Redis Cluster owning every slot."""
    return _cluster_starting.result()


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    return str(redis_server.url)


@pytest.fixture
def key() -> str:
    """A key no other test uses."""
    return f"test:{uuid.uuid4().hex}"
