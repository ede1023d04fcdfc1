"""OpenTelemetry for the policies: a span per execution and per attempt,
span events for every decision, and metrics read from the native counters.

::

    import virtrigaud_resilience as vr
    from virtrigaud_resilience import otel

    otel.instrument()          # the global tracer and meter providers
    ...
    otel.uninstrument()        # back to the native path, exactly

Nothing changes until :func:`instrument` is called, and ``import
virtrigaud_resilience`` never imports OpenTelemetry. Needs the ``otel``
extra (``opentelemetry-api``); exporting needs an SDK.

Traces: ``Policy.execute`` / ``execute_async`` open a span
``"virtrigaud.policy <name>"`` (INTERNAL, under the caller's current span)
and a child ``"virtrigaud.attempt"`` per attempt that reaches the function,
with ``virtrigaud.attempt.number`` (0-based), ``error.type`` (the taxonomy's
type, e.g. ``"Unavailable"``) and an ERROR status when it raised. Span
events: ``retry.scheduled`` (``virtrigaud.retry.delay`` s, ``.reason``,
``.retry_after``: whether the error's retry_after set the delay),
``circuit_breaker.rejected``, ``rate_limiter.rejected``,
``bulkhead.rejected``, ``retry_budget.exhausted``, and
``circuit_breaker.state_change`` (on the span current at the transition; a
log record on logger ``virtrigaud_resilience.otel`` when there is none).

Cost: uninstrumented, or instrumented with a tracer that records nothing
(the API without an SDK, or an SDK whose sampler is ALWAYS_OFF), the
native methods run: a call pays nothing. Otherwise each call runs through
the traced methods (see _tracing.py); one a parent-based sampler would
drop (a parent not sampled) runs the native call, decided natively before
any Python frame (see _gate.py). A global tracer provider set after
:func:`instrument` is followed (see _global.py). Metrics: see _instruments.py.
"""

from __future__ import annotations

import threading
from typing import Any

try:
    from opentelemetry import metrics, trace
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "virtrigaud_resilience.otel needs opentelemetry-api: "
        "pip install 'virtrigaud-resilience[otel]'"
    ) from exc

from .. import _validate
from . import _decisions, _gate, _global, _instruments, _routing, _sampling, _tracing
from ._names import SCOPE, error_type

__all__ = ["error_type", "instrument", "is_instrumented", "traces_calls", "uninstrument"]

_lock = threading.Lock()
_instrumented = False
#: The (attempt, execution) duration histograms of the meter provider in force.
_durations: tuple[Any, Any] = (None, None)


def instrument(tracer_provider: Any = None, meter_provider: Any = None, *,
               metric_names: bool = True) -> None:
    """Starts tracing the policies' calls and reporting the metrics.

    Args:
        tracer_provider: an ``opentelemetry.trace.TracerProvider``; None, the
            global one (one set later, through ``trace.set_tracer_provider``,
            is followed: the calls are traced from then on).
        meter_provider: an ``opentelemetry.metrics.MeterProvider``; None, the
            global one (a provider set later is seen: the API delegates).
        metric_names: whether the breakers' counts on
            ``virtrigaud.resilience.events`` and their
            ``virtrigaud.circuit_breaker.state`` carry the breaker's name
            (``virtrigaud.circuit_breaker.name``), an attribute set per name
            and provider labels; False sums them by provider labels alone.
            Turn it off for a breaker per VM: a reader keeps 2,000 attribute
            sets an instrument by default (a View's
            ``aggregation_cardinality_limit`` raises it), and while on, each
            dropped breaker's totals stay under its name until
            :func:`uninstrument` or ``metric_names=False``. Switching it
            restarts the counter's sets (a counter reset to a cumulative
            backend).

    Idempotent: a second call replaces the providers, never doubles a span
    or an instrument's reports. Raises TypeError for a provider of another
    type, or a ``metric_names`` that is not a bool.
    For start-up (and :func:`uninstrument` for shut-down), not per request:
    each swaps methods on the policy classes.
    """
    global _instrumented, _durations
    _validate.boolean("otel.instrument()", "metric_names", metric_names)
    follows_global = tracer_provider is None
    tracer_provider = _checked("tracer_provider", tracer_provider, trace.TracerProvider,
                               trace.get_tracer_provider)
    meter_provider = _checked("meter_provider", meter_provider, metrics.MeterProvider,
                              metrics.get_meter_provider)
    # The API's no-op meter records nothing: the traced calls skip timing for it.
    durations = (None, None) if isinstance(meter_provider, metrics.NoOpMeterProvider) else \
        _instruments.instruments(meter_provider)
    with _lock:
        _instruments.report_names(metric_names)
        _instruments.observing = True
        _durations = durations
        _trace_with(tracer_provider)
        _instrumented = True
        if follows_global and isinstance(tracer_provider, trace.ProxyTracerProvider):
            _global.follow(_global_provider_set)
        else:
            _global.stop()


def _trace_with(tracer_provider: Any) -> None:
    """Routes the calls through the traced methods for ``tracer_provider``
    if its spans may record; else the native methods (under _lock)."""
    if _records(tracer_provider):
        attempt_duration, execution_duration = _durations
        rule = _sampling.rule(tracer_provider)
        # A rule the gates apply natively is not applied again in Python.
        gated = rule is not None and _gate.available()
        tracing = _tracing.Tracing(tracer_provider.get_tracer(SCOPE), attempt_duration,
                                   execution_duration, None if gated else rule)
        _tracing.configure(tracing)
        _routing.route(_gate.gates(rule, tracing.methods) if gated and rule is not None
                       else tracing.methods)
        _decisions.listen()
    else:
        _stop_tracing()


def _global_provider_set(tracer_provider: Any) -> None:
    """The application set the global tracer provider, which instrument() follows."""
    with _lock:
        if _instrumented and _global.following():
            _trace_with(tracer_provider)


def uninstrument() -> None:
    """Stops it all: the policies' native methods are back (the very same
    objects), the listeners removed, the observable instruments silent."""
    global _instrumented
    with _lock:
        _global.stop()
        _stop_tracing()
        _instruments.observing = False
        _instruments.forget_names()
        _instrumented = False


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in force."""
    return _instrumented


def traces_calls() -> bool:
    """Whether the policies' calls run through the traced methods now (False
    uninstrumented, or with a tracer that records nothing)."""
    return _routing.routed()


def _stop_tracing() -> None:
    _tracing.configure(None)
    _routing.restore()
    _decisions.stop()


def _records(provider: Any) -> bool:
    """Whether spans from ``provider`` may record: not the API's no-op (nor
    its proxy before an SDK is set), nor an SDK whose sampler drops all."""
    if isinstance(provider, (trace.NoOpTracerProvider, trace.ProxyTracerProvider)):
        return False
    return _sampling.description(provider) != _sampling.ALWAYS_OFF


def _checked(field: str, value: Any, kind: type, default: Any) -> Any:
    if value is None:
        return default()
    if not isinstance(value, kind):
        raise TypeError(f"otel.instrument() {field} must be an opentelemetry "
                        f"{kind.__module__.split('.')[1]}.{kind.__name__} or None, "
                        f"got {type(value).__name__} {value!r}")
    return value
