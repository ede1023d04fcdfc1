"""A retry budget shared by a fleet: Finagle's ratio semantics over every replica.

Each replica decides locally, with a native ratio
:class:`~virtrigaud_resilience.RetryBudget` (no round trip per call): a
:class:`RedisRetryBudget` **is** one, so it plugs into
``RetryConfig(budget=...)`` and ``PolicyBuilder.with_retry_budget``. Every
``refresh`` seconds a background thread exchanges the replica's deposits and
withdrawals with Redis in one script: the amounts this replica added since
the last exchange go into the fleet's window (a hash at ``key``, one field
per slot of ``ttl / 10`` on the server's clock, fields older than ``ttl``
deleted), and the fleet's sum over the window comes back. This replica's
share of that sum (less its own window, which it counts already) then
counts in the local balance, so the fleet's retries stay near ``percent``
of the fleet's calls, even when the calls and the failures land on
different replicas.

The share: the fleet's surplus (or debt) at an exchange is split evenly
among the replicas that asked for a retry lately (within ``max(2 *
refresh, ttl / 10)``; a replica that has not asked counts itself as one
more), so replicas retrying at once spend it once between them, not each
all of it (which overshot, and fed on itself: each replica's spending came
back to the others as a debt counted as many times). Between exchanges the
fleet may still overshoot by the surplus of one exchange that is not yet
known to all; when a single replica retries, it gets the whole surplus at
once, as if the fleet were one process.

Each replica keeps its own reserve (``min_per_second``): the fleet's is the
sum of its replicas'. On Redis loss a replica keeps its local budget (its
own deposits and reserve; the rest of the fleet counts as 0) and the
amounts it adds meanwhile are not sent; the next exchange that succeeds
rejoins the fleet.
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from typing import Any

from .._validate import seconds as _seconds
from ..clock import ManualClock
from ..durations import Seconds
from ..retry_budget import BudgetSpec, RetryBudget
from .failures import REDIS_FAILURES, RedisKeyError
from .scripts import Script

__all__ = ["DEFAULT_REFRESH", "RedisRetryBudget"]

logger = logging.getLogger("virtrigaud_resilience")

#: Seconds between exchanges with Redis, by default.
DEFAULT_REFRESH = 0.5

#: What an exchange may fail with: Redis's failures (a cluster's too: not
#: all are RedisErrors) and the key's own (it holds another's data).
_EXCHANGE_FAILURES: tuple[type[BaseException], ...] = (RedisKeyError, *REDIS_FAILURES)

# KEYS[1]: the fleet's window, a hash: slot -> net units, and "r:" replica
# -> the server's ms when it last asked for a retry (one key: Cluster-safe).
# ARGV: this replica's units since its last exchange, the slot's length in
# ms, slots, this replica's id, 1 if it asked for a retry since its last
# exchange, the ms within which a replica that asked counts.
# Returns {the fleet's net units over the window, the replicas that asked
# within the horizon, 1 if this one is among them}; an error, before any
# write, for a field that is neither (the key is another's: refused, not
# overwritten). Times are the server's (TIME): the replicas' monotonic
# clocks have nothing in common.
_EXCHANGE = Script("""
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slot_ms = tonumber(ARGV[2])
local slots = tonumber(ARGV[3])
local slot = math.floor(now_ms / slot_ms)
local delta = tonumber(ARGV[1])
local me = 'r:' .. ARGV[4]
local since = now_ms - tonumber(ARGV[6])
local oldest = now_ms - slot_ms * slots
local sum, askers, mine = 0, 0, nil
local stale = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local f = fields[i]
  local value = tonumber(fields[i + 1])
  local s = tonumber(f)
  if value == nil or (s == nil and string.sub(f, 1, 2) ~= 'r:') then
    return redis.error_reply('ERR not a retry budget window: field ' .. f)
  end
  if s == nil then
    if value <= oldest then
      stale[#stale + 1] = f
    elseif f == me then
      mine = value
    elseif value >= since then
      askers = askers + 1
    end
  elseif s <= slot - slots then
    stale[#stale + 1] = f
  elseif s <= slot then
    sum = sum + value
  end
end
for _, f in ipairs(stale) do
  redis.call('HDEL', KEYS[1], f)
end
if delta ~= 0 then
  redis.call('HINCRBY', KEYS[1], slot, delta)
  sum = sum + delta
end
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], me, now_ms)
  mine = now_ms
end
local counted = 0
if mine ~= nil and mine >= since then
  askers = askers + 1
  counted = 1
