"""A circuit breaker of ours in front of a Redis client.

Every distributed primitive asks Redis through the :class:`RedisGuard` of
its client (one per client, shared). The first failed command (a refused
connection, a timeout, an error reply such as ``OOM`` or ``READONLY``, a
cluster client that reaches no node: any of ``REDIS_FAILURES``) opens
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
from ..breaker import MAX_RESET_TIMEOUT, BreakerConfig, BreakerState, CircuitBreaker
from ..errors import CircuitOpenError
from .clients import Client, client_kind, describe

__all__ = ["RedisGuard", "RedisUnavailable", "DEFAULT_PROBE_INTERVAL", "GUARD_NAME"]

T = TypeVar("T")

logger = logging.getLogger("virtrigaud_resilience")

#: Seconds between two probes of a lost Redis.
DEFAULT_PROBE_INTERVAL = 0.5
#: The name of every guard's breaker (its labels are provider_type "redis"
#: and provider "<host:port/db>").
GUARD_NAME = "redis-guard"
GUARD_PROVIDER_TYPE = "redis"

#: What a failed command raises: every family of redis-py's errors
#: (``RedisError``: connection, timeout, error replies; and
#: ``RedisClusterException``, which is not a RedisError: a cluster client
#: that found no reachable node or no owner for a slot), the OS's (a socket
#: torn down under us) and a timeout of asyncio's.
REDIS_FAILURES: tuple[type[BaseException], ...] = (
    redis.RedisError, redis.exceptions.RedisClusterException, OSError, TimeoutError,
    asyncio.TimeoutError)
#: The longest a probe waits after an error that is none of REDIS_FAILURES
#: (a bug, an unexpected error of a client): it backs off, doubling from the
#: probe interval up to this many seconds, and keeps probing.
PROBE_BACKOFF_CAP = 30.0

_SUCCESS, _FAILURE, _RELEASE = 0, 1, 2


class RedisUnavailable(Exception):
    """Internal: Redis did not decide (the guard is open, or the command failed).

    Never reaches a user: each primitive catches it and asks its fallback.
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
        self._on_recovery: list[weakref.WeakMethod[Callable[[], None]]] = []
        self._probe_errors_logged: set[type[BaseException]] = set()

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
        return self.breaker._state_code == 0

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` (a Redis command) through the breaker.

        Raises RedisUnavailable, at once while the breaker is open, or when
        ``fn`` raises a redis-py or OS error (which opens it).
        """
        ticket = self._admit()
        try:
            result = fn(*args)
        except REDIS_FAILURES as exc:
            self._failed(ticket, exc)
            raise RedisUnavailable(str(exc)) from exc
        except BaseException:
            self.breaker._record(ticket, _RELEASE)
            raise
        self.breaker._record(ticket, _SUCCESS)
        return result

    async def run_async(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """The asyncio form of :meth:`run`; a cancellation records nothing."""
        ticket = self._admit()
        try:
            result = await fn(*args)
        except REDIS_FAILURES as exc:
            self._failed(ticket, exc)
            raise RedisUnavailable(str(exc)) from exc
        except BaseException:
            self.breaker._record(ticket, _RELEASE)
            raise
        self.breaker._record(ticket, _SUCCESS)
        return result

    def on_recovery(self, callback: Callable[[], None]) -> None:
        """Calls the bound method ``callback()`` (held weakly) each time Redis is back."""
        with self._lock:
            self._on_recovery.append(weakref.WeakMethod(callback))

    def _admit(self) -> int:
        breaker = self.breaker
        if breaker._state_code:
            raise RedisUnavailable("the Redis guard is open")
        try:
            return breaker._admit()
        except CircuitOpenError:  # opened since the line above
            raise RedisUnavailable("the Redis guard is open") from None

    def _failed(self, ticket: int, exc: BaseException) -> None:
        self.last_error = exc
        self.breaker._record(ticket, _FAILURE)

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
        elif new is BreakerState.CLOSED:
            logger.info("Redis %s is back after %.2f s: shared accounting resumes", self.name,
                        time.monotonic() - self._lost_at,
                        extra={"redis": self.name, "redis_state": "back"})
            self._notify_recovery()

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

    def _notify_recovery(self) -> None:
        with self._lock:
            self._on_recovery = [ref for ref in self._on_recovery if ref() is not None]
            callbacks = [ref() for ref in self._on_recovery]
        for callback in callbacks:
            if callback is not None:
                try:
                    callback()
                except Exception:
                    logger.exception("Redis recovery callback %r failed", callback)

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
