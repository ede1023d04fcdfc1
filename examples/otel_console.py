"""OpenTelemetry spans of a flaky provider call, printed by the SDK's console exporter.

    python examples/otel_console.py

Needs ``pip install 'virtrigaud-resilience[otel]' opentelemetry-sdk``.

A policy (3 attempts, 1 s doubling backoff, a breaker that opens after 3
failures) on a ManualClock (no waiting) calls a fake "vsphere/prod"
provider inside the application's "reconcile" span:

1. ``create-vm`` fails twice with Unavailable and succeeds on its third
   attempt: one ``virtrigaud.policy vsphere`` span, three
   ``virtrigaud.attempt`` spans (numbers 0, 1, 2), and two
   ``retry.scheduled`` events with the exact delays (1 s, 2 s);
2. ``power-on`` fails all three attempts and the third failure opens the
   breaker: a ``circuit_breaker.state_change`` event (closed -> open) on
   the execution's span, current at the transition;
3. ``power-off`` finds the breaker open: no attempt span, a
   ``circuit_breaker.rejected`` event, and the policy gives up at once (the
   breaker's 60 s to its next probe is longer than the retry's 30 s
   ``max_delay``).

The console exporter prints each finished span as JSON; a summary line per
span follows at the end.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import virtrigaud_resilience as vr
from virtrigaud_resilience import otel


class FlakyProvider:
    """Fails the first ``failures`` calls of each operation with Unavailable."""

    def __init__(self, failures: dict[str, int]) -> None:
        self.failures = failures

    def call(self, operation: str) -> str:
        if self.failures.get(operation, 0) > 0:
            self.failures[operation] -= 1
            raise vr.UnavailableError(f"{operation}: vsphere/prod is not answering")
        return f"{operation}: done"


def main() -> None:
    exported = io.StringIO()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=exported)))
    otel.instrument(tracer_provider=provider)

    clock = vr.ManualClock()
    breaker = vr.CircuitBreaker("vm-operations", "vsphere", "prod",
                                vr.BreakerConfig(failure_threshold=3, reset_timeout=60.0),
                                clock=clock)
    policy = (vr.PolicyBuilder("vsphere")
              .with_retry(vr.RetryConfig(max_attempts=3, base_delay=1.0, max_delay=30.0,
                                         jitter=False))
              .with_circuit_breaker(breaker).with_clock(clock).build())
    vsphere = FlakyProvider({"create-vm": 2, "power-on": 10})

    with provider.get_tracer("example").start_as_current_span("reconcile"):
        print(policy.execute(vsphere.call, "create-vm"))
        for operation in ("power-on", "power-off"):
            try:
                policy.execute(vsphere.call, operation)
            except vr.UnavailableError as error:
                print(f"{operation} gave up: {type(error).__name__}")
    otel.uninstrument()
    provider.shutdown()

    text = exported.getvalue()
    sys.stdout.write(text)  # the console exporter's JSON, one object per span
    for span in _spans(text):
        events = ", ".join(_event(event) for event in span["events"])
        number = span["attributes"].get("virtrigaud.attempt.number")
        print(f"span {span['name']}" + (f" #{number}" if number is not None else "")
              + (f" [{span['attributes']['error.type']}]" if "error.type" in span["attributes"]
                 else "") + (f": {events}" if events else ""))


def _spans(text: str) -> list[dict[str, Any]]:
    """The JSON objects the console exporter wrote, in order."""
    decoder, spans, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) >= 0:
        span, at = decoder.raw_decode(text, at)
        spans.append(span)
    return spans


def _event(event: dict[str, Any]) -> str:
    attributes = event["attributes"]
    if event["name"] == "retry.scheduled":
        return f"retry.scheduled({attributes['virtrigaud.retry.delay']}s)"
    if event["name"] == "circuit_breaker.state_change":
        return (f"state_change({attributes['virtrigaud.circuit_breaker.from']} -> "
                f"{attributes['virtrigaud.circuit_breaker.to']})")
    return str(event["name"])


if __name__ == "__main__":
    main()
