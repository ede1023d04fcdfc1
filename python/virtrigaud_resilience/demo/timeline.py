"""The run over time: one sample per simulated second, and its plot.

:class:`Timeline` samples each provider's breaker state and cumulative
admitted calls every simulated second (a task on the simulated loop, so
paced and instant runs sample alike). :func:`plot` draws it with matplotlib
(imported there, never before): admitted calls per second per provider
above, each breaker's state below, the scripted outage shaded on both (and
any slowdown, in another colour).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..breaker import BreakerState
from .fleet import SLOWDOWN_FACTOR, Fleet

__all__ = ["Timeline", "plot"]

#: Colours per breaker state, and per provider line.
_STATE_COLOURS = {BreakerState.CLOSED: "#2ca02c", BreakerState.HALF_OPEN: "#ff7f0e",
                  BreakerState.OPEN: "#d62728"}
#: Seconds the calls-per-second line averages over (a moving average).
_SMOOTHING = 15


@dataclass
class Timeline:
    """Per-second samples of a run: ``t`` (simulated seconds) and, per provider,
    the cumulative admitted calls at that time; and each breaker's
    transitions, ``(simulated seconds, state entered)``."""

    labels: list[str]
    outages: list[tuple[str, float, float]]
    rate_limit: float
    vms: list[int]
    t: list[float] = field(default_factory=list)
    admitted: list[list[int]] = field(default_factory=list)
    ready: list[list[int]] = field(default_factory=list)
    transitions: list[list[tuple[float, BreakerState]]] = field(default_factory=list)
    #: (provider, start, end) of each scripted slowdown (``--slowdown``).
    slowdowns: list[tuple[str, float, float]] = field(default_factory=list)

    @classmethod
    def of(cls, fleet: Fleet) -> Timeline:
        """A timeline of ``fleet``'s providers (their transitions, live lists)."""
        return cls([p.label for p in fleet.providers],
                   [(p.label, *p.outage) for p in fleet.providers if p.outage],
                   fleet.config.rate_limit.qps, [p.vms for p in fleet.providers],
                   admitted=[[] for _ in fleet.providers], ready=[[] for _ in fleet.providers],
                   transitions=[p.transitions for p in fleet.providers],
                   slowdowns=[(p.label, *p.slowdown) for p in fleet.providers if p.slowdown])

    def sample(self, fleet: Fleet) -> None:
        """Records the providers' admitted calls and Ready VMs now."""
        self.t.append(fleet.clock.now())
        for admitted, ready, provider in zip(self.admitted, self.ready, fleet.providers):
            admitted.append(provider.admitted)
            ready.append(provider.ready)

    async def record(self, fleet: Fleet) -> None:
        """Samples every simulated second until the fleet is done."""
        while True:
            self.sample(fleet)
            if fleet.done:
                return
            await asyncio.sleep(1.0)

    def calls_per_second(self, index: int) -> list[float]:
        """Admitted calls per second of provider ``index``, one value per
        sample after the first, averaged over the last few seconds."""
        admitted, t = self.admitted[index], self.t
        rates = []
        for i in range(1, len(t)):
            j = max(0, i - _SMOOTHING)
            span = t[i] - t[j]
            rates.append((admitted[i] - admitted[j]) / span if span > 0 else 0.0)
        return rates


