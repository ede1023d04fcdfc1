"""Past one process: fleet-wide rate limits and shared breakers on Redis.

Needs the ``redis`` extra (``pip install 'virtrigaud-resilience[redis]'``,
which installs redis-py). Nothing here is imported by ``import
virtrigaud_resilience``.

- :class:`RedisTokenBucket`: the exact fleet-wide token bucket, GCRA in one
  Lua script, one round trip per decision (a batch of them for concurrent
  asyncio tasks).
- :class:`LeasedTokenBucket`: the fleet-wide limit at local speed: each
  process leases a max-min fair share of the rate and decides with a native
  TokenBucket.
- :class:`RedisRetryBudget`: a ratio retry budget shared by the fleet:
  each process decides locally and exchanges its deposits and withdrawals
  with Redis every ``refresh`` seconds.
- :class:`RedisBreakerSync`: the breakers of a BreakerRegistry, joined across
  processes (an open in one opens all; half-open probes limited fleet-wide).
- :class:`RedisClientBreaker`: the breaker of ours in front of each Redis
  client; while Redis is unreachable every primitive decides by its fallback.
- :func:`connect`: fail-fast clients (short socket timeouts, no retries).
- :class:`RedisKeyError`: the data at one key is not the primitive's (that
  key's decisions raise it; nothing else falls back). See
  :mod:`~virtrigaud_resilience.distributed.failures` for how every failure
  is sorted.
- :mod:`~virtrigaud_resilience.distributed.testing`: ``RedisServer``, a
  throwaway redis-server on a free loopback port, for your tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._extras import require

require("redis", "redis-py", "redis", __name__)

from .. import _deprecated  # noqa: E402
from .breaker_sync import DEFAULT_KEY, RedisBreakerSync
from .client_breaker import DEFAULT_PROBE_INTERVAL, RedisClientBreaker
from .clients import DEFAULT_SOCKET_TIMEOUT, client_kind, connect, describe
from .exact import RedisReservation, RedisTokenBucket
from .failures import RedisKeyError
from .fallback import FALLBACKS, Fallback
from .leased import DEFAULT_LEASE, LeasedTokenBucket
from .retry_budget import RedisRetryBudget

__all__ = [
    "DEFAULT_KEY",
    "DEFAULT_LEASE",
    "DEFAULT_PROBE_INTERVAL",
    "LeasedTokenBucket",
    "DEFAULT_SOCKET_TIMEOUT",
    "FALLBACKS",
    "Fallback",
    "RedisBreakerSync",
    "RedisClientBreaker",
    "RedisKeyError",
    "RedisReservation",
    "RedisRetryBudget",
    "RedisTokenBucket",
    "client_kind",
    "connect",
    "describe",
]

if TYPE_CHECKING:
    from .client_breaker import RedisClientBreaker as RedisGuard  # noqa: F401  (deprecated)
else:
    # Old public names, served (with a DeprecationWarning) until 0.3.0.
    __getattr__ = _deprecated.module_getattr(__name__, {
        "RedisGuard": f"{__name__}.client_breaker.RedisClientBreaker",
    })
