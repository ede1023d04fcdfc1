"""The traced policy methods: a span per execution and a child span per attempt.

While instrumented (see _routing.py), ``Policy.execute`` is :func:`execute`:
it opens the execution's span, makes it current, and runs the native
execute with :meth:`Execution.attempt` wrapped around the caller's function,
so every attempt that reaches the function (the native first one and each
retry of the Python continuation) runs inside its own span. Attempts the
breaker, limiter or bulkhead refused never reach it: they become span
events on the execution's span (see :meth:`Execution.rejected`).

A tracer that raises never breaks a call: the call runs untraced and the
error is logged once.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import Histogram
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import _core
from ..errors import CircuitOpenError, RateLimitError
from ..policy import Policy
from . import _names as names

logger = logging.getLogger("virtrigaud_resilience.otel")

_NATIVE_EXECUTE: Callable[..., Any] = _core.Policy.execute
_NATIVE_EXECUTE_ASYNC: Callable[..., Any] = _core.Policy.execute_async

#: The execution running in this thread or task (the retry and rate-limit
#: listeners find it here to number attempts and place their events).
CURRENT: contextvars.ContextVar[Execution | None] = contextvars.ContextVar(
    "virtrigaud_otel_execution", default=None)


class Tracing:
    """What the traced methods use: the tracer and the duration histograms
    (None without a meter provider)."""

    __slots__ = ("tracer", "attempt_duration", "execution_duration")

    def __init__(self, tracer: trace.Tracer, attempt_duration: Histogram | None,
                 execution_duration: Histogram | None) -> None:
        self.tracer = tracer
        self.attempt_duration = attempt_duration
        self.execution_duration = execution_duration


#: The active configuration; None once uninstrumented (a call that was
#: already routed then runs natively).
active: Tracing | None = None
#: Whether this configuration's tracer failed already (logged once per instrument()).
_tracer_failed = False


def _tracer_raised(where: str) -> None:
    """Logs the first failure of the tracer only (it would repeat per call)."""
    global _tracer_failed
    if not _tracer_failed:
        _tracer_failed = True
        logger.exception("the tracer provider failed to start a %s span; calls run untraced "
                         "where it fails (logged once)", where)


def configure(tracing: Tracing | None) -> None:
    """Makes ``tracing`` the active configuration (None: none), whose first
    tracer failure is logged again."""
    global active, _tracer_failed
    active = tracing
    _tracer_failed = False


class Execution:
    """One policy execution's span and its attempts' bookkeeping."""

    __slots__ = ("policy", "tracing", "span", "number", "spanned", "limited", "started",
                 "attempt_span")

    def __init__(self, policy: Policy, tracing: Tracing, span: trace.Span) -> None:
        self.policy = policy
        self.tracing = tracing
        self.span = span
        #: The number (0-based) of the attempt running or next to run.
        self.number = 0
        #: The number of the last attempt that reached the function (-1: none).
        self.spanned = -1
        #: A rate limiter refused this attempt (its listener said so).
        self.limited = False
        self.started = time.perf_counter()
        #: The running attempt's span (None between attempts).
        self.attempt_span: trace.Span | None = None

    # -- the execution ---------------------------------------------------------

    def enter(self) -> tuple[object, contextvars.Token[Execution | None]]:
        return otel_context.attach(trace.set_span_in_context(self.span)), CURRENT.set(self)

    def exit(self, tokens: tuple[object, contextvars.Token[Execution | None]],
             error: BaseException | None) -> None:
        context_token, token = tokens
        CURRENT.reset(token)
        otel_context.detach(context_token)  # type: ignore[arg-type]
        span = self.span
        if error is not None:
            if self.spanned != self.number:  # the last attempt never reached the function
                self.rejected(error)
            _failed(span, error)
        span.end()
        histogram = self.tracing.execution_duration
        if histogram is not None:
            histogram.record(time.perf_counter() - self.started, {
                names.POLICY_NAME: self.policy.name,
                names.OUTCOME: "success" if error is None else "failure"})

    # -- the attempts ----------------------------------------------------------

    def _start_attempt(self) -> tuple[int, trace.Span | None]:
        number = self.spanned = self.number
        self.limited = False
        try:
            span = self.tracing.tracer.start_span(
                names.ATTEMPT_SPAN, attributes={names.ATTEMPT_NUMBER: number})
        except Exception:
            _tracer_raised("attempt")
            return number, None
        self.attempt_span = span
        return number, span

    def _end_attempt(self, number: int, span: trace.Span, error: BaseException | None,
                     started: float) -> None:
        self.attempt_span = None
        if error is not None:
            _failed(span, error)
        span.end()
        histogram = self.tracing.attempt_duration
        if histogram is not None:
            histogram.record(time.perf_counter() - started, {
                names.POLICY_NAME: self.policy.name, names.ATTEMPT_NUMBER: number,
                names.OUTCOME: "success" if error is None else "failure"})

    def attempt(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Calls ``fn(*args, **kwargs)`` inside the attempt's span."""
        number, span = self._start_attempt()
        if span is None:
            return fn(*args, **kwargs)
        token = otel_context.attach(trace.set_span_in_context(span))
        started = time.perf_counter() if self.tracing.attempt_duration is not None else 0.0
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._end_attempt(number, span, exc, started)
            raise
        finally:
            otel_context.detach(token)
        self._end_attempt(number, span, None, started)
        return result

    async def attempt_async(self, fn: Callable[..., Awaitable[Any]], *args: Any,
                            **kwargs: Any) -> Any:
        """Awaits ``fn(*args, **kwargs)`` inside the attempt's span."""
        number, span = self._start_attempt()
        if span is None:
            return await fn(*args, **kwargs)
        token = otel_context.attach(trace.set_span_in_context(span))
        started = time.perf_counter() if self.tracing.attempt_duration is not None else 0.0
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._end_attempt(number, span, exc, started)
            raise
        finally:
            otel_context.detach(token)
        self._end_attempt(number, span, None, started)
        return result

    def requested(self, system: str, method: str) -> None:
        """An adapter admits a request of the running attempt: its protocol's
        attributes go on the attempt's span (the instrumentations' HTTP or
        gRPC client span, if any, is that span's child)."""
        span = self.attempt_span
        if span is None:
            return
        if system == "http":
            if self.number:  # the convention: set only on a resent request
                span.set_attribute(names.HTTP_RESEND_COUNT, self.number)
        elif system == "grpc":
            span.set_attributes({names.RPC_SYSTEM: "grpc", names.RPC_METHOD: method})

    # -- the decisions between attempts (the listeners call these) -------------

    def retrying(self, failed: int, error: BaseException, delay: float) -> None:
        """The retry loop will sleep ``delay`` s after ``failed`` failed attempts."""
        if self.spanned != failed - 1:  # that attempt was refused before the call
            self.rejected(error)
        retry_after = getattr(error, "retry_after", None)
        self.span.add_event(names.RETRY_SCHEDULED, {
            names.ATTEMPT_NUMBER: failed,  # the attempt the delay comes before
            names.RETRY_DELAY: delay,
            names.RETRY_REASON: names.error_type(error),
            names.RETRY_AFTER_SET: bool(retry_after) and retry_after == delay,
        })
        self.number = failed

    def rejected(self, error: BaseException) -> None:
        """An attempt refused by the breaker or the bulkhead (a limiter's
        refusal has its listener's event already) gets its event."""
        policy = self.policy
        if isinstance(error, CircuitOpenError):
            breaker = policy.breaker
            attributes: dict[str, Any] = {
                names.BREAKER_NAME: error.breaker, names.PROVIDER_TYPE: error.provider_type,
                names.PROVIDER: error.provider,
                names.BREAKER_STATE: "open" if breaker is None else breaker.state.name.lower()}
            if error.retry_after is not None:
                attributes[names.RETRY_AFTER] = error.retry_after
            self.span.add_event(names.BREAKER_REJECTED, attributes)
        elif isinstance(error, RateLimitError) and not self.limited:
            bulkhead = policy.bulkhead
            if bulkhead is not None:
                self.span.add_event(names.BULKHEAD_REJECTED, {
                    names.PROVIDER_TYPE: bulkhead.provider_type,
                    names.PROVIDER: bulkhead.provider})
        self.limited = False


