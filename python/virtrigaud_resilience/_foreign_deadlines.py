"""Is an asyncio or anyio deadline cutting the running task off?

A ``CancelledError`` that reaches a breaker is either a deadline (the
provider did not answer in time: a Timeout, a failure) or a cancellation
from outside (shutdown, a sibling's failure: nothing to record). Our own
TimeoutScopes say which through a context variable (``timeouts._SCOPES``).
This module answers the same question for the deadlines of others:

- ``asyncio.timeout`` / ``asyncio.timeout_at`` (3.11+), and so
  ``asyncio.wait_for`` on 3.12+, which is built on them: every
  ``asyncio.timeouts.Timeout`` entered is pushed on a context variable, by
  wrapping its ``__aenter__`` / ``__aexit__`` once. A task copies the
  context of the code that creates it, so an attempt running in a child task
  (``gather()``, a ``TaskGroup``, ``create_task``) sees the timeouts its
  parent was inside, and a timeout above a class-based awaitable (an object
  with ``__await__`` or ``__aenter__``) is seen as well as one above a
  coroutine: the context does not depend on what the frames hold.
- anyio's ``fail_after`` / ``move_on_after`` (any cancel scope with a
  deadline, asyncio backend), when anyio is loaded: the current task's cancel
  scopes, innermost first up to a shielded one, are searched for one that
  was cancelled with its deadline passed (anyio's own test for raising
  ``TimeoutError`` in ``fail_after``).

Why not look at the frames: the decision runs while a task is being
cancelled, possibly thousands at once, and what a frame holds may be anyone's
object. An ``isinstance()`` or attribute read on a lazy proxy (a Django
``request.user``) runs its code: a database query, or an exception that
escapes the cancellation path. So the decision reads known objects only:
``Timeout`` instances of the exact class, anyio's ``TaskState`` and
``CancelScope`` of the exact classes, and only attributes their own modules
define. Its cost is one context variable read and a loop over the timeouts
actually entered, whatever the depth of the await chain.

The wrapper is installed without importing asyncio (``import
virtrigaud_resilience`` stays light, see ``install()``). What stays
invisible is listed in docs/policies.md ("Timeouts and cancellation").
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

__all__ = ["install", "asyncio_timeout_expiring", "anyio_deadline_passed"]

#: The asyncio Timeouts the running code is inside, innermost last.
_TIMEOUTS: ContextVar[tuple[Any, ...]] = ContextVar(
    "virtrigaud_resilience_asyncio_timeouts", default=()
)

#: Whether a Timeout in _TIMEOUTS is expiring: set by _track() for the
#: asyncio it wrapped (3.11-3.13: ``_state is _State.EXPIRING``).
_is_expiring: Callable[[Any], bool] = lambda timeout: False  # noqa: E731

#: Marks a Timeout class whose __aenter__/__aexit__ push and pop _TIMEOUTS.
_TRACKED = "_virtrigaud_resilience_tracked"

_TIMEOUTS_MODULE = "asyncio.timeouts"
_ANYIO_BACKEND = "anyio._backends._asyncio"


def asyncio_timeout_expiring() -> bool:
    """True iff an ``asyncio.timeout`` that the running code is inside (in
    this task, or in the task that created it, while it was created) has
    fired and is cancelling: the cancellation under way is its own."""
    for timeout in _TIMEOUTS.get():
        if _is_expiring(timeout):
            return True
    return False


def anyio_deadline_passed(task: object, now: Callable[[], float]) -> bool:
    """True iff one of ``task``'s anyio cancel scopes that can reach it
    (innermost first, up to and including the first shielded one) was
    cancelled and its deadline is not after ``now()`` (loop seconds). False
    when anyio's asyncio backend is not loaded or ``task`` is not known to it.

    anyio's internals are private: every read is guarded by the exact type
    of the object and a default, so a later anyio that changed them makes
    this False (an anyio deadline then reads as a cancel), never an error.
    """
    backend = sys.modules.get(_ANYIO_BACKEND)
    if backend is None:
        return False
    scope_type = getattr(backend, "CancelScope", None)
    state_type = getattr(backend, "TaskState", None)
    states = getattr(backend, "_task_states", None)
    get = getattr(states, "get", None)  # a WeakKeyDictionary keyed by task
    if scope_type is None or state_type is None or get is None:
        return False
    state = get(task)
    if type(state) is not state_type:
        return False
    scope = getattr(state, "cancel_scope", None)
    while type(scope) is scope_type:
        if getattr(scope, "_cancel_called", False) is True:
            deadline: Any = getattr(scope, "_deadline", None)
            if type(deadline) in (float, int) and deadline <= now():
                return True
        if getattr(scope, "_shield", True) is not False:
            return False  # nothing outside a shield cancels what is inside it
        scope = getattr(scope, "_parent_scope", None)
    return False


# ---------------------------------------------------------------------------
# Tracking asyncio's Timeout objects.
# ---------------------------------------------------------------------------


def install() -> None:
    """Makes ``asyncio.timeout`` visible to :func:`asyncio_timeout_expiring`
    without importing asyncio: at once if ``asyncio.timeouts`` is loaded,
    else right after it is first imported (a finder on ``sys.meta_path``
    that removes itself once done). Idempotent; nothing on Python 3.10,
    which has no ``asyncio.timeout``.

    A Timeout entered before this ran is not tracked (virtrigaud_resilience
    imported inside a running ``async with asyncio.timeout()``): it is not
    seen until it exits.
    """
    module = sys.modules.get(_TIMEOUTS_MODULE)
    if module is not None:
        _track(module)
    elif sys.version_info >= (3, 11) and not any(
            type(finder) is _TrackOnImport for finder in sys.meta_path):
        sys.meta_path.insert(0, _TrackOnImport())


def _leave_meta_path() -> None:
    """Removes the hook from ``sys.meta_path`` (by type: ``remove()``
    would compare other finders with ``==``)."""
    sys.meta_path[:] = [finder for finder in sys.meta_path
                        if type(finder) is not _TrackOnImport]


class _TrackOnImport:
    """A ``sys.meta_path`` finder for ``asyncio.timeouts`` only: it asks the
    finders after it for the module's spec, and has the spec's loader call
    :func:`_track` right after executing the module. It changes nothing
    else, and leaves ``sys.meta_path`` once the module is loaded."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != _TIMEOUTS_MODULE:
            return None
        spec = None
        for finder in list(sys.meta_path):
            find = None if finder is self else getattr(finder, "find_spec", None)
            if find is not None:
                spec = find(name, path, target)
                if spec is not None:
                    break
        loader: Any = getattr(spec, "loader", None)
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return None  # a loader of another kind: imported untracked, as before

        def exec_then_track(module: Any) -> None:
            try:
                exec_module(module)
            finally:
                del loader.exec_module  # the loader's own method again
            _leave_meta_path()  # loaded: no other import needs the hook
            _track(module)

        try:
            loader.exec_module = exec_then_track  # this spec's loader only
        except AttributeError:  # a loader that takes no attributes
            return None
        return spec