end
redis.call('PEXPIRE', KEYS[1], slot_ms * (slots + 1))
return {sum, askers, counted}
""")


class RedisRetryBudget(RetryBudget):
    """A ratio retry budget (:meth:`RetryBudget.ratio`) shared through Redis.

    Args:
        client: a synchronous redis-py client (``redis.Redis``;
            :func:`~virtrigaud_resilience.distributed.connect` makes a
            fail-fast one).
        key: the fleet's key (a str); every replica of one budget uses the same.
        percent, min_per_second, ttl: as :meth:`RetryBudget.ratio`
            (``min_per_second`` is each replica's reserve).
        refresh: seconds between exchanges with Redis, in [0.01, ttl / 2].
        clock: a :class:`ManualClock` for the local window (tests), or None.
        start: start the background exchanges now (False: call :meth:`sync`).
        provider_type, provider: labels for metrics and events (str).

    Raises:
        ValueError, TypeError: naming the field and the value.
    """

    __slots__ = ("_client", "_key", "_refresh", "_stop", "_thread", "_reachable",
                 "_sync_lock", "_id", "_slot_ms", "_horizon_ms")

    def __init__(self, client: Any, key: str, percent: float = 0.2, min_per_second: int = 10,
                 ttl: Seconds = 10.0, *, refresh: Seconds = DEFAULT_REFRESH,
                 clock: ManualClock | None = None, start: bool = True,
                 provider_type: str = "", provider: str = "") -> None:
        owner = "RedisRetryBudget"
        if not isinstance(key, str) or not key:
            raise TypeError(f"{owner} key must be a non-empty str, got {type(key).__name__} "
                            f"{key!r}")
        if not callable(getattr(client, "register_script", None)):
            raise TypeError(f"{owner} client must be a redis-py client (redis.Redis), "
                            f"got {type(client).__name__} {client!r}")
        spec = BudgetSpec.ratio(percent, min_per_second, ttl)
        ttl_seconds = spec.native[4] / 1e9
        every = _seconds(owner, "refresh", refresh, allow_zero=False)
        if not 0.01 <= every <= ttl_seconds / 2:
            raise ValueError(f"{owner} refresh must be in [0.01, ttl / 2 = {ttl_seconds / 2:g}] "
                             f"seconds, got {refresh!r}")
        super().__init__(spec, clock=clock, provider_type=provider_type, provider=provider)
        self._share()
        self._client = client
        self._key = key
        self._refresh = every
        self._id = uuid.uuid4().hex  # this replica, among the fleet's askers
        self._slot_ms = max(1, spec.native[4] // 10 // 1_000_000)
        self._horizon_ms = max(round(2 * every * 1000), self._slot_ms)
        self._stop = threading.Event()
        self._reachable: bool | None = None
        self._sync_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=_exchange_loop,
                                            args=(weakref.ref(self), self._stop, every),
                                            name=f"retry-budget {key}", daemon=True)
            self._thread.start()

    @property
    def key(self) -> str:
        """The fleet's key in Redis."""
        return self._key

    @property
    def reachable(self) -> bool | None:
        """Whether the last exchange succeeded (None before the first;
        False: Redis did not answer, or the key holds what is not a retry
        budget's window: the log says which)."""
        return self._reachable

    def sync(self) -> bool:
        """One exchange with Redis now: sends this replica's amounts since the
        last, and counts its share of the fleet's window in the balance (the
        window split among the replicas that asked for a retry lately).
        Returns whether it succeeded; when it did not (no node answered, or
        the key holds data of another type or format, logged once), the rest
        of the fleet counts as 0 and this replica's amounts meanwhile are
        dropped. Never raises for Redis's failures."""
        with self._sync_lock:
            delta = self._take_unsynced()
            wanted = self._take_wanted()
            try:
                fleet, askers, counted = (int(v) for v in _EXCHANGE.run(
                    self._client, self._key, delta, self._slot_ms, 10, self._id, int(wanted),
                    self._horizon_ms))
            except _EXCHANGE_FAILURES as exc:
                self._set_external(0)
                if self._reachable is not False:
                    logger.warning("retry budget %s: %s; deciding with the local budget alone",
                                   self._key, exc if isinstance(exc, RedisKeyError)
                                   else f"Redis unreachable ({exc})")
                self._reachable = False
                return False
            # Floor division: a debt is never rounded down to nothing.
            share = fleet // (askers + (0 if counted else 1))
            self._set_external(share - self._own_window())
            if self._reachable is False:
                logger.info("retry budget %s: Redis reachable again; sharing the fleet's "
                            "window", self._key)
            self._reachable = True
            return True

    def close(self) -> None:
        """Stops the background exchanges (idempotent); the budget goes on locally."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __enter__(self) -> RedisRetryBudget:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RedisRetryBudget({self._key!r}, {self._spec.describe()}, "
                f"available={self.available})")


def _exchange_loop(ref: weakref.ref[RedisRetryBudget], stop: threading.Event,
                   every: float) -> None:
    """Exchanges every ``every`` seconds until stopped or the budget is
    gone (the thread holds no strong reference between exchanges)."""
    while not stop.wait(every):
        budget = ref()
        if budget is None:
            return
        try:
            budget.sync()
        except Exception:  # never let the thread die: the next exchange may work
            logger.exception("retry budget %s: exchange failed", budget.key)
        del budget
