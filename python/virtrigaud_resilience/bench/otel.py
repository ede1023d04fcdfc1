"""The ``otel`` bench section: what vr.otel costs the composed policy's
success path (``Policy.execute(noop)``), in four settings measured in one
run, interleaved (each case instruments in its own untimed setup and
uninstruments in its teardown, so the others run as they would without):

==================================================  ===================================
setting                                             target (issue 26)
==================================================  ===================================
not instrumented (after an instrument/uninstrument  no change: <= 1.05x never instrumented
cycle)
instrumented, the API without an SDK (no-op)        <= 1.05x not instrumented
instrumented, SDK metrics on, traces sampled out    <= +60 ns per call (Polly: +232 ns)
instrumented, every span sampled (one attempt)      <= +1.5 us per attempt over the
                                                    SDK's own work for those spans
==================================================  ===================================

The sampled case's spans go to an SDK TracerProvider with no span
processor (what exporting costs is the exporter's, not ours); each call is
one execution span and one attempt span, its child. What the SDK itself
spends on two such spans (tens of microseconds in CPython: its span
objects, sampler, attribute checks and locks) is no cost of ours: the
fourth target compares the sampled case with the uninstrumented call plus
those same two SDK spans, made directly. Needs opentelemetry-sdk (the
section is skipped without it).
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
SAMPLED = "virtrigaud Policy.execute(noop), a sampled span per attempt"
FLOOR = "Policy.execute(noop) + the SDK's own two spans, not instrumented"
#: Calls per round of the two cases that make spans (tens of microseconds
#: each: a round of the bench's usual 200,000 would take a minute).
SPAN_CALLS = 2_000


def otel_cases(suite: Suite) -> list[Target]:
    """The four cases and their targets (none without the SDK)."""
    try:
        from opentelemetry import metrics, trace
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
        ExtraTarget("otel a sampled span per attempt: <= +1.5 us an attempt over the SDK's "
                    "own spans", (GROUP, SAMPLED), (GROUP, FLOOR), 1_500.0),
    ]


def _cycle(instrument: Any, uninstrument: Any) -> Any:
    def cycle() -> None:
        instrument()
        uninstrument()
    return cycle
