"""The contract with the native core, in one place.

Two halves:

* **Codes.** Every flag, code and mode that crosses the boundary as a plain
  int is defined once, in C++ (cpp/src/contract.hpp), and exported by
  ``_core`` as an enum. This module binds each member to a module-level int
  at import, and every other module imports them from here: a hot path
  compares two ints (``outcome == RELEASE``), never looks up an enum member.
* **Methods.** The native core calls some methods of Python objects by name
  (``self._transition(old, new)``, ``self._resume(stage, ...)``) and some
  callables it was handed by position. Each has a :class:`typing.Protocol`
  below that states the call the core makes.

tests/test_native_contract.py pins both halves: the values here are the
exported ones, no other module keeps a copy, and every class the core calls
back provides the methods with signatures that accept the core's call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, Final, Protocol

from . import _core

__all__ = [
    "HOOK_TRANSITION", "HOOK_REJECT", "HOOK_ERROR", "HOOK_GENERATOR", "ACCEPT_COROUTINE",
    "DELEGATE",
    "SUCCESS", "FAILURE", "RELEASE",
    "CLOSED", "HALF_OPEN", "OPEN", "HELD_OPEN",
    "MOVE_CLOSE", "MOVE_HALF_OPEN", "MOVE_OPEN", "MOVE_OPEN_COUNTED",
    "STAGE_PYTHON_PATH", "STAGE_CALLED", "STAGE_BREAKER_OPEN", "STAGE_RATE_LIMITED",
    "STAGE_BULKHEAD_FULL", "ENTER_PYTHON_PATH",
    "MODE_PYTHON", "MODE_NATIVE", "MODE_PASSTHROUGH",
    "RESUME_NOT_RUN", "RESUME_RAISED", "RESUME_REJECTED",
    "HELD_BREAKER", "HELD_BUCKET",
    "is_half_open_probe",
    "TransitionHook", "RejectHook", "ErrorHook", "GeneratorHook", "DelegateHook",
    "HOOK_PROTOCOLS", "RefusalHook", "BulkheadQueue", "AdaptiveWindow", "PolicyResume",
    "Classifier", "RejectFactory", "TransitionDispatcher", "RateLimitedHook", "RetryResume",
    "RetryResolve", "RetryInPython", "RetryAfterFirst",
]

# -- codes ---------------------------------------------------------------------

# CircuitBreaker._set_hooks() flags (_core.Hooks): which parts of the call
# path go to the breaker's own methods (the protocols below say which).
HOOK_TRANSITION: Final = int(_core.Hooks.TRANSITION)
HOOK_REJECT: Final = int(_core.Hooks.REJECT)
HOOK_ERROR: Final = int(_core.Hooks.ERROR)
HOOK_GENERATOR: Final = int(_core.Hooks.GENERATOR)
ACCEPT_COROUTINE: Final = int(_core.Hooks.ACCEPT_COROUTINE)
DELEGATE: Final = int(_core.Hooks.DELEGATE)

# A call's outcome (_core.Outcome): what a breaker's classify(exc) returns and
# _record / _record_undispatched take.
SUCCESS: Final = int(_core.Outcome.SUCCESS)
FAILURE: Final = int(_core.Outcome.FAILURE)
RELEASE: Final = int(_core.Outcome.RELEASE)

# A breaker's state (_core.StateCode): what _state_code, transitions and
# _counters report (OPEN for a held-open breaker too) and _restore_undispatched takes.
CLOSED: Final = int(_core.StateCode.CLOSED)
HALF_OPEN: Final = int(_core.StateCode.HALF_OPEN)
OPEN: Final = int(_core.StateCode.OPEN)
HELD_OPEN: Final = int(_core.StateCode.HELD_OPEN)

# CircuitBreaker._set_state_undispatched(kind) (_core.MoveKind).
MOVE_CLOSE: Final = int(_core.MoveKind.CLOSE)
MOVE_HALF_OPEN: Final = int(_core.MoveKind.HALF_OPEN)
MOVE_OPEN: Final = int(_core.MoveKind.OPEN)
MOVE_OPEN_COUNTED: Final = int(_core.MoveKind.OPEN_COUNTED)

# Why Policy's native first attempt calls _resume(stage, ...) (_core.Stage);
# Policy._enter() returns -stage for the refusals, ENTER_PYTHON_PATH for
# STAGE_PYTHON_PATH, a ticket (>= 0) otherwise.
STAGE_PYTHON_PATH: Final = int(_core.Stage.PYTHON_PATH)
STAGE_CALLED: Final = int(_core.Stage.CALLED)
STAGE_BREAKER_OPEN: Final = int(_core.Stage.BREAKER_OPEN)
STAGE_RATE_LIMITED: Final = int(_core.Stage.RATE_LIMITED)
STAGE_BULKHEAD_FULL: Final = int(_core.Stage.BULKHEAD_FULL)
ENTER_PYTHON_PATH: Final[int] = _core.POLICY_ENTER_PYTHON_PATH

# RetryCall._configure(mode, ...) (_core.RetryCallMode).
MODE_PYTHON: Final = int(_core.RetryCallMode.PYTHON)
MODE_NATIVE: Final = int(_core.RetryCallMode.NATIVE)
MODE_PASSTHROUGH: Final = int(_core.RetryCallMode.PASSTHROUGH)

# The outcome a RetryCall passes to its resume callable (_core.RetryCallOutcome).
RESUME_NOT_RUN: Final = int(_core.RetryCallOutcome.NOT_RUN)
RESUME_RAISED: Final = int(_core.RetryCallOutcome.RAISED)
RESUME_REJECTED: Final = int(_core.RetryCallOutcome.REJECTED)

# The bits of _core._held(breaker, bucket) (_core.Held).
HELD_BREAKER: Final = int(_core.Held.BREAKER)
HELD_BUCKET: Final = int(_core.Held.BUCKET)


def is_half_open_probe(ticket: int) -> bool:
    """Whether a breaker ticket (``_admit``, ``_try_admit``: >= 0 admitted,
    -1 refused) holds a half-open slot: the low bit of an admitted one."""
    return ticket >= 0 and ticket & 1 == 1


# -- methods the core calls by name ----------------------------------------------
#
# Positional-only parameters: the core passes every argument by position, so
# an implementation may name them as it likes.


class TransitionHook(Protocol):
    """HOOK_TRANSITION: every transition of the breaker, instead of the global
    dispatcher; what it raises propagates to the caller of the breaker."""

    def _transition(self, old: int, new: int, /) -> object: ...


class RejectHook(Protocol):
    """HOOK_REJECT: a call the breaker refuses returns this (or raises what it raises)."""

    def _on_reject(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any: ...


class ErrorHook(Protocol):
    """HOOK_ERROR: ``fn`` raised ``exc``; records the ticket's outcome and
    returns the exception the call raises (``exc``, or another chained to it)."""

    def _on_error(self, ticket: int, exc: BaseException, /) -> BaseException: ...


class GeneratorHook(Protocol):
    """HOOK_GENERATOR: ``fn`` returned a generator; the call returns this, and
    the ticket's outcome comes when the generator ends."""

    def _on_generator(self, ticket: int, generator: Generator[Any, Any, Any], /) -> Any: ...


