"""The traced policy methods: a span per execution and a child span per attempt.

While instrumented (see _routing.py), ``Policy.execute`` is :func:`execute`:
it opens the execution's span and runs the native execute with the native
attempt (:attr:`Tracing.attempt`, ``_core.TracedAttempt``) as the function
to call, given the execution and the caller's function, so every attempt
that reaches the function (the native first one and each retry of the
Python continuation) runs inside its own span, current while it runs
(``execute_async``: :meth:`Execution.attempt_async`, in Python).
Attempts the breaker, limiter or bulkhead refused never reach it: they
become span events on the execution's span (see :meth:`Execution.rejected`).

What is current between attempts: the execution's span, from the start
(``execute_async``) or from the first failed attempt on (``execute``: a
call that succeeds at once never attaches it, one context switch saved;
the decision listeners find the execution through :data:`CURRENT`, so
their events land on its span either way). A fallback that answers a
sync call whose first attempt the breaker refused runs under the caller's
span.

What is ours per call, on top of the SDK's two spans: the sampling rule's
read of the parent (native, see _gate.py; in Python where the gate cannot
read it, see _sampling.py), building each span's parent context, attaching
the attempt's (and, after a failure, the execution's), the contextvar
:data:`CURRENT`, and the Execution. A sampled sync call that succeeds at
once runs no Python frame of ours: the execution (``_core.TracedExecute``,
cpp/src/bind_otel_execute.cpp: :func:`execute` natively, the Execution made
without its ``__init__``) and the attempt (``_core.TracedAttempt``,
cpp/src/bind_otel_attempt.cpp) are native, and so are the context
operations (see _context.py); a failed or timed call ends through
:meth:`Execution.exit`, in Python. The span names and attribute dicts are
built once per policy name and attempt number: the SDK copies what it is
given.

A tracer that raises never breaks a call: the call runs untraced and the
error is logged once.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import Histogram
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import _core
from ..errors import CircuitOpenError, RateLimitError
from ..policy import Policy
from . import _context
from . import _names as names
from ._context import SPAN_KEY
from ._sampling import SamplingRule

logger = logging.getLogger("virtrigaud_resilience.otel")

_NATIVE_EXECUTE: Callable[..., Any] = _core.Policy.execute
_NATIVE_EXECUTE_ASYNC: Callable[..., Any] = _core.Policy.execute_async

#: The execution running in this thread or task (the retry and rate-limit
#: listeners find it here to number attempts and place their events).
CURRENT: contextvars.ContextVar[Execution | None] = contextvars.ContextVar(
    "virtrigaud_otel_execution", default=None)


#: A policy's span name and attributes, by policy name (the SDK copies a
#: span's attributes: one dict serves every span). Bounded: a process that
#: names a policy per resource rebuilds past the bound instead of growing.
_POLICY_CONSTANTS: dict[str, tuple[str, dict[str, Any]]] = {}
_POLICY_CONSTANTS_MAX = 1024
#: An attempt span's attributes for the first attempt numbers.
_ATTEMPT_ATTRIBUTES = tuple({names.ATTEMPT_NUMBER: number} for number in range(16))


def _policy_constants(name: str) -> tuple[str, dict[str, Any]]:
    constants = _POLICY_CONSTANTS.get(name)
    if constants is None:
        if len(_POLICY_CONSTANTS) >= _POLICY_CONSTANTS_MAX:
            _POLICY_CONSTANTS.clear()
        constants = _POLICY_CONSTANTS[name] = (f"{names.POLICY_SPAN} {name}",
                                               {names.POLICY_NAME: name})
    return constants


class Tracing:
    """What the traced methods use: the tracer, the duration histograms
    (None without a meter provider), the sampler's parent-based rule
    (None: every call is traced, the SDK's sampler deciding), the native
    sync attempt for them (``attempt(execution, fn, *args, **kwargs)``), and
    the methods to route the calls through (:attr:`methods`, by name)."""

    __slots__ = ("tracer", "attempt_duration", "execution_duration", "sampling", "attempt",
                 "methods")

    def __init__(self, tracer: trace.Tracer, attempt_duration: Histogram | None,
                 execution_duration: Histogram | None,
                 sampling: SamplingRule | None = None) -> None:
        self.tracer = tracer
        self.attempt_duration = attempt_duration
        self.execution_duration = execution_duration
        self.sampling = sampling
        # The tracer's start_span and the context operations are bound once
        # here, not looked up per attempt (see cpp/src/bind_otel_attempt.cpp).
        self.attempt: Callable[..., Any] = _core.TracedAttempt(
            tracer.start_span, names.ATTEMPT_SPAN, _ATTEMPT_ATTRIBUTES, names.ATTEMPT_NUMBER,
            SPAN_KEY, _context.attach, _context.detach,
            time.perf_counter if attempt_duration is not None else None,
            _attempt_ended, _attempt_tracer_raised, Execution)
        #: ``execute``: the native traced execution (:func:`execute` without
        #: a frame of ours) unless the sampling rule is applied here, in Python.
        self.methods: dict[str, Callable[..., Any]] = dict(TRACED)
        if sampling is None:
            self.methods["execute"] = _core.TracedExecute(
                _NATIVE_EXECUTE, execute, globals(), self, self.attempt, tracer.start_span,
                SpanKind.INTERNAL, _POLICY_CONSTANTS, _policy_constants, _context.current,
                SPAN_KEY, CURRENT.set, CURRENT.reset,
                time.perf_counter if execution_duration is not None else None,
                _policy_tracer_raised, Execution)


#: The active configuration; None once uninstrumented (a call that was
#: already routed then runs natively).
active: Tracing | None = None
#: Whether this configuration's tracer failed already (logged once per instrument()).
_tracer_failed = False


def _tracer_raised(where: str, error: BaseException | None = None) -> None:
    """Logs the first failure of the tracer only (it would repeat per call):
    ``error``, or the exception being handled."""
    global _tracer_failed
    if not _tracer_failed:
        _tracer_failed = True
        logger.error("the tracer provider failed to start a %s span; calls run untraced "
                     "where it fails (logged once)", where,
                     exc_info=error if error is not None else True)


def _attempt_tracer_raised(error: BaseException) -> None:
    """The native attempt's tracer failed to start its span (it then calls
    the function untraced)."""
    _tracer_raised("attempt", error)


def _policy_tracer_raised(error: BaseException) -> None:
    """The native execution's tracer failed to start the execution's span
    (it then runs the call untraced)."""
    _tracer_raised("policy", error)


def _attempt_ended(execution: Execution, number: int, span: trace.Span,
                   error: BaseException | None, started: float) -> None:
    """Ends the native attempt's span when it failed (``error``: then the
    execution's span is current between attempts) or is timed."""
    execution._end_attempt(number, span, error, started)
    if error is not None:
        execution.attach()


