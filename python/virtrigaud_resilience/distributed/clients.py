"""Redis clients for the distributed primitives: which ones we take, and how we build them.

A decision must never wait long on Redis, so the clients built here
(:func:`connect`, and every ``from_url`` constructor) have short socket
timeouts and make no retries of their own: a failed command fails at once,
the :class:`~virtrigaud_resilience.distributed.RedisClientBreaker` in front
of the client switches decisions to their fallback, and a background probe (not a
caller) finds Redis back.

A client you build yourself works too; its settings then bound a decision:
``socket_timeout`` (and ``socket_connect_timeout``) is the longest a
decision can stall on a dead or paused server, and its ``retry`` policy
multiplies that (redis-py's default retries 3 times with exponential
backoff: 3-4.6 s of stall). Build it with ``retry=Retry(NoBackoff(), 0)``
and a socket timeout that fits your call budget. A client with no socket
timeout stalls a decision for as long as the server is paused.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Literal

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import UnauthorizedError, UnavailableError
from .. import _validate

__all__ = [
    "DEFAULT_SOCKET_TIMEOUT",
    "SyncClient",
    "AsyncClient",
    "Client",
    "client_kind",
    "connect",
    "describe",
]

#: Seconds a command of a client built here may take (connect, write, read).
DEFAULT_SOCKET_TIMEOUT = 0.25

SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
Client = SyncClient | AsyncClient
Kind = Literal["sync", "async"]

_SYNC = (redis.Redis, redis.cluster.RedisCluster)
_ASYNC = (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)
_SCHEMES = ("redis", "rediss", "unix")


def client_kind(owner: str, client: object) -> Kind:
    """``"sync"`` for a redis.Redis (or RedisCluster), ``"async"`` for a
    redis.asyncio one; a TypeError naming ``owner`` for anything else."""
    if isinstance(client, _ASYNC):
        return "async"
    if isinstance(client, _SYNC):
        return "sync"
    raise TypeError(
        f"{owner} client must be a redis.Redis or redis.RedisCluster (sync), or a "
        "redis.asyncio.Redis or redis.asyncio.RedisCluster (async), "
        f"got {type(client).__name__} {client!r}"
    )


def describe(client: Client) -> str:
    """Where the client points, for labels and log lines: ``host:port/db``,
    a unix socket path, or ``cluster host:port`` (no credentials)."""
    pool = getattr(client, "connection_pool", None)
    kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", {}) if pool is not None else {}
    if "path" in kwargs:
        return f"unix:{kwargs['path']}/{kwargs.get('db', 0)}"
    if "host" in kwargs:
        return f"{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    nodes = getattr(client, "startup_nodes", None) or []
    first = nodes[0] if isinstance(nodes, list) and nodes else None
    if first is not None and hasattr(first, "host"):
        return f"cluster {first.host}:{first.port}"
    return type(client).__name__


def connect(url: str, *, asynchronous: bool = False, cluster: bool = False,
            socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
            check: bool = True, key: str | None = None, **kwargs: Any) -> Client:
    """A fail-fast redis-py client for ``url`` (``redis://``, ``rediss://`` or ``unix://``).

    Args:
        url: the server's URL, as redis-py's ``from_url`` takes it.
        asynchronous: a ``redis.asyncio.Redis`` rather than a ``redis.Redis``.
        cluster: a Redis Cluster client (``redis.RedisCluster``, or
            ``redis.asyncio.RedisCluster``) with ``url`` one of its nodes
            (not ``unix://``). Its retries are off too: redis-py's default
            cluster client retries a lost node for 1-2 s (and a paused one
            for 10 s per attempt) before it raises.
        socket_timeout: seconds, > 0 and <= 60: the connect, write and read
            timeout, and so the longest a decision can stall on Redis.
        check: PING the server once now, then load a no-op script (SCRIPT
            LOAD) and run it (EVALSHA, on ``key`` if given): a few
            synchronous round trips within ``socket_timeout`` each, so that
            a wrong or unreachable URL, or a user who may not run our
            scripts (an ACL without +@scripting, or without the key), fails
            at start-up rather than silently running on the fallback.
        key: the key the client is for (the primitives' ``from_url`` pass
            theirs), checked by ``check``.
        **kwargs: more ``from_url`` options (``max_connections``, ``ssl_*``,
            ``password``...); ``retry`` defaults to no retries at all.

    Raises:
        ValueError: a malformed URL (the message shows it without its password).
        TypeError: a URL that is not a str.
        UnavailableError: ``check`` found the server unreachable (the
            redis-py error is its cause); a sync cluster client is always
            checked (redis-py reads the cluster's slots when it is built).
        UnauthorizedError: ``check`` found that the user may not run the
            scripts (the message names the permission Redis refused).
    """
    url = _check_url("connect", url)
    socket_timeout = _validate.positive("connect", "socket_timeout", socket_timeout,
                                        maximum=60.0)
    _validate.boolean("connect", "asynchronous", asynchronous)
    _validate.boolean("connect", "cluster", cluster)
    _validate.boolean("connect", "check", check)
    if cluster and url.startswith("unix:"):
        raise ValueError(f"connect url of a cluster must be redis:// or rediss://, "
                         f"got {_safe(url)!r}")
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        **kwargs,
    }
    retries = options.pop("retry", None)
    factory: Any = _FACTORIES[(asynchronous, cluster)]
    try:
        client: Client = factory.from_url(url, retry=retries or _no_retries(async_=asynchronous),
                                          **options)
    except ValueError as exc:
        raise ValueError(f"connect url is not a valid Redis URL ({exc}), got {_safe(url)!r}") \
            from None
    except (redis.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
        # A sync cluster client reads the slots now: the cluster is unreachable.
        raise _unreachable(url, exc) from exc
    if check:
        ping(url, options, cluster=cluster, key=key)
    return client


#: (asynchronous, cluster) -> the redis-py class connect() builds.
_FACTORIES: dict[tuple[bool, bool], Any] = {
    (False, False): redis.Redis,
    (True, False): redis.asyncio.Redis,
    (False, True): redis.cluster.RedisCluster,
    (True, True): redis.asyncio.cluster.RedisCluster,
}


#: The script connect(check=True) loads and runs: it does nothing.
NOOP_SCRIPT = "return 0 -- virtrigaud-resilience: can this user run scripts?"


def ping(url: str, options: dict[str, Any], *, cluster: bool = False,
         key: str | None = None) -> None:
    """PING, SCRIPT LOAD and a no-op EVALSHA (on ``key`` if given) with a
    throwaway sync client: UnavailableError if Redis is unreachable,
    UnauthorizedError if it refuses the scripts."""
    factory: Any = redis.cluster.RedisCluster if cluster else redis.Redis
    probe = None
    try:
        probe = factory.from_url(url, retry=_no_retries(async_=False), **options)
        probe.ping()
        sha = probe.script_load(NOOP_SCRIPT)
        keys = () if key is None else (key,)
        probe.evalsha(sha, len(keys), *keys)
    except redis.exceptions.NoPermissionError as exc:
        user = urllib.parse.urlsplit(url).username or options.get("username") or "default"
        raise UnauthorizedError(
            f"Redis at {_safe(url)} refuses the scripts of the distributed primitives to "
            f"user {user!r} (they need EVALSHA and SCRIPT LOAD, +@scripting, and access to "
            f"their keys{'' if key is None else f': {key!r}'})", exc) from exc
    except (redis.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
        raise _unreachable(url, exc) from exc
    finally:
        if probe is not None:
            probe.close()


def _unreachable(url: str, exc: BaseException) -> UnavailableError:
    return UnavailableError(
        f"Redis at {_safe(url)} is unreachable: {type(exc).__name__}: {exc}", exc)


def _no_retries(*, async_: bool) -> Any:
    if async_:
        from redis.asyncio.retry import Retry as AsyncRetry

        return AsyncRetry(NoBackoff(), 0)
    return Retry(NoBackoff(), 0)


def _check_url(owner: str, url: object) -> str:
    url = _validate.string(owner, "url", url)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in _SCHEMES:
        raise ValueError(
            f"{owner} url must start with redis://, rediss:// or unix://, got {_safe(url)!r}")
    if parsed.scheme != "unix":
        try:
            parsed.port  # noqa: B018 (raises ValueError for a port that is not a number)
        except ValueError:
            raise ValueError(f"{owner} url has an invalid port, got {_safe(url)!r}") from None
        if not parsed.hostname:
            raise ValueError(f"{owner} url has no host, got {_safe(url)!r}")
    return url


def _safe(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))
