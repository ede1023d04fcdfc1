"""Bad input to the distributed primitives: a clear error naming the field and the value.

Validation happens before any round trip, so most of these need no server:
the clients point at a port where nothing listens.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import virtrigaud_resilience as vr
from virtrigaud_resilience.distributed import (
    LeasedTokenBucket,
    RedisClientBreaker,
    RedisTokenBucket,
    connect,
)
from virtrigaud_resilience.distributed.testing import _free_port

NAN, INF = math.nan, math.inf
NOWHERE = f"redis://127.0.0.1:{_free_port()}/0"


def nowhere() -> redis.Redis:
    return connect(NOWHERE, check=False)  # type: ignore[return-value]


def exact(**kw: Any) -> RedisTokenBucket:
    args: dict[str, Any] = {"qps": 10, "burst": 5, **kw}
    client = args.pop("client", None) or nowhere()
    key = args.pop("key", "k")
    return RedisTokenBucket(client, key, **args)


def leased(**kw: Any) -> LeasedTokenBucket:
    args: dict[str, Any] = {"qps": 10, "burst": 5, **kw}
    client = args.pop("client", None) or nowhere()
    key = args.pop("key", "k")
    return LeasedTokenBucket(client, key, **args)


# (field, value, exception, text the message must show)
COMMON: list[tuple[str, Any, type[Exception], str]] = [
    ("key", "", ValueError, "''"),
    ("key", None, TypeError, "None"),
    ("key", b"k", TypeError, "b'k'"),
    ("qps", 0, ValueError, "0"),
    ("qps", -1, ValueError, "-1"),
    ("qps", NAN, ValueError, "nan"),
    ("qps", INF, ValueError, "inf"),
    ("qps", "10", TypeError, "'10'"),
    ("qps", True, TypeError, "True"),
    ("qps", 1e10, ValueError, "10000000000.0"),
    ("burst", 0, ValueError, "0"),
    ("burst", 1.5, TypeError, "1.5"),
    ("burst", 10**7, ValueError, "10000000"),
    ("fallback", "maybe", ValueError, "'maybe'"),
    ("fallback", 1, TypeError, "1"),
    ("local_share", 0, ValueError, "0"),
    ("local_share", 1.5, ValueError, "1.5"),
    ("local_share", NAN, ValueError, "nan"),
    ("provider", 7, TypeError, "7"),
    ("client_breaker", "g", TypeError, "'g'"),
]
LEASED_ONLY: list[tuple[str, Any, type[Exception], str]] = [
    ("lease", 0, ValueError, "0"),
    ("lease", -1, ValueError, "-1"),
    ("lease", NAN, ValueError, "nan"),
    ("lease", "soon", ValueError, "soon"),
    ("refresh", 5.0, ValueError, "5.0"),  # not shorter than the lease (3 s)
    ("refresh", 0, ValueError, "0"),
    ("member", "a b", ValueError, "'a b'"),
    ("member", "", ValueError, "''"),
]


def message_names(exc: BaseException, field: str, shown: str) -> bool:
    return re.search(rf"\b{re.escape(field)}\b.*{re.escape(shown)}", str(exc)) is not None


@pytest.mark.parametrize(("make", "owner"), [(exact, "RedisTokenBucket"),
                                             (leased, "LeasedTokenBucket")])
@pytest.mark.parametrize(("field", "value", "error", "shown"), COMMON,
                         ids=[f"{f}={v!r}" for f, v, _, _ in COMMON])
def test_constructors_refuse_bad_arguments(make: Callable[..., Any], owner: str, field: str,
                                           value: Any, error: type[Exception],
                                           shown: str) -> None:
    with pytest.raises(error) as info:
        make(**{field: value})
    assert str(info.value).startswith(owner), info.value
    assert message_names(info.value, field, shown), info.value


@pytest.mark.parametrize(("field", "value", "error", "shown"), LEASED_ONLY,
                         ids=[f"{f}={v!r}" for f, v, _, _ in LEASED_ONLY])
def test_leased_bucket_refuses_bad_lease_arguments(field: str, value: Any,
                                                   error: type[Exception], shown: str) -> None:
    with pytest.raises(error) as info:
        leased(**{field: value})
    assert message_names(info.value, field, shown), info.value


@pytest.mark.parametrize("client", ["redis://localhost", None, object(), 6379],
                         ids=["url", "None", "object", "int"])
def test_a_wrong_client_type_says_which_clients_work(client: Any) -> None:
    for make in (exact, leased):
        with pytest.raises(TypeError, match=r"client must be a redis\.Redis.*redis\.asyncio"
                                            r"\.Redis.*got"):
            make(client=client if client is not None else 0.5)
    with pytest.raises(TypeError, match="RedisClientBreaker client must be"):
        RedisClientBreaker(client)


def test_a_guard_of_another_client_is_refused() -> None:
    with pytest.raises(ValueError, match="client_breaker must be the breaker of its own client"):
        exact(client_breaker=RedisClientBreaker(nowhere()))
    with pytest.raises(ValueError, match="probe_interval must be > 0, got 0"):
        RedisClientBreaker(nowhere(), probe_interval=0)


@pytest.mark.parametrize(("n", "error"), [(0, ValueError), (6, ValueError), (-1, ValueError),
                                          (True, TypeError), (1.5, TypeError), ("1", TypeError)])
def test_decisions_refuse_a_bad_n_before_any_round_trip(n: Any, error: type[Exception]) -> None:
    b = exact()
    for call in (b.try_acquire, b.reserve, b.acquire, b.retry_after):
        with pytest.raises(error, match=rf"RedisTokenBucket n must .*got .*{re.escape(repr(n))}"):
            call(n)
    assert b.client_breaker.up  # nothing was sent


@pytest.mark.parametrize("timeout", [-1, NAN, "forever"])
def test_acquire_refuses_a_bad_timeout(timeout: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="timeout"):
        exact().acquire(1, timeout)


@pytest.mark.parametrize(("url", "error", "shown"), [
    ("", ValueError, "''"),
    ("http://127.0.0.1:6379", ValueError, "http://127.0.0.1:6379"),
    ("redis://127.0.0.1:port", ValueError, "redis://127.0.0.1:port"),
    ("redis://:6379", ValueError, "redis://:6379"),
    (6379, TypeError, "6379"),
    ("redis://:s3cret@127.0.0.1:notaport", ValueError, "redis://:***@127.0.0.1:notaport"),
])
def test_connect_refuses_a_bad_url(url: Any, error: type[Exception], shown: str) -> None:
    with pytest.raises(error) as info:
        connect(url)
    assert "url" in str(info.value) and shown in str(info.value)
    assert "s3cret" not in str(info.value)


def test_an_unreachable_url_is_a_clear_error_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(vr.UnavailableError, match=rf"Redis at {re.escape(NOWHERE)} is "
                                                  "unreachable: ConnectionError"):
        RedisTokenBucket.from_url(NOWHERE, "k", qps=10, burst=5)
    with pytest.raises(vr.UnavailableError, match="unreachable"):
        LeasedTokenBucket.from_url(NOWHERE.replace("://", "://:pw@"), "k", qps=10, burst=5)
    assert time.monotonic() - started < 2.0  # connection refused: no retries, no waits
    # Arguments are checked before the round trip.
    with pytest.raises(ValueError, match="qps must be > 0, got 0"):
        RedisTokenBucket.from_url(NOWHERE, "k", qps=0, burst=5)
    with pytest.raises(ValueError, match="socket_timeout must be > 0, got -1"):
        connect(NOWHERE, socket_timeout=-1)


def test_an_unreachable_server_at_start_is_the_fallback_not_an_error() -> None:
    # A client of your own (not from_url): nothing is checked; decisions fall back.
    b = exact(burst=5)
    assert [b.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    assert not b.shared
    lb = leased(burst=5)
    try:
        assert lb.mode == "fallback" and lb.burst == 5  # no lease: the local share (1/1)
    finally:
        lb.close()
