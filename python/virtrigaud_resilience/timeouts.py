"""Timeout policies: per-operation RPC timeouts (the guide's ``RPCConfig``)."""

from __future__ import annotations

import os
import sys
import weakref
from _thread import get_ident as _get_ident
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

# asyncio is imported where it is used, never at import time: it costs more
# than the rest of the package together (it loads ssl), and a sync program
# never needs it. A function that runs inside an event loop finds it in
# sys.modules, so its local import is a dictionary lookup.

from . import _core, _foreign_deadlines, _validate
from ._loop_deadlines import LoopDeadlines, deadlines_of
from .clock import SYSTEM_CLOCK, Sleeper
from .durations import MAX_DURATION, Seconds
from .errors import OperationTimeoutError

T = TypeVar("T")

_INFINITY = float("inf")

__all__ = ["MUTATING_OPERATIONS", "RPCConfig", "remaining", "deadline_for", "deadline_scope",
           "deadline_expired", "attempt_outcome", "record_outcome", "cancel_requests"]

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


if TYPE_CHECKING:
    def deadline_for(clock: Sleeper, timeout: float | None) -> float | None:
        """The absolute deadline (seconds on ``clock``) for a call starting now:
        now + timeout, tightened by any enclosing deadline on the same clock."""
else:
    # Native (_core._deadline_for, same contract): it runs on every attempt
    # under a timeout, and reads the system clock without SystemClock.now's frame.
    deadline_for = _core._deadline_for


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


if TYPE_CHECKING:
    def call_until(
        clock: Sleeper, deadline: float | None, what: str,
        fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any],
    ) -> Awaitable[T]:
        """Awaits ``fn(*args, **kwargs)``, cancelling it at ``deadline`` (seconds
        on ``clock``; None: no limit). Await what it returns.

        The deadline is visible to nested policies and to :func:`remaining`
        while ``fn`` is called and awaited (a gRPC stub reads it when called).
        Raises :class:`OperationTimeoutError` chained from the builtin
        ``TimeoutError`` when the deadline expires; a deadline already past
        raises it without calling ``fn``. The timer runs on the event loop's real
        time for the seconds left on ``clock``. A cancellation from outside that
        coincides with the deadline stays a ``CancelledError``.

        The awaitable is native (``_core._call_until``): it enters a
        :class:`TimeoutScope` of the time left and arms its deadline on the
        loop's one heap (:mod:`._loop_deadlines`) without a Python frame; an
        attempt that ends first removes its entry. Only a deadline that fired, or
        one already past, calls Python (:func:`deadline_exceeded`).
        """
else:
    call_until = _core._call_until


#: The TimeoutScopes the running code is inside, innermost last.
_SCOPES: ContextVar[tuple[TimeoutScope, ...]] = ContextVar(
    "virtrigaud_resilience_timeout_scopes", default=()
)


class TimeoutScope(_core._DeadlineScope):
    """``asyncio.timeout`` that also runs on Python 3.10 (None: no limit).

    Cancels the current task after ``timeout`` seconds of loop time and turns
    that cancellation, and only that one, into ``asyncio.TimeoutError``;
    :attr:`fired` tells whether it did. As ``asyncio.timeout`` does, it
    checks ``Task.cancelling()`` first: if the task was also cancelled from
    outside, the ``CancelledError`` stays (a cancelled task must stop, not
    see a timeout it might retry).

    Its state and its ``_start``, ``_stop`` and ``_fire`` are native
    (``_core._DeadlineScope``, shared with call_until's awaitable, which
    makes scopes of this class without calling ``__init__``): ``_start``
    finds the running loop and task, joins :data:`_SCOPES` and arms the
    deadline on the loop's deadlines; ``_stop`` removes it. ``expiring`` is
    True between the deadline firing and the scope's exit: the cancellation
    under way is (at least in part) this deadline's.
    """

    __slots__ = ()

    def __init__(self, timeout: Seconds | None, owner: str = "timeout") -> None:
        if type(timeout) is float and 0.0 <= timeout < _INFINITY:
            value: float | None = timeout  # the common case, checked in one line
        else:
            value = None if timeout is None else _validate.seconds(owner, "timeout", timeout)
        super().__init__(value)

    async def __aenter__(self) -> TimeoutScope:
        self._start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        self._stop(exc_type, exc)


