"""Span events from the event bus (events.py): what the resilience layers
decided, put on the span current when they decided it.

The bus calls these listeners only when something happens (a retry, a
refusal, a transition), in the thread or task that caused it, so the span
current there is the caller's: the execution's span for a policy call, or
whatever span the application has open around a breaker's or a bucket's
own call. Registered by :func:`listen` while instrumented, removed by
:func:`stop`.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

from .. import events
from ..retry import Retrier
from . import _names as names
from ._tracing import CURRENT

logger = logging.getLogger("virtrigaud_resilience.otel")


def _span_now() -> trace.Span:
    """The span a decision made now belongs on: between the attempts of a
    traced execution, the execution's (which a sync call attaches only
    after a failed attempt); otherwise the current span (an attempt's, or
    what the application has open)."""
    execution = CURRENT.get()
    if execution is not None and execution.attempt_span is None:
        return execution.span
    return trace.get_current_span()


def _retried(retrier: Retrier, failed: int, error: BaseException, delay: float) -> None:
    execution = CURRENT.get()
    if execution is not None and execution.policy.retrier is retrier:
        execution.retrying(failed, error, delay)


def _rate_limited(bucket: Any, tokens: int) -> None:
    execution = CURRENT.get()
    if execution is not None:
        execution.limited = True
    span = _span_now()
    if span.is_recording():
        span.add_event(names.RATE_LIMITER_REJECTED, {
            names.TOKENS: tokens, names.PROVIDER_TYPE: bucket.provider_type,
            names.PROVIDER: bucket.provider})


def _budget_exhausted(budget: Any, name: str, error: BaseException) -> None:
    span = _span_now()
    if span.is_recording():
        span.add_event(names.BUDGET_EXHAUSTED, {
            names.POLICY_NAME: name, names.RETRY_REASON: names.error_type(error),
            names.PROVIDER_TYPE: budget.provider_type, names.PROVIDER: budget.provider})


def _state_changed(breaker: Any, old: Any, new: Any) -> None:
    attributes = {
        names.BREAKER_NAME: breaker.name, names.PROVIDER_TYPE: breaker.provider_type,
        names.PROVIDER: breaker.provider, names.STATE_FROM: old.name.lower(),
        names.STATE_TO: new.name.lower()}
    span = _span_now()
    if span.is_recording():
        span.add_event(names.BREAKER_STATE_CHANGE, attributes)
    else:  # no span to carry it: a log record (an OpenTelemetry log handler exports it)
        logger.info("circuit breaker %r (%s/%s): %s -> %s", breaker.name, breaker.provider_type,
                    breaker.provider, attributes[names.STATE_FROM], attributes[names.STATE_TO],
                    extra={"otel_event": names.BREAKER_STATE_CHANGE, **{
                        key.replace(".", "_"): value for key, value in attributes.items()}})


def _requested(system: str, method: str) -> None:
    execution = CURRENT.get()
    if execution is not None:
        execution.requested(system, method)


_LISTENERS = (
    (events.on_request, _requested),
    (events.on_retry, _retried),
    (events.on_rate_limited, _rate_limited),
    (events.on_budget_exhausted, _budget_exhausted),
    (events.on_state_change, _state_changed),
)


def listen() -> None:
    """Registers the listeners (each once)."""
    stop()
    for register, listener in _LISTENERS:
        register(listener)


def stop() -> None:
    """Removes the listeners."""
    for _, listener in _LISTENERS:
        events.remove_listener(listener)
