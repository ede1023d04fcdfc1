"""One breaker for the fleet: the breakers of a BreakerRegistry joined across processes.

A :class:`RedisBreakerSync` watches the transitions of its registry's
breakers (it listens; calls never wait on it) and shares them through Redis:

- **open**: when a breaker opens in one process, every process's breaker for
  the same ``(name, provider_type, provider)`` opens too, with the same time
  left until its next probe (a pub/sub message, applied within milliseconds;
  a process that has no such breaker yet gets one in its registry). The
  fleet's state is also kept in one hash, which a process reads when it
  starts (or when Redis comes back), so late joiners open what is open.
- **half-open**: probes are limited fleet-wide, and taken by a process with a
  call for one. From ``probe_lead`` seconds before the fleet's breaker is due,
  a process whose breaker refused a call since the breaker opened (or since
  its last permit) asks Redis for the fleet's probe permit; one whose calls
  never reach that provider never asks. The one that gets it lets its
  breaker half-open on time, and its next call probes (up to
  ``half_open_max_calls``); the others keep theirs open while the permit
  lives. A permit no call used lapses ``probe_lead`` after it was due, and
  the next process that wants it takes it; a used one is renewed (for
  ``permit_ttl`` seconds at a time) while the probe runs, so a prober that
  dies frees it too.
- **closed**: the prober's breaker closing (or a ``reset()`` anywhere)
  closes every process's. ``force_open()`` in one process holds the fleet's
  breaker open until a reset.

The hash holds each breaker's fleet state (open or closed) and its
generation (one more at every open and close). A process applies a message
or a hash entry only when its generation is newer than the one it knows, and
reconciles from the hash when it starts, when Redis is back and after each
resubscription: a close it missed is read, not undone by publishing its own
stale open. The subscription is health-checked (a PING every second) and
made again at once when lost, then with jittered backoff.

The hot path is untouched: every call still reads only its local native
breaker. The probe limit holds as long as each process's sync thread runs
within ``probe_lead`` of its schedule (a process stalled longer may let its
own breaker half-open without the permit; the permit holder's outcome
still decides the fleet).

While Redis is unreachable each process's breakers work alone (the client's
:class:`RedisClientBreaker` opens; nothing blocks); when it is back, the process
reads the fleet's state again and publishes what it opened meanwhile (a
breaker open here that the fleet's hash does not hold open).

It runs in two daemon threads (pub/sub, and the one that talks to Redis and
applies changes), with a sync client (``redis.Redis``, or
:meth:`RedisBreakerSync.from_url`); an asyncio program can use it as is.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from types import TracebackType
from typing import Any, cast

import redis

from .. import _validate, events
from .._deprecated import RenamedAttribute, renamed_keyword
from ..breaker import BreakerRegistry, BreakerState, CircuitBreaker
from .client_breaker import RedisClientBreaker, RedisUnavailable, check_client_breaker
from .clients import DEFAULT_SOCKET_TIMEOUT, SyncClient, client_kind, connect
from .failures import REDIS_FAILURES
from .scripts import EPOCH_LUA, Script, check_key

__all__ = ["RedisBreakerSync", "DEFAULT_KEY"]

logger = logging.getLogger("virtrigaud_resilience")

#: The default key of the fleet's breaker hash (also the pub/sub channel).
DEFAULT_KEY = "virtrigaud:breakers"

BREAKERS_LUA = Script(f"""-- virtrigaud-resilience: breakers shared by a fleet, one key
-- KEYS[1]: a hash, breaker id -> its fleet state, JSON: generation e (+1 at every
--          open and close), state s ('open' / 'closed'), due time u (ms), held h,
--          prober p, permit end pu (ms); ARGV[1]: op, ARGV[2]: pub/sub channel
-- open:  ARGV[3] id, ARGV[4] origin, ARGV[5] us until the next probe, ARGV[6] held (0/1)
--        -> the generation
-- close: ARGV[3] id, ARGV[4] origin -> the generation
-- probe: ARGV[3] id, ARGV[4] member, ARGV[5] permit us, ARGV[6] lead us
--        -> {{'granted', us to due}} | {{'busy', us the permit has left}} | {{'wait', us to due}}
--           | {{'closed', 0}}
-- renew: ARGV[3] id, ARGV[4] member, ARGV[5] permit us -> 1 (renewed) or 0
-- read:  -> {{id, generation, open (1/0), us to due, held, ...}}
-- (times are stored in ms: cjson keeps 14 digits)
{EPOCH_LUA}
local key, op, channel = KEYS[1], ARGV[1], ARGV[2]
local now_ms = now / 1000
local function until_us(ms)
  local left = (ms - now_ms) * 1000
  if left < 0 then return 0 end
  return math.ceil(left)
