"""What a Redis command's failure means: an outage, a full pool, one key's problem, or a permission.

- **An outage** (the client's breaker opens; every primitive on the
  client falls back): any error of redis-py's families that is not one of the others:
  connection errors and timeouts, ``RedisClusterException`` (no node
  reachable, no owner for a slot), the OS's socket errors, and the error
  replies of a server that cannot serve anyone now (``READONLY`` after a
  failover, ``OOM``, ``BUSY``, ``LOADING``, ``MASTERDOWN``, ``CLUSTERDOWN``,
  ``TRYAGAIN``, ``MISCONF``...).
- **A full pool** (``MaxConnectionsError``, a BlockingConnectionPool that
  waited in vain): a limit of this process; that decision falls back, the
  client's breaker stays closed.
- **One key's problem** (:class:`RedisKeyError`, a ValueError naming the
  key): any other error reply to one of our scripts: ``WRONGTYPE`` (the key
  holds another type), a value at the key that is not ours (our scripts
  refuse it rather than overwrite it), a script error. Only that key's
  decisions raise it; the client's breaker stays closed.
- **A permission** (``NOPERM``: an ACL user without scripting or without
  access to the key): raised as :class:`~virtrigaud_resilience.UnauthorizedError`
  naming what is missing, logged once by the client's breaker, which stays
  closed.
"""

from __future__ import annotations

import asyncio

import redis
from redis.exceptions import (
    AskError,
    ClusterError,
    ExecAbortError,
    MaxConnectionsError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)

__all__ = ["REDIS_FAILURES", "RedisKeyError", "is_outage_reply", "pool_exhausted",
           "key_error"]

#: What a failed command raises: every family of redis-py's errors
#: (``RedisError``: connection, timeout, error replies; and
#: ``RedisClusterException``, which is not a RedisError: a cluster client
#: that found no reachable node or no owner for a slot), the OS's (a socket
#: torn down under us) and a timeout of asyncio's.
REDIS_FAILURES: tuple[type[BaseException], ...] = (
    redis.RedisError, RedisClusterException, OSError, TimeoutError, asyncio.TimeoutError)

#: Error replies of a server that serves no one now (by their first word).
_OUTAGE_PREFIXES = ("BUSY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY",
                    "OOM", "MISCONF", "NOREPLICAS", "NOAUTH", "WRONGPASS", "UNKILLABLE",
                    "ERR max number of clients")
_OUTAGE_REPLIES = (ReadOnlyError, OutOfMemoryError, ClusterError, TryAgainError, AskError,
                   ExecAbortError)


class RedisKeyError(ValueError):
    """The data at one Redis key cannot be used by the primitive given that key.

    Attributes:
        key: the key.
        reason: what Redis (or our script) said.

    Only that key's decisions raise it; other keys and the client's
    breaker are unaffected. Delete or rename the key (or give the primitive another).
    """

    def __init__(self, key: str, reason: str, where: str = "") -> None:
        self.key = key
        self.reason = reason
        on = f" on Redis {where}" if where else ""
        super().__init__(
            f"Redis key {key!r}{on} cannot be used: {reason} (the key holds data of another "
            "type or format than this primitive's; delete or rename it, or use another key; "
            "other keys are unaffected)")


def is_outage_reply(exc: ResponseError) -> bool:
    """Whether an error reply says the server serves no one now (not one key's problem)."""
    if isinstance(exc, _OUTAGE_REPLIES):
        return True
    return str(exc).startswith(_OUTAGE_PREFIXES)


def key_error(exc: ResponseError, key: str, where: str = "") -> RedisKeyError | None:
    """A RedisKeyError naming ``key`` if the error reply ``exc`` to a command
    on it is the key's problem; None if it is not (an outage, a permission)."""
    if isinstance(exc, NoPermissionError) or is_outage_reply(exc):
        return None
    return RedisKeyError(key, str(exc), where)


def pool_exhausted(exc: BaseException) -> bool:
    """Whether ``exc`` is redis-py's pool refusing a connection (its size
    reached; a BlockingConnectionPool that waited in vain)."""
    return isinstance(exc, MaxConnectionsError) or (
        isinstance(exc, redis.ConnectionError) and str(exc) == "No connection available.")
