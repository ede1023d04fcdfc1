"""The demo with adaptive rates (its default) against ``--no-adaptive``:
the same seed, the same fleet; libvirt/lab's quota answers fall at least
tenfold and every VM ends Ready either way (issue 24's demo target)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from virtrigaud_resilience.cli import main


def libvirt_and_ready(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict[str, Any],
                                                                                int]:
    assert main(["demo", "--virtual-time", "--json", *args]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    libvirt = next(p for p in summary["providers"] if p["provider"] == "libvirt/lab")
    return libvirt, summary["ready"]


@pytest.mark.slow
def test_adaptive_rates_cut_the_quota_answers_tenfold(
        capsys: pytest.CaptureFixture[str]) -> None:
    adaptive, ready = libvirt_and_ready(capsys)
    static, ready_static = libvirt_and_ready(capsys, "--no-adaptive")
    assert static["quota_rate_limit_answers"] >= 10 * adaptive["quota_rate_limit_answers"]
    assert ready == ready_static == 300
    assert static["rate_qps"] == 20.0       # the production ConfigMap's rate, never moved
    # The adaptive rate's value at the end is not judged: once the fleet is
    # Ready the calls thin out, and CUBIC may grow back to the configured rate.
    assert adaptive["rate_qps"] <= 20.0