end
local function keep(us)
  local want = math.floor(us / 1000) + 86400000
  if redis.call('PTTL', key) < want then redis.call('PEXPIRE', key, want) end
end
if op == 'read' then
  local raw, out = redis.call('HGETALL', key), {{}}
  for i = 1, #raw, 2 do
    local s = cjson.decode(raw[i + 1])
    out[#out + 1] = raw[i]; out[#out + 1] = s.e
    out[#out + 1] = (s.s == 'closed') and 0 or 1
    out[#out + 1] = until_us(s.u or 0); out[#out + 1] = s.h or 0
  end
  return out
end
local id = ARGV[3]
local raw = redis.call('HGET', key, id)
local s = raw and cjson.decode(raw) or nil
if op == 'open' then
  local left = tonumber(ARGV[5])
  local epoch = (s and s.e or 0) + 1
  redis.call('HSET', key, id, cjson.encode({{e = epoch, s = 'open', u = now_ms + left / 1000,
                                             h = tonumber(ARGV[6]), p = '', pu = 0}}))
  keep(left)
  redis.call('PUBLISH', channel, cjson.encode({{op = 'open', id = id, epoch = epoch,
      left = left, held = tonumber(ARGV[6]), origin = ARGV[4]}}))
  return epoch
elseif op == 'close' then
  local epoch = (s and s.e or 0) + 1
  redis.call('HSET', key, id, cjson.encode({{e = epoch, s = 'closed'}}))
  keep(0)
  redis.call('PUBLISH', channel, cjson.encode({{op = 'close', id = id, epoch = epoch,
      origin = ARGV[4]}}))
  return epoch
end
if not s or s.s == 'closed' then return {{'closed', 0}} end
local me, permit_ms = ARGV[4], tonumber(ARGV[5]) / 1000
if op == 'probe' then
  if s.h == 1 then return {{'busy', tonumber(ARGV[5])}} end
  if s.p ~= '' and s.p ~= me and s.pu > now_ms then return {{'busy', until_us(s.pu)}} end
  if now_ms < s.u - tonumber(ARGV[6]) / 1000 then return {{'wait', until_us(s.u)}} end
  s.p, s.pu = me, math.max(now_ms, s.u) + permit_ms
  redis.call('HSET', key, id, cjson.encode(s))
  return {{'granted', until_us(s.u)}}
elseif op == 'renew' then
  if s.p ~= me then return 0 end
  s.pu = now_ms + permit_ms
  redis.call('HSET', key, id, cjson.encode(s))
  return 1
end
return redis.error_reply('virtrigaud breakers: unknown operation ' .. tostring(op))
""")

BreakerKey = tuple[str, str, str]

#: Seconds between two health checks (PINGs) of the pub/sub connection.
HEALTH_INTERVAL = 1.0


class RedisBreakerSync:
    """Joins the breakers of ``registry`` with those of every process using ``key``.

    Args:
        client: a sync redis-py client (``redis.Redis``); see the module for why.
        registry: the :class:`~virtrigaud_resilience.BreakerRegistry` whose
            breakers (now and future ones) are shared. Breakers opened by
            peers are created in it with its config.
        key: the Redis key of the fleet's state, also the pub/sub channel
            (non-empty str; default ``"virtrigaud:breakers"``).
        probe_lead: seconds before a breaker is due that each process asks
            for the probe permit; > 0, <= 60 (default 0.1).
        permit_ttl: seconds a probe permit in use lives unless renewed; > 0,
            <= 3600 (default 2; renewed every third of it while probing). A
            permit no call used lapses ``probe_lead`` after it was due.
        member: this process's name (default ``host:pid:random``).
        client_breaker: the :class:`RedisClientBreaker` to use; default the
            client's shared one. ``guard=``, its old name, is deprecated.

    Starts its threads at once; :meth:`close` (or ``with``) stops them.
    Build it in the process that uses it: threads do not survive a ``fork()``.

    Raises:
        TypeError, ValueError: a bad argument, naming it and its value.
    """

    def __init__(self, client: SyncClient, registry: BreakerRegistry, *, key: str = DEFAULT_KEY,
                 probe_lead: float = 0.1, permit_ttl: float = 2.0, member: str | None = None,
                 client_breaker: RedisClientBreaker | None = None,
                 guard: RedisClientBreaker | None = None) -> None:
        owner = "RedisBreakerSync"
        if client_kind(owner, client) != "sync":
            raise TypeError(
                f"{owner} client must be a sync client (redis.Redis): the sync runs in its own "
                "threads, so an asyncio program can use it too; got an asyncio client "
                f"{client!r}")
        if not isinstance(registry, BreakerRegistry):
            raise TypeError(f"{owner} registry must be a BreakerRegistry, "
                            f"got {type(registry).__name__} {registry!r}")
        self.registry = registry
        self.client = client
        self.key = check_key(owner, key)
        self.probe_lead = _validate.positive(owner, "probe_lead", probe_lead, maximum=60.0)
        self.permit_ttl = _validate.positive(owner, "permit_ttl", permit_ttl, maximum=3600.0)
        self.member = (f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
                       if member is None else _validate.string(owner, "member", member))
        self._client_breaker = check_client_breaker(owner, renamed_keyword(
            owner, "guard", guard, "client_breaker", client_breaker), client)
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, str, BreakerKey, int]] = []
        self._seq = itertools.count()
        self._epochs: dict[BreakerKey, int] = {}
        self._probing: set[BreakerKey] = set()
        self._demand: dict[BreakerKey, int] = {}  # rejected calls at the last ask
        self._used_base: dict[BreakerKey, int] = {}  # half-opens when the permit came
        self._applying = threading.local()
        self._closed = threading.Event()
        events.on_state_change(self._on_state_change)
        self._client_breaker.on_recovery(self._on_recovery)
        self._inbox.put(("resync",))
        self._worker = threading.Thread(target=self._work, name=f"breaker-sync {key}",
                                        daemon=True)
        self._listener = threading.Thread(target=self._listen, name=f"breaker-sync pubsub {key}",
                                          daemon=True)
        self._worker.start()
        self._listener.start()

    @classmethod
    def from_url(cls, url: str, registry: BreakerRegistry, *, cluster: bool = False,
                 socket_timeout: float = DEFAULT_SOCKET_TIMEOUT, check: bool = True,
                 **options: Any) -> RedisBreakerSync:
        """A sync on a new fail-fast client (see
        :func:`~virtrigaud_resilience.distributed.connect`)."""
        client = connect(url, cluster=cluster, socket_timeout=socket_timeout, check=check,
                         key=check_key("RedisBreakerSync", options.get("key", DEFAULT_KEY)))
        return cls(cast(SyncClient, client), registry, **options)

    @property
    def client_breaker(self) -> RedisClientBreaker:
        """The breaker in front of the client."""
        return self._client_breaker

    #: Deprecated: :attr:`client_breaker` (until 0.3.0).
    guard: RenamedAttribute[RedisClientBreaker] = RenamedAttribute("client_breaker")

    def close(self) -> None:
        """Stops sharing (idempotent): the breakers stay as they are, local again."""
        if self._closed.is_set():
            return
        self._closed.set()
        events.remove_listener(self._on_state_change)
        self._inbox.put(("close",))
        for thread in (self._worker, self._listener):
            if thread is not threading.current_thread():
                thread.join(timeout=5.0)

    def __enter__(self) -> RedisBreakerSync:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --------------------------------------------- what happens locally --

    def _on_state_change(self, breaker: CircuitBreaker, old: BreakerState,
                         new: BreakerState) -> None:
        # Runs in the thread of the call that moved the breaker: only queue.
        if getattr(self._applying, "active", False) or new is BreakerState.HALF_OPEN:
            return
        key = (breaker.name, breaker.provider_type, breaker.provider)
        if self.registry.get(*key) is breaker:
            self._inbox.put(("local", key, new))

    def _on_recovery(self) -> None:
        self._inbox.put(("resync",))

    # ------------------------------------------------------------ worker --

    def _work(self) -> None:
        while not self._closed.is_set():
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                item = None
            try:
                self._run_timers()
                if item is not None:
                    self._handle(item)
            except RedisUnavailable:
                pass  # the client breaker logged it; the breakers work alone meanwhile
            except Exception:
                logger.exception("breaker sync %r failed to handle %r", self.key, item)

    def _handle(self, item: tuple[Any, ...]) -> None:
        what = item[0]
        if what == "local":
            self._publish(item[1], item[2])
        elif what == "remote":
            self._apply_message(item[1])
        elif what == "resync":
            self._resync()

    def _publish(self, key: BreakerKey, state: BreakerState) -> None:
        breaker = self.registry.get(*key)
        if breaker is None or breaker.state is not state:
            return  # it moved on: that transition is queued too
        bid = _breaker_id(key)
        if state is BreakerState.CLOSED:
            self._probing.discard(key)
            self._epochs[key] = int(self._script("close", bid, self.member))
            return
        held = breaker.held_open
        left = 0 if held else round(breaker.remaining_open * 1e6)
        epoch = int(self._script("open", bid, self.member, left, int(held)))
        self._opened(key, epoch, left, held)

    def _apply_message(self, data: bytes | str) -> None:
        message = json.loads(data)
        key = _breaker_key(message["id"])
        epoch = int(message["epoch"])
        known = self._epochs.get(key)
        if known is not None and epoch <= known:
            return  # ours (handled when published), or older than what we know
        if message["op"] == "close":
            self._closed_fleet(key, epoch)
            return
        left, held = int(message["left"]), bool(message["held"])
        self._opened(key, epoch, left, held)  # first: its calls refused from now on count
        self._open(key, left, held)

    def _resync(self) -> None:
        """Reconciles with the fleet's hash (at start, when Redis is back,
        after each resubscription): a generation newer than the one this
        process knows is applied, open or closed (so a missed close is not
        undone); a breaker that opened here while the fleet's was closed
        (or unknown) in the generation known is published."""
        reply = self._script("read", "", "")
        fleet_open: set[BreakerKey] = set()
        for i in range(0, len(reply), 5):
            key = _breaker_key(reply[i])
            epoch, is_open = int(reply[i + 1]), bool(int(reply[i + 2]))
            left, held = int(reply[i + 3]), bool(int(reply[i + 4]))
            if is_open:
                fleet_open.add(key)
            known = self._epochs.get(key)
            if known is not None and epoch <= known:
                continue
            if is_open:
                self._opened(key, epoch, left, held)
                self._open(key, left, held)
            else:
                self._closed_fleet(key, epoch)
        for breaker in self.registry.list():
            key = (breaker.name, breaker.provider_type, breaker.provider)
            if key not in fleet_open and breaker.state is BreakerState.OPEN:
                self._publish(key, BreakerState.OPEN)

    def _closed_fleet(self, key: BreakerKey, epoch: int) -> None:
        """The fleet's breaker closed in generation ``epoch``."""
        self._epochs[key] = epoch
        self._probing.discard(key)
        self._close(key)

    def _opened(self, key: BreakerKey, epoch: int, left_us: int, held: bool) -> None:
        """The fleet's breaker is open in a new generation: from ``probe_lead``
        before it is due, this process asks for the probe permit once one of
        its calls wants it."""
        self._epochs[key] = epoch
        self._probing.discard(key)
        breaker = self.registry.get(*key)
        self._demand[key] = 0 if breaker is None else breaker.rejected
        if not held:
            self._schedule(left_us / 1e6 - self.probe_lead, "probe", key, epoch)

    # ------------------------------------------------------ probe permit --

    def _run_timers(self) -> None:
        while self._timers and self._timers[0][0] <= time.monotonic():
            _, _, what, key, epoch = heapq.heappop(self._timers)
            if self._epochs.get(key) != epoch:
                continue  # the fleet moved on
            if what == "probe":
                self._ask_permit(key, epoch)
            elif what == "used":
                self._check_permit_used(key, epoch)
            else:
                self._renew_permit(key, epoch)

    def _ask_permit(self, key: BreakerKey, epoch: int) -> None:
        """Asks for the probe permit if a call of this process wants it (the
        breaker refused a call since the last ask); else keeps the breaker
        open and looks again in half a lead. A process whose calls never
        reach this provider never takes the permit from one whose calls do."""
        breaker = self.registry.get(*key)
        if breaker is None or breaker.state is BreakerState.CLOSED:
            return
        rejected = breaker.rejected
        if rejected == self._demand.get(key, 0) and breaker.state is BreakerState.OPEN:
            # No call wants a probe: stay open (never half-open unpermitted) at
            # least a lead more, and look again in half of it. The time left is
            # kept as the fleet's until then: peers show the same due moment.
            if breaker.remaining_open < self.probe_lead:
                self._open(key, round(self.probe_lead * 1e6), False)
            self._schedule(self.probe_lead / 2, "probe", key, epoch)
            return
        lead_us = round(self.probe_lead * 1e6)
        # The permit lapses a lead after it is due unless a call uses it.
        answer, us = self._script("probe", _breaker_id(key), self.member, 2 * lead_us, lead_us)
        answer, seconds = _text(answer), int(us) / 1e6
        if answer == "granted":
            # Ours: the breaker half-opens when due, here, at its next call.
            # The calls refused so far are served by it (busy or wait: still waiting).
            self._demand[key] = rejected
            self._used_base[key] = breaker.transitions[1]
            self._open(key, int(us), False)
            self._schedule(seconds + self.probe_lead, "used", key, epoch)
        elif answer == "busy":
            # Another process has it: stay open while its permit lives, and
            # ask again when it would have lapsed.
            self._open(key, round((seconds + self.probe_lead) * 1e6), False)
            self._schedule(seconds, "probe", key, epoch)
        elif answer == "wait":
            self._open(key, int(us), False)
            self._schedule(seconds - self.probe_lead, "probe", key, epoch)
        else:  # closed meanwhile (a message we missed): the hash says so
            self._inbox.put(("resync",))

    def _check_permit_used(self, key: BreakerKey, epoch: int) -> None:
        """A lead after the permit was due: renewed while a call of ours
        probes; else it lapses and the breaker stays open until one wants it."""
        breaker = self.registry.get(*key)
        if breaker is None or breaker.state is BreakerState.CLOSED:
            return
        if breaker.transitions[1] != self._used_base.get(key):  # a call took the probe
            self._probing.add(key)
            self._renew_permit(key, epoch)
            return
        self._open(key, round(2 * self.probe_lead * 1e6), False)
        self._schedule(self.probe_lead, "probe", key, epoch)

    def _renew_permit(self, key: BreakerKey, epoch: int) -> None:
        breaker = self.registry.get(*key)
        if key not in self._probing or breaker is None or breaker.state is BreakerState.CLOSED:
            return
        permit_us = round(self.permit_ttl * 1e6)
        if int(self._script("renew", _breaker_id(key), self.member, permit_us)):
            self._schedule(self.permit_ttl / 3, "renew", key, epoch)
        else:
            self._probing.discard(key)

    # ------------------------------------------------------------ helpers --

    def _open(self, key: BreakerKey, left_us: int, held: bool) -> None:
        breaker = self.registry.get_or_create(*key)
        self._applying.active = True
        try:
            if held:
                breaker.force_open()
            else:
                breaker._open_for_ns(left_us * 1000)
        finally:
            self._applying.active = False

    def _close(self, key: BreakerKey) -> None:
        breaker = self.registry.get(*key)
        if breaker is None or breaker.state is BreakerState.CLOSED:
            return
        self._applying.active = True
        try:
            breaker.reset()
        finally:
            self._applying.active = False

    def _schedule(self, delay: float, what: str, key: BreakerKey, epoch: int) -> None:
        due = time.monotonic() + max(0.0, delay)
        heapq.heappush(self._timers, (due, next(self._seq), what, key, epoch))

    def _script(self, op: str, *args: object) -> Any:
        return self._client_breaker.run(BREAKERS_LUA.run, self.client, self.key, op, self.key,
                                        *args)

    # ---------------------------------------------------------- listener --

    def _listen(self) -> None:
        """The pub/sub loop. It survives any exception: a lost subscription
        is made again at once, then after jittered waits that double up to
        the client breaker's probe interval while it keeps failing; each
        (re)subscription is followed by a resync from the hash, so nothing
        published meanwhile is missed. A subscription that stops answering
        its health check (a PING every HEALTH_INTERVAL seconds, answered
        within another) is dropped and made again: a half-open connection
        (a dead peer, a silent network) is found within two intervals."""
        logged: set[type[BaseException]] = set()
        failures = 0
        while not self._closed.is_set():
            pubsub = None
            try:
                pubsub = cast(Any, self.client).pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.key)
                self._inbox.put(("resync",))  # subscribed first: nothing is missed
                failures = 0
                self._receive(pubsub)
            except Exception as exc:
                if not isinstance(exc, REDIS_FAILURES) and type(exc) not in logged:
                    logged.add(type(exc))
                    logger.error("breaker sync %r: the pub/sub listener failed unexpectedly; "
                                 "it subscribes again", self.key, exc_info=exc)
                if failures:
                    cap = self._client_breaker.probe_interval
                    self._closed.wait(min(cap, 0.01 * 2 ** failures) * random.uniform(0.5, 1.0))
                failures += 1
            finally:
                try:
                    if pubsub is not None:
                        pubsub.close()
                except Exception:
                    pass  # a broken connection: it is dropped with the pubsub

    def _receive(self, pubsub: Any) -> None:
        """Queues the messages of ``pubsub`` until closed; raises
        ConnectionError when the health check goes unanswered."""
        pinged_at = answered_at = time.monotonic()
        while not self._closed.is_set():
            message = pubsub.get_message(timeout=0.05)
            now = time.monotonic()
            if message is not None:
                answered_at = now  # any traffic shows the connection alive
                if message.get("type") == "message":
                    self._inbox.put(("remote", message["data"]))
            if now - answered_at > 2 * HEALTH_INTERVAL:
                raise redis.ConnectionError(
                    f"the pub/sub connection answered no PING for {now - answered_at:.1f} s")
            if now - pinged_at >= HEALTH_INTERVAL:
                pubsub.ping()
                pinged_at = now

    def __repr__(self) -> str:
        return f"RedisBreakerSync({self.key!r}, member={self.member!r}, breakers={len(self.registry)})"


def _breaker_id(key: BreakerKey) -> str:
    return json.dumps(list(key), separators=(",", ":"))


def _breaker_key(bid: bytes | str) -> BreakerKey:
    name, provider_type, provider = json.loads(bid)
    return (str(name), str(provider_type), str(provider))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

