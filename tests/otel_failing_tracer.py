"""An SDK tracer provider exporting to memory whose tracers fail to start the
spans of one kind, and the ``instrument`` fixture that uninstruments after
the test: for the tests of vr.otel's native attempt and execution, which
must never let a failing tracer break a call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from virtrigaud_resilience import otel

ATTEMPT = "virtrigaud.attempt"
POLICY_SPAN = "virtrigaud.policy"


class Interrupted(BaseException):
    """What a tracer raises that is no Exception (as KeyboardInterrupt is not)."""


class FailingTracer(trace.Tracer):
    """An SDK tracer whose spans named ``prefix...`` fail to start with ``error``."""

    def __init__(self, tracer: trace.Tracer, error: BaseException, prefix: str) -> None:
        self.tracer = tracer
        self.error = error
        self.prefix = prefix

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        if name.startswith(self.prefix):
            raise self.error
        return self.tracer.start_span(name, *args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self.tracer.start_as_current_span(*args, **kwargs)


class Provider(trace.TracerProvider):
    """An SDK provider exporting to memory; its tracers fail the spans named
    ``fails...`` with ``error`` (None: none fail)."""

    def __init__(self, error: BaseException | None = None, fails: str = ATTEMPT) -> None:
        self.exporter = InMemorySpanExporter()
        self.sdk = TracerProvider()
        self.sdk.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.error = error
        self.fails = fails

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        tracer = self.sdk.get_tracer(*args, **kwargs)
        return tracer if self.error is None else FailingTracer(tracer, self.error, self.fails)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def instrument() -> Iterator[Any]:
    """``instrument(provider, **kwargs)``: instruments with it; uninstruments after the test."""
    def instrument_with(provider: Provider, **kwargs: Any) -> Provider:
        otel.instrument(tracer_provider=provider, **kwargs)
        return provider

    try:
        yield instrument_with
    finally:
        otel.uninstrument()
