"""The bench report's timings: a bound is a target (ok / MISS, and ``--check``
fails on a miss); a figure without a bound is shown for information and
never fails the run."""

from __future__ import annotations

import io

from virtrigaud_resilience.bench.report import all_held, print_report, to_json
from virtrigaud_resilience.bench.suite import Suite


def suite_with(*timings: tuple[str, float, float | None]) -> Suite:
    suite = Suite()
    suite.timings.extend(timings)
    return suite


def printed(suite: Suite) -> str:
    out = io.StringIO()
    print_report(suite, [], "t", out)
    return out.getvalue()


def test_a_figure_without_a_target_is_shown_and_never_fails_the_run() -> None:
    suite = suite_with(("scrape of 10,000 label sets", 1237.4, None))
    assert "info  scrape of 10,000 label sets: 1237.4 ms (no target)" in printed(suite)
    assert all_held(suite, [])
    assert to_json(suite, [], {})["timings"] == [
        {"what": "scrape of 10,000 label sets", "ms": 1237.4, "bound_ms": None}]


def test_a_timing_over_its_bound_is_a_miss() -> None:
    suite = suite_with(("collect", 19.1, 50.0), ("scrape", 120.0, 100.0))
    text = printed(suite)
    assert "ok    collect: 19.1 ms (target <= 50 ms)" in text
    assert "MISS  scrape: 120.0 ms (target <= 100 ms)" in text
    assert not all_held(suite, [])