def _failed(span: trace.Span, error: BaseException) -> None:
    span.set_attribute(names.ERROR_TYPE, names.error_type(error))
    if isinstance(error, Exception):  # a cancellation is no error of the call's
        span.set_status(Status(StatusCode.ERROR, str(error)))


def _begin(policy: Policy) -> Execution | None:
    tracing = active
    if tracing is None:
        return None
    try:
        span = tracing.tracer.start_span(f"{names.POLICY_SPAN} {policy.name}",
                                         kind=SpanKind.INTERNAL,
                                         attributes={names.POLICY_NAME: policy.name})
    except Exception:
        _tracer_raised("policy")
        return None
    return Execution(policy, tracing, span)


def execute(self: Policy, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``Policy.execute`` while instrumented: the native execution, traced."""
    execution = _begin(self)
    if execution is None:
        return _NATIVE_EXECUTE(self, fn, *args, **kwargs)
    tokens = execution.enter()
    try:
        result = _NATIVE_EXECUTE(self, execution.attempt, fn, *args, **kwargs)
    except BaseException as exc:
        execution.exit(tokens, exc)
        raise
    execution.exit(tokens, None)
    return result


def execute_async(self: Policy, fn: Callable[..., Awaitable[Any]], /, *args: Any,
                  **kwargs: Any) -> Awaitable[Any]:
    """``Policy.execute_async`` while instrumented: the native execution, traced."""
    return _execute_async(self, fn, args, kwargs)


async def _execute_async(policy: Policy, fn: Callable[..., Awaitable[Any]],
                         args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    execution = _begin(policy)
    if execution is None:
        return await _NATIVE_EXECUTE_ASYNC(policy, fn, *args, **kwargs)
    tokens = execution.enter()
    try:
        result = await _NATIVE_EXECUTE_ASYNC(policy, execution.attempt_async, fn, *args,
                                             **kwargs)
    except BaseException as exc:
        execution.exit(tokens, exc)
        raise
    execution.exit(tokens, None)
    return result


#: The methods _routing.route installs.
TRACED = {"execute": execute, "execute_async": execute_async}
