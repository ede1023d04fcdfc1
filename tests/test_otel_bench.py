"""The bench's ``otel`` section: vr.otel's five settings measured in one
run, each judged against issue 26's targets (printed and in the JSON; the
timings themselves are not asserted on a loaded machine, only what must
hold whatever the load)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")

from virtrigaud_resilience import otel  # noqa: E402
from virtrigaud_resilience.bench import add_arguments, run  # noqa: E402
from virtrigaud_resilience.bench import otel as section  # noqa: E402
from virtrigaud_resilience.bench.suite import Suite, measure  # noqa: E402
from virtrigaud_resilience.policy import Policy  # noqa: E402

TARGETS = [
    "otel not instrumented: no change (<= 1.05x never instrumented)",
    "otel instrumented, API without SDK: <= 1.05x not instrumented",
    "otel instrumented, SDK metrics on, traces sampled out: <= +60 ns a call",
    "otel instrumented, ParentBased sampler, parent not sampled: <= +60 ns a call",
    "otel a sampled span per attempt: <= +1.5 us an attempt over the SDK's own spans",
]


def test_the_five_settings_are_measured_in_one_suite_and_leave_nothing_on() -> None:
    native = Policy.__dict__["execute"]
    suite = Suite(repeats=1)
    targets = section.otel_cases(suite)
    assert [t.what for t in targets] == TARGETS
    measure(suite, rounds=1, n=200)
    cases = {case.name: case.best_ns for case in suite.cases if case.group == section.GROUP}
    assert set(cases) == {section.NEVER, section.FLOOR, section.AFTER, section.NO_OP,
                          section.SAMPLED_OUT, section.PARENT_OUT, section.SAMPLED}
    assert all(0 < ns < float("inf") for ns in cases.values())
    # Whatever the load: spans cost more than no spans, and each case's
    # teardown gave the native path back.
    assert cases[section.SAMPLED] > cases[section.SAMPLED_OUT]
    assert cases[section.SAMPLED] > cases[section.PARENT_OUT]  # its calls made no span
    assert not otel.is_instrumented() and Policy.__dict__["execute"] is native


def test_the_section_runs_from_the_command(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "bench.json"
    argv = ["--quick", "--rounds", "1", "--calls", "200", "--sections", "otel",
            "--json", str(out)]
    assert run(parser.parse_args(argv), parser) == 0
    printed = capsys.readouterr().out
    for what in TARGETS:
        assert f"  {what}: " in printed
    assert [t["what"] for t in json.loads(out.read_text())["targets"]
            if t["what"].startswith("otel")] == TARGETS
