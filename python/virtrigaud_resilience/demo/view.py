"""What the demo shows: a live rich view, a plain line per second, the summary tables.

Every number is read from the fleet's objects when a frame is drawn (the
breakers', buckets' and retriers' own counters), never counted for the view.
The live view and the summary use one row layout (:func:`provider_rows`)
over :meth:`ProviderRun.summary` dicts, so what scrolls by and what is left
at the end read alike. rich is imported only by :class:`LiveView` and, on a
terminal, by the summary tables.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from ..cli._console import Cell, print_table
from .fleet import SLOWDOWN_FACTOR, Fleet

__all__ = ["LiveView", "PlainView", "print_summary", "provider_rows"]

#: Successful operations the live p50/p99 are computed over (the most recent ones).
RECENT = 2_000

_STATE_STYLE = {"closed": "green", "half_open": "bold yellow", "open": "bold red"}
HEADERS = ("provider", "breaker", "admitted", "rejected", "rate-limited", "quota 429",
           "rate/s", "retries", "failures", "p50", "p99", "Ready")
_RIGHT = (False, False, *([True] * 10))


def clock_text(seconds: float) -> str:
    """``m:ss`` of simulated time."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def duration_text(seconds: float) -> str:
    """A latency: ``23 ms``, ``1.4 s``."""
    return f"{seconds * 1e3:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def provider_rows(providers: Sequence[Mapping[str, Any]]) -> list[list[Cell]]:
    """The providers table's rows, from :meth:`ProviderRun.summary` dicts."""
    rows: list[list[Cell]] = []
    for p in providers:
        state = p["breaker"]
        rows.append([
            p["provider"], (state.replace("_", "-"), _STATE_STYLE[state]),
            f"{p['admitted']:,}", f"{p['rejected_by_breaker']:,}",
            f"{p['rate_limited']:,}", f"{p['quota_rate_limit_answers']:,}",
            f"{p['rate_qps']:.3g}",
            f"{p['retries']:,}", f"{p['breaker_failures']:,}",
            duration_text(p["p50_ms"] / 1e3), duration_text(p["p99_ms"] / 1e3),
            f"{p['ready']}/{p['vms']}",
        ])
    return rows


def scenario_text(fleet: Fleet) -> str:
    """What is scripted: the outage, the quota and any slowdown."""
    parts = []
    for p in fleet.providers:
        if p.outage:
            parts.append(f"{p.label} outage {clock_text(p.outage[0])}-{clock_text(p.outage[1])} "
                         "(connections refused)")
        if p.slowdown:
            breaker = "window breaker" if p.breaker.windowed else "consecutive breaker"
            parts.append(f"{p.label} slow {clock_text(p.slowdown[0])}-"
                         f"{clock_text(p.slowdown[1])} (x{SLOWDOWN_FACTOR:g}, {breaker})")
        if p.plan.quota:
            parts.append(f"{p.label} quota {p.plan.quota.qps:g}/s (RateLimit, Retry-After)")
    return "; ".join(parts)


