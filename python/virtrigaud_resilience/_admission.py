"""Which breaker and bucket the running attempt already holds.

A policy admits each attempt once: a breaker permit and a token. A transport
adapter called inside that attempt (the gRPC interceptors, the httpx
transports: :class:`~virtrigaud_resilience.providers.call_step.CallStep`) that
guards the *same* breaker or bucket must not admit the attempt again: two
tokens per call, failures counted twice, and in half-open the inner call
refused because the outer one holds the probe slot. It asks :func:`held`.

Two records, as the attempts run:

- sync attempts run natively (``Policy.execute``'s first attempt,
  ``CircuitBreaker.call``) push ``(breaker, bucket)`` on a C++ thread-local
  stack around the user's call (``_core._held`` reads it), once
  ``_core._track_held()`` said an adapter exists (before: one flag test);
- attempts run in Python (``execute_async``, ``call_async``, the sync retry
  and timeout path) set :data:`_HELD` (a ContextVar: it follows the task
  across awaits and into the tasks it starts, as the deadline does in
  timeouts.py). A :class:`Held` is dead once its attempt ended, so a task
  that outlives the attempt that started it admits its own calls again.

The ContextVar costs a set and a reset per attempt, so it is set only for
a breaker or bucket some adapter guards (:func:`enable`): a program without
adapters, and a policy whose breaker and bucket no adapter guards, pay one
flag test for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from typing import Any, Final, TypeVar

from . import _core
from ._native import HELD_BREAKER, HELD_BUCKET

__all__ = ["Held", "awaited", "enable", "held", "hold", "holding"]

T = TypeVar("T")


class Held:
    """One attempt run in Python, and what it holds (None: nothing of that kind)."""

    __slots__ = ("breaker", "limiter", "outer", "live", "_token")

    def __init__(self, breaker: object, limiter: object, outer: Held | None) -> None:
        self.breaker = breaker
        self.limiter = limiter
        self.outer = outer
        self.live = True
        self._token: Token[Held | None] | None = None

    def end(self) -> None:
        """The attempt is over: forget it here, and wherever a copy of the
        context (a task it started) still refers to it."""
        self.live = False
        token = self._token
        if token is not None:
            self._token = None
            _HELD.reset(token)


_HELD: Final[ContextVar[Held | None]] = ContextVar("virtrigaud_resilience_held", default=None)

#: Set once an adapter guards a breaker or bucket; until then no attempt records itself.
nesting = False

#: ids of the breakers and buckets some adapter guards (an id reused after
#: its object died only costs an unneeded record, never a wrong answer).
_GUARDED: set[int] = set()


def enable(breaker: object, limiter: object) -> None:
    """From now on, attempts run in Python that hold ``breaker`` or
    ``limiter`` (either None) record it: an adapter guards them."""
    global nesting
    for guarded in (breaker, limiter):
        if guarded is not None:
            _GUARDED.add(id(guarded))
            if not nesting:
                _core._track_held()
                nesting = True


def hold(breaker: object, limiter: object) -> Held | None:
    """Records an attempt holding ``breaker``'s permit and a token of
    ``limiter`` (either None) until :meth:`Held.end`; None when no adapter
    guards either, so none can ask."""
    if id(breaker) not in _GUARDED and id(limiter) not in _GUARDED:
        return None
    record = Held(breaker, limiter, _HELD.get())
    record._token = _HELD.set(record)
    return record


def held(breaker: object, limiter: object) -> tuple[bool, bool]:
    """Whether an enclosing attempt of this thread or task holds ``breaker``
    (a permit) and ``limiter`` (a token); None is never held."""
    mask = _core._held(breaker, limiter)  # the native sync attempts
    holds_breaker = (mask & HELD_BREAKER) != 0
    holds_limiter = (mask & HELD_BUCKET) != 0
    record = _HELD.get()  # the Python ones
    while record is not None and not (holds_breaker and holds_limiter):
        if record.live:
            if breaker is not None and record.breaker is breaker:
                holds_breaker = True
            if limiter is not None and record.limiter is limiter:
                holds_limiter = True
        record = record.outer
    return holds_breaker, holds_limiter


async def holding(breaker: object, limiter: object, fn: Callable[..., Awaitable[T]],
                  args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    """Awaits ``fn(*args, **kwargs)`` recorded as an attempt holding
    ``breaker`` and ``limiter`` (:func:`hold`). The async policies await
    this instead of ``fn`` only once :data:`nesting` is set, so without an
    adapter their path is one flag test longer, not a frame."""
    record = hold(breaker, limiter)
    try:
        return await fn(*args, **kwargs)
    finally:
        if record is not None:
            record.end()


async def awaited(awaitable: Awaitable[T]) -> T:
    """``await awaitable``: what the native awaitable (``_core.AsyncCall``)
    drives for an attempt whose result it cannot await itself (no
    ``__await__`` slot: a generator-based coroutine, or nothing awaitable,
    for which Python's own TypeError is raised)."""
    return await awaitable


# The native async attempts (Policy.execute_async, CircuitBreaker.call_async)
# await holding() once an adapter exists, and awaited() for what they cannot.
_core._install_async_helpers(holding, awaited)
