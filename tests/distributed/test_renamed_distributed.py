"""The distributed primitives' renamed names: ``RedisGuard`` is now
``RedisClientBreaker`` (module ``distributed.guard`` now
``distributed.client_breaker``), and the primitives' ``guard=`` keyword and
``.guard`` property are now ``client_breaker``. The old names still work for
one minor release and warn with a DeprecationWarning naming the new one.

The constructors validate before any round trip, and the breaker sync and
the leased bucket are closed at once, so only their start needs a server.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import redis
import virtrigaud_resilience as vr
from virtrigaud_resilience import distributed
from virtrigaud_resilience.distributed import (
    LeasedTokenBucket,
    RedisBreakerSync,
    RedisClientBreaker,
    RedisTokenBucket,
    client_breaker,
    connect,
)

pytestmark = pytest.mark.redis


def read_warning(read: Callable[[], Any]) -> tuple[Any, str, str]:
    """``read()``'s value, and the message and file of the one DeprecationWarning it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = read()
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1, [str(w.message) for w in caught]
    return value, str(deprecations[0].message), deprecations[0].filename


NEW = "virtrigaud_resilience.distributed.client_breaker"


@pytest.mark.parametrize(("module", "old", "new"), [
    ("virtrigaud_resilience.distributed", "RedisGuard", "RedisClientBreaker"),
    ("virtrigaud_resilience.distributed.guard", "RedisGuard", "RedisClientBreaker"),
    ("virtrigaud_resilience.distributed.guard", "GUARD_NAME", "CLIENT_BREAKER_NAME"),
    ("virtrigaud_resilience.distributed.guard", "DEFAULT_PROBE_INTERVAL",
     "DEFAULT_PROBE_INTERVAL"),
])
def test_an_old_module_level_name_works_and_warns_naming_the_new_one(module: str, old: str,
                                                                     new: str) -> None:
    imported = __import__(module, fromlist=["_"])
    value, message, filename = read_warning(lambda: getattr(imported, old))
    assert value is getattr(client_breaker, new)
    assert message.startswith(f"{module}.{old} is deprecated: use {NEW}.{new} ")
    assert filename == __file__


def test_from_import_of_the_old_name_warns_once() -> None:
    def imported() -> Any:
        from virtrigaud_resilience.distributed import RedisGuard

        return RedisGuard

    value, message, filename = read_warning(imported)
    assert value is RedisClientBreaker
    assert f"use {NEW}.RedisClientBreaker" in message and filename == __file__


def test_importing_the_distributed_modules_warns_about_nothing() -> None:
    code = ("import virtrigaud_resilience.distributed\n"
            "import virtrigaud_resilience.distributed.guard\n"
            "from virtrigaud_resilience.distributed import *\n"
            "from virtrigaud_resilience.distributed import RedisClientBreaker\n")
    result = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "RedisClientBreaker" in distributed.__all__ and "RedisGuard" not in distributed.__all__


def test_the_client_breaker_is_named_for_what_it_is(redis_url: str) -> None:
    client = connect(redis_url)
    shared = RedisClientBreaker.of(client)
    assert shared.breaker.name == client_breaker.CLIENT_BREAKER_NAME == "redis-client"
    assert repr(shared).startswith("RedisClientBreaker(")
    with pytest.raises(TypeError, match="RedisTokenBucket client_breaker must be a "
                                        "RedisClientBreaker or None, got str 'x'"):
        RedisTokenBucket(client, "k", qps=10, burst=5, client_breaker="x")  # type: ignore[arg-type]


def build_exact(client: redis.Redis, key: str, **kw: Any) -> Any:
    return RedisTokenBucket(client, key, qps=10, burst=5, **kw)


def build_leased(client: redis.Redis, key: str, **kw: Any) -> Any:
    bucket = LeasedTokenBucket(client, key, qps=10, burst=5, **kw)
    bucket.close()
    return bucket


def build_sync(client: redis.Redis, key: str, **kw: Any) -> Any:
    sync = RedisBreakerSync(client, vr.BreakerRegistry(), key=key, **kw)
    sync.close()
    return sync


@pytest.mark.parametrize("build", [build_exact, build_leased, build_sync],
                         ids=["RedisTokenBucket", "LeasedTokenBucket", "RedisBreakerSync"])
def test_the_guard_keyword_and_property_work_and_warn(build: Any, redis_url: str,
                                                      key: str) -> None:
    client = connect(redis_url)
    own = RedisClientBreaker(client, probe_interval=0.05)
    owner = type(build(client, key)).__name__
    primitive, message, filename = read_warning(lambda: build(client, key, guard=own))
    assert primitive.client_breaker is own  # the old keyword is used
    assert filename == __file__  # the line of the call with the old keyword
    assert message.startswith(f"{owner}(guard=...) is deprecated: use "
                              f"{owner}(client_breaker=...) ")
    value, message, filename = read_warning(lambda: primitive.guard)
    assert value is own
    assert message.startswith(f"{owner}.guard is deprecated: use {owner}.client_breaker ")
    assert filename == __file__
    with pytest.raises(TypeError, match=f"{owner} got both client_breaker= and its deprecated "
                                        "name guard="):
        build(client, key, guard=own, client_breaker=own)
    assert build(client, key, client_breaker=own).client_breaker is own
    assert build(client, key).client_breaker is RedisClientBreaker.of(client)