class DelegateHook(Protocol):
    """DELEGATE: the whole call is this method's."""

    def _call_python(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any: ...


#: The protocol a breaker must follow for each flag it sets with _set_hooks()
#: (ACCEPT_COROUTINE calls nothing).
HOOK_PROTOCOLS: Final[dict[int, type]] = {
    HOOK_TRANSITION: TransitionHook,
    HOOK_REJECT: RejectHook,
    HOOK_ERROR: ErrorHook,
    HOOK_GENERATOR: GeneratorHook,
    DELEGATE: DelegateHook,
}


class RefusalHook(Protocol):
    """A TokenBucket after ``_set_refusal_calls_python(True)``: try_acquire(n)
    returns what this returns on a refusal (or raises what it raises)."""

    def _refused(self, n: int, /) -> bool: ...


class BulkheadQueue(Protocol):
    """A Bulkhead whose waiters live in Python (every subclass of _core.Bulkhead
    that queues): the core hands slots to them and builds its error here."""

    def _hand_off(self) -> bool:
        """On exit while waiters are queued: gives the slot to the longest one
        (True), or finds nobody waiting (False)."""

    def _wake(self) -> object:
        """After a slot went back to the pool while someone was registering."""

    def _reject(self) -> BaseException:
        """Counts one refusal and returns the error it raises."""


class AdaptiveWindow(BulkheadQueue, Protocol):
    """An AdaptiveBulkhead (every subclass of _core.AdaptiveBulkhead): its
    waiters live in Python as a Bulkhead's do, and the core closes each
    sampling window here, once per window."""

    def _on_window(self, now_ns: int, /) -> object:
        """The window ended at ``now_ns``: take it, update the limit."""


class PolicyResume(Protocol):
    """A subclass of _core.Policy: the native first attempt did not return a
    result (``stage`` says why); the call continues here."""

    def _resume(self, stage: int, exc: BaseException | None, fn: Callable[..., Any],
                args: tuple[Any, ...], kwargs: dict[str, Any], /) -> Any: ...

    def _resume_async(self, stage: int, exc: None, fn: Callable[..., Any],
                      args: tuple[Any, ...], kwargs: dict[str, Any], /) -> Awaitable[Any]:
        """execute_async()'s awaitable was not admitted (``stage``): the
        coroutine it awaits instead."""

    def _attempt_raised_async(self, ticket: int, exc: BaseException, fn: Callable[..., Any],
                              args: tuple[Any, ...], kwargs: dict[str, Any],
                              /) -> Awaitable[Any]:
        """execute_async()'s native attempt raised ``exc``: record it, then
        raise or return the coroutine it awaits next (the retries)."""


class AsyncAttemptRaised(Protocol):
    """A subclass of _core.CircuitBreaker: call_async()'s awaitable raised
    ``exc``; record it and raise it (what returns is awaited instead)."""

    def _attempt_raised_async(self, ticket: int, exc: BaseException, fn: Callable[..., Any],
                              args: tuple[Any, ...], kwargs: dict[str, Any],
                              /) -> Awaitable[Any]: ...


# -- callables the core was handed and calls by position --------------------------


class Classifier(Protocol):
    """A breaker's ``classify`` (its constructor's argument): SUCCESS, FAILURE
    or RELEASE for an exception the call raised."""

    def __call__(self, exc: BaseException, /) -> int: ...


class RejectFactory(Protocol):
    """``_core._install_hooks(reject, ...)``: the error an open breaker raises."""

    def __call__(self, breaker: Any, /) -> BaseException: ...


class TransitionDispatcher(Protocol):
    """``_core._install_hooks(..., on_transition)``: every transition of a
    breaker without HOOK_TRANSITION (state codes)."""

    def __call__(self, breaker: Any, old: int, new: int, /) -> object: ...


class RateLimitedHook(Protocol):
    """``_core._set_rate_limited_hook(hook)``: a bucket refused n tokens."""

    def __call__(self, bucket: Any, n: int, /) -> object: ...


class RetryResume(Protocol):
    """A RetryCall's ``resume``: the call continues in Python (``outcome`` a
    RESUME_* code, ``value`` the raised exception or rejected result,
    ``started`` the monotonic time of the first attempt, 0.0 if none ran)."""

    def __call__(self, outcome: int, value: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any], started: float, /) -> Any: ...


class RetryResolve(Protocol):
    """A RetryEntry's ``resolve`` (retry.py): the Retrier for ``config`` (the
    entry caches it), or None to run every call of ``config`` in Python;
    raises the TypeError of a config that is no RetryConfig."""

    def __call__(self, config: Any, /) -> Any: ...


class RetryInPython(Protocol):
    """A RetryEntry's ``python_path``: the whole call in Python (the call
    lacks an argument, or its config or context needs Python)."""

    def __call__(self, config: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any: ...


class RetryAfterFirst(Protocol):
    """A RetryEntry's ``after_first``: the retry loop from attempt 1, after
    the native attempt 0 raised ``error`` (an Exception)."""

    def __call__(self, retrier: Any, error: Exception, fn: Callable[..., Any], /, *args: Any,
                 **kwargs: Any) -> Any: ...