def configure(tracing: Tracing | None) -> None:
    """Makes ``tracing`` the active configuration (None: none), whose first
    tracer failure is logged again."""
    global active, _tracer_failed
    active = tracing
    _tracer_failed = False


class Execution:
    """One policy execution's span and its attempts' bookkeeping."""

    __slots__ = ("policy", "tracing", "span", "context", "token", "number", "spanned",
                 "limited", "started", "attempt_span")

    def __init__(self, policy: Policy, tracing: Tracing) -> None:
        """Starts the execution's span; raises what the tracer raises.
        (The native execution sets the same slots without calling this:
        init_execution in cpp/src/bind_otel_execute.cpp, kept in step.)"""
        name = policy._name  # the property is one more Python call
        span_name, attributes = _POLICY_CONSTANTS.get(name) or _policy_constants(name)
        # The caller's context, given: the SDK would read it again (two Python calls).
        caller = _context.current()
        self.span = span = tracing.tracer.start_span(span_name, context=caller,
                                                     kind=SpanKind.INTERNAL,
                                                     attributes=attributes)
        self.policy = policy
        self.tracing = tracing
        #: The caller's context with the execution's span current: each
        #: attempt span's parent, and what is attached between attempts.
        self.context = _context.with_value(caller, SPAN_KEY, span)
        #: The token of the execution's context while attached (None: not).
        self.token: object | None = None
        #: The number (0-based) of the attempt running or next to run.
        self.number = 0
        #: The number of the last attempt that reached the function (-1: none).
        self.spanned = -1
        #: A rate limiter refused this attempt (its listener said so).
        self.limited = False
        self.started = time.perf_counter() if tracing.execution_duration is not None else 0.0
        #: The running attempt's span (None between attempts).
        self.attempt_span: trace.Span | None = None

    # -- the execution ---------------------------------------------------------

    def attach(self) -> None:
        """Makes the execution's span current (until :meth:`exit`), once."""
        if self.token is None:
            self.token = _context.attach(self.context)

    def exit(self, current: contextvars.Token[Execution | None],
             error: BaseException | None) -> None:
        CURRENT.reset(current)
        if self.token is not None:
            _context.detach(self.token)
            self.token = None
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
        attributes = _ATTEMPT_ATTRIBUTES[number] if number < len(_ATTEMPT_ATTRIBUTES) else \
            {names.ATTEMPT_NUMBER: number}
        try:
            span = self.tracing.tracer.start_span(names.ATTEMPT_SPAN, context=self.context,
                                                  attributes=attributes)
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

    async def attempt_async(self, fn: Callable[..., Awaitable[Any]], *args: Any,
                            **kwargs: Any) -> Any:
        """Awaits ``fn(*args, **kwargs)`` inside the attempt's span."""
        number, span = self._start_attempt()
        if span is None:
            return await fn(*args, **kwargs)
        token = _context.attach(_context.with_value(self.context, SPAN_KEY, span))
        started = time.perf_counter() if self.tracing.attempt_duration is not None else 0.0
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._end_attempt(number, span, exc, started)
            raise
        finally:
            _context.detach(token)
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


