"""A circuit breaker of ours in front of a Redis client.

Every distributed primitive asks Redis through the :class:`RedisGuard` of
its client (one per client, shared). The first failed command (a refused
connection, a timeout, an error reply such as ``OOM`` or ``READONLY``, a
cluster client that reaches no node: an outage, as
:mod:`~virtrigaud_resilience.distributed.failures` sorts them) opens
the guard's breaker: from then on no decision goes to Redis, each is made by
its primitive's fallback at local speed, and a background probe (a thread
for a sync client, a task on the client's event loop for an asyncio one)
PINGs every ``probe_interval`` seconds. The probe that gets an answer closes
the breaker and shared accounting resumes. Callers never probe, so while
Redis is down no decision waits on it. The probe survives any exception: one
that is no Redis failure we know is logged (once per type) and the probe
backs off (doubling, up to ``PROBE_BACKOFF_CAP``) and goes on.

Each transition is logged once (WARNING when Redis is lost, with the error;
INFO when it is back), and counted: the guard's breaker is a
:class:`~virtrigaud_resilience.CircuitBreaker` labelled
``provider_type="redis"``, ``provider="<host:port/db>"``, so the usual
breaker series show Redis's health (state 2 while falling back,
``transitions_total{to="open"}`` the times Redis was lost,
``{to="closed"}`` the recoveries).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis

from .. import _validate
from .._native import CLOSED
from .._native import FAILURE as _FAILURE
from .._native import RELEASE as _RELEASE
from .._native import SUCCESS as _SUCCESS
from ..breaker import MAX_RESET_TIMEOUT, BreakerConfig, BreakerState, CircuitBreaker
from ..errors import CircuitOpenError, UnauthorizedError
from .clients import Client, client_kind, describe
from .failures import REDIS_FAILURES, pool_exhausted

__all__ = ["RedisGuard", "RedisUnavailable", "RedisBusy", "DEFAULT_PROBE_INTERVAL", "GUARD_NAME"]

T = TypeVar("T")

logger = logging.getLogger("virtrigaud_resilience")

#: Seconds between two probes of a lost Redis.
DEFAULT_PROBE_INTERVAL = 0.5
#: The name of every guard's breaker (its labels are provider_type "redis"
#: and provider "<host:port/db>").
GUARD_NAME = "redis-guard"
GUARD_PROVIDER_TYPE = "redis"

#: The longest a probe waits after an error that is none of REDIS_FAILURES
#: (a bug, an unexpected error of a client): it backs off, doubling from the
#: probe interval up to this many seconds, and keeps probing.
PROBE_BACKOFF_CAP = 30.0


class RedisUnavailable(Exception):
    """Internal: Redis did not decide (the guard is open, or the command failed).

    Never reaches a user: each primitive catches it and asks its fallback.
    """


class RedisBusy(RedisUnavailable):
    """Internal: the client's connection pool had no connection to give.

    A limit of this process, not an outage: the decision falls back, the
    guard stays closed.
    """


class RedisGuard:
    """The breaker of one Redis client, and the probe that closes it again.

    Args:
        client: the redis-py client it guards (sync or asyncio).
        probe_interval: seconds between probes while Redis is lost; > 0,
            <= 3600. Also the longest Redis may be back before decisions
            use it again.

    Use :meth:`of` to get the shared guard of a client.
    """

    _shared: weakref.WeakKeyDictionary[Any, RedisGuard] = weakref.WeakKeyDictionary()
    _shared_lock = threading.Lock()

    def __init__(self, client: Client, *, probe_interval: float = DEFAULT_PROBE_INTERVAL) -> None:
        self.kind = client_kind("RedisGuard", client)
        self.probe_interval = _validate.positive("RedisGuard", "probe_interval", probe_interval,
                                                 maximum=3600.0)
        self._client = weakref.ref(client)
        self.name = describe(client)
        self.breaker = CircuitBreaker(
            GUARD_NAME, GUARD_PROVIDER_TYPE, self.name,
            # One failure opens it; callers never probe (the reset timeout is
            # out of reach): the background probe closes it with reset().
            BreakerConfig(failure_threshold=1, reset_timeout=MAX_RESET_TIMEOUT,
                          half_open_max_calls=1, half_open_lease=None),
        )
        self.breaker.add_listener(self._on_transition)
        self.last_error: BaseException | None = None
        self._lost_at = 0.0
        self._probing = False
        self._probe_task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        # Insertion-ordered sets of weak callbacks (a dict: adding is O(1)
        # however many buckets share the guard).
        self._on_recovery: dict[weakref.WeakMethod[Callable[[], None]], None] = {}
        self._on_loss: dict[weakref.WeakMethod[Callable[[], None]], None] = {}
        self._prune_at = 64
        self._probe_errors_logged: set[type[BaseException]] = set()
        self._refusals_logged: set[str] = set()

    @classmethod
    def of(cls, client: Client) -> RedisGuard:
        """The guard shared by every primitive on ``client`` (made on first use)."""
        client_kind("RedisGuard", client)
        with cls._shared_lock:
            guard = cls._shared.get(client)
            if guard is None:
                guard = cls._shared[client] = cls(client)
            return guard

    @property
    def up(self) -> bool:
        """True while decisions go to Redis (the breaker is closed)."""
        return self.breaker._state_code == CLOSED

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` (a Redis command) through the breaker.

        Raises RedisUnavailable, at once while the breaker is open, or when
        ``fn`` raises one of REDIS_FAILURES (which opens it); RedisBusy
        (a RedisUnavailable) when the client's pool had no connection to
        give, and UnauthorizedError for a permission Redis refused (``NOPERM``,
        logged once): neither opens it, Redis is not down. Any other
        exception (a RedisKeyError of one key) propagates as it is.
        """
        ticket = self._admit()
        try:
            result = fn(*args)
        except BaseException as exc:
            unavailable = self._failed(ticket, exc)
            if unavailable is None:
                raise
            raise unavailable from exc
        self.breaker._record(ticket, _SUCCESS)
        return result

    async def run_async(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """The asyncio form of :meth:`run`; a cancellation records nothing."""
        ticket = self._admit()
        try:
            result = await fn(*args)
        except BaseException as exc:
            unavailable = self._failed(ticket, exc)
            if unavailable is None:
                raise
            raise unavailable from exc
        self.breaker._record(ticket, _SUCCESS)
        return result

    def on_recovery(self, callback: Callable[[], None]) -> None:
        """Calls the bound method ``callback()`` (held weakly) each time Redis is back."""
        self._add_callback(self._on_recovery, callback)

    def on_loss(self, callback: Callable[[], None]) -> None:
        """Calls the bound method ``callback()`` (held weakly) each time Redis
        is lost, in the thread whose command failed: it must not block."""
        self._add_callback(self._on_loss, callback)

    def _add_callback(self, callbacks: dict[weakref.WeakMethod[Callable[[], None]], None],
                      callback: Callable[[], None]) -> None:
        ref = weakref.WeakMethod(callback)
        with self._lock:
            if len(callbacks) >= self._prune_at:  # the dead (dropped buckets) go
                self._prune(callbacks)
                self._prune_at = max(64, 2 * len(callbacks))
            callbacks[ref] = None  # once: the same method of the same object (a shared pipe)

    @staticmethod
    def _prune(callbacks: dict[weakref.WeakMethod[Callable[[], None]], None]) -> None:
        for ref in [ref for ref in callbacks if ref() is None]:
            del callbacks[ref]

    def _admit(self) -> int:
        breaker = self.breaker
        if breaker._state_code != CLOSED:
            raise RedisUnavailable("the Redis guard is open")
        try:
            return breaker._admit()
        except CircuitOpenError:  # opened since the line above
            raise RedisUnavailable("the Redis guard is open") from None

    def _failed(self, ticket: int, exc: BaseException) -> BaseException | None:
        """Records a command that raised ``exc``; returns what to raise
        instead (None: ``exc`` itself, not Redis's failure)."""
        if not isinstance(exc, REDIS_FAILURES):
            self.breaker._record(ticket, _RELEASE)
            return None
        if pool_exhausted(exc):
            self.breaker._record(ticket, _RELEASE)
            return RedisBusy(str(exc))
        if isinstance(exc, redis.exceptions.NoPermissionError):
            self.breaker._record(ticket, _RELEASE)
            return self._refused(exc)
        self.last_error = exc
        self.breaker._record(ticket, _FAILURE)
        return RedisUnavailable(str(exc))

    def _refused(self, exc: redis.exceptions.NoPermissionError) -> UnauthorizedError:
        """A permission Redis refused: an UnauthorizedError naming it, logged once."""
        error = UnauthorizedError(
            f"Redis {self.name} refused a command of the distributed primitives (their user "
            "needs EVALSHA and SCRIPT LOAD, +@scripting, and access to their keys)", exc)
        with self._lock:
            first = str(exc) not in self._refusals_logged
            self._refusals_logged.add(str(exc))
        if first:
            logger.error("%s", error, extra={"redis": self.name, "redis_state": "refused"})
        return error

    def _on_transition(self, breaker: CircuitBreaker, old: BreakerState,
                       new: BreakerState) -> None:
        # Runs once per transition, in the thread that caused it.
        if new is BreakerState.OPEN:
            self._lost_at = time.monotonic()
            error = self.last_error
            logger.warning(
                "Redis %s is unreachable (%s): distributed rate limits decide by their "
                "fallback, and breaker sync pauses, until a probe finds it back (every %g s)",
                self.name, _describe_error(error), self.probe_interval,
                extra={"redis": self.name, "redis_state": "lost"})
            self._start_probe()
            self._notify(self._on_loss)
        elif new is BreakerState.CLOSED:
            logger.info("Redis %s is back after %.2f s: shared accounting resumes", self.name,
                        time.monotonic() - self._lost_at,
                        extra={"redis": self.name, "redis_state": "back"})
            self._notify(self._on_recovery)

    def _start_probe(self) -> None:
        with self._lock:
            if self._probing:
                return
            self._probing = True
        if self.kind == "sync":
            threading.Thread(target=self._probe, name=f"redis-guard {self.name}",
                             daemon=True).start()
            return
        try:
            self._probe_task = asyncio.get_running_loop().create_task(self._probe_async())
        except RuntimeError:  # no loop runs here: nothing can use this client anyway
            with self._lock:
                self._probing = False

    def _probe(self) -> None:
        """The sync probe loop: PINGs until Redis answers. It survives any
        exception (logged, then a longer wait); it ends once the breaker is
        closed or the client is garbage."""
        try:
            delay = self.probe_interval
            while self.breaker.state is not BreakerState.CLOSED:
                time.sleep(delay)
                client = self._client()
                if client is None:
                    return
                try:
                    cast(Any, client).ping()
                except Exception as exc:
                    delay = self._probe_failed(exc, delay)
                    continue
                finally:
                    del client
                self.breaker.reset()
        finally:
            with self._lock:
                self._probing = False

    async def _probe_async(self) -> None:
        """The asyncio form of :meth:`_probe` (a cancellation ends it)."""
        try:
            delay = self.probe_interval
            while self.breaker.state is not BreakerState.CLOSED:
                await asyncio.sleep(delay)
                client = self._client()
                if client is None:
                    return
                try:
                    await cast(Any, client).ping()
                except Exception as exc:
                    delay = self._probe_failed(exc, delay)
                    continue
                finally:
                    del client
                self.breaker.reset()
        finally:
            with self._lock:
                self._probing = False
                self._probe_task = None

    def _probe_failed(self, exc: Exception, delay: float) -> float:
        """Records a failed probe; returns the wait before the next one.

        Redis still unreachable (one of REDIS_FAILURES): the probe interval,
        so Redis back is seen within one. Anything else is not an outage we
        know: logged with its traceback (once per type of error), and the
        wait doubles up to PROBE_BACKOFF_CAP so a persistent one does not
        spin; the probe goes on either way.
        """
        self.last_error = exc
        if isinstance(exc, REDIS_FAILURES):
            return self.probe_interval
        if type(exc) not in self._probe_errors_logged:
            self._probe_errors_logged.add(type(exc))
            logger.error("Redis %s: the guard's probe failed unexpectedly; it backs off and "
                         "keeps probing", self.name, exc_info=exc,
                         extra={"redis": self.name, "redis_state": "probe_error"})
        return min(max(delay * 2, self.probe_interval), max(PROBE_BACKOFF_CAP,
                                                           self.probe_interval))

    def _notify(self, refs: dict[weakref.WeakMethod[Callable[[], None]], None]) -> None:
        with self._lock:
            self._prune(refs)
            callbacks = [ref() for ref in refs]
        for callback in callbacks:
            if callback is not None:
                try:
                    callback()
                except Exception:
                    logger.exception("Redis %s: callback %r failed", self.name, callback)

    def __repr__(self) -> str:
        return f"RedisGuard({self.name!r}, up={self.up})"


def _describe_error(error: BaseException | None) -> str:
    return "unknown error" if error is None else f"{type(error).__name__}: {error}"


class _HideGuardTransitions(logging.Filter):
    """Leaves a guard's transitions to the guard's own log line (which says
    why), so each is logged once; every other breaker logs as usual."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(record, "breaker", None) == GUARD_NAME
                    and getattr(record, "provider_type", None) == GUARD_PROVIDER_TYPE)


logger.addFilter(_HideGuardTransitions())
