"""How the results are shown: the table, the targets, JSON, a bar chart.

One row per case: ns/call (its best round), the ratio to a bare call (a bare
``await`` for async cases) and, on a peer's row, how many times faster ours
is (the first ``virtrigaud`` case of the group against that peer). The table
is rich on a terminal, plain text elsewhere; the plot is matplotlib,
imported by :func:`plot` only.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..cli._console import Cell, print_table
from .suite import BARE, BARE_AWAIT, Case, Suite, Target

__all__ = ["Row", "print_report", "plot", "rows", "target_results", "to_json"]

_ROLE_STYLE = {"ours": "bold cyan", "peer": "", "baseline": "dim", "reference": "dim"}


@dataclass(frozen=True)
class Row:
    group: str
    name: str
    role: str
    ns: float
    vs_bare: float | None
    ours_faster_by: float | None


def rows(suite: Suite) -> list[Row]:
    """The table's rows: by group (in the order groups first appear), each
    group's cases in the order they were added. "vs bare" is against the
    group's own bare call (or await) where it has one (a fleet of tasks is
    compared with a fleet of bare awaits), else the first in the suite."""
    order = {group: i for i, group in reversed(list(enumerate(c.group for c in suite.cases)))}
    result = []
    for case in sorted(suite.cases, key=lambda c: order[c.group]):
        bare_name = BARE_AWAIT if case.is_async else BARE
        baseline = _find(suite, bare_name, case.group) or _find(suite, bare_name)
        ours = next((c for c in suite.cases if c.group == case.group and c.role == "ours"),
                    None)
        result.append(Row(
            case.group, case.name, case.role, case.best_ns,
            case.best_ns / baseline.best_ns if baseline else None,
            case.best_ns / ours.best_ns if ours and case.role == "peer" else None))
    return result


def _find(suite: Suite, name: str, group: str | None = None) -> Case | None:
    return next((c for c in suite.cases
                 if c.name == name and group in (None, c.group)), None)


def target_results(suite: Suite, targets: list[Target]) -> list[dict[str, Any]]:
    """Each target's measured ratio and whether it held (None: not measurable)."""
    results: list[dict[str, Any]] = []
    for t in targets:
        ratio = t.ratio(suite)
        if ratio is None:
            results.append({"what": t.what, "ratio": None, "bound": t.bound, "held": None,
                            "shown": "", "detail": "", "figures": {}})
            continue
        results.append({"what": t.what, "ratio": ratio, "bound": t.bound,
                        "held": ratio <= t.bound, "shown": t.shown(ratio),
                        "detail": t.detail(suite), "figures": t.figures(suite)})
    return results


def all_held(suite: Suite, targets: list[Target]) -> bool:
    """Whether every measurable target and timing bound held."""
    return (all(r["held"] is not False for r in target_results(suite, targets))
            and all(bound is None or ms <= bound for _, ms, bound in suite.timings))


def to_json(suite: Suite, targets: list[Target], header: dict[str, Any]) -> dict[str, Any]:
    """Everything measured, JSON-ready."""
    return {
        **header,
        "cases": [{"group": r.group, "name": r.name, "role": r.role, "ns": r.ns,
                   "calls_per_s": 1e9 / r.ns, "vs_bare": r.vs_bare,
                   "ours_faster_by": r.ours_faster_by}
                  for r in rows(suite)],
        "targets": target_results(suite, targets),
        "timings": [{"what": w, "ms": ms, "bound_ms": b} for w, ms, b in suite.timings],
        "skipped": [{"what": s.what, "why": s.why, "install": s.install}
                    for s in suite.skipped],
    }


def print_report(suite: Suite, targets: list[Target], title: str,
                 stream: IO[str] | None = None) -> None:
    """The table, then the targets (ok / MISS), the timings and what was skipped."""
    stream = sys.stdout if stream is None else stream
    table: list[list[Cell]] = []
    for r in rows(suite):
        style = _ROLE_STYLE[r.role]
        table.append([r.group, (r.name, style), f"{r.ns:,.1f}",
                      f"{r.vs_bare:.2f}x" if r.vs_bare is not None else "",
                      f"{r.ours_faster_by:,.1f}x" if r.ours_faster_by is not None else ""])
    print_table(title, ("group", "case", "ns/call", "vs bare", "ours faster by"), table,
                (False, False, True, True, True), stream)
    print(file=stream)
    for result in target_results(suite, targets):
        if result["ratio"] is None:
            print(f"  n/a   {result['what']} (peer not measured)", file=stream)
            continue
        detail = f" ({result['detail']})" if result["detail"] else ""
        print(f"  {'ok  ' if result['held'] else 'MISS'}  {result['what']}: "
              f"{result['shown']}{detail}", file=stream)
    for what, ms, bound in suite.timings:
        if bound is None:
            print(f"  info  {what}: {ms:.1f} ms (no target)", file=stream)
            continue
        print(f"  {'ok  ' if ms <= bound else 'MISS'}  {what}: {ms:.1f} ms "
              f"(target <= {bound:g} ms)", file=stream)
    for skipped in suite.skipped:
        print(f"  skipped {skipped}", file=stream)


def plot(suite: Suite, path: str | Path, title: str) -> None:
    """A horizontal bar per case, ns/call on a log scale, ours highlighted."""
    from ..cli._plotting import pyplot, save_png

    plt = pyplot()
    data = rows(suite)
    colours = {"ours": "#1f77b4", "peer": "#b0b0b0", "baseline": "#404040",
               "reference": "#7fb2d9"}
    fig, axis = plt.subplots(figsize=(8.5, 0.26 * len(data) + 1.1), layout="constrained")
    positions = list(range(len(data)))
    axis.barh(positions, [r.ns for r in data], color=[colours[r.role] for r in data])
    axis.set_yticks(positions, [f"{r.name}" for r in data], fontsize=7)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("ns per call (log scale; shorter is faster)", fontsize=8)
    axis.tick_params(axis="x", labelsize=7)
    axis.set_title(title, fontsize=9)
    for y, r in zip(positions, data):
        label = f"{r.ns:,.0f} ns" + (f"  (ours {r.ours_faster_by:,.0f}x faster)"
                                     if r.ours_faster_by else "")
        axis.text(r.ns * 1.08, y, label, va="center", fontsize=6.5)
    groups = [i for i in range(1, len(data)) if data[i].group != data[i - 1].group]
    for boundary in groups:
        axis.axhline(boundary - 0.5, color="#dddddd", lw=0.8)
    axis.set_xlim(right=max(r.ns for r in data) * 12)
    save_png(fig, path)
