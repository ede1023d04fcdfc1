"""The names this package emits: spans, span events, attributes, instruments.

OpenTelemetry has no semantic convention for resilience yet
(semantic-conventions#2355 proposes ``<library>.resilience.*`` instruments
with an ``event.name`` attribute); these follow that proposal, and the
general conventions (``error.type``, ``http.request.resend_count``,
``rpc.system`` / ``rpc.method``) where one exists.
"""

from __future__ import annotations

from ..errors import ProviderError, classify

#: The instrumentation scope (tracer and meter name).
SCOPE = "virtrigaud_resilience"

#: A policy execution's span is ``"virtrigaud.policy <name>"``.
POLICY_SPAN = "virtrigaud.policy"
#: Each attempt's span, a child of the execution's.
ATTEMPT_SPAN = "virtrigaud.attempt"

POLICY_NAME = "virtrigaud.policy.name"
ATTEMPT_NUMBER = "virtrigaud.attempt.number"  # 0-based
ERROR_TYPE = "error.type"
OUTCOME = "virtrigaud.outcome"  # success | failure

# The adapters' attributes on the attempt span (general conventions).
HTTP_RESEND_COUNT = "http.request.resend_count"  # set from the second attempt on
RPC_SYSTEM = "rpc.system"
RPC_METHOD = "rpc.method"

# Span events.
RETRY_SCHEDULED = "retry.scheduled"
RATE_LIMITER_REJECTED = "rate_limiter.rejected"
BULKHEAD_REJECTED = "bulkhead.rejected"
BUDGET_EXHAUSTED = "retry_budget.exhausted"
BREAKER_REJECTED = "circuit_breaker.rejected"
BREAKER_STATE_CHANGE = "circuit_breaker.state_change"

# Span event attributes.
RETRY_DELAY = "virtrigaud.retry.delay"  # seconds
RETRY_REASON = "virtrigaud.retry.reason"  # the failed attempt's error.type
RETRY_AFTER_SET = "virtrigaud.retry.retry_after"  # bool: the error's retry_after set the delay
RETRY_AFTER = "virtrigaud.retry_after"  # seconds, on rejections that carry one
BREAKER_NAME = "virtrigaud.circuit_breaker.name"
BREAKER_STATE = "virtrigaud.circuit_breaker.state"
STATE_FROM = "virtrigaud.circuit_breaker.from"
STATE_TO = "virtrigaud.circuit_breaker.to"
PROVIDER_TYPE = "virtrigaud.provider_type"
PROVIDER = "virtrigaud.provider"
TOKENS = "virtrigaud.rate_limiter.tokens"  # the tokens refused

# Instruments.
EVENTS = "virtrigaud.resilience.events"
ATTEMPT_DURATION = "virtrigaud.resilience.attempt.duration"
EXECUTION_DURATION = "virtrigaud.resilience.execution.duration"
BREAKER_STATE_GAUGE = "virtrigaud.circuit_breaker.state"
EVENT_NAME = "event.name"
COMPONENT = "virtrigaud.component"  # circuit_breaker | rate_limiter | bulkhead | retry | retry_budget


def error_type(exc: BaseException) -> str:
    """``error.type`` of ``exc``: its taxonomy type (``"Unavailable"``,
    ``"RateLimit"``, ...) when the taxonomy classifies it, else its class's
    qualified name, as the convention asks for other exceptions."""
    classified = classify(exc) if isinstance(exc, Exception) else exc
    if isinstance(classified, ProviderError):
        return str(classified.type.value)
    return type(exc).__qualname__
