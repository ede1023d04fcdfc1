"""The ``adaptive`` bench section: issue 24's scenarios meet their targets,
deterministically (virtual time, seeded draws)."""

from __future__ import annotations

import math

import pytest
from virtrigaud_resilience.bench import adaptive
from virtrigaud_resilience.bench.sections import SECTIONS
from virtrigaud_resilience.bench.suite import Suite


@pytest.fixture(scope="module")
def targets() -> list[adaptive.ScenarioTarget]:
    found = SECTIONS["adaptive"](Suite(repeats=1))
    assert all(isinstance(t, adaptive.ScenarioTarget) for t in found)
    return found  # type: ignore[return-value]


def test_every_target_is_held(targets: list[adaptive.ScenarioTarget]) -> None:
    suite = Suite(repeats=1)
    missed = [(t.what, t.shown(r)) for t in targets
              if (r := t.ratio(suite)) is None or r > t.bound]
    assert not missed
    assert len(targets) == 6


def test_the_static_figures_are_shown_beside(targets: list[adaptive.ScenarioTarget]) -> None:
    notes = " ".join(t.note for t in targets)
    assert "a static bucket: 25.0%" in notes
    assert "a static bulkhead of 64" in notes


def test_runs_are_deterministic() -> None:
    assert adaptive.quota_run(adaptive=True, seconds=90) == \
        adaptive.quota_run(adaptive=True, seconds=90)


def test_a_static_bulkhead_misses_what_the_adaptive_one_meets() -> None:
    """The scenario can fail: a limit that never moves never settles near 16."""
    static, clock = adaptive._static(64)
    run = adaptive.capacity_run(static, clock, adaptive._knees(64, 16), seconds=45)
    assert math.isinf(run.settled(adaptive.CHANGE_AT, lambda limit: 12 <= limit <= 20))
    assert run.p99(adaptive.CHANGE_AT + 10) / adaptive.BASE_LATENCY > 2
