"""The bench's ``memory`` section: bytes per object of our breaker and
bucket and of the peers', each kind in a fresh process, judged against the
issue's limits. Shapes and report only: no size is asserted, and a missed
limit is reported as MISS without failing the run (only ``--check`` fails)."""

from __future__ import annotations

import argparse
import builtins
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

from virtrigaud_resilience.bench import add_arguments, run
from virtrigaud_resilience.bench import memory as section
from virtrigaud_resilience.bench.report import target_results
from virtrigaud_resilience.bench.suite import Suite

OURS = ("virtrigaud CircuitBreaker", "virtrigaud TokenBucket")
PEERS = {"pybreaker CircuitBreaker": "pybreaker", "aiolimiter AsyncLimiter": "aiolimiter"}


def run_bench(*argv: str) -> int:
    """``virtrigaud-resilience bench argv`` in this process; its exit status."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


def test_each_kind_is_measured_in_a_fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(section, "QUICK_OBJECTS", 2_000)
    suite = Suite(repeats=1)
    targets = section.memory_targets(suite)
    results = target_results(suite, targets)
    assert [r["what"] for r in results] == ["CircuitBreaker: RSS growth per object <= 512 B",
                                            "TokenBucket: RSS growth per object <= 256 B"]
    for result, peer in zip(results, PEERS):
        assert result["bound"] == 1.0 and math.isfinite(result["ratio"])
        figures = result["figures"]
        assert figures["objects"] == 2_000 and figures["limit_bytes"] in (512, 256)
        assert figures["rss_bytes"] == pytest.approx(result["ratio"] * figures["limit_bytes"])
        assert figures["traced_bytes"] > 0  # every object allocates on Python's heap
        assert result["shown"].endswith("x the target)")
        assert "2,000 objects, a fresh process each" in result["detail"]
        if importlib.util.find_spec(PEERS[peer]) is not None:
            assert figures["peer_traced_bytes"] > 0 and f"; {peer} " in result["detail"]
        else:
            assert "peer_rss_bytes" not in figures
            assert any(s.install == f"pip install {PEERS[peer]}" for s in suite.skipped)


def test_a_missed_limit_is_reported_and_fails_only_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A breaker of 600 B misses 512 B: MISS, exit 0, and 1 under --check
    (the measurement is stood in for: the test above runs the real one)."""
    pytest.importorskip("pybreaker")  # the peer's figure is in the line checked
    sizes = {"virtrigaud CircuitBreaker": 600.0, "virtrigaud TokenBucket": 200.0}
    monkeypatch.setattr(section, "footprint", lambda kind, objects: section.Footprint(
        objects, sizes.get(kind, 400.0), sizes.get(kind, 400.0) - 50))
    out = tmp_path / "bench.json"
    argv = ("--quick", "--rounds", "1", "--calls", "50", "--sections", "memory")
    assert run_bench(*argv, "--json", str(out)) == 0
    printed = capsys.readouterr().out
    assert ("MISS  CircuitBreaker: RSS growth per object <= 512 B: 600 B (1.17x the target) "
            "(tracemalloc 550 B; pybreaker CircuitBreaker 400 B, tracemalloc 350 B; "
            "5,000 objects, a fresh process each)") in printed
    assert "ok    TokenBucket: RSS growth per object <= 256 B: 200 B (0.78x the target)" in printed
    data = json.loads(out.read_text())
    breaker, bucket = (t for t in data["targets"] if "RSS growth" in t["what"])
    assert breaker["held"] is False and bucket["held"] is True
    assert breaker["figures"] == {"objects": 5_000, "rss_bytes": 600, "traced_bytes": 550,
                                  "limit_bytes": 512, "peer_rss_bytes": 400,
                                  "peer_traced_bytes": 350}
    assert run_bench(*argv, "--check") == 1


def test_a_failing_child_is_an_error_naming_the_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RuntimeError, match=r"memory of nope: KeyError: 'nope'"):
        section.footprint("nope", 10)


def test_rss_falls_back_to_the_peak_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    now = section.rss_bytes()
    real_open = builtins.open

    def no_proc(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    assert section.rss_bytes() >= now * 0.9  # the peak so far, in bytes (not KiB)
