"""The ``hedging`` bench section: the tail a p95 hedge cuts, in virtual time.

The provider is the demo's proxmox: log-normal latency with p50 60 ms and
p99 500 ms. :data:`CALLS` calls one after another (:data:`QUICK_CALLS` with
``--quick``), each drawing its first request's latency and a possible
hedge's, from one seed, so the hedged and the unhedged run see the same
first requests. The hedged run asks a real :class:`~virtrigaud_resilience.hedging.Hedging`
(``max_hedges=1, delay="p95", window=1000``: the native histogram) for each
call's delay and feeds it each call's latency, as ``HedgedPolicy`` does; a
call whose first request is slower than the delay sends the hedge and
answers with whichever is first (``min(first, delay + hedge)``). The race
itself (tasks, cancellation, what comes back) is tested end to end in
tests/test_hedging.py on a simulated event loop.

Targets (issue 25): the hedged p99 <= 75% of the unhedged one (the p95
delay alone is 54% of it; about 69% is the best a p95 hedge can do), and
<= 7% extra requests.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ..hedging import Hedging
from .suite import Suite, Target

__all__ = ["CALLS", "GROUP", "HedgingRun", "HedgingTarget", "QUICK_CALLS", "hedging_targets",
           "simulate"]

GROUP = "hedging"
CALLS, QUICK_CALLS = 200_000, 20_000
#: The demo's proxmox: p50 60 ms, p99 500 ms, log-normal.
P50, P99 = 0.060, 0.500
_Z99 = 2.3263478740408408  # the standard normal's 99th percentile
MU, SIGMA = math.log(P50), math.log(P99 / P50) / _Z99
SEED = 25
#: Targets: hedged p99 / unhedged p99, and extra requests per call.
P99_BOUND, EXTRA_BOUND = 0.75, 0.07


@dataclass(frozen=True)
class HedgingRun:
    """One run's figures: p50, p99 (seconds) and extra requests per call."""

    p50: float
    p99: float
    extra: float


def simulate(calls: int, hedged: bool, seed: int = SEED) -> HedgingRun:
    """``calls`` sequential calls of the log-normal provider (see the module docstring)."""
    draw = random.Random(seed).lognormvariate
    hedging = Hedging("bench", 1, "p95", window=1000)
    latencies = []
    hedges = 0
    for _ in range(calls):
        first, hedge = draw(MU, SIGMA), draw(MU, SIGMA)  # both drawn: the runs stay in step
        delay = hedging.delay_now() if hedged else None
        if delay is not None and first > delay:
            hedges += 1
            latency = min(first, delay + hedge)
        else:
            latency = first
        hedging.record(latency)
        latencies.append(latency)
    latencies.sort()
    return HedgingRun(latencies[calls // 2], latencies[int(calls * 0.99)], hedges / calls)


def hedging_targets(suite: Suite) -> list[Target]:
    """Both runs now, and the two targets."""
    calls = QUICK_CALLS if suite.repeats == 1 else CALLS
    runs = {"unhedged": simulate(calls, False), "hedged": simulate(calls, True)}
    return [
        HedgingTarget(f"hedging p95: p99 <= {P99_BOUND:.0%} of the unhedged p99",
                      (GROUP, "hedged"), (GROUP, "unhedged"), P99_BOUND, runs, calls),
        HedgingTarget(f"hedging p95: extra requests <= {EXTRA_BOUND:.0%}",
                      (GROUP, "hedged"), (GROUP, "extra"), EXTRA_BOUND, runs, calls),
    ]


@dataclass
class HedgingTarget(Target):
    """The hedged run against the unhedged one: its p99's ratio (``against``
    is ``unhedged``) or its extra requests per call (``against`` is ``extra``)."""

    runs: dict[str, HedgingRun] | None = None
    calls: int = 0

    def ratio(self, suite: Suite) -> float | None:
        runs = self.runs or {}
        hedged, unhedged = runs.get("hedged"), runs.get("unhedged")
        if hedged is None or unhedged is None:
            return None
        return hedged.extra if self.against[1] == "extra" else hedged.p99 / unhedged.p99

    def shown(self, ratio: float) -> str:
        return f"{ratio:.1%}"

    def detail(self, suite: Suite) -> str:
        runs = self.runs or {}
        hedged, unhedged = runs["hedged"], runs["unhedged"]
        return (f"p99 {hedged.p99 * 1e3:.0f} ms hedged, {unhedged.p99 * 1e3:.0f} ms unhedged; "
                f"p50 {hedged.p50 * 1e3:.0f} ms; {hedged.extra:.1%} extra requests; "
                f"{self.calls:,} calls, virtual time")

    def figures(self, suite: Suite) -> dict[str, float]:
        runs = self.runs or {}
        hedged, unhedged = runs["hedged"], runs["unhedged"]
        return {"calls": float(self.calls), "p99_hedged_s": hedged.p99,
                "p99_unhedged_s": unhedged.p99, "p50_hedged_s": hedged.p50,
                "extra_requests": hedged.extra}
