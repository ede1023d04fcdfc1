"""Events: process-wide listeners for breaker transitions, rate-limit refusals and retries.

Listeners are called synchronously, in the thread (or task) that caused the
event, and only when one happens: a native call reports the transition or
the refusal, nothing polls. A listener that raises is logged (logger
``virtrigaud_resilience``) and never breaks the caller's call. Each
``on_*`` function returns its listener, so it works as a decorator::

    @events.on_state_change
    def page_someone(breaker, old, new):
        if new is BreakerState.OPEN:
            ...

Per-object listeners exist too: :meth:`CircuitBreaker.add_listener` and
``Retrier(on_retry=...)``; they run before the process-wide ones.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from . import _core

__all__ = [
    "RateLimitListener",
    "RetryListener",
    "StateListener",
    "BudgetListener",
    "on_budget_exhausted",
    "on_request",
    "on_rate_limited",
    "on_retry",
    "on_state_change",
    "remove_listener",
]

logger = logging.getLogger("virtrigaud_resilience")

# The listener types are generic in the object that emits (and in the
# breaker's state type): breaker.py, ratelimit.py and retry.py import this
# module to emit, so it names none of them, not even for typing (that was an
# events <-> breaker/retry import cycle). breaker.StateListener is
# StateListener[CircuitBreaker, BreakerState].
_Emitter = TypeVar("_Emitter")
_State = TypeVar("_State")

#: ``listener(breaker, old_state, new_state)``, after each breaker transition
#: (a :class:`~virtrigaud_resilience.breaker.CircuitBreaker` and two
#: :class:`~virtrigaud_resilience.breaker.BreakerState`).
StateListener = Callable[[_Emitter, _State, _State], object]
#: ``listener(bucket, n)``, after a bucket refused ``n`` tokens (``try_acquire``
#: returned False, a policy's attempt found no token, or a wait would exceed
#: its limit). The bucket (a :class:`~virtrigaud_resilience.ratelimit.TokenBucket`)
#: has ``provider_type`` / ``provider`` to say whose it is.
RateLimitListener = Callable[[_Emitter, int], object]
#: ``listener(retrier, attempt, error, delay)``, before a retrier (a
#: :class:`~virtrigaud_resilience.retry.Retrier`) sleeps ``delay`` seconds
#: after ``attempt`` attempts failed, the last with ``error``.
#: ``retrier.name`` is the policy's name for a policy's retries.
RetryListener = Callable[[_Emitter, int, BaseException, float], object]

#: ``listener(budget, name, error)``, when a retry budget (a
#: :class:`~virtrigaud_resilience.retry_budget.RetryBudget`) refused the
#: retry of ``error`` in the retry loop called ``name`` (a retrier's name).
BudgetListener = Callable[[_Emitter, str, BaseException], object]

L = TypeVar("L", bound=Callable[..., object])

_state_listeners: list[StateListener[Any, Any]] = []
_rate_limit_listeners: list[RateLimitListener[Any]] = []
_retry_listeners: list[RetryListener[Any]] = []
_budget_listeners: list[BudgetListener[Any]] = []
# Serialises changes to the rate-limit listeners with installing or removing
# the native hook, so the hook is installed exactly while someone listens.
_rate_limit_lock = threading.Lock()


def on_state_change(listener: L) -> L:
    """Calls ``listener(breaker, old, new)`` after a state change of any breaker."""
    _state_listeners.append(check_listener(listener))
    return listener


def on_rate_limited(listener: L) -> L:
    """Calls ``listener(bucket, n)`` whenever any token bucket refuses ``n`` tokens.

    While no such listener is registered, a refusal does not call into
    Python at all.
    """
    checked = check_listener(listener)
    with _rate_limit_lock:
        _rate_limit_listeners.append(checked)
        _core._set_rate_limited_hook(_emit_rate_limited)
    return listener


def on_retry(listener: L) -> L:
    """Calls ``listener(retrier, attempt, error, delay)`` before any retry's sleep."""
    _retry_listeners.append(check_listener(listener))
    return listener


def remove_listener(listener: Callable[..., object]) -> bool:
    """Removes ``listener`` from every event it was registered for.

    Returns whether it was registered for any.
    """
    found = False
    with _rate_limit_lock:
        for listeners in (_state_listeners, _rate_limit_listeners, _retry_listeners,
                          _budget_listeners, request_listeners):
            while listener in listeners:
                listeners.remove(listener)
                found = True
        if not _rate_limit_listeners:
            _core._set_rate_limited_hook(None)
    return found


def emit(listeners: Any, description: str, *args: Any) -> None:
    """Calls each listener with ``args``; logs, and swallows, what one raises."""
    for listener in tuple(listeners):
        try:
            listener(*args)
        except Exception:
            logger.exception("%s listener %r failed", description, listener)


def _emit_state_change(breaker: object, old: object, new: object) -> None:
    if _state_listeners:
        emit(_state_listeners, "circuit breaker state", breaker, old, new)


def _emit_rate_limited(bucket: object, n: int) -> None:
    emit(_rate_limit_listeners, "rate limit", bucket, n)


def _emit_retry(retrier: object, attempt: int, error: BaseException, delay: float) -> None:
    if _retry_listeners:
        emit(_retry_listeners, "retry", retrier, attempt, error, delay)


def on_budget_exhausted(listener: L) -> L:
    """Calls ``listener(budget, name, error)`` whenever a retry budget refuses
    a retry loop's retry (the loop then raises ``error``)."""
    _budget_listeners.append(check_listener(listener))
    return listener


def _emit_budget_exhausted(budget: object, name: str, error: BaseException) -> None:
    if _budget_listeners:
        emit(_budget_listeners, "retry budget", budget, name, error)


# -- requests: what vr.otel puts on an attempt's span (issue 26) ---------------

#: ``listener(system, method)``, as an adapter admits a request of its
#: protocol: ``system`` ``"http"`` (``method`` the operation, else the HTTP
#: method) or ``"grpc"`` (``method`` the method's short name, ``"Create"``).
RequestListener = Callable[[str, str], object]
#: The adapters test this list before emitting (a request pays one check
#: while nobody listens); mutated in place, never rebound.
request_listeners: list[RequestListener] = []


def on_request(listener: L) -> L:
    """Calls ``listener(system, method)`` as an adapter admits each request."""
    request_listeners.append(check_listener(listener))
    return listener


def emit_request(system: str, method: str) -> None:
    emit(request_listeners, "request", system, method)


def check_listener(listener: L) -> L:
    """``listener`` itself if callable; else TypeError naming its type."""
    if not callable(listener):
        raise TypeError(f"listener must be callable, got {type(listener).__name__} {listener!r}")
    return listener


# Drop the native hook at exit so no module object outlives the interpreter.
atexit.register(_core._set_rate_limited_hook, None)
