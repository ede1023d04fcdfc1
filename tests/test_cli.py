"""The command line: bad arguments are one line and exit status 2; ``bench`` and its JSON.

``bench --quick`` runs with a tiny round count here: the test checks the
shape and completeness of the results, never a timing. The bench runs in a
process of its own, as a user runs it: its metrics section leaves 10,000
breakers' label sets in the process's metrics, which would weigh on every
later scrape of this one.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtrigaud_resilience.bench import SECTIONS
from virtrigaud_resilience.bench.suite import PIP_NAMES
from virtrigaud_resilience.cli import main


#: The environment for child processes; an editable install (the development
#: set-up) would otherwise announce its rebuild check on stdout.
QUIET_BUILD = {**os.environ, "SKBUILD_EDITABLE_VERBOSE": "0"}


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def bad_arguments(tmp_path: Path) -> list[tuple[list[str], str]]:
    """(argv, what the error line must say)."""
    return [
        (["demo", "--vms", "-5"], "argument --vms: must be between 1 and 100,000, got -5"),
        (["demo", "--vms", "0"], "got 0"),
        (["demo", "--vms", "many"], "must be an integer, got 'many'"),
        (["demo", "--vms", "2.5"], "must be an integer, got '2.5'"),
        (["demo", "--profile", "staging"], "argument --profile: invalid choice: 'staging'"),
        (["demo", "--duration", "-1"], "argument --duration: must be > 0"),
        (["demo", "--duration", "nan"], "got nan"),
        (["demo", "--duration", "inf"], "got inf"),
        (["demo", "--duration", "1e9"], "<= 3600 seconds"),
        (["demo", "--seed", "-1"], "argument --seed"),
        (["demo", "--metrics-port", "0"], "argument --metrics-port"),
        (["demo", "--metrics-port", "70000"], "got 70000"),
        (["demo", "--plot", str(tmp_path / "missing" / "t.png")], "--plot"),
        (["demo", "--plot", str(tmp_path)], "is a directory"),
        (["demo", "--json", str(tmp_path / "missing" / "s.json")], "no such directory"),
        (["demo", "--virtual-time", "--bogus"], "unrecognized arguments: --bogus"),
        (["bench", "--rounds", "0"], "argument --rounds"),
        (["bench", "--calls", "-3"], "argument --calls"),
        (["bench", "--sections", "nope"], "invalid choice: 'nope'"),
        (["bench", "--plot", str(tmp_path / "missing" / "b.png")], "no such directory"),
        (["bench", "--json", str(tmp_path)], "is a directory"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: command"),
    ]


def test_bad_arguments_are_one_line_and_status_2(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in bad_arguments(tmp_path):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, argv
        assert err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert err.startswith("virtrigaud-resilience") and ": error: " in err, (argv, err)
        assert message in err, (argv, err)


def test_port_in_use(busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--virtual-time", "--metrics-port", str(busy_port)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err == (f"virtrigaud-resilience demo: error: --metrics-port {busy_port}: cannot "
                   f"listen on 127.0.0.1:{busy_port}: Address already in use\n")


def test_the_installed_command_reports_bad_arguments_without_a_traceback() -> None:
    """Through a real process, as a user types it."""
    result = subprocess.run([sys.executable, "-m", "virtrigaud_resilience.cli", "demo",
                             "--vms", "-5"], capture_output=True, text=True, timeout=60,
                            env=QUIET_BUILD)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == ["virtrigaud-resilience demo: error: argument --vms: must be between 1 "
                      "and 100,000, got -5"]
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ bench --

#: Our cases and the baselines, by group: they are always there.
OURS = {
    ("call", "bare call"),
    ("rate limiter", "virtrigaud TokenBucket.try_acquire()"),
    ("circuit breaker", "virtrigaud CircuitBreaker.call(noop)"),
    ("circuit breaker", "virtrigaud CircuitBreaker(CountWindow(100)).call(noop)"),
    ("circuit breaker", "virtrigaud CircuitBreaker(TimeWindow(60)).call(noop)"),
    ("backoff", "virtrigaud Backoff.delay(3)"),
    ("backoff", "pure-Python guide formula"),
    ("policy sync", "virtrigaud Policy.execute(noop)"),
    ("policy sync", "virtrigaud vr.retry(config, noop)"),
    ("policy sync", "virtrigaud Policy.execute(noop), ratio retry budget"),
    ("policy async", "bare await"),
    ("policy async", "virtrigaud await Policy.execute_async"),
    ("policy async", "virtrigaud await under a per-attempt deadline"),
    ("metrics", "virtrigaud Policy.execute(noop), metrics registered"),
    ("metrics", "Policy.execute(noop), metrics not registered"),
    ("drop-in pybreaker", "virtrigaud compat.pybreaker CircuitBreaker.call(noop)"),
    ("drop-in circuitbreaker", "virtrigaud compat.circuitbreaker @circuit noop()"),
    ("drop-in aiolimiter", "virtrigaud compat.aiolimiter async with limiter"),
    ("retry drop-ins", "bare call"),
    ("retry drop-ins", "virtrigaud compat.tenacity @retry"),
    ("retry drop-ins", "virtrigaud compat.backoff @on_exception"),
    ("retry drop-ins async", "bare await"),
    ("retry drop-ins async", "virtrigaud compat.tenacity async @retry"),
    ("retry drop-ins async", "virtrigaud compat.backoff async @on_exception"),
} | {("threads", f"{workload}, {threads}")
     for workload in ["bare call", "plain object's method, shared"] + [
         f"virtrigaud {call}, {sharing}"
         for call in ("CircuitBreaker.call(noop)", "Policy.execute(noop)",
                      "TokenBucket.try_acquire()")
         for sharing in ("one per thread", "shared")]
     for threads in ("1 thread", "2 threads")}
#: Whether the GIL is enabled (the threads section's targets are judged only without it).
GIL = getattr(sys, "_is_gil_enabled", lambda: True)()
#: Each peer's rows and the module they need.
PEERS = {
    "limits": {("rate limiter", "limits FixedWindow.hit()")},
    "pyrate_limiter": {("rate limiter", "pyrate-limiter Limiter.try_acquire()")},
    "pybreaker": {("circuit breaker", "pybreaker CircuitBreaker.call(noop)"),
                  ("drop-in pybreaker", "pybreaker CircuitBreaker.call(noop)")},
    "circuitbreaker": {("circuit breaker", "circuitbreaker @circuit noop()"),
                       ("drop-in circuitbreaker", "circuitbreaker @circuit noop()")},
    "aiolimiter": {("drop-in aiolimiter", "aiolimiter async with limiter")},
    "tenacity": {("backoff", "tenacity wait_exponential + wait_random"),
                 ("policy sync", "tenacity @retry alone"),
                 ("policy async", "tenacity async @retry"),
                 ("retry drop-ins", "tenacity @retry"),
                 ("retry drop-ins async", "tenacity async @retry")},
    "backoff": {("policy sync", "backoff @on_exception alone"),
                ("retry drop-ins", "backoff @on_exception"),
                ("retry drop-ins async", "backoff async @on_exception")},
    "stamina": {("policy sync", "stamina @retry alone")},
}


def cli(*argv: str, missing: str | None = None) -> subprocess.CompletedProcess[str]:
    """``virtrigaud-resilience argv`` in a fresh process (with the module
    ``missing`` made unimportable)."""
    code = ("import sys\n"
            + (f"sys.modules[{missing!r}] = None\n" if missing else "")
            + "from virtrigaud_resilience.cli import main\n"
            f"sys.exit(main({list(argv)!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=QUIET_BUILD)


@pytest.fixture(scope="module")
def bench_json() -> dict[str, Any]:
    """``bench --quick --json`` with a tiny round count, run once for the module
    (the adapters, concurrency, memory, hedging, adaptive, amplification and otel sections
    have tests of their own)."""
    sections = [name for name in SECTIONS
                if name not in ("adapters", "concurrency", "memory", "hedging", "adaptive",
                                "amplification", "otel")]
    result = cli("bench", "--quick", "--rounds", "1", "--calls", "200", "--json",
                 "--sections", *sections)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_bench_json_has_every_row(bench_json: dict[str, Any]) -> None:
    rows = {(c["group"], c["name"]): c for c in bench_json["cases"]}
    installed = {m for m in PEERS if importlib.util.find_spec(m) is not None}
    expected = OURS.union(*(PEERS[m] for m in installed))
    if {"tenacity", "pybreaker", "limits"} <= installed:
        expected.add(("policy sync", "tenacity + pybreaker + limits stacked"))
    assert set(rows) == expected
    assert bench_json["rounds"] == 1 and bench_json["calls"] == 200
    for (group, name), row in rows.items():
        assert math.isfinite(row["ns"]) and row["ns"] > 0, name
        assert row["calls_per_s"] == pytest.approx(1e9 / row["ns"]), name
        assert row["vs_bare"] > 0, name
        assert row["role"] in ("ours", "peer", "baseline", "reference")
        if row["role"] == "peer":
            assert row["ours_faster_by"] > 0, name
        else:
            assert row["ours_faster_by"] is None, name
    assert rows[("call", "bare call")]["vs_bare"] == 1.0
    # Every target is listed, measurable where its peers are installed.
    whats = [t["what"] for t in bench_json["targets"]]
    expected_targets = 19 if GIL else 25  # 13 core, 3 + 3 of the drop-ins, 6 of threads
    assert len(whats) == expected_targets and len(set(whats)) == expected_targets
    for target in bench_json["targets"]:
        assert (target["shown"] != "") is (target["ratio"] is not None), target["what"]
        assert isinstance(target["figures"], dict), target["what"]
    # Two scrapes, 100 and 10,000 label sets, and our collect() alone over 10,000.
    assert [t["what"].split(" of ")[0] for t in bench_json["timings"]] == [
        "scrape", "scrape", "our collect()"]
    # A peer that is missing is listed as skipped, with the pip command that installs it.
    for module in set(PEERS) - installed:
        pip = PIP_NAMES.get(module, module)
        assert any(s["install"] == f"pip install {pip}" for s in bench_json["skipped"]), module


def test_bench_sections_are_registered() -> None:
    assert list(SECTIONS) == ["policy", "metrics", "compat", "retry-dropins", "threads",
                             "adapters", "concurrency", "memory", "hedging", "adaptive",
                             "amplification", "otel"]


def test_bench_threads_section_measures_one_and_two_threads() -> None:
    """Each workload with 1 and 2 threads; targets judged on a free-threaded build only."""
    from virtrigaud_resilience.bench import build_suite, measure
    from virtrigaud_resilience.bench.report import target_results

    suite, targets = build_suite(["threads"], repeats=1)
    measure(suite, rounds=1, n=200)
    names = {c.name for c in suite.cases if c.group == "threads"}
    for workload in ("bare call", "plain object's method, shared",
                     "virtrigaud CircuitBreaker.call(noop), shared",
                     "virtrigaud TokenBucket.try_acquire(), one per thread",
                     "virtrigaud Policy.execute(noop), one per thread"):
        assert {workload + ", 1 thread", workload + ", 2 threads"} <= names
    assert all(c.best_ns > 0 for c in suite.cases if c.group == "threads")
    scaling = [r for r in target_results(suite, targets) if "scales" in r["what"]]
    if GIL:
        assert scaling == []
        assert any(s.what == "threads targets" for s in suite.skipped)
    else:
        assert len(scaling) == 6
        assert all(r["ratio"] > 0 and "2 threads vs 1" in r["detail"] for r in scaling)


def test_bench_lists_a_missing_peer_with_its_pip_command() -> None:
    """pybreaker made unimportable: its rows are gone, its install command is shown."""
    result = cli("bench", "--quick", "--rounds", "1", "--calls", "50", "--sections", "policy",
                 missing="pybreaker")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "pybreaker CircuitBreaker.call(noop)" not in out
    assert "skipped pybreaker: pybreaker is not installed (pip install pybreaker)" in out
    assert "n/a   >= 20x faster than pybreaker (peer not measured)" in out


def test_bench_plot_and_json_file(tmp_path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    png, data = tmp_path / "bench.png", tmp_path / "bench.json"
    result = cli("bench", "--quick", "--rounds", "1", "--calls", "50", "--sections", "policy",
                 "--plot", str(png), "--json", str(data))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "ns/call" in out and "ours faster by" in out and f"chart written to {png}" in out
    assert image.imread(str(png)).shape[0] > 200
    assert {c["name"] for c in json.loads(data.read_text())["cases"]} >= {
        "bare call", "virtrigaud Policy.execute(noop)"}


def test_compare_py_is_the_same_command(tmp_path: Path) -> None:
    """benchmarks/compare.py keeps its flags and runs the package's bench."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "compare.py"
    if not script.exists():
        pytest.skip("benchmarks/ is not next to the tests (an installed wheel's run)")
    out = tmp_path / "out.json"
    result = subprocess.run([sys.executable, str(script), "--quick", "--rounds", "1",
                             "--calls", "50", "--sections", "policy", "--json", str(out)],
                            capture_output=True, text=True, timeout=120, env=QUIET_BUILD)
    assert result.returncode == 0, result.stderr
    assert "ours faster by" in result.stdout
    assert json.loads(out.read_text())["rounds"] == 1
