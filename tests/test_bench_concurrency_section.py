"""The bench's ``concurrency`` section: a fleet of asyncio tasks awaiting a
provider that yields once, bare, through our policy and through the peers'
stack; and the two-thread cases of ``threads``, included once. Shapes and
report only: no timing is asserted."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import pytest

from virtrigaud_resilience.bench import add_arguments, build_suite, measure, run
from virtrigaud_resilience.bench import concurrency as section
from virtrigaud_resilience.bench.report import rows, target_results
from virtrigaud_resilience.bench.sections import THREADS

PEERS_INSTALLED = all(importlib.util.find_spec(m) is not None
                      for m in ("tenacity", "aiolimiter", "aiobreaker"))
FLEET_NAMES = {"bare await", section.OURS} | ({section.PEERS} if PEERS_INSTALLED else set())


def run_bench(*argv: str) -> int:
    """``virtrigaud-resilience bench argv`` in this process; its exit status."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


def test_each_fleet_runs_its_tasks_and_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(section, "QUICK_FLEET", (7, 3))  # tasks, calls per task
    suite, targets = build_suite(["concurrency"], repeats=1)
    fleets = [c for c in suite.cases if c.group == section.GROUP]
    assert {c.name for c in fleets} == FLEET_NAMES
    assert all(c.is_async and c.calls == 21 for c in fleets)
    assert {c.role for c in fleets} == {"baseline", "ours"} | (
        {"peer"} if PEERS_INSTALLED else set())
    measure(suite, rounds=1, n=50)
    assert all(math.isfinite(c.best_ns) and c.best_ns > 0 for c in fleets)
    results = {r["what"]: r for r in target_results(suite, targets)}
    within = results["async policy, 7 tasks x 3 calls: within 1.2x of bare awaits"]
    assert within["bound"] == 1.2 and within["ratio"] > 0
    assert " calls/s; bare await: " in within["detail"]
    assert within["figures"]["calls_per_s"] == pytest.approx(
        1e9 / suite.get(section.GROUP, section.OURS).best_ns)
    peers = results["async policy, 7 tasks x 3 calls: >= 20x the throughput of "
                    "tenacity + aiolimiter + aiobreaker"]
    assert peers["bound"] == pytest.approx(1 / 20)
    if PEERS_INSTALLED:
        assert peers["ratio"] > 0 and peers["shown"].endswith("x faster")
    else:
        assert peers["ratio"] is None
        assert any("concurrency" in s.what for s in suite.skipped)


async def test_a_fleet_run_makes_every_call_in_its_own_tasks() -> None:
    """``run(n)`` ignores ``n``: ``tasks`` tasks at once, each making ``calls`` calls."""
    import asyncio

    seen: list[asyncio.Task[None] | None] = []

    async def loop(calls: int) -> None:
        for _ in range(calls):
            seen.append(asyncio.current_task())
            await asyncio.sleep(0)

    await section._fleet(loop, tasks=4, calls=5)(1_000)
    assert len(seen) == 20 and len(set(seen)) == 4


def test_a_fleet_is_compared_with_the_fleet_of_bare_awaits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """"vs bare" of a fleet is against the fleet of bare awaits, not the
    policy section's single-task bare await (which comes first in the suite)."""
    monkeypatch.setattr(section, "QUICK_FLEET", (4, 2))
    suite, _ = build_suite(["policy", "concurrency"], repeats=1)
    measure(suite, rounds=1, n=50)
    table = {(r.group, r.name): r for r in rows(suite)}
    fleet_bare = suite.get(section.GROUP, "bare await").best_ns
    assert table[(section.GROUP, "bare await")].vs_bare == 1.0
    assert table[(section.GROUP, section.OURS)].vs_bare == pytest.approx(
        suite.get(section.GROUP, section.OURS).best_ns / fleet_bare)
    assert table[("policy async", "bare await")].vs_bare == 1.0


@pytest.mark.parametrize("order", [["concurrency"], ["threads", "concurrency"],
                                   ["concurrency", "threads"]])
def test_the_thread_cases_are_included_once(order: list[str]) -> None:
    alone, _ = build_suite(["threads"], repeats=1)
    suite, targets = build_suite(order, repeats=1)
    names = [c.name for c in suite.cases if c.group == THREADS]
    assert names == [c.name for c in alone.cases if c.group == THREADS]
    assert len(names) == 16  # (bare, plain, 3 workloads x separate/shared) x 1 or 2 threads
    assert len({t.what for t in targets}) == len(targets)


def test_the_cli_prints_and_carries_the_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(section, "QUICK_FLEET", (10, 5))
    out = tmp_path / "bench.json"
    status = run_bench("--quick", "--rounds", "1", "--calls", "50", "--sections", "concurrency",
                       "--json", str(out))
    printed = capsys.readouterr().out
    assert status == 0  # a missed target fails only --check
    assert "async policy, 10 tasks x 5 calls: within 1.2x of bare awaits: " in printed
    assert " calls/s; bare await: " in printed
    assert (f" calls/s; {section.PEERS}: " in printed) is PEERS_INSTALLED
    data = json.loads(out.read_text())
    rows = {c["name"]: c for c in data["cases"] if c["group"] == section.GROUP}
    assert set(rows) == FLEET_NAMES
    for row in rows.values():
        assert row["calls_per_s"] == pytest.approx(1e9 / row["ns"])
    assert rows["bare await"]["vs_bare"] == 1.0  # the fleet's own baseline
    fleet_targets = [t for t in data["targets"] if "10 tasks x 5 calls" in t["what"]]
    assert len(fleet_targets) == 2
    for target in fleet_targets:
        if target["ratio"] is not None:
            assert target["held"] in (True, False) and target["shown"]
            assert set(target["figures"]) == {"calls_per_s", "against_calls_per_s"}
    assert {c["group"] for c in data["cases"]} >= {section.GROUP, THREADS}
