"""The ``concurrency`` bench section: what a fleet of callers gets done per second.

A controller awaits its provider from hundreds of tasks at once, and the
provider yields to the event loop on every call. So this section runs
:data:`FLEET` (500 asyncio tasks x 200 calls each; :data:`QUICK_FLEET` with
``--quick``), every call awaiting a provider coroutine that yields once
(``await asyncio.sleep(0)``), three ways:

- a bare ``await provider()`` (the baseline),
- our composed policy, retry + breaker + bucket: ``await policy.execute_async(provider)``,
- the peers' stack: tenacity's ``@retry`` (an ``AsyncRetrying``) around an
  aiolimiter ``AsyncLimiter`` around an aiobreaker ``CircuitBreaker.call_async``.

Each is one :class:`~.suite.Case` of fixed calls per run, interleaved with
the suite's other cases round by round; its figure is the best round's
ns per call (its calls per second are the inverse, in ``--json`` and in
the targets' detail). The targets: ours within 1.2x of the bare awaits'
time (the inverse ratio of throughputs), and >= 20x the peers' stack's throughput.

Threads: two threads calling the sync ``policy.execute``, ``breaker.call``
and ``bucket.try_acquire`` on an object each and on one shared object are
the ``threads`` section's cases; this section includes them when that
section is not chosen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from .suite import BARE_AWAIT, Case, Suite, Target, _compile_loop, _role

__all__ = ["FLEET", "GROUP", "OURS", "PEERS", "QUICK_FLEET", "ThroughputTarget", "fleet_cases",
           "provider"]

#: (tasks, calls per task): the issue's fleet, and the one of ``--quick``.
FLEET = (500, 200)
QUICK_FLEET = (50, 20)
GROUP = "concurrency"
OURS = "virtrigaud await Policy.execute_async(provider)"
PEERS = "tenacity @retry + aiolimiter + aiobreaker.call_async"
#: Targets: ours takes at most this many times the bare awaits' time ...
MAX_VS_BARE = 1.2
#: ... and gets at least this many times the peers' stack's calls per second.
MIN_VS_PEERS = 20.0


async def provider() -> None:
    """The provider's coroutine: yields to the event loop once, as an I/O call does."""
    await asyncio.sleep(0)


def fleet_cases(suite: Suite) -> list[Target]:
    """Adds the three fleets to ``suite`` (the peers' skipped if absent); returns the targets."""
    from .sections import composed  # here: sections imports this module when asked for it

    tasks, calls = QUICK_FLEET if suite.repeats == 1 else FLEET
    shape = f"{tasks} tasks x {calls} calls"

    def add(name: str, stmt: str, **names: Any) -> None:
        loop = _compile_loop(stmt, {"provider": provider, **names}, is_async=True)
        suite.cases.append(Case(GROUP, name, _fleet(loop, tasks, calls), is_async=True,
                                calls=tasks * calls, role=_role(name)))

    add(BARE_AWAIT, "await provider()")
    add(OURS, "await policy.execute_async(provider)", policy=composed())
    try:
        add(PEERS, "await guarded(provider)", guarded=_peers_stack())
    except Exception as exc:  # an absent peer is reported with its pip command, not fatal
        suite.skip("tenacity/aiolimiter/aiobreaker (concurrency)", exc)
    return [
        ThroughputTarget(f"async policy, {shape}: within {MAX_VS_BARE:g}x of bare awaits",
                         (GROUP, OURS), (GROUP, BARE_AWAIT), MAX_VS_BARE),
        ThroughputTarget(f"async policy, {shape}: >= {MIN_VS_PEERS:g}x the throughput of "
                         "tenacity + aiolimiter + aiobreaker",
                         (GROUP, OURS), (GROUP, PEERS), 1 / MIN_VS_PEERS),
    ]


def _fleet(loop: Callable[[int], Coroutine[Any, Any, None]], tasks: int,
           calls: int) -> Callable[[int], Coroutine[Any, Any, None]]:
    """A case's ``run(n)``: ``tasks`` tasks at once, each ``loop(calls)``
    (``n`` is ignored: the case's ``calls`` says how many calls a run makes)."""
    async def run(n: int) -> None:
        await asyncio.gather(*[loop(calls) for _ in range(tasks)])
    return run


def _peers_stack() -> Callable[[Callable[[], Coroutine[Any, Any, None]]],
                               Coroutine[Any, Any, None]]:
    """tenacity's ``@retry`` (5 attempts, exponential wait, as the policy's
    retry) around an aiolimiter token and an aiobreaker call: the guide's
    retry + bucket + breaker composed from the peers, as their users do."""
    from datetime import timedelta

    import aiobreaker
    import aiolimiter
    import tenacity

    breaker = aiobreaker.CircuitBreaker(fail_max=10, timeout_duration=timedelta(seconds=60))
    limiter = aiolimiter.AsyncLimiter(1e9, 1)

    @tenacity.retry(stop=tenacity.stop_after_attempt(5),
                    wait=tenacity.wait_exponential(multiplier=0.5, max=30))
    async def guarded(call: Callable[[], Coroutine[Any, Any, None]]) -> None:
        async with limiter:
            await breaker.call_async(call)

    return guarded


@dataclass
class ThroughputTarget(Target):
    """A :class:`~.suite.Target` on two fleets, whose detail gives both calls per second."""

    def detail(self, suite: Suite) -> str:
        ours, against = (suite.get(*self.case), suite.get(*self.against))
        return f"{_per_s(ours):,.0f} calls/s; {against.name}: {_per_s(against):,.0f} calls/s"

    def figures(self, suite: Suite) -> dict[str, float]:
        return {"calls_per_s": _per_s(suite.get(*self.case)),
                "against_calls_per_s": _per_s(suite.get(*self.against))}


def _per_s(case: Case) -> float:
    return 1e9 / case.best_ns
