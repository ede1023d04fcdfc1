"""vr.otel follows a global tracer provider set after ``instrument()``:
the API's set-once global cannot be reset, so each case runs in a fresh
interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("opentelemetry.sdk")

PRELUDE = """
from opentelemetry import trace
from opentelemetry.trace import set_tracer_provider  # imported before instrument()
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import virtrigaud_resilience as vr
from virtrigaud_resilience import otel

API_FUNCTION = trace._set_tracer_provider
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
policy = vr.PolicyBuilder("late").build()
otel.instrument()
assert not otel.traces_calls()
assert policy.execute(lambda: 1) == 1  # the proxy: native, nothing recorded
"""


def run(code: str) -> list[str]:
    """The lines the code printed (it must exit 0). The child imports the
    package this interpreter imports (the installed wheel in CI, the source
    tree through PYTHONPATH locally): the environment passes unchanged."""
    result = subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_a_global_provider_set_after_instrument_is_followed() -> None:
    assert run("""
set_tracer_provider(provider)
assert otel.traces_calls()
assert policy.execute(lambda: 2) == 2
print(*[span.name.replace(" ", "_") for span in exporter.get_finished_spans()])
otel.uninstrument()
assert trace._set_tracer_provider is API_FUNCTION  # the API's own function back
""") == ["virtrigaud.attempt", "virtrigaud.policy_late"]


def test_after_uninstrument_a_global_provider_set_is_not_followed() -> None:
    assert run("""
otel.uninstrument()
assert trace._set_tracer_provider is API_FUNCTION
set_tracer_provider(provider)
assert not otel.traces_calls() and policy.execute(lambda: 2) == 2
print(len(exporter.get_finished_spans()))
""") == ["0"]


def test_an_explicit_provider_given_later_stops_following_the_global() -> None:
    assert run("""
mine = InMemorySpanExporter()
explicit = TracerProvider()
explicit.add_span_processor(SimpleSpanProcessor(mine))
otel.instrument(tracer_provider=explicit)
assert trace._set_tracer_provider is API_FUNCTION
set_tracer_provider(provider)
assert policy.execute(lambda: 2) == 2
print(len(mine.get_finished_spans()), len(exporter.get_finished_spans()))
""") == ["2", "0"]