def _find_deadlines() -> tuple[asyncio.AbstractEventLoop, LoopDeadlines]:
    """The running loop and its deadlines: what a scope's native _start asks
    when the loop it last found is not running on this thread."""
    loop = _running_loop()
    return loop, deadlines_of(loop)


#: Tasks count their cancellation requests (``Task.cancelling()``, 3.11+):
#: asyncio.timeout calls it on every task, so may we.
_TASKS_COUNT_CANCELS = sys.version_info >= (3, 11)


def _bind_task_lookup() -> None:
    """Binds :func:`_running_loop` and :func:`_task_of` to asyncio's own
    lookups (asyncio is loaded by then: they run inside a loop).
    ``asyncio.current_task()`` is a Python function up to 3.11: it asks for
    the running loop and reads the loop's task from a dict; the scope does
    the same two steps without its frame (and needs the loop anyway)."""
    global _running_loop, _task_of
    import asyncio
    from asyncio import tasks

    by_loop = getattr(tasks, "_current_tasks", None)
    python_lookup = getattr(tasks.current_task, "__code__", None) is not None
    _task_of = by_loop.get if python_lookup and isinstance(by_loop, dict) else (
        asyncio.current_task)  # native (3.12+): as fast as it gets
    _running_loop = _loop_running_here


# ``asyncio.get_running_loop()`` checks ``getpid()`` against the pid the
# loop started in (a forked child must not use its parent's loop): a system
# call on every attempt under a deadline, which costs ~1 us where system
# calls trap to a hypervisor (measured 1,005 ns for os.getpid() in a
# Firecracker VM, against ~60 ns for threading.get_ident()). An asyncio loop
# records the thread running it (``_thread_id``, set by run_forever() and
# cleared when it stops) and a thread runs one loop at a time, so the loop
# last found, asked again on the same thread and still running there, is
# the running loop. Other loops (uvloop) are asked every time; a fork
# forgets the loop (os.register_at_fork), as asyncio's pid check would.

#: (thread ident, the asyncio loop last found running on that thread, held
#: weakly: a closed loop is let go, as _loop_deadlines lets it go).
_last_loop: tuple[int, Callable[[], Any]] = (-1, lambda: None)


def _loop_running_here() -> asyncio.AbstractEventLoop:
    """``asyncio.get_running_loop()`` (RuntimeError without one), without a
    system call while the thread's loop is the one last found."""
    global _last_loop
    ident = _get_ident()
    thread, last = _last_loop
    if thread == ident:
        loop = last()
        if loop is not None and loop._thread_id == ident:
            return loop  # type: ignore[no-any-return]
    import asyncio  # loaded: a loop may be running

    running = asyncio.get_running_loop()
    if isinstance(running, asyncio.BaseEventLoop) and hasattr(running, "_thread_id"):
        _last_loop = (ident, weakref.ref(running))
    else:
        _forget_loop()
    return running


def _forget_loop() -> None:
    """After a fork: the child's thread may carry the parent's ident."""
    global _last_loop
    _last_loop = (-1, lambda: None)
    _core._forget_running_loop()  # the scopes' native copy of the same


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_loop)


def _first_running_loop() -> asyncio.AbstractEventLoop:
    _bind_task_lookup()
    return _running_loop()


def _first_task_of(loop: asyncio.AbstractEventLoop) -> asyncio.Task[Any] | None:
    _bind_task_lookup()
    return _task_of(loop)


#: ``asyncio.get_running_loop()`` (RuntimeError without one), and the
#: current task of a running loop (None outside a task): bound on first use.
_running_loop: Callable[[], asyncio.AbstractEventLoop] = _first_running_loop
_task_of: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None] = _first_task_of


def _cancelling(task: asyncio.Task[Any] | None) -> int:
    """``task.cancelling()`` (Python 3.11+), or 0 where it does not exist."""
    cancelling = getattr(task, "cancelling", None)
    return int(cancelling()) if cancelling is not None else 0


def cancel_requests() -> int:
    """Cancellation requests pending on the current asyncio task (0 on
    Python 3.10, or outside a task)."""
    asyncio = sys.modules.get("asyncio")  # not loaded: no task to ask
    if asyncio is None:
        return 0
    try:
        return _cancelling(asyncio.current_task())
    except RuntimeError:  # no running loop
        return 0


