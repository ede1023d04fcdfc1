"""A policy's last resort: a default or cached answer instead of the final error.

``PolicyBuilder(...).with_fallback(fn_or_value, on=...)`` makes the policy
answer with ``fn_or_value`` (or ``fn_or_value(error)``) when a call fails for
good: after its retries ran out, when the retry gave up early (a
``retry_after`` beyond ``max_delay``, the overall deadline), or at once for
a breaker, limiter or bulkhead rejection that the retry does not retry.
:class:`Fallback` holds that decision and the answer; the policy
(``policy.FallbackPolicy``) consults it only once the call has failed, so a
fallback costs a call's success path nothing.

Every fallback is counted by policy and reason (the
``virtrigaud_fallback_total{policy, reason}`` series): ``CircuitOpen`` for an
open breaker's rejection, the taxonomy's type for any other
:class:`~virtrigaud_resilience.errors.ProviderError` (``RateLimit`` for a
limiter's or a full bulkhead's rejection, ``Timeout``, ``Unavailable``, ...),
after :func:`~virtrigaud_resilience.errors.classify`, and ``Other`` for the
rest.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any, Union

from .errors import CircuitOpenError, ErrorType, ProviderError, classify

__all__ = ["Fallback", "FallbackOn", "fallback_counts"]

#: What ``on=`` takes: an :class:`ErrorType`, an ``Exception`` subclass, a
#: tuple mixing them, or a predicate ``error -> bool``.
FallbackOn = Union[ErrorType, type[Exception], tuple[Union[ErrorType, type[Exception]], ...],
                   Callable[[Exception], bool]]

# (policy name, reason) -> fallbacks served. Process-wide, one entry per
# label pair ever seen; only a failed call (the fallback's path) takes the lock.
_COUNTS: dict[tuple[str, str], int] = {}
_COUNTS_LOCK = threading.Lock()


def fallback_counts() -> dict[tuple[str, str], int]:
    """A copy of the fallbacks served so far, by (policy name, reason)."""
    with _COUNTS_LOCK:
        return dict(_COUNTS)


def reason_of(error: BaseException) -> str:
    """The ``reason`` label for ``error`` (see the module docstring)."""
    if isinstance(error, CircuitOpenError):
        return "CircuitOpen"
    classified = classify(error)
    if isinstance(classified, ProviderError):
        return classified.type.value
    return "Other"


class Fallback:
    """The answer a policy gives instead of a final error, and when.

    Args:
        owner: the name of what is configured, for error messages.
        answer: a callable, called with the final error (an ``Exception``)
            and returning the answer (an async function is awaited by
            ``execute_async``; ``execute`` refuses it with a TypeError); or
            any other value, returned as is (the same object every time).
            An exception (class or instance) and an awaitable are refused:
            raise from a function, and pass an async function rather than a
            coroutine, which could be awaited only once.
        on: which final errors fall back: None (every ``Exception``), an
            :class:`ErrorType` (a ``ProviderError`` of that type, after
            :func:`classify`: a builtin ``TimeoutError`` is ``Timeout``), an
            ``Exception`` subclass, a non-empty tuple of those, or a
            predicate ``error -> bool``. Cancellations (``BaseException`` s
            that are not ``Exception`` s) never fall back.

    Raises TypeError naming ``owner`` and the field for anything else.
    """

    __slots__ = ("_answer", "_call", "_on")

    def __init__(self, owner: str, answer: Any, on: FallbackOn | None = None) -> None:
        _check_answer(owner, answer)
        _check_on(owner, on)
        self._answer = answer
        self._call = callable(answer)
        self._on = on

    @property
    def answer(self) -> Any:
        """The callable or value given."""
        return self._answer

    @property
    def on(self) -> FallbackOn | None:
        """The errors that fall back (None: every ``Exception``)."""
        return self._on

    def handles(self, error: BaseException) -> bool:
        """Whether ``error``, a call's final error, falls back."""
        if not isinstance(error, Exception):
            return False
        on = self._on
        if on is None:
            return True
        if isinstance(on, tuple):
            return any(_matches(kind, error) for kind in on)
        if isinstance(on, (ErrorType, type)):
            return _matches(on, error)
        return bool(on(error))

    def recover(self, policy: str, error: Exception) -> Any:
        """The answer for ``error`` on a sync path (counted for ``policy``).

        Called inside the ``except`` block that caught ``error``, so an
        exception the fallback raises has ``error`` as its ``__context__``.
        """
        self._count(policy, error)
        if not self._call:
            return self._answer
        result = self._answer(error)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(f"policy {policy!r}: the fallback returned an awaitable on a sync "
                            f"call; use 'await policy.execute_async(fn, ...)'")
        return result

    async def recover_async(self, policy: str, error: Exception) -> Any:
        """The answer for ``error`` on an async path: an awaitable answer is awaited."""
        self._count(policy, error)
        if not self._call:
            return self._answer
        result = self._answer(error)
        if inspect.isawaitable(result):
            result = await result
        return result

    @staticmethod
    def _count(policy: str, error: BaseException) -> None:
        key = (policy, reason_of(error))
        with _COUNTS_LOCK:
            _COUNTS[key] = _COUNTS.get(key, 0) + 1

    def __repr__(self) -> str:
        return f"Fallback({self._answer!r}, on={self._on!r})"


def _matches(kind: ErrorType | type[Exception], error: Exception) -> bool:
    if isinstance(kind, ErrorType):
        classified = classify(error)
        return isinstance(classified, ProviderError) and classified.type is kind
    return isinstance(error, kind)


def _check_answer(owner: str, answer: Any) -> None:
    refused = None
    if isinstance(answer, BaseException) or (
            isinstance(answer, type) and issubclass(answer, BaseException)):
        refused = "an exception (raise it from a function instead)"
    elif inspect.isawaitable(answer):
        refused = "an awaitable (pass the async function, not its coroutine)"
    if refused is not None:
        if inspect.iscoroutine(answer):
            answer.close()  # never awaited: no "was never awaited" warning
        raise TypeError(f"{owner} fallback must be a callable taking the error or a value "
                        f"to return, not {refused}; got {type(answer).__name__} {answer!r}")


def _check_on(owner: str, on: Any) -> None:
    if on is None or (callable(on) and not isinstance(on, type)):
        return
    kinds = on if isinstance(on, tuple) else (on,)
    if not kinds:
        raise ValueError(f"{owner} on must not be an empty tuple")
    for kind in kinds:
        if isinstance(kind, ErrorType):
            continue
        if isinstance(kind, type) and issubclass(kind, Exception):
            continue
        raise TypeError(f"{owner} on must be ErrorType members, Exception subclasses "
                        f"(cancellations never fall back), a tuple of them or a predicate, "
                        f"got {type(kind).__name__} {kind!r}")
