"""examples/otel_console.py runs and its console exporter shows what its docstring promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "otel_console.py"


def run_example() -> str:
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def exported_spans(out: str) -> list[dict[str, Any]]:
    """The console exporter's JSON objects (each opens with a '{' line)."""
    decoder, spans, at = json.JSONDecoder(), [], 0
    while (at := out.find("\n{", at)) >= 0:
        span, end = decoder.raw_decode(out, at + 1)
        spans.append(span)
        at = end
    return spans


def test_the_console_exporter_prints_the_attempts_and_the_decisions() -> None:
    out = run_example()
    assert out.splitlines()[:3] == ["create-vm: done", "power-on gave up: UnavailableError",
                                    "power-off gave up: CircuitOpenError"]
    spans = exported_spans(out)
    by_id = {span["context"]["span_id"]: span for span in spans}
    (reconcile,) = [span for span in spans if span["name"] == "reconcile"]
    executions = [span for span in spans if span["name"] == "virtrigaud.policy vsphere"]
    assert [by_id[span["parent_id"]]["name"] for span in executions] == ["reconcile"] * 3
    created, powered_on, powered_off = executions
    attempts = [span for span in spans if span["name"] == "virtrigaud.attempt"
                and span["parent_id"] == created["context"]["span_id"]]
    assert [span["attributes"]["virtrigaud.attempt.number"] for span in attempts] == [0, 1, 2]
    assert [event["attributes"]["virtrigaud.retry.delay"] for event in created["events"]] == [
        1.0, 2.0]
    assert powered_on["events"][-1]["name"] == "circuit_breaker.state_change"
    assert powered_on["events"][-1]["attributes"]["virtrigaud.circuit_breaker.to"] == "open"
    assert [event["name"] for event in powered_off["events"]] == ["circuit_breaker.rejected"]
    assert reconcile["parent_id"] is None
    assert ("span virtrigaud.policy vsphere [Unavailable]: retry.scheduled(1.0s), "
            "retry.scheduled(2.0s), state_change(closed -> open)") in out.splitlines()


def otlp_example(path: Path) -> str:
    """The python block that sets up the OTLP exporter in ``path``."""
    text = path.read_text(encoding="utf-8")
    start = text.index("```python\nfrom opentelemetry import trace\n") + len("```python\n")
    return text[start:text.index("```", start)]


def test_the_otlp_example_is_ten_lines_the_same_in_the_readme_and_the_docs() -> None:
    """Documented, not run (it needs a collector and the OTLP exporter):
    it compiles, imports only what the `otel` extra and the SDK's exporter
    give, and the guide shows the README's lines."""
    root = EXAMPLE.parent.parent
    readme, guide = otlp_example(root / "README.md"), otlp_example(root / "docs" / "otel.md")
    code = [line for line in readme.splitlines() if line.strip()]
    assert len(code) == 10
    compile(readme, "README.md", "exec")
    assert [line.split("#")[0].rstrip() for line in code] == [
        line.split("#")[0].rstrip() for line in guide.splitlines() if line.strip()]
    assert code[-1].startswith("otel.instrument()")