# ---------------------------------------------------------------------------
# Was an attempt cut off by a deadline, or cancelled from outside?
# ---------------------------------------------------------------------------
#
# A CancelledError reaching a breaker means one of two things. A deadline
# cut the attempt off (a policy's TimeoutScope, an asyncio.timeout or
# Python 3.12+'s asyncio.wait_for around the call, an anyio fail_after): the
# provider did not answer in time, a Timeout, which counts toward opening
# the breaker. Or the caller's task was cancelled from outside (shutdown, a
# sibling's failure): that says nothing about the provider, and records
# nothing. Every deadline the running code is inside is registered in its
# context (ours in _SCOPES, asyncio's and anyio's: see _foreign_deadlines),
# so the decision reads those known objects and nothing the frames hold.

_foreign_deadlines.install()
_core._install_deadlines(TimeoutScope, _SCOPES, _DEADLINE, _find_deadlines, sys.modules[__name__],
                         SYSTEM_CLOCK, deadline_exceeded, _TASKS_COUNT_CANCELS)


def deadline_expired() -> bool:
    """True iff a deadline enclosing the running code has fired and is
    cancelling the current task (or the task that created it, which passes
    the cancellation on: ``gather()``, a ``TaskGroup``).

    Seen: a policy's timeouts and any TimeoutScope; ``asyncio.timeout`` /
    ``asyncio.timeout_at`` (3.11+) at any depth, in this task or a parent;
    ``asyncio.wait_for`` on 3.12+ (built on ``asyncio.timeout``); anyio's
    ``fail_after`` / ``move_on_after`` and any cancel scope whose deadline
    passed, when anyio is loaded. Not seen (the cancellation reads as one
    from outside): ``asyncio.wait_for`` on 3.10 and 3.11 (it cancels a task
    of its own from outside), an ``asyncio.timeout`` entered before
    virtrigaud_resilience was imported, a task created before the timeout
    and only awaited inside it (``wait_for(gather(...))``), and other
    libraries' timeouts (docs/policies.md). Call it while handling a
    ``CancelledError``; it reads only the deadlines registered in the
    context (never an object the frames hold), so it runs no code of
    objects it does not know.
    """
    for scope in _SCOPES.get():
        if scope.expiring:
            return True
    if _foreign_deadlines.asyncio_timeout_expiring():
        return True
    if "anyio" not in sys.modules:
        return False
    asyncio = sys.modules.get("asyncio")
    try:
        task = asyncio.current_task() if asyncio is not None else None
    except RuntimeError:  # no running loop
        return False
    return task is not None and _foreign_deadlines.anyio_deadline_passed(
        task, task.get_loop().time)


def attempt_outcome(exc: BaseException, what: str = "attempt") -> BaseException:
    """The exception a breaker should be told an attempt ended with.

    A ``CancelledError`` caused by an expiring deadline (see
    :func:`deadline_expired`) becomes an :class:`OperationTimeoutError`
    chained from it: a Timeout, which counts as a breaker failure. Anything
    else is returned unchanged (a cancellation from outside records nothing).
    Never raises an ``Exception``: should the decision fail, ``exc`` is
    returned, as for a cancel from outside.
    """
    asyncio = sys.modules.get("asyncio")  # no asyncio loaded: no CancelledError either
    # type(exc), not isinstance(): an exception's __class__ may be a property.
    if asyncio is None or not issubclass(type(exc), asyncio.CancelledError):
        return exc
    try:
        expired = deadline_expired()
    except Exception:  # noqa: BLE001 - a bug of ours must not replace the cancellation
        return exc
    return deadline_exceeded(what, exc) if expired else exc


def record_outcome(record: Callable[[T, BaseException], object], ticket: T,
                   exc: BaseException, what: str) -> None:
    """``record(ticket, attempt_outcome(exc, what))``, and ``record(ticket,
    exc)`` should deciding fail (a KeyboardInterrupt landing in it, which
    then propagates): the attempt's slot, permit or tokens go back in every
    case."""
    outcome = exc
    try:
        outcome = attempt_outcome(exc, what)
    finally:
        record(ticket, outcome)
