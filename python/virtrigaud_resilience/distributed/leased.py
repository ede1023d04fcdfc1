"""The fleet-wide rate limit at local speed: leased shares, Doorman-style.

Each process holds a *lease* on a share of the fleet's rate and decides
locally: a :class:`LeasedTokenBucket` **is** a native
:class:`~virtrigaud_resilience.TokenBucket` (``try_acquire`` costs what a
local bucket's does, and it plugs into ``PolicyBuilder.with_rate_limiter``)
whose rate and burst a background refresh sets from the lease.

Every ``refresh`` seconds one small script records the process's demand
(tokens it asked for per second, granted or not, averaged over about a
lease; at most what an AdaptiveRate on the bucket learned the provider
takes: :meth:`LeasedTokenBucket.report_demand`) and hands out a
max-min fair share of the fleet's ``qps``: no member gets more than it asks
for, the rest is split evenly among those who want more, and what nobody
wants is split evenly too. The burst is shared in proportion (each member
at least one token while one is free). A lease lasts ``lease`` seconds;
refreshes renew it.

**The bound.** In any window of ``t`` seconds during which every member
reaches Redis, the fleet admits at most ``qps * t + burst`` tokens: the
rebalancing after a member joins or leaves adds nothing. Why:

- the server never promises more than ``qps`` (and ``burst``) in total among
  unexpired leases: a new share is granted only out of what other members'
  leases leave free;
- a lowered share does not free the difference at once: the lease it
  replaces stays counted until it expires, since the member may still be
  using it (its refresh may be in flight, or its reply lost); a share is
  lowered at most once per lease, so what is counted never ratchets up;
- a member stops using a lease before the server counts it expired (it
  measures the lease from the moment it sent the request, less a margin
  of 1 ms + 0.1%);
- a member's bucket starts empty when it gets its first lease (and after a
  fallback), so joining brings no tokens with it; a lower share keeps at
  most its new burst of the tokens it had, and a higher one fills only at
  its rate.

What rebalancing costs instead is utilisation: a member that leaves
without releasing (a crash) keeps its share until its lease expires (at
most ``lease`` seconds), and a member whose share grows gets the capacity
others give up once their previous leases expire (at most ``refresh +
lease``, more while demand keeps shifting). A member given no share holds the native bucket's slowest rate,
one token per 73 minutes, with an empty bucket; the burst must be at least
the number of members for each to get a share. While a member cannot reach
Redis the bound does not cover it: it keeps its last lease until the lease
expires (its share of the bound), then its fallback decides.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import os
import random
import socket
import threading
import time
import uuid
import weakref
from types import TracebackType
from typing import Any, cast

from .. import _core, _validate
from .._deprecated import RenamedAttribute, renamed_keyword
from .._tracking import provider_labels
from ..durations import Seconds
from ..errors import UnavailableError
from .._fallback_census import FALLBACK_LIMITERS
from ..ratelimit import (
    MAX_BURST,
    MIN_QPS,
    Reservation,
    TokenBucket,
    validate_rate,
)
from .client_breaker import (
    RedisBusy,
    RedisClientBreaker,
    RedisUnavailable,
    check_client_breaker,
)
from .clients import DEFAULT_SOCKET_TIMEOUT, AsyncClient, Client, SyncClient, client_kind, connect
from .failures import RedisKeyError
from .fallback import Fallback, check_fallback, check_share, local_rate
from .fleet_config import NEWEST_CONFIG_LUA, FleetConfig, member_name
from .scripts import EPOCH_LUA, Script, check_key
from .server_clock import STEP_TOLERANCE_US, TEST_TIME_OFFSET, ServerClock

__all__ = ["LeasedTokenBucket", "DEFAULT_LEASE"]

logger = logging.getLogger("virtrigaud_resilience")

#: Seconds a lease lasts by default (refreshed every third of it).
DEFAULT_LEASE = 3.0

LEASE = Script(f"""-- virtrigaud-resilience: leased shares of a fleet's rate, one key
-- KEYS[1]: a hash, member -> "demand rate burst expires held_rate held_burst held_expires",
--          and '~epoch' -> "0 0 0 9e15 rebuilt_at epoch stepped_at": the table's identity,
--          when the leases granted before it was made (a lost table) have all expired, and
--          when its expiries last moved with a step of the server's clock (written
--          as a member that wants nothing and never expires, so that a member of an older
--          version, which has no epoch, reads it as such during a rolling upgrade)
-- ARGV[1]: "lease" or "release"; ARGV[2]: the member: its field, "id qps burst born" (the
--          config it was built with and the server time of its first lease, '?' until
--          then: see fleet_config), or any name without spaces (no config registered)
-- lease:   ARGV[3]: its demand (tokens/s), ARGV[4]: the fleet's qps, ARGV[5]: its burst
--          (what the script decides with if no member registered a config; else the
--          newest config registered by a member holding a lease decides),
--          ARGV[6]: the lease (us), ARGV[7]: the epoch it knows ('' at first),
--          ARGV[8]: the members it knows (0 at first), ARGV[9]: the server time (us) it
--          expects now, ARGV[10]: the server time of its last reply ('' at first for both);
--          returns {{rate, burst, members, epoch, lost (1: the table it knew is gone), now,
--          its field (born filled in), the newest config's qps, its burst ('' for none)}}
-- release: gives the member's lease back
{EPOCH_LUA}{NEWEST_CONFIG_LUA}
local key, me = KEYS[1], ARGV[2]
if ARGV[1] == 'release' then return redis.call('HDEL', key, me) end
if string.sub(me, -2) == ' ?' then
  me = string.sub(me, 1, -2) .. string.format('%d', now)  -- its first lease: born now
end
if ARGV[1] ~= 'lease' then return redis.error_reply('virtrigaud lease: unknown operation') end
local demand, capacity = tonumber(ARGV[3]), tonumber(ARGV[4])
local burst_cap, lease = tonumber(ARGV[5]), tonumber(ARGV[6])
local known, known_members = ARGV[7] or '', tonumber(ARGV[8]) or 0
local expected, seen = tonumber(ARGV[9] or ''), tonumber(ARGV[10] or '')
local shift = tonumber(redis.call('HGET', key, '{TEST_TIME_OFFSET}'))
if shift then now = now + shift end  -- a test's simulated step (server_clock's test hook)
local raw = redis.call('HGETALL', key)
-- A step of the server's clock: the member's expectation of TIME is off by
-- more than the tolerance. The expiries move with it, once per step (not
-- again for a member whose last reply came before the move), so each lease
-- is counted exactly as long as its member uses it: a forward step frees no
-- share still in use, a backward one holds none longer.
local skew = expected and (now - expected) or 0
local function fields(text)
  local f = {{}}
  for x in string.gmatch(text, '%S+') do f[#f + 1] = x end
  return f
end
if math.abs(skew) > {STEP_TOLERANCE_US} then
  local at = nil
  for i = 1, #raw, 2 do if raw[i] == '~epoch' then at = i end end
  local e = at and fields(raw[at + 1]) or {{}}
  local stepped_at = tonumber(e[7]) or 0
  if at and #e == 7 and not (seen and seen < stepped_at - skew) then
    for i = 1, #raw, 2 do
      local f = fields(raw[i + 1])
      if raw[i] ~= '~epoch' and #f == 7 then
        for _, j in ipairs({{4, 7}}) do
          local v = tonumber(f[j])
          if v and v > 0 then f[j] = string.format('%.17g', math.max(0, v + skew)) end
        end
        raw[i + 1] = table.concat(f, ' ')
        redis.call('HSET', key, raw[i], raw[i + 1])
      end
    end
    local rebuilt = tonumber(e[5]) or 0
    if rebuilt > 0 then e[5] = string.format('%d', math.max(0, rebuilt + skew)) end
    e[7] = string.format('%d', now)
    raw[at + 1] = table.concat(e, ' ')
    redis.call('HSET', key, '~epoch', raw[at + 1])
  end
end
local demands = {{demand}}
local epoch, rebuilt_at = nil, 0
local others_rate, others_burst, mine = 0, 0, nil
-- a member's lease: seven finite numbers >= 0, its expiries within the
-- longest lease (a day) of now; else nil (not a lease: dropped, its share free)
local function parse(text)
  local f = {{}}
  for x in string.gmatch(text, '%S+') do
    local v = tonumber(x)
    if not v or not (v >= 0 and v < 1e300) then return nil end
    f[#f + 1] = v
  end
  if #f ~= 7 or f[4] > now + 86400e6 or f[7] > now + 86400e6 then return nil end
  return f
end
for i = 1, #raw, 2 do
  local f = raw[i] ~= '~epoch' and parse(raw[i + 1]) or nil
  if raw[i] == '~epoch' then
    local e = {{}}
    for x in string.gmatch(raw[i + 1], '%S+') do e[#e + 1] = x end
    epoch, rebuilt_at = e[6], tonumber(e[5]) or 0
  elseif raw[i] == '{TEST_TIME_OFFSET}' then
    -- the test hook: not a lease
  elseif not f then
    redis.call('HDEL', key, raw[i])
  elseif raw[i] == me then
    mine = f
  elseif f[4] <= now then
    redis.call('HDEL', key, raw[i])  -- its lease ran out: its share is free again
  else
    consider(raw[i])
    demands[#demands + 1] = f[1]
    local rate, burst = f[2], f[3]
    if f[7] > now then  -- lowered: the lease it replaced still counts until it expires
      rate, burst = math.max(rate, f[5]), math.max(burst, f[6])
    end
    others_rate, others_burst = others_rate + rate, others_burst + burst
  end
end
-- A new table: the first, or one lost (DEL, FLUSHDB, a restart without
-- persistence, a failover that missed writes). Leases granted before it may
-- be in force for up to a lease, and it cannot count them: until then each
-- member is granted at most an even share among the members it knew.
if not epoch then
  epoch, rebuilt_at = string.format('%d', now), now + lease
  redis.call('HSET', key, '~epoch', string.format('0 0 0 9e15 %d %s 0', rebuilt_at, epoch))
end
local lost = (known ~= '' and known ~= epoch) and 1 or 0
-- the newest config among the members holding a lease and this one decides
consider(me)
if newest_config then
  capacity, burst_cap = tonumber(newest_config[1]), tonumber(newest_config[2])
end
-- max-min fair share (water-filling); what no member wants is split evenly
table.sort(demands)
local n, left, level = #demands, capacity, nil
for i = 1, n do
  local even = left / (n - i + 1)
  if demands[i] > even then level = even break end
  left = left - demands[i]
end
local target = demand + left / n
if level then target = math.min(demand, level) end
if now < rebuilt_at then target = math.min(target, capacity / math.max(n, known_members)) end
-- granted only out of what the others' unexpired leases leave free
local rate = math.max(0, math.min(target, capacity - others_rate))
local burst = math.min(math.max(1, math.floor(burst_cap * rate / capacity)),
                       burst_cap - others_burst)
if burst < 1 or rate <= 0 then rate, burst = 0, 0 end
-- Lowering: the lease replaced stays counted for the others until it
-- expires (the member may still use it). One lowering per lease: while an
-- earlier one is still counted, the current lease is kept (it fits: the
-- others were granted around it), so what is counted never ratchets up.
local cur_rate, cur_burst, cur_expires = 0, 0, 0
if mine and mine[4] > now then cur_rate, cur_burst, cur_expires = mine[2], mine[3], mine[4] end
local held_rate, held_burst, held_expires = 0, 0, 0
if mine and mine[7] > now then
  held_rate, held_burst, held_expires = mine[5], mine[6], mine[7]
  rate, burst = math.max(rate, cur_rate), math.max(burst, cur_burst)
elseif rate < cur_rate or burst < cur_burst then
  held_rate, held_burst, held_expires = cur_rate, cur_burst, cur_expires
end
redis.call('HSET', key, me, string.format('%.17g %.17g %d %.17g %.17g %d %.17g', demand, rate,
           burst, now + lease, held_rate, held_burst, held_expires))
redis.call('PEXPIRE', key, math.floor(2 * lease / 1000) + 1)
return {{string.format('%.17g', rate), burst, n, epoch, lost, string.format('%d', now), me,
        newest_config and newest_config[1] or '', newest_config and newest_config[2] or ''}}
""")

_MAX_INTERVAL_NS: int = _core.TOKEN_BUCKET_MAX_INTERVAL_NS
_MAX_TAU_NS: int = _core.TOKEN_BUCKET_MAX_TAU_NS
_SHARED, _FALLBACK, _STARTING, _CLOSED = "shared", "fallback", "starting", "closed"


class LeasedTokenBucket(TokenBucket):
    """A native TokenBucket whose rate is this process's lease of a fleet's rate.

    Every decision is local (``try_acquire`` is the native method: nanoseconds,
    no round trip); a background refresh (a thread for a sync client, a task
    for an asyncio one) renews the lease every ``refresh`` seconds and sets
    the bucket's rate and burst from it. See the module for the bound the
    fleet keeps and what rebalancing costs.

    With a sync client the constructor takes the first lease at once (one
    round trip) and starts the refresh thread; with an asyncio client, call
    ``await bucket.start()`` (or use ``async with``) first: until then the
    bucket has no share. :meth:`close` / :meth:`aclose` stop the refresh and
    give the share back to the fleet at once; a closed bucket refuses every
    token.

    Before its first lease, and when given no share, the bucket refuses
    (``try_acquire`` returns False). When its lease expires without being
    renewed (Redis unreachable), ``fallback`` decides: ``"local"`` (default)
    sets the bucket to ``local_share`` of the fleet's rate and burst
    (default: the last fair share, 1/members); ``"allow"`` to the highest
    rate (every token granted); ``"deny"`` to no share at all: ``try_acquire``,
    ``acquire``, ``acquire_async``, ``reserve`` and ``retry_after`` raise
    ``UnavailableError`` (``try_acquire`` stays the native method in every
    mode and the bucket never changes class: a native per-object flag, read
    only when the native method refuses, makes the refusal raise; its
    ``retry_after`` is the client breaker's probe interval), so a policy using the
    bucket raises it too (a refusal asks the bucket for its retry_after).
    The next lease brings it back, emptied. Build it in
    the process that uses it: its refresh thread does not survive a ``fork()``.

    Args:
        client: a sync or asyncio redis-py client.
        key: the Redis key of the fleet's lease table (non-empty str).
        qps, burst: the fleet's rate and capacity, validated as TokenBucket's.
            Members built with different ones (a rolling deploy) all take
            the newest config among the members holding a lease (that of
            the latest to join: see :mod:`~.fleet_config`) at their next
            lease, which the script already grants by it; ``fleet_qps`` and
            ``fleet_burst`` are the config in use, ``config_changes`` counts
            the changes (each logged once).
        lease: seconds a lease lasts, > 0 (default 3); a member's share
            returns to the others at most this long after it stops.
        refresh: seconds between refreshes, > 0 and < ``lease`` (default
            ``lease / 3``); leave room for a slow refresh to fail (the
            client's socket timeout) before the lease runs out.
        fallback, local_share: see above.
        provider_type, provider: metric labels.
        member: this process's name in the lease table (default
            ``host:pid:random``; unique per bucket, no spaces); its field
            there is ``"member qps burst born"`` (the config it was built
            with, and the server time of its first lease).
        client_breaker: the :class:`RedisClientBreaker` to use; default the
            client's shared one. ``guard=``, its old name, is deprecated.

    Raises:
        TypeError, ValueError: a bad argument, naming it and its value.
    """

    __slots__ = ("client", "key", "fleet_qps", "fleet_burst", "lease", "refresh", "fallback",
                 "local_share", "member", "_kind", "_client_breaker", "_mode", "_lock", "_expires",
                 "_next_refresh", "_refresh_now", "_members", "_share", "_demand_at",
                 "_demand_count", "_demand", "_fallback_base", "_fallback_sum", "_moves", "_wake",
                 "_thread", "_task", "_on_clock", "_refresh_errors", "_epoch", "_clock", "_config",
                 "_registered_as", "_demand_cap", "_granted")

    def __init__(self, client: Client, key: str, *, qps: float, burst: int,
                 lease: Seconds = DEFAULT_LEASE, refresh: Seconds | None = None,
                 fallback: Fallback = "local", local_share: float | None = None,
                 provider_type: str = "", provider: str = "", member: str | None = None,
                 client_breaker: RedisClientBreaker | None = None,
                 guard: RedisClientBreaker | None = None) -> None:
        owner = "LeasedTokenBucket"
        kind = client_kind(owner, client)
        key = check_key(owner, key)
        fleet_qps, fleet_burst = validate_rate(owner, qps, burst)
        lease_s = _validate.seconds(owner, "lease", lease, allow_zero=False, maximum=86400.0)
        refresh_s = lease_s / 3 if refresh is None else _validate.seconds(
            owner, "refresh", refresh, allow_zero=False)
        if refresh_s >= lease_s:
            raise ValueError(f"{owner} refresh must be < lease ({lease_s:g} s), got {refresh!r}")
        fallback = check_fallback(owner, fallback)
        share = None if local_share is None else check_share(owner, local_share)
        member = (f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
                  if member is None else _check_member(owner, member))
        client_breaker = check_client_breaker(owner, renamed_keyword(
            owner, "guard", guard, "client_breaker", client_breaker), client)
        provider_labels(owner, provider_type, provider)  # errors name this class, not TokenBucket
        super().__init__(MIN_QPS, 1, provider_type=provider_type, provider=provider)
        self._set_rate(_MAX_INTERVAL_NS, 1, 0)  # no share, and no token, before a lease
        self.client, self.key, self._kind = client, key, kind
        self._client_breaker = client_breaker
        self.fleet_qps, self.fleet_burst = fleet_qps, fleet_burst
        self.lease, self.refresh = lease_s, refresh_s
        self.fallback, self.local_share, self.member = fallback, share, member
        self._mode = _STARTING
        self._lock = threading.Lock()
        self._expires = 0.0
        self._next_refresh = 0.0
        self._refresh_now = False
        self._members = 0
        self._share: tuple[int, int] = (_MAX_INTERVAL_NS, 1)
        self._demand_at = time.monotonic()
        self._demand_count = 0
        self._demand = fleet_qps  # nothing measured yet: ask for all, fairness sorts it out
        self._demand_cap: float | None = None  # report_demand()'s: an AdaptiveRate's learned rate
        self._granted = (0.0, 0)  # the last lease's (rate, burst), before the cap
        self._fallback_base: tuple[int, int] | None = None
        self._fallback_sum = [0, 0]
        self._moves = [0, 0]  # times it fell back, times it got a lease back
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: Any = None
        self._on_clock = False  # the lease clock watches this bucket's expiry
        self._epoch = ""  # the lease table's identity at the last lease
        self._clock = ServerClock()  # the server's TIME as last seen: its steps are found
        # Its field in the lease table: its name, the config it was built
        # with, and when it first got a lease ('?': not yet; the server says).
        self._config = FleetConfig("leased rate limit", key, fleet_qps, fleet_burst)
        self._registered_as = member_name(member, fleet_qps, fleet_burst)
        self._refresh_errors: set[type[BaseException]] = set()
        client_breaker.on_recovery(self._on_recovery)
        FALLBACK_LIMITERS.track(self)
        if kind == "sync":
            self._wake = threading.Event()
            self._tick_sync()
            self._thread = threading.Thread(target=_refresh_thread, args=(weakref.ref(self),),
                                            name=f"leased-bucket {key}", daemon=True)
            self._thread.start()

    def __del__(self, _retire: Any = FALLBACK_LIMITERS.retire) -> None:
        _retire(self)
        super().__del__()

    @classmethod
    def from_url(cls, url: str, key: str, *, qps: float, burst: int, asynchronous: bool = False,
                 cluster: bool = False, socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
                 check: bool = True,
                 **options: Any) -> LeasedTokenBucket:
        """A leased bucket on a new fail-fast client (see
        :func:`~virtrigaud_resilience.distributed.connect`); the client is
        ``bucket.client``."""
        check_key("LeasedTokenBucket", key)
        validate_rate("LeasedTokenBucket", qps, burst)
        client = connect(url, asynchronous=asynchronous, cluster=cluster,
                         socket_timeout=socket_timeout, check=check, key=key)
        return cls(client, key, qps=qps, burst=burst, **options)

    # -------------------------------------------------------------- state --

    @property
    def shared(self) -> bool:
        """True while the bucket holds an unexpired lease."""
        return self._mode == _SHARED

    @property
    def mode(self) -> str:
        """``"shared"`` (a lease), ``"fallback"``, ``"starting"`` (no lease
        yet) or ``"closed"``."""
        return self._mode

    @property
    def members(self) -> int:
        """Members of the fleet at the last lease (0 before one)."""
        return self._members

    @property
    def client_breaker(self) -> RedisClientBreaker:
        """The breaker in front of this bucket's client."""
        return self._client_breaker

    #: Deprecated: :attr:`client_breaker` (until 0.3.0).
    guard: RenamedAttribute[RedisClientBreaker] = RenamedAttribute("client_breaker")

    @property
    def config_changes(self) -> int:
        """How many times this bucket took the fleet's newer qps and burst
        (``fleet_qps`` and ``fleet_burst`` are the current ones)."""
        return self._config.changes

    def set_rate(self, qps: float, burst: int | None = None) -> None:
        """Refused: the lease sets a leased bucket's rate (TypeError)."""
        raise TypeError("LeasedTokenBucket.set_rate(): the rate comes from the fleet's lease; "
                        "build the fleet's buckets with the new qps and burst instead")

    # ------------------------------------------------- the adaptive rate --

    def report_demand(self, qps: float | None) -> None:
        """The most this member uses and asks the fleet for (tokens/s,
        finite and >= 0; None: no cap): its bucket's rate is the lower of
        its share and ``qps`` from now on, and its next refresh asks for no
        more. An :class:`~virtrigaud_resilience.AdaptiveRate` on this bucket
        reports its learned rate here instead of setting the rate (the lease
        sets a leased bucket's rate): each member then takes what it learned
        the provider allows, and asks for no more, so that what it leaves
        goes to the members that learned they may send more and the fleet's
        rate adds up to the provider's quota, not to each member's guess of
        it. Capping only lowers a share: the fleet's bound holds."""
        if qps is not None:
            qps = _validate.non_negative("LeasedTokenBucket", "qps", qps)
        with self._lock:
            self._demand_cap = qps
            if self._mode == _SHARED:
                self._set_share(*self._granted, empty=False)

    def _pause_share(self, interval_ns: int) -> None:
        """Spends nothing for now: one token per ``interval_ns`` (an
        AdaptiveRate's pause until a quota's reset), until :meth:`_resume_share`
        or a lease whose share differs from the current one."""
        with self._lock:
            if self._mode == _SHARED:
                self._set_rate(interval_ns, 1, 0)

    def _resume_share(self) -> None:
        """Back to the lease's share after :meth:`_pause_share` (its bucket emptied)."""
        with self._lock:
            if self._mode == _SHARED:
                self._set_rate(*self._share, 0)

    # ----------------------------------------------------- waiting methods --

    def reserve(self, n: int = 1) -> Reservation:
        """As TokenBucket.reserve; UnavailableError in "deny" fallback."""
        self._refuse_if_denied()
        return super().reserve(n)

    def acquire(self, n: int = 1, timeout: Seconds | None = None) -> bool:
        """As TokenBucket.acquire; UnavailableError in "deny" fallback."""
        self._refuse_if_denied()
        return super().acquire(n, timeout)

    async def acquire_async(self, n: int = 1, timeout: Seconds | None = None) -> bool:
        """As TokenBucket.acquire_async; UnavailableError in "deny" fallback."""
        self._refuse_if_denied()
        return await super().acquire_async(n, timeout)

    def retry_after(self, n: int = 1) -> float:
        """As TokenBucket.retry_after; UnavailableError in "deny" fallback."""
        self._refuse_if_denied()
        return super().retry_after(n)

    def _refused(self, n: int) -> bool:
        """What the native try_acquire does with a refusal in "deny" fallback
        (it calls this only then, and only on a refusal: an admission and the
        shared mode never reach Python): raises UnavailableError, counted as
        a rejection as any refusal is. Returns False if the fallback ended
        meanwhile (a lease was taken, or the bucket closed)."""
        self._refuse_if_denied()
        return False

    def _refuse_if_denied(self) -> None:
        """UnavailableError in "deny" fallback: every waiting method, and
        retry_after (which a policy asks when try_acquire refused)."""
        if self._mode == _FALLBACK and self.fallback == "deny":
            raise UnavailableError(
                f"leased rate limit {self.key!r}: no lease (Redis {self._client_breaker.name} is "
                "unreachable) and fallback='deny'", self._client_breaker.last_error,
                retry_after=self._client_breaker.probe_interval)

    # -------------------------------------------------------------- async --

    async def start(self) -> LeasedTokenBucket:
        """Takes the first lease and starts the refresh task (asyncio client).

        Idempotent; returns the bucket. With a sync client the constructor did this.
        """
        if self._kind != "async":
            raise TypeError("LeasedTokenBucket.start() is for an asyncio client: a bucket with "
                            "a sync client took its lease when built")
        if self._task is None and self._mode != _CLOSED:
            self._wake = asyncio.Event()
            await self._tick_async()
            self._task = asyncio.get_running_loop().create_task(
                _refresh_task(weakref.ref(self)), name=f"leased-bucket {self.key}")
        return self

    async def aclose(self) -> None:
        """Stops the refresh task and gives the share back (asyncio client)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._mode == _CLOSED:
            return
        self._close_locally()
        try:
            await self._client_breaker.run_async(LEASE.run_async, self.client, self.key, "release",
                                        self._registered_as)
        except (RedisUnavailable, RedisKeyError):
            pass  # the lease will expire (or the table is not ours: there is none to give)

    async def __aenter__(self) -> LeasedTokenBucket:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    # --------------------------------------------------------------- sync --

    def close(self) -> None:
        """Stops the refresh thread and gives the share back (sync client).

        Idempotent. The bucket refuses every token afterwards.
        """
        if self._kind != "sync":
            raise TypeError("LeasedTokenBucket.close() is for a sync client: use "
                            "await bucket.aclose()")
        if self._mode == _CLOSED:
            return
        self._close_locally()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            self._wake.set()
            thread.join(timeout=5.0)
        try:
            self._client_breaker.run(LEASE.run, self.client, self.key, "release",
                                     self._registered_as)
        except (RedisUnavailable, RedisKeyError):
            pass  # the lease will expire (or the table is not ours: there is none to give)

    def __enter__(self) -> LeasedTokenBucket:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ refresh --

    def _tick_sync(self) -> float:
        """One step of the refresh loop (sync); returns seconds to the next."""
        now = time.monotonic()
        if self._refresh_due(now):
            args = self._lease_args(now)
            try:
                reply = self._client_breaker.run(LEASE.run, cast(SyncClient, self.client),
                                                 self.key, *args)
                self._apply(reply, now)
            except Exception as exc:
                self._refresh_failed(exc, now)
        return self._after_tick()

    async def _tick_async(self) -> float:
        """One step of the refresh loop (asyncio); returns seconds to the next."""
        now = time.monotonic()
        if self._refresh_due(now):
            args = self._lease_args(now)
            try:
                reply = await self._client_breaker.run_async(
                    LEASE.run_async, cast(AsyncClient, self.client), self.key, *args)
                self._apply(reply, now)
            except Exception as exc:
                self._refresh_failed(exc, now)
        return self._after_tick()

    def _refresh_failed(self, exc: Exception, now: float) -> None:
        """A refresh that brought no lease: the bucket keeps the one it has
        until it expires (then its fallback decides). Redis unreachable is
        the client breaker's to log; anything else is logged here, once per type.
        The client's pool out of connections (many buckets refreshing at
        once, as after a recovery): tried again within a tenth of a
        refresh, at a random moment, so the crowd spreads out."""
        if isinstance(exc, RedisBusy):
            self._next_refresh = now + random.uniform(0.01, 0.1) * self.refresh
            return
        if isinstance(exc, RedisKeyError):
            with self._lock:
                if self._mode == _STARTING:  # no lease to keep: the fallback decides now
                    self._enter_fallback(f"its lease table is unusable ({exc.reason})")
        if isinstance(exc, RedisUnavailable) or type(exc) in self._refresh_errors:
            return
        self._refresh_errors.add(type(exc))
        logger.error("leased rate limit %r: a refresh failed; the bucket keeps its lease until "
                     "it expires, then its fallback decides", self.key, exc_info=exc,
                     extra={"rate_limit": self.key, "redis_state": "refresh_error"})

    def _refresh_due(self, now: float) -> bool:
        if self._mode == _CLOSED or not (now >= self._next_refresh or self._refresh_now):
            return False
        self._refresh_now = False
        self._next_refresh = now + self.refresh
        return self._client_breaker.up

    def _after_tick(self) -> float:
        now = time.monotonic()
        with self._lock:
            if self._mode == _SHARED and now >= self._expires:
                self._enter_fallback("its lease expired")
            elif self._mode == _STARTING and not self._client_breaker.up:
                self._enter_fallback("no lease could be taken")
        wake = self._next_refresh
        if self._mode == _SHARED:
            wake = min(wake, self._expires)
        return max(0.0, wake - time.monotonic())

    def _lease_args(self, now: float) -> tuple[object, ...]:
        """The lease script's arguments, with this member's demand: the tokens
        it asked for per second (granted or not), averaged over about a lease
        (an exponential moving average), so that a member asking rarely is
        not taken for one asking nothing between two refreshes."""
        admitted, rejected, reserved = self._counters()
        count = admitted + rejected + reserved
        elapsed = now - self._demand_at
        if elapsed > 0 and self._mode != _STARTING:
            weight = 1.0 - math.exp(-elapsed / self.lease)
            rate = (count - self._demand_count) / elapsed
            self._demand += weight * (rate - self._demand)
        self._demand_at, self._demand_count = now, count
        cap = self._demand_cap
        demand = self._demand if cap is None else min(self._demand, cap)
        return ("lease", self._registered_as, repr(demand), self.fleet_qps, self.fleet_burst,
                round(self.lease * 1e6), self._epoch, self._members, self._clock.expected_us(),
                self._clock.last_us())

    def _apply(self, reply: Any, sent: float) -> None:
        """Sets the bucket from a lease granted to a request sent at ``sent``."""
        rate, burst, members = float(reply[0]), int(reply[1]), int(reply[2])
        epoch, lost = _text(reply[3]), int(reply[4]) == 1
        if len(reply) > 5:
            self._clock.learn(reply[5], sent)
        if len(reply) > 8:
            self._registered_as = _text(reply[6])
        # Used until before the server counts it expired (it measured from later).
        expires = sent + self.lease - (0.001 + 0.001 * self.lease)
        with self._lock:
            if self._mode == _CLOSED or time.monotonic() >= expires:
                return  # closed meanwhile, or a reply so late that its lease is over
            fresh = self._mode != _SHARED or lost  # a lost table: its lease is dropped now
            if lost:
                logger.warning(
                    "leased rate limit %r: the lease table was lost (Redis %s: deleted, "
                    "flushed, restarted or failed over): the lease is dropped, and shares "
                    "are conservative for one lease while the table is rebuilt", self.key,
                    self._client_breaker.name,
                    extra={"rate_limit": self.key, "redis_state": "lost_table"})
            self._epoch = epoch
            if len(reply) > 8 and self._config.adopt(reply[7], reply[8]):
                # The fleet's newest config: the fallback's share and the next
                # leases' fleet rate follow it (the script decided with it already).
                self.fleet_qps, self.fleet_burst = self._config.qps, self._config.burst
            if self._mode == _FALLBACK:
                self._leave_fallback()
            self._set_share(rate, burst, empty=fresh)
            self._mode = _SHARED
            self._members = members
            self._expires = expires
            if not self._on_clock:
                self._on_clock = True
                _LEASE_CLOCK.watch(self, expires)

    def _expire_if_due(self, now: float) -> float | None:
        """The lease clock's check: falls back if the lease is over at
        ``now``; returns the expiry to check next (None: nothing to watch)."""
        with self._lock:
            if self._mode == _SHARED and now < self._expires:
                return self._expires
            self._on_clock = False
            if self._mode == _SHARED:
                self._enter_fallback("its lease expired")
            return None

    def _set_share(self, rate: float, burst: int, *, empty: bool) -> None:
        """The bucket's rate for a share of ``rate`` tokens/s and ``burst``
        (at most report_demand()'s rate); ``empty`` drops every token it
        holds (a first lease)."""
        self._granted = (rate, burst)
        cap = self._demand_cap
        if cap is not None and cap < rate:
            rate, burst = cap, max(1, min(burst, math.ceil(cap)))
        if burst < 1 or rate < MIN_QPS:
            interval, burst = _MAX_INTERVAL_NS, 1
            empty = True
        else:
            # Rounded up: the local rate never exceeds the share.
            interval = min(max(math.ceil(1e9 / rate), 1), _MAX_INTERVAL_NS)
            burst = max(1, min(burst, MAX_BURST, _MAX_TAU_NS // interval))
        if empty or (interval, burst) != self._share:
            self._set_rate(interval, burst, 0 if empty else burst)
            self._share = (interval, burst)

    def _enter_fallback(self, why: str) -> None:
        # Under self._lock.
        admitted, rejected, reserved = self._counters()
        self._fallback_base = (admitted + reserved, rejected)
        self._moves[0] += 1
        if self.fallback == "local":
            share = self.local_share or 1.0 / max(self._members, 1)
            qps, burst = local_rate("LeasedTokenBucket", self.fleet_qps, self.fleet_burst, share)
            self._set_share(qps, burst, empty=False)
        elif self.fallback == "allow":
            self._set_rate(1, MAX_BURST)
            self._share = (1, MAX_BURST)
        else:  # "deny": no share, and the native try_acquire's refusal calls _refused
            self._set_share(0.0, 0, empty=True)
            self._set_refusal_calls_python(True)
        logger.warning(
            "leased rate limit %r (%s/%s): %s (Redis %s %s): fallback=%r at %g/s, "
            "burst %d, until a lease is taken again", self.key, self.provider_type,
            self.provider, why, self._client_breaker.name,
            "is up" if self._client_breaker.up else "is unreachable", self.fallback, self.qps,
            self.burst,
            extra={"rate_limit": self.key, "provider_type": self.provider_type,
                   "provider": self.provider, "redis_state": "fallback"})
        # Last: whoever sees the mode sees the fallback's rate and log.
        self._mode = _FALLBACK

    def _leave_fallback(self) -> None:
        # Under self._lock.
        self._set_refusal_calls_python(False)
        self._close_fallback_counts()
        self._moves[1] += 1
        logger.info("leased rate limit %r (%s/%s): lease taken again, shared accounting resumes",
                    self.key, self.provider_type, self.provider,
                    extra={"rate_limit": self.key, "provider_type": self.provider_type,
                           "provider": self.provider, "redis_state": "shared"})

    def _close_locally(self) -> None:
        with self._lock:
            if self._mode == _FALLBACK:
                self._close_fallback_counts()
            self._mode = _CLOSED
            self._set_refusal_calls_python(False)  # closed: refuses, raises nothing
            self._set_share(0.0, 0, empty=True)

    def _close_fallback_counts(self) -> None:
        """Adds the fallback's decisions since it began to its totals."""
        base = self._fallback_base
        if base is not None:
            admitted, rejected, reserved = self._counters()
            self._fallback_sum[0] += admitted + reserved - base[0]
            self._fallback_sum[1] += rejected - base[1]
            self._fallback_base = None

    def _on_recovery(self) -> None:
        self._refresh_now = True
        wake = self._wake
        if wake is not None:
            wake.set()

    def _fallback_counters(self) -> tuple[int, int, int, int]:
        """(admitted by the fallback, rejected by it, fell back, got a lease back)."""
        admitted, rejected = self._fallback_sum
        base = self._fallback_base
        if base is not None:
            now_admitted, now_rejected, now_reserved = self._counters()
            admitted += now_admitted + now_reserved - base[0]
            rejected += now_rejected - base[1]
        return admitted, rejected, self._moves[0], self._moves[1]

    def __repr__(self) -> str:
        return (f"LeasedTokenBucket({self.key!r}, fleet qps={self.fleet_qps!r}, "
                f"burst={self.fleet_burst!r}, share qps={self.qps:.6g}, burst={self.burst}, "
                f"mode={self._mode!r}, members={self._members})")


class _LeaseClock:
    """Ends leases on time: one daemon thread per process watches the expiry
    of every leased bucket's lease and puts a bucket whose lease ran out in
    its fallback at that moment.

    A bucket's refresh loop does so too when it wakes, but it may be stuck
    in a Redis call (a paused server and a client with a long socket timeout
    or retries: seconds); a lease must never be used past its expiry, which
    the fleet's bound counts on. One heap entry per bucket holding a lease
    (checked when due, then pushed again with its renewed expiry).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref[LeasedTokenBucket]]] = []
        self._seq = itertools.count()
        self._changed = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def watch(self, bucket: LeasedTokenBucket, expires: float) -> None:
        """Checks ``bucket`` at ``expires`` (monotonic seconds)."""
        with self._changed:
            heapq.heappush(self._heap, (expires, next(self._seq), weakref.ref(bucket)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="leased-bucket clock",
                                                daemon=True)
                self._thread.start()
            elif self._heap[0][0] == expires:
                self._changed.notify()

    def _run(self) -> None:
        while True:
            due = self._next_due()
            for ref in due:
                bucket = ref()
                if bucket is None:
                    continue
                try:
                    expires = bucket._expire_if_due(time.monotonic())
                    if expires is not None:
                        self.watch(bucket, expires)
                except Exception:
                    logger.exception("leased rate limit %r: the lease clock failed", bucket.key)
                del bucket

    def _next_due(self) -> list[weakref.ref[LeasedTokenBucket]]:
        """Waits for the earliest expiry; returns the buckets due then."""
        with self._changed:
            while True:
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    due = []
                    while self._heap and self._heap[0][0] <= now:
                        due.append(heapq.heappop(self._heap)[2])
                    return due
                self._changed.wait(None if not self._heap else self._heap[0][0] - now)

    def _forget(self) -> None:
        # In a forked child: the parent's thread is not there, nor its buckets' refreshes.
        self._heap = []
        self._changed = threading.Condition(threading.Lock())
        self._thread = None


_LEASE_CLOCK = _LeaseClock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_LEASE_CLOCK._forget)


def _refresh_thread(ref: weakref.ref[LeasedTokenBucket]) -> None:
    """The refresh loop of a sync client's bucket; ends when the bucket is
    closed or garbage (it holds the bucket only while it works)."""
    while True:
        bucket = ref()
        if bucket is None or bucket._mode == _CLOSED:
            return
        wake = bucket._wake
        try:
            wait = bucket._tick_sync()
        except Exception:
            logger.exception("leased rate limit %r: refresh failed", bucket.key)
            wait = bucket.refresh
        del bucket
        wake.wait(wait)
        wake.clear()


async def _refresh_task(ref: weakref.ref[LeasedTokenBucket]) -> None:
    """The refresh loop of an asyncio client's bucket."""
    while True:
        bucket = ref()
        if bucket is None or bucket._mode == _CLOSED:
            return
        wake = bucket._wake
        try:
            wait = await bucket._tick_async()
        except Exception:
            logger.exception("leased rate limit %r: refresh failed", bucket.key)
            wait = bucket.refresh
        del bucket
        try:
            await asyncio.wait_for(wake.wait(), wait)
        except asyncio.TimeoutError:
            pass
        wake.clear()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _check_member(owner: str, member: object) -> str:
    member = _validate.string(owner, "member", member)
    if not member or any(c.isspace() for c in member):
        raise ValueError(f"{owner} member must be a non-empty str without spaces, got {member!r}")
    return member
