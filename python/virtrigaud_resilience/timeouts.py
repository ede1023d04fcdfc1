"""Timeout policies: per-operation RPC timeouts (the guide's ``RPCConfig``)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from . import _validate
from .clock import Sleeper
from .durations import MAX_DURATION
from .errors import OperationTimeoutError

T = TypeVar("T")

__all__ = ["MUTATING_OPERATIONS", "RPCConfig", "remaining", "deadline_for", "deadline_scope"]

# ---------------------------------------------------------------------------
# RPCConfig: which timeout each provider operation gets.
# ---------------------------------------------------------------------------

#: The operations the Go code names as mutating. Informational: any operation
#: other than Describe, Validate and TaskStatus gets the mutating timeout.
MUTATING_OPERATIONS: frozenset[str] = frozenset({"Create", "Delete", "Power", "Reconfigure"})


@dataclass(frozen=True)
class RPCConfig:
    """Per-operation RPC timeouts, in float seconds (Go's ``config.RPCConfig``).

    Attributes:
        describe: timeout of ``Describe`` (a quick status read); default 30 s.
        mutating: timeout of ``Create``, ``Delete``, ``Power``, ``Reconfigure``
            and of any operation this class does not know; default 240 s (4 min).
        validate: timeout of ``Validate`` (provider validation); default 10 s.
        task_status: timeout of ``TaskStatus`` (task polling); default 10 s.

    Each field accepts a number of seconds, a :class:`datetime.timedelta` or
    a Go duration string ("30s", "4m"); it is stored as a float. A timeout
    must be > 0 and fit Go's ``time.Duration`` (about 292 years). A bad value
    raises ``ValueError`` (or ``TypeError`` for a wrong type) naming the field
    and the value.
    """

    describe: float = 30.0
    mutating: float = 240.0
    validate: float = 10.0
    task_status: float = 10.0

    def __post_init__(self) -> None:
        for field in ("describe", "mutating", "validate", "task_status"):
            value = _validate.seconds(
                "RPCConfig", field, getattr(self, field), allow_zero=False, maximum=MAX_DURATION
            )
            # Frozen dataclass: the normalised float replaces what was passed.
            object.__setattr__(self, field, value)

    def timeout_for(self, operation: str) -> float:
        """The timeout in seconds for ``operation`` (Go's ``GetRPCTimeout``).

        ``operation`` is a provider method name, case-sensitive as in Go:
        "Describe" -> :attr:`describe`, "Validate" -> :attr:`validate`,
        "TaskStatus" -> :attr:`task_status`, and "Create", "Delete", "Power",
        "Reconfigure" -> :attr:`mutating`. An unknown operation also gets
        :attr:`mutating`, the longest timeout: cutting a slow call short is
        worse than waiting a little longer for a fast one.

        A gRPC full method name ("/provider.v1.Provider/Describe") is accepted
        too; its last path segment is the operation.

        Raises:
            TypeError: ``operation`` is not a ``str``.
        """
        if not isinstance(operation, str):
            raise TypeError(
                f"operation must be a str, got {type(operation).__name__} {operation!r}"
            )
        # Plain comparisons: this runs once per guarded call.
        method = operation.rsplit("/", 1)[-1] if "/" in operation else operation
        if method == "Describe":
            return self.describe
        if method == "Validate":
            return self.validate
        if method == "TaskStatus":
            return self.task_status
        return self.mutating


# ---------------------------------------------------------------------------
# Deadlines: an overall time budget carried through nested policies.
# ---------------------------------------------------------------------------
#
# What a timeout can do:
# - async: the awaiting task is cancelled at the deadline and the caller gets
#   OperationTimeoutError (retryable) chained from the builtin TimeoutError;
#   the cancelled attempt gives back its breaker slot, bulkhead slot and
#   reserved tokens.
# - sync: Python cannot interrupt a blocking call from outside. The deadline
#   is checked before every attempt (none starts past it) and no backoff
#   sleeps past it; an attempt already running is allowed to finish, and its
#   result is returned even if it arrives late. Give the blocking call its
#   own timeout (a socket or gRPC deadline; see remaining()) to bound it.

_DEADLINE: ContextVar[tuple[Sleeper, float] | None] = ContextVar(
    "virtrigaud_resilience_deadline", default=None
)


def deadline_for(clock: Sleeper, timeout: float | None) -> float | None:
    """The absolute deadline (seconds on ``clock``) for a call starting now:
    now + timeout, tightened by any enclosing deadline on the same clock."""
    outer = _DEADLINE.get()
    inherited = outer[1] if outer is not None and outer[0] is clock else None
    if timeout is None:
        return inherited
    own = clock.now() + timeout
    return own if inherited is None else min(own, inherited)


def remaining(clock: Sleeper | None = None) -> float | None:
    """Seconds left before the innermost enclosing policy deadline, or None.

    Pass it on to a blocking call's own timeout (``requests.get(...,
    timeout=vr.remaining())``, a gRPC ``timeout=``) so that sync calls
    respect the policy's budget too.
    """
    current = _DEADLINE.get()
    if current is None or (clock is not None and current[0] is not clock):
        return None
    return max(0.0, current[1] - current[0].now())


@contextmanager
def deadline_scope(clock: Sleeper, deadline: float | None) -> Iterator[None]:
    """Makes ``deadline`` visible to nested policies (and to :func:`remaining`)."""
    if deadline is None:
        yield
        return
    token = _DEADLINE.set((clock, deadline))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def deadline_exceeded(what: str, cause: BaseException | None = None) -> OperationTimeoutError:
    """The error for a deadline that expired (retryable, chained from ``cause``)."""
    return OperationTimeoutError(f"{what}: deadline exceeded", cause)


async def run_until(
    awaitable: Awaitable[T], clock: Sleeper, deadline: float | None, what: str
) -> T:
    """Awaits ``awaitable``, cancelling it at ``deadline`` (seconds on ``clock``).

    Raises :class:`OperationTimeoutError` chained from the builtin
    ``TimeoutError`` when the deadline expires. The timer runs on the event
    loop's real time for the seconds left on ``clock``.
    """
    if deadline is None:
        return await awaitable
    left = deadline - clock.now()
    if left <= 0:
        if inspect.iscoroutine(awaitable):
            awaitable.close()  # never started: no "never awaited" warning
        raise deadline_exceeded(what)
    scope = TimeoutScope(left)
    try:
        async with scope:
            return await awaitable
    except asyncio.TimeoutError as exc:
        if not scope.fired:  # a TimeoutError of the call's own (or an inner deadline's)
            raise
        raise deadline_exceeded(what, exc) from exc


class TimeoutScope:
    """``asyncio.timeout`` that also runs on Python 3.10 (None: no limit).

    Cancels the current task after ``timeout`` seconds of loop time and turns
    that cancellation, and only that one, into ``asyncio.TimeoutError``;
    :attr:`fired` tells whether it did.
    """

    def __init__(self, timeout: float | None, owner: str = "timeout") -> None:
        self._timeout = (None if timeout is None
                         else _validate.seconds(owner, "timeout", timeout))
        self._handle: asyncio.TimerHandle | None = None
        self.fired = False

    async def __aenter__(self) -> None:
        if self._timeout is not None:
            task = asyncio.current_task()
            assert task is not None
            self._handle = asyncio.get_running_loop().call_later(self._timeout, self._fire, task)

    def _fire(self, task: asyncio.Task[Any]) -> None:
        self.fired = True
        task.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self.fired and exc_type is asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
            raise asyncio.TimeoutError