class _Rate:
    """Provider calls per second of real time, between two readings."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._last = (time.perf_counter(), fleet.calls)
        self.value = 0.0

    def update(self) -> float:
        now, calls = time.perf_counter(), self._fleet.calls
        then, before = self._last
        if now - then >= 0.5:
            self.value = (calls - before) / (now - then)
            self._last = (now, calls)
        return self.value


class PlainView:
    """One line per second of real time (when stdout is not a terminal)."""

    period = 1.0

    def __init__(self, fleet: Fleet, stream: IO[str] | None = None) -> None:
        self._fleet = fleet
        self._stream = sys.stdout if stream is None else stream
        self._rate = _Rate(fleet)

    def start(self) -> None:
        print(f"scripted: {scenario_text(self._fleet)}", file=self._stream, flush=True)

    def update(self) -> None:
        fleet = self._fleet
        parts = [f"t={clock_text(fleet.clock.now())}", f"Ready {fleet.ready}/{len(fleet.vms)}"]
        for p in fleet.providers:
            p50, p99 = p.latency_quantiles(RECENT) or (0.0, 0.0)
            parts.append(f"{p.label} {p.breaker.state.name.lower()} adm={p.admitted} "
                         f"rej={p.breaker.rejected} rl={p.rate_limited} "
                         f"quota429={p.quota_answers} retries={p.retries} "
                         f"p50={duration_text(p50)} p99={duration_text(p99)} "
                         f"ready={p.ready}/{p.vms}")
        parts.append(f"{self._rate.update():,.0f} calls/s")
        print(" | ".join(parts), file=self._stream, flush=True)

    def stop(self) -> None:
        self.update()


class LiveView:
    """The rich live view: progress bars, the providers table, recent breaker
    transitions and the call rate, redrawn by the loop's real-time hook."""

    period = 0.25

    def __init__(self, fleet: Fleet, title: str) -> None:
        from rich.console import Console
        from rich.live import Live

        self._fleet = fleet
        self._title = title
        self._rate = _Rate(fleet)
        self.console = Console()
        self._live = Live(console=self.console, auto_refresh=False, transient=False)

    def start(self) -> None:
        self._live.start()
        self.update()

    def update(self) -> None:
        self._live.update(self._frame(), refresh=True)

    def stop(self) -> None:
        self.update()
        self._live.stop()

    def _frame(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        from ..cli._console import rich_table

        fleet = self._fleet
        now = fleet.clock.now()
        bars = Table.grid(padding=(0, 1))
        settling = "  (settling: failed VMs retried)" if now > fleet.span else ""
        bars.add_row("simulated time", ProgressBar(total=fleet.span, completed=min(now, fleet.span),
                                                   width=40),
                     f"{clock_text(now)} / {clock_text(fleet.span)}{settling}")
        bars.add_row("VMs Ready", ProgressBar(total=len(fleet.vms), completed=fleet.ready,
                                              width=40, complete_style="green"),
                     f"{fleet.ready} / {len(fleet.vms)}")
        table = rich_table("", HEADERS,
                           provider_rows([p.summary(last=RECENT) for p in fleet.providers]),
                           _RIGHT)
        events = Text()
        for t, label, state in recent_transitions(fleet, 4):
            events.append(f"  {clock_text(t)} {label} breaker -> ")
            events.append(state.replace("_", "-"), style=_STATE_STYLE[state])
            events.append("\n")
        rate = Text(f"{self._rate.update():,.0f} provider calls/s of real time through the "
                    "policies", style="bold")
        return Group(Text(self._title, style="bold"), Text(f"scripted: {scenario_text(fleet)}",
                                                           style="dim"),
                     bars, table, Text("recent breaker transitions:", style="dim"), events, rate)


def recent_transitions(fleet: Fleet, n: int) -> list[tuple[float, str, str]]:
    """The last ``n`` breaker transitions of all providers: (t, provider, state)."""
    merged = [(t, p.label, state.name.lower()) for p in fleet.providers
              for t, state in p.transitions[-n:]]
    return sorted(merged)[-n:]


def print_summary(result: Mapping[str, Any], stream: IO[str] | None = None) -> None:
    """The summary tables: providers, VMs' Ready conditions by reason, and the measurements."""
    stream = sys.stdout if stream is None else stream
    summary, measured = result["summary"], result["measured"]
    span = (f"interrupted at {clock_text(summary['ended_at'])} of "
            f"{clock_text(summary['simulated_seconds'])}" if measured["interrupted"]
            else f"{clock_text(summary['simulated_seconds'])} simulated")
    print_table(f"Summary: {summary['vms']} VMs, {summary['profile']} profile, seed "
                f"{summary['seed']}, {span}",
                HEADERS, provider_rows(summary["providers"]), _RIGHT, stream)
    for p in summary["providers"]:
        opened = sum(1 for t in p["transitions"] if t["to"] == "open")
        if opened:
            moves = ", ".join(f"{clock_text(t['t'])} {t['to'].replace('_', '-')}"
                              for t in p["transitions"])
            print(f"  {p['provider']} breaker opened {opened}x: {moves}", file=stream)
        refused = p.get("retries_refused_by_budget", 0)
        if refused:
            print(f"  {p['provider']} retry budget refused {refused:,} retries", file=stream)
    print(file=stream)
    reasons = summary["ready_by_reason"]
    print_table("VMs by Ready condition reason", ("reason", "VMs"),
                [[reason, str(n)] for reason, n in reasons.items()], (False, True), stream)
    for hedged in summary.get("hedging", []):
        operations = ", ".join(f"{op}s at {delay}" for op, delay in hedged["hedged"].items())
        print(f"{hedged['provider']} hedges its {operations}: describe p99 "
              f"{hedged['describe_p99_ms']:,.0f} ms, {hedged['unhedged_describe_p99_ms']:,.0f} ms "
              f"without hedging (the same seed, replayed); {hedged['hedges']:,} hedges for "
              f"{hedged['describes']:,} describes", file=stream)
    print(file=stream)
    rate = measured.get("provider_calls_per_second")
    mode = ("virtual time" if measured["virtual_time"]
            else f"{measured['time_scale']:g}x real time")
    print(f"{summary['calls']:,} provider calls through the policies in "
          f"{measured['wall_seconds']:.2f} s of real time ({mode})"
          + (f": {rate:,.0f} calls/s" if rate else ""), file=stream)
