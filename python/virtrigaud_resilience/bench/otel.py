"""The ``otel`` bench section: what vr.otel costs the composed policy's
success path (``Policy.execute(noop)``), in five settings measured in one
run, interleaved (each case instruments in its own untimed setup and
uninstruments in its teardown, so the others run as they would without):

==================================================  ===================================
setting                                             target (issue 26)
==================================================  ===================================
not instrumented (after an instrument/uninstrument  no change: <= 1.05x never instrumented
cycle)
instrumented, the API without an SDK (no-op)        <= 1.05x not instrumented
instrumented, SDK metrics on, traces sampled out    <= +60 ns per call (Polly: +232 ns)
instrumented, the SDK's default sampler             <= +60 ns per call (the same bound:
(ParentBased), under a parent not sampled           this too is sampled out)
instrumented, every span sampled (one attempt)      <= +1.5 us per attempt over the
                                                    SDK's own work for those spans
==================================================  ===================================

The parent-based case is the common production one: callers sample a
fraction of their traces, and a call under a parent they did not sample
makes no span. It runs under a remote parent span context whose sampled
flag is off, attached for the round.

The sampled case's spans go to an SDK TracerProvider with no span
processor (what exporting costs is the exporter's, not ours); each call is
one execution span and one attempt span, its child. What the SDK itself
spends on two such spans (tens of microseconds in CPython: its span
objects, sampler, attribute checks and locks) is no cost of ours: the
sampled target compares the sampled case with the floor case, the
uninstrumented call plus those same two SDK spans made directly through
the public API (the execution's span; the attempt's with the execution's
as parent, ``context=set_span_in_context(parent)``; both ended, neither
made current). The difference, reported per call (one attempt per call:
per attempt), is all vr.otel adds over the SDK's span work: reading the
parent for the sampling rule, its Python frames around the native call,
building and attaching the attempt span's context (which the floor does
not do), and its own contextvar. Needs opentelemetry-sdk (the section is
skipped without it).
"""

from __future__ import annotations

from typing import Any

from .suite import ExtraTarget, Suite, Target, noop

__all__ = ["GROUP", "otel_cases"]

GROUP = "otel"
NEVER = "Policy.execute(noop), never instrumented"
AFTER = "virtrigaud Policy.execute(noop), after instrument() + uninstrument()"
NO_OP = "virtrigaud Policy.execute(noop), instrumented, API without SDK"
SAMPLED_OUT = "virtrigaud Policy.execute(noop), SDK metrics on, traces sampled out"
PARENT_OUT = "virtrigaud Policy.execute(noop), ParentBased sampler, parent not sampled"
SAMPLED = "virtrigaud Policy.execute(noop), a sampled span per attempt"
FLOOR = "Policy.execute(noop) + the SDK's own two spans, not instrumented"
#: Calls per round of the two cases that make spans (tens of microseconds
#: each: a round of the bench's usual 200,000 would take a minute).
SPAN_CALLS = 2_000


def otel_cases(suite: Suite) -> list[Target]:
    """The five cases and their targets (none without the SDK)."""
    try:
        from opentelemetry import context, metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

        from .. import otel
    except ImportError as exc:
        suite.skip("otel (opentelemetry-sdk)", exc)
        return []
    from .sections import composed

    policy = composed()  # one policy for all: the instrumentation is the only difference

    def instrumented(tracer_provider: Any, meter_provider: Any) -> Any:
        return lambda: otel.instrument(tracer_provider=tracer_provider,
                                       meter_provider=meter_provider)

    settings = {
        AFTER: instrumented(TracerProvider(), MeterProvider()),
        NO_OP: instrumented(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider()),
        SAMPLED_OUT: instrumented(TracerProvider(sampler=ALWAYS_OFF),
                                  MeterProvider(metric_readers=[InMemoryMetricReader()])),
        # the SDK's default sampler: ParentBased(ALWAYS_ON)
        PARENT_OUT: instrumented(TracerProvider(),
                                 MeterProvider(metric_readers=[InMemoryMetricReader()])),
        # spans alone: the metrics' cost is the case above's
        SAMPLED: instrumented(TracerProvider(), metrics.NoOpMeterProvider()),
    }
    suite.add(GROUP, NEVER, "policy.execute(noop)", policy=policy, noop=noop, role="reference")
    tracer = TracerProvider().get_tracer("bench")
    suite.add(GROUP, FLOOR, "policy.execute(noop); "
              "parent = start(P, kind=K, attributes=PA); "
              "start(A, context=within(parent), attributes=AA).end(); parent.end()",
              policy=policy, noop=noop, start=tracer.start_span, within=trace.set_span_in_context,
              P="virtrigaud.policy bench", K=trace.SpanKind.INTERNAL,
              PA={"virtrigaud.policy.name": "bench"}, A="virtrigaud.attempt",
              AA={"virtrigaud.attempt.number": 0}, role="reference")
    suite.cases[-1].calls = SPAN_CALLS
    for name, setup in settings.items():
        if name == AFTER:  # instrumented and given back before the round: nothing on
            setup, teardown = _cycle(setup, otel.uninstrument), None
        elif name == PARENT_OUT:
            setup, teardown = _under_unsampled_parent(setup, otel.uninstrument, context, trace)
        else:
            teardown = otel.uninstrument
        suite.add(GROUP, name, "policy.execute(noop)", policy=policy, noop=noop,
                  setup=setup, teardown=teardown)
        if name == SAMPLED:
            suite.cases[-1].calls = SPAN_CALLS
    return [
        Target("otel not instrumented: no change (<= 1.05x never instrumented)",
               (GROUP, AFTER), (GROUP, NEVER), 1.05),
        Target("otel instrumented, API without SDK: <= 1.05x not instrumented",
               (GROUP, NO_OP), (GROUP, NEVER), 1.05),
        ExtraTarget("otel instrumented, SDK metrics on, traces sampled out: <= +60 ns a call",
                    (GROUP, SAMPLED_OUT), (GROUP, NEVER), 60.0),
        ExtraTarget("otel instrumented, ParentBased sampler, parent not sampled: <= +60 ns a "
                    "call", (GROUP, PARENT_OUT), (GROUP, NEVER), 60.0),
        ExtraTarget("otel a sampled span per attempt: <= +1.5 us an attempt over the SDK's "
                    "own spans", (GROUP, SAMPLED), (GROUP, FLOOR), 1_500.0),
    ]


def _under_unsampled_parent(instrument: Any, uninstrument: Any, context: Any,
                            trace: Any) -> tuple[Any, Any]:
    """(setup, teardown) instrumenting and attaching a remote parent span
    context whose sampled flag is off, then detaching and uninstrumenting."""
    parent = trace.NonRecordingSpan(trace.SpanContext(
        0x5EED, 0xBEE, is_remote=True, trace_flags=trace.TraceFlags(0)))
    tokens: list[Any] = []

    def setup() -> None:
        instrument()
        tokens.append(context.attach(trace.set_span_in_context(parent)))

    def teardown() -> None:
        context.detach(tokens.pop())
        uninstrument()

    return setup, teardown


def _cycle(instrument: Any, uninstrument: Any) -> Any:
    def cycle() -> None:
        instrument()
        uninstrument()
    return cycle
