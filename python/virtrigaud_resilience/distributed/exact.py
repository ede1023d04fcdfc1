"""The exact fleet-wide token bucket: GCRA in one Lua script, one round trip per decision.

Every process that builds a :class:`RedisTokenBucket` on the same key shares
one bucket of ``burst`` tokens refilled at ``qps`` tokens per second, exactly
as a local :class:`~virtrigaud_resilience.TokenBucket` would be shared by
threads: over any window of ``t`` seconds the fleet is granted at most
``qps * t + burst`` tokens. The key holds the bucket's theoretical arrival
time (GCRA, as redis-cell), the clock is the server's (``TIME`` inside the
script), and the key expires once the bucket is full again, so an idle
bucket costs Redis nothing.

Decisions of an asyncio client that are made at the same moment (many tasks
of one event loop) go to Redis together, as one script call that decides
them in arrival order: one round trip serves a whole batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

from .. import _core, _validate
from .._deprecated import RenamedAttribute, renamed_keyword
from .._tracking import ProviderLabelled, provider_labels
from ..clock import SYSTEM_CLOCK, pause, pause_async
from ..durations import Seconds
from ..errors import UnavailableError
from .._fallback_census import FALLBACK_LIMITERS
from ..ratelimit import BUCKETS, Reservation, TokenBucket, validate_rate
from .client_breaker import RedisClientBreaker, RedisUnavailable, check_client_breaker
from .clients import DEFAULT_SOCKET_TIMEOUT, Client, SyncClient, client_kind, connect
from .fallback import Fallback, check_fallback, check_share, local_rate
from .fleet_config import NEWEST_CONFIG_LUA, FleetConfig, member_name
from .scripts import EPOCH_LUA, Pipe, Script, check_key, companion_key
from .server_clock import STEP_TOLERANCE_US, TEST_TIME_OFFSET, ServerClock

__all__ = ["RedisTokenBucket", "RedisReservation"]

logger = logging.getLogger("virtrigaud_resilience")

GCRA = Script(f"""-- virtrigaud-resilience: exact token bucket (GCRA), one key
-- KEYS[1]: the bucket's theoretical arrival time (tat), in microseconds
-- ARGV[1]: "take", "takes", "refund" or "peek"; ARGV[2]: microseconds per token; ARGV[3]: burst
-- take:   ARGV[4..]: pairs (n, max_wait_us) decided in order; returns, per pair,
--         (wait_us, tat_after): wait_us >= 0 granted after that wait (0: now),
--         wait_us < 0 refused (-1 - the wait it would have needed)
-- takes:  the same for a batch, the pairs in one argument (ARGV[4], "n max_wait_us
--         n max_wait_us ...") and the reply's pairs in one string (its first element):
--         a client parses one string, not two integers per decision
-- refund: ARGV[4]: n, ARGV[5]: tat_after of the grant; returns the tokens given back
-- peek:   ARGV[4]: n; returns the wait for n tokens (us), taking nothing
-- With a second key, the call also registers a member (a bucket does about
-- once a second, on a decision it makes anyway): KEYS[2] the fleet's members
-- (a sorted set by expiry, in KEYS[1]'s slot), ARGV[#ARGV - 3] the member
-- ("id qps burst born": the config it was built with, and the server
-- time of its first registration, '?' until then; see fleet_config), ARGV[#ARGV - 2] how long
-- it counts (us), ARGV[#ARGV - 1] the server time it expects now (us; ''
-- at first), ARGV[#ARGV] its id; take's reply then ends with the number of
-- members (which sizes each one's fair share during an outage), the
-- server's time, its born time, and the newest config among the members
-- (the qps and burst of the latest born): every member decides with
-- it, so a rolling config change converges within a registration. A registration that finds the clock stepped back (TIME
-- behind what the member expects by more than the tolerance) caps the
-- bucket at empty-now: a step never blocks it longer than one emission
-- interval past the registration that finds it.
{EPOCH_LUA}{NEWEST_CONFIG_LUA}
local last, members, stepped_back = #ARGV, nil, false
local registered_name = nil
if #KEYS == 2 then
  -- a test's simulated step (server_clock's test hook): a member scored 9e15 + offset
  local hook = tonumber(redis.call('ZSCORE', KEYS[2], '{TEST_TIME_OFFSET}'))
  if hook then now = now + hook - 9e15 end
  local ttl, expected = tonumber(ARGV[last - 2]), tonumber(ARGV[last - 1])
  local name = ARGV[last - 3]
  if string.sub(name, -2) == ' ?' then
    -- its first registration: born now (and registered under that name from now on)
    registered_name = string.sub(name, 1, -2) .. string.format('%d', now)
    name = registered_name
  end
  redis.call('ZADD', KEYS[2], now + ttl, name)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('PEXPIRE', KEYS[2], math.floor(ttl / 1000) + 1)
  members = redis.call('ZCARD', KEYS[2]) - (hook and 1 or 0)
  stepped_back = expected ~= nil and expected - now > {STEP_TOLERANCE_US}
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do consider(m) end
  last = last - 4
end
local interval = tonumber(ARGV[2])
local tau = interval * tonumber(ARGV[3])
local raw = redis.call('GET', KEYS[1])
local stored = tonumber(raw)
if raw and not stored then
  -- not a number: not ours; refused rather than overwritten
  return redis.error_reply('VRKEY the value is not a GCRA time: ' .. string.sub(raw, 1, 40))
end
if stored and not (stored >= 0 and stored <= now + tau + 9007199254740992) then
  -- ours, but impossible (nan, inf, 1e300, negative): as if absent; the next grant repairs it
  stored = nil
end
local tat = stored or now
if tat < now then tat = now end
if stepped_back and tat > now + tau then
  tat = now + tau
  redis.call('SET', KEYS[1], tat, 'PX', math.floor(tau / 1000) + 1)
end
local op = ARGV[1]
if op == 'take' or op == 'takes' then
  local asks, first = ARGV, 4
  if op == 'takes' then
    asks, first, last = {{}}, 1, 0
    for x in string.gmatch(ARGV[4], '%S+') do
      last = last + 1
      asks[last] = x
    end
  end
  local out, start = {{}}, tat
  for i = first, last, 2 do
    local after = tat + tonumber(asks[i]) * interval
    local wait = after - tau - now
    if wait <= tonumber(asks[i + 1]) then
      tat = after
      if wait < 0 then wait = 0 end
      out[#out + 1] = math.ceil(wait)
      out[#out + 1] = math.floor(after)
    else
      out[#out + 1] = -1 - math.ceil(wait)
      out[#out + 1] = 0
    end
  end
  if tat > start then
    -- the key lives until the bucket is full again: then it means nothing
    redis.call('SET', KEYS[1], tat, 'PX', math.floor((tat - now) / 1000) + 1)
  end
  if op == 'takes' then
    -- whole numbers as such ('%d': Lua's own tostring keeps 14 digits)
    for i = 1, #out do out[i] = string.format('%d', out[i]) end
    out = {{table.concat(out, ' ')}}
  end
  if members then
    out[#out + 1] = members
    out[#out + 1] = math.floor(now)
    out[#out + 1] = registered_name or ''
    out[#out + 1] = newest_config and newest_config[1] or ''
    out[#out + 1] = newest_config and newest_config[2] or ''
  end
  return out
elseif op == 'refund' then
  if not stored then return 0 end
  -- time reserved since the grant stays its owners' (under 1 us: rounding)
  local later = stored - tonumber(ARGV[5])
  if later < 1 then later = 0 end
  local restore = tonumber(ARGV[4]) * interval - later
  if restore <= 0 then return 0 end
  local back = stored - restore
  if back > now then
    redis.call('SET', KEYS[1], back, 'PX', math.floor((back - now) / 1000) + 1)
  else
    redis.call('DEL', KEYS[1])
  end
  return math.floor(restore / interval + 1e-9)
elseif op == 'peek' then
  local wait = tat + tonumber(ARGV[4]) * interval - tau - now
  if wait < 0 then wait = 0 end
  return math.ceil(wait)
end
return redis.error_reply('virtrigaud GCRA: unknown operation ' .. tostring(op))
""")

#: The longest wait a reservation may be granted, in microseconds: the local
#: TokenBucket's (~9 years); reserve() past it raises as the local one does.
_UNLIMITED_WAIT_US: int = _core.TOKEN_BUCKET_MAX_WAIT_NS // 1000
#: Decisions per script call at most (a batch of an asyncio client).
_MAX_BATCH = 512
#: try_acquire(n) keeps its encoded command for n up to this.
_PACKED_SIZES = 16

#: Seconds between a bucket's registrations as a member of the fleet (each
#: rides on a decision it makes anyway), and how long one counts (us).
_REGISTER_EVERY = 1.0
_MEMBER_TTL_US = 3_000_000

#: A registration: the keys, the extra arguments, and when it was sent (monotonic).
_Registration = tuple[tuple[str, str], tuple[object, ...], float]

# Indexes of the bucket's own tallies.
_ADMITTED, _REJECTED, _WAITED, _FALLBACK_ADMITTED, _FALLBACK_REJECTED = range(5)


class RedisTokenBucket(ProviderLabelled):
    """A token bucket shared by every process using ``key`` on one Redis.

    The surface of :class:`~virtrigaud_resilience.TokenBucket`, for a sync
    client (``redis.Redis``): :meth:`try_acquire`, :meth:`reserve`,
    :meth:`acquire`, :meth:`retry_after`; for an asyncio client
    (``redis.asyncio.Redis``): :meth:`try_acquire_async`,
    :meth:`reserve_async`, :meth:`acquire_async`,
    :meth:`retry_after_async`, and ``async with bucket:``. A method the
    client cannot serve raises TypeError naming the one to call. Redis
    Cluster clients work too (the script touches one key).

    Each decision is one round trip (an EVALSHA; the script is loaded once,
    and again if the server lost it). While Redis is unreachable (down,
    paused, refusing), decisions never wait on it and never raise a redis-py
    error: the client's :class:`RedisClientBreaker` opens at the first failure and
    the ``fallback`` decides at local speed until a background probe finds
    Redis back (see :mod:`~virtrigaud_resilience.distributed.client_breaker`). A
    decision that is under way when Redis dies waits at most the client's
    socket timeout (``from_url`` sets 0.25 s and no retries).

    Args:
        client: ``redis.Redis`` / ``redis.RedisCluster`` (sync methods) or
            their ``redis.asyncio`` forms (async methods).
        key: the Redis key of the bucket (non-empty str). Processes built
            with different ``qps`` and ``burst`` (a rolling deploy) decide
            with the newest config among the fleet's members (see
            :mod:`~.fleet_config`), within a registration (about a second).
        qps, burst: the fleet's rate (tokens per second) and capacity, as
            :class:`TokenBucket` validates them.
        fallback: ``"local"`` (default): a local native bucket at
            ``local_share`` of the rate and burst decides; ``"allow"``: every
            token is granted; ``"deny"``: every decision raises
            ``UnavailableError`` (``retry_after`` the probe interval).
        local_share: the local bucket's share, in (0, 1], or None (default):
            a fair share, 1 / the fleet's last known membership, so the
            fleet keeps about its rate while Redis is down. Each bucket
            registers as a member about once a second, on a decision it
            makes anyway (no extra round trip), in a sorted set next to the
            key (``key + ":members"``; on Redis Cluster ``"{key}:members"``
            unless the key has a hash tag: the key's slot; the client's user
            needs access to it as to the key); a member counts for 3 s
            after its last registration, so the membership is that of the
            buckets that decided in the last seconds before the outage
            (1 before any decision). ``1.0`` lets each process alone reach
            the fleet's rate during an outage. On Cluster, a key with a
            ``}`` but no hash tag has no members set: its fair share is the
            whole rate.
        provider_type, provider: metric labels (the local fallback bucket
            gets them too).
        client_breaker: the :class:`RedisClientBreaker` to use; default the
            client's shared one. ``guard=``, its old name, is deprecated.

    Raises:
        TypeError, ValueError: a bad argument, naming it and its value.

    Every decision is counted in ``virtrigaud_rate_limiter_requests_total``
    (the shared ones by this bucket, the local fallback's by its own bucket),
    and those of the fallback also in ``virtrigaud_distributed_fallback_total``.
    """

    def __init__(self, client: Client, key: str, *, qps: float, burst: int,
                 fallback: Fallback = "local", local_share: float | None = None,
                 provider_type: str = "", provider: str = "",
                 client_breaker: RedisClientBreaker | None = None,
                 guard: RedisClientBreaker | None = None) -> None:
        owner = "RedisTokenBucket"
        self._kind = client_kind(owner, client)
        self.key = check_key(owner, key)
        self.qps, self.burst = validate_rate(owner, qps, burst)
        self.fallback = check_fallback(owner, fallback)
        self.local_share = None if local_share is None else check_share(owner, local_share)
        self._provider_type, self._provider = provider_labels(owner, provider_type,
                                                              provider)
        self._client_breaker = check_client_breaker(owner, renamed_keyword(
            owner, "guard", guard, "client_breaker", client_breaker), client)
        self.client = client
        self._interval_us = 1e6 / self.qps
        self._local: TokenBucket | None = None
        self._members = 1
        self._members_key = companion_key(self.key, ":members",
                                          cluster="Cluster" in type(client).__name__)
        self._member = uuid.uuid4().hex
        self._register_at = 0.0  # monotonic: the first decision registers
        self._clock = ServerClock()  # the server's TIME as last seen: its steps are found
        # Its name in the members set: its id, the config it was built with,
        # and when it first registered ('?': not yet; the server says).
        self._config = FleetConfig("rate limit", self.key, self.qps, self.burst)
        self._registered_as = member_name(self._member, self.qps, self.burst)
        if self.fallback == "local":
            local_qps, local_burst = local_rate(owner, self.qps, self.burst,
                                                self.local_share or 1.0)
            self._local = TokenBucket(local_qps, local_burst, provider_type=self._provider_type,
                                      provider=self._provider)
        self._pipe = (Pipe.of(cast(Any, client)) if self._kind == "sync"
                      and Pipe.usable(cast(SyncClient, client)) else None)
        if self._pipe is not None:
            # Redis lost: the held connection may be dead without having
            # failed yet (another command found out); never reuse it after.
            self._client_breaker.on_loss(self._pipe.drop_connection)
        self._packed: dict[int, bytes] = {}
        self._tally = [0, 0, 0, 0, 0]
        self._tally_lock = threading.Lock()
        moves = self._client_breaker.breaker.transitions
        self._moves_base = (moves[2], moves[0])  # (to open, to closed) of the client's breaker
        self._batch: _Batch | None = _Batch(self) if self._kind == "async" else None
        BUCKETS.track(self)
        FALLBACK_LIMITERS.track(self)

    def __del__(self, _retire: Callable[[Any], None] = BUCKETS.retire,
                _retire_fallback: Callable[[Any], None] = FALLBACK_LIMITERS.retire) -> None:
        _retire(self)
        _retire_fallback(self)

    @classmethod
    def from_url(cls, url: str, key: str, *, qps: float, burst: int, asynchronous: bool = False,
                 cluster: bool = False, socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
                 check: bool = True,
                 **options: Any) -> RedisTokenBucket:
        """A bucket on a new fail-fast client (see :func:`~.clients.connect`):
        ``socket_timeout`` bounds a decision, and the client never retries.

        The arguments are validated first; then, with ``check``, a PING and a
        no-op script on ``key`` (UnavailableError if the server is
        unreachable; UnauthorizedError, naming the permission, if the user
        may not run the scripts or touch the key). The client is
        ``bucket.client``; close it when done.
        """
        check_key("RedisTokenBucket", key)
        validate_rate("RedisTokenBucket", qps, burst)
        client = connect(url, asynchronous=asynchronous, cluster=cluster,
                         socket_timeout=socket_timeout, check=check, key=key)
        return cls(client, key, qps=qps, burst=burst, **options)

    # ------------------------------------------------------------- labels --

    @property
    def client_breaker(self) -> RedisClientBreaker:
        """The breaker in front of this bucket's client."""
        return self._client_breaker

    #: Deprecated: :attr:`client_breaker` (until 0.3.0).
    guard: RenamedAttribute[RedisClientBreaker] = RenamedAttribute("client_breaker")

    @property
    def members(self) -> int:
        """The fleet's membership as last learnt (1 before any decision)."""
        return self._members

    @property
    def shared(self) -> bool:
        """True while decisions go to Redis (False: the fallback decides)."""
        return self._client_breaker.up

    # --------------------------------------------------------------- sync --

    def try_acquire(self, n: int = 1) -> bool:
        """Takes n tokens (1 <= n <= burst) if the fleet's bucket holds them
        now: True; else takes nothing: False. Never waits (one round trip)."""
        if self._kind != "sync":
            raise self._wrong_client("try_acquire", "await bucket.try_acquire_async()")
        packed = self._packed.get(n) if type(n) is int else None
        if packed is None:
            n = self._check_n(n)
            packed = GCRA.pack(self.key, "take", self._interval_us, self.burst, n, 0)
            if n <= _PACKED_SIZES:
                self._packed[n] = packed
        try:
            reply = self._client_breaker.run(self._call, packed, "take", n, 0)
        except RedisUnavailable:
            return self._fallback_try(n)
        return self._took(reply[0] >= 0)

    def reserve(self, n: int = 1) -> RedisReservation:
        """Reserves n tokens of the fleet's bucket and says how long to wait
        (``reservation.delay``). Waiters across the fleet queue in the order
        Redis saw them. ValueError, as a local TokenBucket's, if the wait
        would exceed its limit (~9 years)."""
        if self._kind != "sync":
            raise self._wrong_client("reserve", "await bucket.reserve_async()")
        n = self._check_n(n)
        try:
            reply = self._client_breaker.run(self._call, None, "take", n, _UNLIMITED_WAIT_US)
        except RedisUnavailable:
            return self._fallback_reserve(n)
        return self._reservation(n, *self._reserved(n, reply))

    def acquire(self, n: int = 1, timeout: Seconds | None = None) -> bool:
        """Waits until n tokens are the caller's and takes them (WaitN).

        Returns False at once, taking nothing, if the wait would exceed
        ``timeout`` seconds (None: no limit). An interrupted wait gives the
        tokens back.
        """
        if self._kind != "sync":
            raise self._wrong_client("acquire", "await bucket.acquire_async()")
        n = self._check_n(n)
        max_wait = self._max_wait_us(timeout)
        try:
            reply = self._client_breaker.run(self._call, None, "take", n, max_wait)
        except RedisUnavailable:
            reservation = self._fallback_reserve_within(n, timeout)
        else:
            if reply[0] < 0:
                self._count(_REJECTED)
                return False
            reservation = self._reservation(n, reply[0], reply[1])
        if reservation is None:
            return False
        reservation.wait()
        return True

    def retry_after(self, n: int = 1) -> float:
        """Seconds until n tokens are available in the fleet's bucket (0 if
        now); takes nothing. What a refused caller should be told to wait."""
        if self._kind != "sync":
            raise self._wrong_client("retry_after", "await bucket.retry_after_async()")
        n = self._check_n(n)
        try:
            wait_us = self._client_breaker.run(self._peek, n)
        except RedisUnavailable:
            return self._fallback_retry_after(n)
        return int(wait_us) / 1e6

    def _call(self, packed: bytes | None, op: str, *args: object) -> list[int]:
        args = (op, self._interval_us, self.burst, *args)
        keys: str | tuple[str, ...] = self.key
        registration = self._registration() if op == "take" else None
        if registration is not None:
            keys, args, packed = registration[0], args + registration[1], None
        if self._pipe is not None:
            reply = self._pipe.call(GCRA, packed or GCRA.pack(keys, *args), self.key, *args)
        else:
            reply = GCRA.run(cast(SyncClient, self.client), keys, *args)
        return self._learnt(cast("list[int]", reply), registration)

    def _registration(self) -> _Registration | None:
        """(keys, extra args, when sent) of a take that registers this
        bucket as a member, when one is due (about once a second); else None."""
        members_key = self._members_key
        now = time.monotonic()
        if members_key is None or now < self._register_at:
            return None
        self._register_at = now + _REGISTER_EVERY
        return ((self.key, members_key), (self._registered_as, _MEMBER_TTL_US,
                                          self._clock.expected_us(), self._member), now)

    def _learnt(self, reply: list[int], registration: _Registration | None) -> list[int]:
        """A take's reply without what a registration appended: the
        membership, which resizes the fair share of the local fallback, and
        the server's time."""
        if registration is None:
            return reply
        reply, (members_text, server_now, born, qps, burst) = reply[:-5], reply[-5:]
        self._clock.learn(server_now, registration[2])
        if born:
            self._registered_as = _str(born)
        if self._config.adopt(qps, burst):
            self._follow_config()
        members = max(1, int(members_text))
        if members != self._members:
            self._members = members
            if self._local is not None and self.local_share is None:
                self._local.set_rate(*local_rate("RedisTokenBucket", self.qps, self.burst,
                                                 1.0 / members))
        return reply

    def _follow_config(self) -> None:
        """Decides with the fleet's newest config, which self._config just
        adopted (see fleet_config): re-encodes the commands, resizes the
        local fallback."""
        self.qps, self.burst = self._config.qps, self._config.burst
        self._interval_us = 1e6 / self.qps
        self._packed = {}  # encoded with the old config
        if self._local is not None:
            share = self.local_share or 1.0 / max(self._members, 1)
            self._local.set_rate(*local_rate("RedisTokenBucket", self.qps, self.burst, share))

    @property
    def config_changes(self) -> int:
        """How many times this bucket took the fleet's newer config."""
        return self._config.changes

    def _peek(self, n: int) -> int:
        return cast(int, GCRA.run(cast(SyncClient, self.client), self.key, "peek",
                                  self._interval_us, self.burst, n))

    def _refund(self, n: int, tat_after: int) -> int:
        try:
            return cast(int, self._client_breaker.run(GCRA.run, self.client, self.key, "refund",
                                             self._interval_us, self.burst, n, tat_after))
        except RedisUnavailable:
            return 0

    # -------------------------------------------------------------- async --

    async def try_acquire_async(self, n: int = 1) -> bool:
        """The asyncio form of :meth:`try_acquire`. Concurrent decisions of
        one event loop share a round trip. A cancelled call takes nothing."""
        batch = self._require_async("try_acquire_async", "bucket.try_acquire()")
        n = self._check_n(n)
        decided = await batch.decide(n, 0)
        if decided is None:
            return self._fallback_try(n)
        return self._took(decided[0] >= 0)

    async def reserve_async(self, n: int = 1) -> RedisReservation:
        """The asyncio form of :meth:`reserve` (the reservation's
        :meth:`~RedisReservation.cancel_async` gives the tokens back)."""
        batch = self._require_async("reserve_async", "bucket.reserve()")
        n = self._check_n(n)
        decided = await batch.decide(n, _UNLIMITED_WAIT_US)
        if decided is None:
            return self._fallback_reserve(n)
        return self._reservation(n, *self._reserved(n, decided))

    async def acquire_async(self, n: int = 1, timeout: Seconds | None = None) -> bool:
        """The asyncio form of :meth:`acquire`; cancelling the waiting task
        gives the tokens back."""
        batch = self._require_async("acquire_async", "bucket.acquire()")
        n = self._check_n(n)
        decided = await batch.decide(n, self._max_wait_us(timeout))
        if decided is None:
            reservation = self._fallback_reserve_within(n, timeout)
        else:
            if decided[0] < 0:
                self._count(_REJECTED)
                return False
            reservation = self._reservation(n, *decided)
        if reservation is None:
            return False
        await reservation.wait_async()
        return True

    async def retry_after_async(self, n: int = 1) -> float:
        """The asyncio form of :meth:`retry_after`."""
        self._require_async("retry_after_async", "bucket.retry_after()")
        n = self._check_n(n)
        try:
            wait_us = await self._client_breaker.run_async(
                GCRA.run_async, self.client, self.key, "peek", self._interval_us, self.burst, n)
        except RedisUnavailable:
            return self._fallback_retry_after(n)
        return int(wait_us) / 1e6

    async def __aenter__(self) -> RedisTokenBucket:
        """``async with bucket:`` waits for one token (aiolimiter's idiom)."""
        await self.acquire_async(1)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    async def _refund_async(self, n: int, tat_after: int) -> int:
        try:
            return cast(int, await self._client_breaker.run_async(
                GCRA.run_async, self.client, self.key, "refund", self._interval_us, self.burst,
                n, tat_after))
        except RedisUnavailable:
            return 0

    # ----------------------------------------------------------- fallback --

    def _fallback_try(self, n: int) -> bool:
        if self._local is not None:
            return self._local.try_acquire(n)
        if self.fallback == "allow":
            self._count(_FALLBACK_ADMITTED)
            return True
        raise self._denied()

    def _fallback_reserve(self, n: int) -> RedisReservation:
        return self._fallback_reservation(n, None if self._local is None
                                          else self._local.reserve(n))

    def _fallback_reserve_within(self, n: int,
                                 timeout: Seconds | None) -> RedisReservation | None:
        """The fallback's reservation for acquire; None if it would wait past ``timeout``."""
        if self._local is None:
            return self._fallback_reservation(n, None)
        local = self._local._reserve_within(n, timeout)
        return None if local is None else self._fallback_reservation(n, local)

    def _fallback_reservation(self, n: int, local: Reservation | None) -> RedisReservation:
        if local is not None:
            return RedisReservation(self, n, local.delay, None, local)
        if self.fallback == "allow":
            self._count(_FALLBACK_ADMITTED)
            return RedisReservation(self, n, 0.0, None, None)
        raise self._denied()

    def _fallback_retry_after(self, n: int) -> float:
        if self._local is not None:
            return self._local.retry_after(n)
        if self.fallback == "allow":
            return 0.0
        raise self._denied()

    def _denied(self) -> UnavailableError:
        self._count(_FALLBACK_REJECTED)
        return UnavailableError(
            f"rate limit {self.key!r}: Redis {self._client_breaker.name} is unreachable and "
            "fallback='deny'", self._client_breaker.last_error,
            retry_after=self._client_breaker.probe_interval)

    # ------------------------------------------------------------ helpers --

    def _reserved(self, n: int, reply: Any) -> tuple[int, int]:
        """(wait_us, tat_after) of a reservation Redis granted; ValueError,
        as a local TokenBucket's reserve(), if the wait would exceed limits."""
        if reply[0] < 0:
            self._count(_REJECTED)
            raise ValueError(f"RedisTokenBucket {self.key!r} cannot reserve {n} tokens: the "
                             "wait would exceed limits")
        return int(reply[0]), int(reply[1])

    def _took(self, admitted: bool) -> bool:
        self._count(_ADMITTED if admitted else _REJECTED)
        return admitted

    def _reservation(self, n: int, wait_us: int, tat_after: int) -> RedisReservation:
        self._count(_WAITED if wait_us > 0 else _ADMITTED)
        return RedisReservation(self, n, wait_us / 1e6, int(tat_after), None)

    def _count(self, index: int) -> None:
        with self._tally_lock:
            self._tally[index] += 1

    def _check_n(self, n: int) -> int:
        return _validate.integer("RedisTokenBucket", "n", n, 1, self.burst)

    @staticmethod
    def _max_wait_us(timeout: Seconds | None) -> int:
        if timeout is None:
            return _UNLIMITED_WAIT_US
        seconds = _validate.seconds("RedisTokenBucket", "timeout", timeout)
        return min(round(seconds * 1e6), _UNLIMITED_WAIT_US)

    def _require_async(self, method: str, instead: str) -> _Batch:
        if self._batch is None:
            raise self._wrong_client(method, instead)
        return self._batch

    def _wrong_client(self, method: str, instead: str) -> TypeError:
        if self._kind == "sync":
            need = "an asyncio client (redis.asyncio.Redis)"
            have = "a sync client (redis.Redis)"
        else:
            need = "a sync client (redis.Redis)"
            have = "an asyncio client (redis.asyncio.Redis)"
        return TypeError(f"RedisTokenBucket.{method}() needs {need}, and this bucket has "
                         f"{have}: use {instead}, or build the bucket with {need}")

    def _counters(self) -> tuple[int, int, int]:
        """(admitted, rejected, waited) decided by Redis, or by an "allow" /
        "deny" fallback (a local fallback bucket counts its own)."""
        t = self._tally
        return (t[_ADMITTED] + t[_FALLBACK_ADMITTED], t[_REJECTED] + t[_FALLBACK_REJECTED],
                t[_WAITED])

    def _fallback_counters(self) -> tuple[int, int, int, int]:
        """(admitted by the fallback, rejected by it, fell back, recovered)."""
        t = self._tally
        admitted, rejected = t[_FALLBACK_ADMITTED], t[_FALLBACK_REJECTED]
        if self._local is not None:
            local_admitted, local_rejected, local_waited = self._local._counters()
            admitted += local_admitted + local_waited
            rejected += local_rejected
        moves = self._client_breaker.breaker.transitions
        return admitted, rejected, moves[2] - self._moves_base[0], moves[0] - self._moves_base[1]

    def __repr__(self) -> str:
        return (f"RedisTokenBucket({self.key!r}, qps={self.qps!r}, burst={self.burst!r}, "
                f"fallback={self.fallback!r}, shared={self.shared})")


class RedisReservation:
    """Tokens of a :class:`RedisTokenBucket` reserved for use after :attr:`delay` seconds.

    Act after the delay (:meth:`wait` / :meth:`wait_async`), or cancel to
    give the tokens back (:meth:`cancel` with a sync client,
    :meth:`cancel_async` with an asyncio one): as x/time/rate's Cancel,
    tokens reserved by others since stay theirs, and nothing comes back
    once the time to act has come.
    """

    __slots__ = ("_bucket", "_n", "_tat_after", "_local", "_time_to_act", "delay", "_cancelled")

    #: Seconds to wait, from the moment of reserving, before using the tokens.
    delay: float

    def __init__(self, bucket: RedisTokenBucket, n: int, delay: float, tat_after: int | None,
                 local: Reservation | None) -> None:
        self._bucket = bucket
        self._n = n
        self._tat_after = tat_after
        self._local = local  # a local fallback bucket's reservation
        self.delay = delay
        self._time_to_act = time.monotonic() + delay
        self._cancelled = False

    @property
    def tokens(self) -> int:
        """The number of tokens reserved."""
        return self._n

    @property
    def shared(self) -> bool:
        """True if Redis granted it (False: the fallback did)."""
        return self._tat_after is not None

    def delay_from_now(self) -> float:
        """Seconds still to wait (0 when the time has come)."""
        return max(0.0, self._time_to_act - time.monotonic())

    def cancel(self) -> int:
        """Gives the tokens back if their time has not come; returns how many
        came back. Idempotent. A sync client's reservation only."""
        if self._cancelled:
            return 0
        self._cancelled = True
        if self._local is not None:
            return self._local.cancel()
        if self._tat_after is None or self.delay_from_now() <= 0:
            return 0
        return self._bucket._refund(self._n, self._tat_after)

    async def cancel_async(self) -> int:
        """The asyncio form of :meth:`cancel` (an asyncio client's reservation)."""
        if self._cancelled:
            return 0
        self._cancelled = True
        if self._local is not None:
            return self._local.cancel()
        if self._tat_after is None or self.delay_from_now() <= 0:
            return 0
        return await self._bucket._refund_async(self._n, self._tat_after)

    def wait(self) -> None:
        """Sleeps until the tokens may be used; an interrupted sleep cancels."""
        delay = self.delay_from_now()
        if delay > 0:
            try:
                pause(SYSTEM_CLOCK, delay)  # vr.testing may skip it
            except BaseException:
                self.cancel()
                raise

    async def wait_async(self) -> None:
        """The asyncio form of :meth:`wait`; cancelling the task gives the
        tokens back (in the background: the cancellation is not delayed)."""
        delay = self.delay_from_now()
        if delay > 0:
            try:
                await pause_async(SYSTEM_CLOCK, delay)  # vr.testing may skip it
            except BaseException:
                self._cancel_in_background()
                raise

    def _cancel_in_background(self) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        if self._local is not None:
            self._local.cancel()
        elif self._tat_after is not None and self.delay_from_now() > 0:
            batch = self._bucket._batch
            if batch is not None:
                batch.refund(self._n, self._tat_after)

    def __repr__(self) -> str:
        return f"RedisReservation(tokens={self._n}, delay={self.delay!r}, shared={self.shared})"


class _Batch:
    """The decisions of one asyncio client's event loop that wait for Redis together.

    The first decision starts a drain task; every decision made before that
    task runs (all the tasks woken in the same loop iteration) joins the
    same script call, and those made while it is in flight join the next.
    So concurrent decisions cost one round trip per batch, not per decision,
    and each is decided in arrival order.
    """

    __slots__ = ("_bucket", "_queue", "_task", "_refunds")

    def __init__(self, bucket: RedisTokenBucket) -> None:
        self._bucket = bucket
        self._queue: list[tuple[int, int, asyncio.Future[tuple[int, int] | None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._refunds: set[asyncio.Task[int]] = set()

    async def decide(self, n: int, max_wait_us: int) -> tuple[int, int] | None:
        """(wait_us, tat_after) as the script answers, or None if Redis did not decide."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, int] | None] = loop.create_future()
        task = self._task
        if task is not None and (task.done() or task.get_loop() is not loop):
            # Left by a loop that closed mid-batch: its callers are gone with it.
            self._queue.clear()
            task = None
        self._queue.append((n, max_wait_us, future))
        if task is None:
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        bucket = self._bucket
        try:
            while self._queue:
                batch = self._queue[:_MAX_BATCH]
                del self._queue[:_MAX_BATCH]
                # One argument for the batch's pairs, one string back: redis-py
                # encodes and parses two values per decision otherwise.
                args: list[object] = ["takes", bucket._interval_us, bucket.burst,
                                      " ".join([f"{n} {max_wait}" for n, max_wait, _ in batch])]
                keys: str | tuple[str, ...] = bucket.key
                registration = bucket._registration()
                if registration is not None:
                    keys = registration[0]
                    args += registration[1]
                try:
                    reply = bucket._learnt(await bucket._client_breaker.run_async(
                        GCRA.run_async, bucket.client, keys, *args), registration)
                except RedisUnavailable:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_result(None)
                    continue
                except asyncio.CancelledError:
                    for _, _, future in batch:
                        future.cancel()
                    raise
                except Exception as exc:  # not Redis's failure: a bug, shown to every caller
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                decided = [int(x) for x in cast("bytes | str", reply[0]).split()]
                for i, (n, _, future) in enumerate(batch):
                    wait_us, tat_after = decided[2 * i], decided[2 * i + 1]
                    if not future.done():
                        future.set_result((wait_us, tat_after))
                    elif wait_us >= 0:  # granted to a caller cancelled meanwhile
                        self.refund(n, tat_after)
        finally:
            self._task = None

    def refund(self, n: int, tat_after: int) -> None:
        """Gives a cancelled caller's tokens back, in the background."""
        task = asyncio.get_running_loop().create_task(self._bucket._refund_async(n, tat_after))
        self._refunds.add(task)
        task.add_done_callback(self._refunds.discard)


def _str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