def plot(timeline: Timeline, path: str | Path, title: str) -> None:
    """Writes the timeline as a PNG at ``path``."""
    from ..cli._plotting import pyplot, save_png
    from matplotlib.patches import Patch

    plt = pyplot()
    minutes = [t / 60 for t in timeline.t]
    fig, (calls, ready, states) = plt.subplots(
        3, 1, figsize=(8.5, 5.6), sharex=True, height_ratios=[2.2, 1.1, 1],
        layout="constrained")
    for axis in (calls, ready, states):
        for _label, start, end in timeline.outages:
            axis.axvspan(start / 60, end / 60, color="#d62728", alpha=0.10, lw=0)
        # The slow pair shares one slowdown: shaded once.
        for start, end in sorted({(start, end) for _label, start, end in timeline.slowdowns}):
            axis.axvspan(start / 60, end / 60, color="#9467bd", alpha=0.10, lw=0)
    for index, label in enumerate(timeline.labels):
        calls.plot(minutes[1:], timeline.calls_per_second(index), lw=1.1, label=label)
        ready.plot(minutes, [100 * r / max(1, timeline.vms[index])
                             for r in timeline.ready[index]], lw=1.1)
    calls.axhline(timeline.rate_limit, color="#555555", lw=0.8, ls="--")
    calls.text(minutes[-1] if minutes else 0, timeline.rate_limit,
               f"rate limit {timeline.rate_limit:g}/s ",
               ha="right", va="bottom", fontsize=7, color="#555555")
    calls.set_ylabel(f"admitted calls/s\n({_SMOOTHING} s average)", fontsize=8)
    calls.set_ylim(0, timeline.rate_limit * 1.6)
    calls.legend(loc="upper left", fontsize=8, ncols=len(timeline.labels), frameon=False)
    calls.set_title(title, fontsize=10)
    for label, start, end in timeline.outages:
        calls.text((start + end) / 120, timeline.rate_limit * 0.3, f"{label} outage\n"
                   "(connections refused)", ha="center", va="center", fontsize=8,
                   color="#a01010")
    for start, end in sorted({(start, end) for _label, start, end in timeline.slowdowns}):
        calls.text((start + end) / 120, timeline.rate_limit * 1.3, "slowdown\n"
                   f"(latency x{SLOWDOWN_FACTOR:g})", ha="center", va="center", fontsize=8,
                   color="#5b3a8a")
    ready.set_ylabel("VMs Ready %", fontsize=8)
    ready.set_ylim(-5, 105)
    _state_bands(states, timeline)
    states.set_xlabel("simulated minutes")
    states.set_xlim(minutes[0] if minutes else 0, minutes[-1] if minutes else 1)
    handles = [Patch(color=colour, label=state.name.lower().replace("_", "-"))
               for state, colour in _STATE_COLOURS.items()]
    states.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.6),
                  ncols=3, fontsize=8, frameon=False, title="breaker state", title_fontsize=8)
    for axis in (calls, ready, states):
        axis.tick_params(labelsize=8)
    save_png(fig, path)


def _state_bands(axis: Any, timeline: Timeline) -> None:
    """One horizontal band per provider, coloured by the breaker's state; a
    tick where it went half-open (a probe: often over in a moment)."""
    end = timeline.t[-1] if timeline.t else 0.0
    for row, transitions in enumerate(timeline.transitions):
        for start, stop, state in state_spans(transitions, end):
            axis.broken_barh([(start / 60, (stop - start) / 60)], (row - 0.4, 0.8),
                             color=_STATE_COLOURS[state], lw=0)
        probes = [t / 60 for t, state in transitions if state is BreakerState.HALF_OPEN]
        axis.vlines(probes, row - 0.45, row + 0.45, color=_STATE_COLOURS[BreakerState.HALF_OPEN],
                    lw=1.5)
    axis.set_yticks(range(len(timeline.labels)), timeline.labels, fontsize=8)
    axis.set_ylim(len(timeline.labels) - 0.5, -0.5)


def state_spans(transitions: Sequence[tuple[float, BreakerState]],
                end: float) -> list[tuple[float, float, BreakerState]]:
    """The breaker's states as ``(start, stop, state)`` spans from 0 to
    ``end``, closed first, from its transitions."""
    spans: list[tuple[float, float, BreakerState]] = []
    start, state = 0.0, BreakerState.CLOSED
    for t, new in transitions:
        if t > start:
            spans.append((start, t, state))
        start, state = t, new
    if end > start:
        spans.append((start, end, state))
    return spans
