"""The ``amplification`` bench section: how much load retries add in an outage.

A virtual-time scenario (a :class:`~virtrigaud_resilience.ManualClock` and a
:class:`~virtrigaud_resilience.providers.fake.FaultInjectingProvider`):
:data:`RATE` calls per second, one every ``1 / RATE`` s, for :data:`SECONDS`
simulated seconds (:data:`QUICK_SECONDS` with ``--quick``), each retried up
to :data:`ATTEMPTS` attempts in all, at a failure rate of 100% (an outage)
and 10% (transient failures, each attempt drawn alone). Every call runs the
same way with no budget and with each budget kind (the same seed, so the
same draws); retries do not back off (a delay would only move the clock,
which the arrivals drive), so what is compared is each call's attempts and
outcome. The figures, per scenario: attempts per original call (the
amplification: 4.0 at 100% failure without a budget) and the success rate.

Targets (issue 23): at 100% failure, ``ratio(0.2, min_per_second=10)``
<= 1.25 attempts per call and ``tokens(10, 0.1)`` <= 1.1; at 10% failure,
the ratio budget's success rate within 0.5 percentage points of no budget's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import ErrorType, ManualClock, ProviderError, Retrier, RetryBudget, RetryConfig
from .suite import Suite, Target

__all__ = ["ATTEMPTS", "BUDGETS", "GROUP", "QUICK_SECONDS", "RATE", "SECONDS", "Outcome",
           "AmplificationTarget", "amplification_targets", "simulate"]

GROUP = "amplification"
#: Calls per simulated second, simulated seconds (a full run, ``--quick``), attempts per call.
RATE, SECONDS, QUICK_SECONDS, ATTEMPTS = 2_000, 60, 10, 4

#: The budgets compared: label -> factory(clock).
BUDGETS: dict[str, Callable[[ManualClock], RetryBudget | None]] = {
    "no budget": lambda clock: None,
    "ratio(0.2, min_per_second=10)": lambda clock: RetryBudget.ratio(0.2, 10, clock=clock),
    "tokens(10, 0.1)": lambda clock: RetryBudget.tokens(10, 0.1),
    "quota(500)": lambda clock: RetryBudget.quota(500),
}
_RATIO, _TOKENS = "ratio(0.2, min_per_second=10)", "tokens(10, 0.1)"


@dataclass(frozen=True)
class Outcome:
    """One scenario's counts."""

    calls: int
    attempts: int
    successes: int
    refused: int  # retries the budget refused

    @property
    def amplification(self) -> float:
        """Attempts per original call (1.0: no retries at all)."""
        return self.attempts / self.calls

    @property
    def success_rate(self) -> float:
        """Calls that succeeded, in [0, 1]."""
        return self.successes / self.calls


def simulate(budget: str, failure_rate: float, *, seconds: float = SECONDS, rate: int = RATE,
             attempts: int = ATTEMPTS, seed: int = 0) -> Outcome:
    """Runs ``rate * seconds`` calls through a retrier with budget ``budget``
    (a key of :data:`BUDGETS`) against a provider failing each attempt with
    probability ``failure_rate`` (UnavailableError: retryable)."""
    from ..providers.fake import FaultInjectingProvider

    clock = ManualClock()
    provider = FaultInjectingProvider(seed, clock=clock,
                                      errors={ErrorType.UNAVAILABLE: failure_rate})
    retry_budget = BUDGETS[budget](clock)
    config = RetryConfig(max_attempts=attempts, base_delay=0.0, max_delay=0.0, jitter=False,
                         budget=retry_budget)
    retrier = Retrier(config, clock=clock, name="bench-amplification")
    calls = round(rate * seconds)

    async def run() -> int:
        successes = 0
        for i in range(calls):
            clock._set_ns(i * 1_000_000_000 // rate)  # the call's arrival
            try:
                await retrier.call_async(provider.validate)
            except ProviderError:
                continue
            successes += 1
        return successes

    successes = asyncio.run(run())
    refused = retry_budget.refused if retry_budget is not None else 0
    return Outcome(calls, provider.calls["validate"], successes, refused)


@dataclass
class AmplificationTarget(Target):
    """A figure of ``case``'s scenarios (``figure(outcomes)``) against
    ``limit``: the ratio is figure / limit, held at <= ``bound`` (1)."""

    limit: float = 1.0
    figure: Callable[[dict[tuple[str, float], Outcome]], float] | None = None
    unit: str = ""
    outcomes: dict[tuple[str, float], Outcome] | None = None

    def ratio(self, suite: Suite) -> float | None:
        if self.outcomes is None or self.figure is None:
            return None
        return self.figure(self.outcomes) / self.limit

    def shown(self, ratio: float) -> str:
        return f"{ratio * self.limit:.3f}{self.unit} (target <= {self.limit:g}{self.unit})"

    def detail(self, suite: Suite) -> str:
        if not self.outcomes:
            return ""
        parts = []
        for (budget, failure), outcome in self.outcomes.items():
            parts.append(f"{budget} at {failure:.0%}: {outcome.amplification:.3f} attempts/call, "
                         f"{outcome.success_rate:.2%} succeeded, {outcome.refused:,} refused")
        return "; ".join(parts)

    def figures(self, suite: Suite) -> dict[str, float]:
        result: dict[str, float] = {}
        for (budget, failure), outcome in (self.outcomes or {}).items():
            key = f"{budget} @ {failure:.0%}"
            result[f"{key} attempts_per_call"] = outcome.amplification
            result[f"{key} success_rate"] = outcome.success_rate
        return result


def amplification_targets(suite: Suite) -> list[Target]:
    """Runs every scenario and returns the issue's three targets."""
    seconds = QUICK_SECONDS if suite.repeats == 1 else SECONDS
    outcomes = {(budget, failure): simulate(budget, failure, seconds=seconds)
                for failure in (1.0, 0.1) for budget in BUDGETS}

    def amplification(budget: str) -> Callable[[dict[tuple[str, float], Outcome]], float]:
        return lambda found: found[(budget, 1.0)].amplification

    def success_gap(found: dict[tuple[str, float], Outcome]) -> float:
        gap = found[("no budget", 0.1)].success_rate - found[(_RATIO, 0.1)].success_rate
        return max(gap, 0.0) * 100

    case: Any = (GROUP, "scenarios")
    at_full_failure = {k: v for k, v in outcomes.items() if k[1] == 1.0}
    return [
        AmplificationTarget(f"ratio budget: attempts per call at 100% failure, {ATTEMPTS} "
                            f"attempts, {RATE:,} calls/s x {seconds} s", case, case, 1.0,
                            limit=1.25, figure=amplification(_RATIO), outcomes=at_full_failure),
        AmplificationTarget("tokens budget: attempts per call at 100% failure", case, case, 1.0,
                            limit=1.1, figure=amplification(_TOKENS),
                            outcomes={k: v for k, v in at_full_failure.items() if k[0] == _TOKENS}),
        AmplificationTarget("ratio budget: success-rate loss at 10% failure (percentage points)",
                            case, case, 1.0, limit=0.5, figure=success_gap, unit=" pp",
                            outcomes={k: v for k, v in outcomes.items() if k[1] == 0.1}),
    ]