def _track(module: Any) -> None:
    """Wraps ``module.Timeout``'s ``__aenter__`` / ``__aexit__`` (once) so
    that every Timeout of that exact class is on _TIMEOUTS while entered."""
    global _is_expiring

    candidate = getattr(module, "Timeout", None)
    if type(candidate) is not type or getattr(candidate, _TRACKED, False):
        return
    timeout_type: Any = candidate
    import functools  # asyncio has loaded it

    expiring_state = getattr(getattr(module, "_State", None), "EXPIRING", None)
    if expiring_state is not None:
        _is_expiring = lambda timeout: timeout._state is expiring_state  # noqa: E731
    else:  # a later asyncio: an entered Timeout that expired() is expiring
        _is_expiring = timeout_type.expired
    enter, leave = timeout_type.__aenter__, timeout_type.__aexit__

    @functools.wraps(enter)
    async def __aenter__(self: Any) -> Any:
        entered = await enter(self)
        if type(self) is timeout_type:  # pushed once entered: a failed enter never exits
            _TIMEOUTS.set((*_TIMEOUTS.get(), self))
        return entered

    @functools.wraps(leave)
    async def __aexit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> Any:
        _forget(self)
        return await leave(self, exc_type, exc, tb)

    timeout_type.__aenter__ = __aenter__
    timeout_type.__aexit__ = __aexit__
    setattr(timeout_type, _TRACKED, True)


def _forget(timeout: object) -> None:
    """Takes ``timeout`` off _TIMEOUTS (identity only: Timeouts exit in
    reverse order of entry, but a manual __aexit__ may not)."""
    entered = _TIMEOUTS.get()
    if entered and entered[-1] is timeout:
        _TIMEOUTS.set(entered[:-1])
    elif any(other is timeout for other in entered):
        _TIMEOUTS.set(tuple(other for other in entered if other is not timeout))