def execute(self: Policy, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``Policy.execute`` while instrumented: the native execution, traced.
    What :attr:`Tracing.methods` routes, natively (``_core.TracedExecute``),
    unless the sampling rule is applied in Python; else the path of a call
    routed under a configuration no longer active."""
    tracing = active
    if tracing is None or (tracing.sampling is not None and tracing.sampling.drops()):
        return _NATIVE_EXECUTE(self, fn, *args, **kwargs)
    try:
        execution = Execution(self, tracing)
    except Exception:
        _tracer_raised("policy")
        return _NATIVE_EXECUTE(self, fn, *args, **kwargs)
    current = CURRENT.set(execution)
    try:
        # The native attempt (Tracing.attempt) runs each attempt's span.
        result = _NATIVE_EXECUTE(self, tracing.attempt, execution, fn, *args, **kwargs)
    except BaseException as exc:
        execution.exit(current, exc)
        raise
    if execution.token is None and tracing.execution_duration is None:
        # All that exit() does for a success that attached nothing and times
        # nothing (the common call), without its frame.
        CURRENT.reset(current)
        execution.span.end()
    else:
        execution.exit(current, None)
    return result


def execute_async(self: Policy, fn: Callable[..., Awaitable[Any]], /, *args: Any,
                  **kwargs: Any) -> Awaitable[Any]:
    """``Policy.execute_async`` while instrumented: the native execution,
    traced (decided when called: a call sampled out is the native awaitable)."""
    tracing = active
    if tracing is None or (tracing.sampling is not None and tracing.sampling.drops()):
        return _NATIVE_EXECUTE_ASYNC(self, fn, *args, **kwargs)  # type: ignore[no-any-return]
    return _execute_async(self, tracing, fn, args, kwargs)


async def _execute_async(policy: Policy, tracing: Tracing, fn: Callable[..., Awaitable[Any]],
                         args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        execution = Execution(policy, tracing)
    except Exception:
        _tracer_raised("policy")
        return await _NATIVE_EXECUTE_ASYNC(policy, fn, *args, **kwargs)
    # Eager here: an attempt may run in a task of its own (a timeout's),
    # whose context changes never reach this one.
    execution.attach()
    current = CURRENT.set(execution)
    try:
        result = await _NATIVE_EXECUTE_ASYNC(policy, execution.attempt_async, fn, *args,
                                             **kwargs)
    except BaseException as exc:
        execution.exit(current, exc)
        raise
    execution.exit(current, None)
    return result


#: The methods _routing.route installs.
TRACED = {"execute": execute, "execute_async": execute_async}
