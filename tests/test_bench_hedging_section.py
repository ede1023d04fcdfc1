"""The bench's ``hedging`` section: a p95 hedge's p99 and extra requests in
virtual time, judged against the issue's targets (the figures are the
simulation's, so they are asserted: a seed gives one history)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from virtrigaud_resilience.bench import add_arguments, run
from virtrigaud_resilience.bench import hedging as section
from virtrigaud_resilience.bench.report import target_results
from virtrigaud_resilience.bench.suite import Suite


def run_bench(*argv: str) -> int:
    """``virtrigaud-resilience bench argv`` in this process; its exit status."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


def test_the_unhedged_run_is_the_providers_latency() -> None:
    unhedged = section.simulate(20_000, hedged=False)
    assert unhedged.extra == 0
    assert unhedged.p50 == pytest.approx(section.P50, rel=0.05)
    assert unhedged.p99 == pytest.approx(section.P99, rel=0.1)


def test_both_targets_hold_and_are_reported() -> None:
    suite = Suite(repeats=1)
    results = target_results(suite, section.hedging_targets(suite))
    assert [r["what"] for r in results] == [
        "hedging p95: p99 <= 75% of the unhedged p99", "hedging p95: extra requests <= 7%"]
    p99, extra = results
    assert p99["held"] and extra["held"]
    assert 0.6 < p99["ratio"] <= 0.75 and 0.03 < extra["ratio"] <= 0.07
    assert p99["figures"]["calls"] == section.QUICK_CALLS
    assert p99["figures"]["p99_hedged_s"] == pytest.approx(
        p99["ratio"] * p99["figures"]["p99_unhedged_s"])
    assert "virtual time" in p99["detail"] and "extra requests" in extra["detail"]


def test_the_section_runs_from_the_command(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    argv = ("--quick", "--rounds", "1", "--calls", "50", "--sections", "hedging")
    assert run_bench(*argv, "--json", str(out)) == 0
    printed = capsys.readouterr().out
    # (not --check: the primitives' timing targets run too, on a loaded machine)
    assert "ok    hedging p95: p99 <= 75% of the unhedged p99: " in printed
    assert "ok    hedging p95: extra requests <= 7%: " in printed
    whats = [t["what"] for t in json.loads(out.read_text())["targets"]]
    assert "hedging p95: extra requests <= 7%" in whats
