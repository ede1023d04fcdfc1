"""The examples in examples/ run and show what their docstrings promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_metrics_exporter_scrapes_an_outage_over_http() -> None:
    pytest.importorskip("prometheus_client")
    out = run_example("metrics_exporter.py")
    phases = [line for line in out.splitlines() if ": state=" in line]
    assert phases == [
        "healthy: state=0 failures_total=0",
        "outage: state=2 failures_total=3",
        "probing: state=1 failures_total=3",
        "recovered: state=0 failures_total=3",
    ]
    assert "event: vm-operations CLOSED -> OPEN" in out
    assert "virtrigaud_circuit_breaker_calls_total{outcome=rejected} 1" in out
    assert "serving http://127.0.0.1:" in out


def test_vm_operator_dry_run_rides_out_the_outage() -> None:
    pytest.importorskip("kopf")
    out = run_example("vm_operator.py")
    attempts = [line for line in out.splitlines() if " attempt " in line]
    assert "TemporaryError(delay=0.5)" in attempts[0] and "ProviderUnavailable" in attempts[0]
    assert any("breaker OPEN" in line for line in attempts)
    assert attempts[-1].endswith("succeeded; Ready=True VMReady; breaker CLOSED")
    assert "vmId=vm-0001" in out


def test_drop_in_pybreaker_prints_what_pybreaker_prints() -> None:
    def transcript(*args: str) -> list[str]:
        out = run_example("drop_in_pybreaker.py", *args)
        return [line for line in out.splitlines() if line.startswith(("fetch(", "  "))]

    ours = transcript()
    assert "fetch(3) raised CircuitBreakerError: Failures threshold reached, circuit breaker " \
           "opened" in ours
    assert ours[-1] == "  fail_counter=0 success_counter=0 state=closed"
    pytest.importorskip("pybreaker")
    assert ours == transcript("--real")


def test_retry_dropins_retry_with_their_peers_logs_and_statistics() -> None:
    # (An editable install may print its rebuild first: only the example's lines count.)
    out = [line for line in run_example("retry_dropins.py").splitlines()
           if line.startswith(("example ", "tenacity", "backoff"))]
    assert out == [
        "example INFO Retrying __main__.describe_with_tenacity in 0.5 seconds as it raised "
        "ConnectionError: connection reset.",
        "example INFO Retrying __main__.describe_with_tenacity in 1 seconds as it raised "
        "ConnectionError: timed out.",
        "tenacity: vm-1: running",
        "tenacity statistics: attempt_number=3 idle_for=1.5",
        "tenacity again: vm-2: running",
        "tenacity statistics: attempt_number=1 idle_for=0",
        "backoff INFO Backing off describe_with_backoff(...) for 0.0s "
        "(ConnectionError: connection reset)",
        "backoff INFO Backing off describe_with_backoff(...) for 0.0s "
        "(ConnectionError: timed out)",
        "backoff: vm-3: running",
    ]
