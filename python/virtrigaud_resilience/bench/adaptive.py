"""The ``adaptive`` bench section: issue 24's scenarios, on virtual time.

Every scenario runs on a :class:`~virtrigaud_resilience.ManualClock` and
draws nothing at random that is not seeded: each run prints the same
figures. Each figure is shown with its target.

Adaptive rate (:class:`~virtrigaud_resilience.AdaptiveRate`): a greedy
caller takes tokens from a TokenBucket and calls a
:class:`~virtrigaud_resilience.providers.fake.FaultInjectingProvider` with a
quota (answered ``RateLimitError`` with a ``retry_after``); as in a policy
(policy.py's AdaptivePolicy), the controller sees the throttles, and
refreshes its rate when the bucket makes the caller wait, never on a success.

- the demo's libvirt: quota 15/s (burst 20), configured 20/s. After the
  first minute, the share of the calls that reach the provider answered
  RateLimit (<= 3%; a static bucket: 25%) and the calls admitted per second
  (>= 90% of the quota);
- a quota raised from 15/s to 30/s at 120 s, configured 40/s: the seconds
  until 5 s of admitted calls reach 85% of 30/s (<= 20 s).

Adaptive concurrency (:class:`~virtrigaud_resilience.AdaptiveBulkhead`):
200 callers in a closed loop (each calls again as soon as its call ends; a
caller that finds no free slot waits, first come first served) against a
provider of base latency 50 ms whose :class:`~.fake.Capacity` knee changes
(latency growth 4: each call beyond the knee adds a quarter of the base
latency at a knee of 16). An event simulation: each call's latency is the
Capacity's for the calls in flight when it starts.

- knee 64 -> 16 at 30 s: the seconds until the limit is within 25% of 16
  and stays there to the end of the run, 60 s (<= 5 s) and the p99 latency of the calls started 10 s after the change,
  against the base (<= 2x; a static bulkhead of 64 is shown beside);
- knee 16 -> 64 at 30 s: the seconds until the limit reaches 51, and
  stays there (<= 10 s).

The limit algorithm is AIMD with a timeout of 1.5x the base latency (a
window whose mean RTT exceeds it backs off), in windows of 0.1 s at most;
Gradient2 and Vegas at their Netflix defaults are shown beside it (both
settle where the latency is their tolerance above the long-term RTT: above
the knee, which this latency model makes costly).
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import virtrigaud_resilience as vr
from virtrigaud_resilience.adaptive_limits import LimitAlgorithm
from virtrigaud_resilience.providers.fake import Capacity, FaultInjectingProvider, Quota, Schedule

from .suite import Suite, Target

__all__ = ["GROUP", "CapacityRun", "ScenarioTarget", "adaptive_targets", "capacity_run",
           "cost_cases", "quota_raise_run", "quota_run"]

GROUP = "adaptive"
#: The concurrency scenarios' provider: base latency, latency growth beyond the knee.
BASE_LATENCY, LATENCY_GROWTH = 0.05, 4.0
#: Callers in the concurrency scenarios, and when the knee changes.
CALLERS, CHANGE_AT = 200, 30.0


# ------------------------------------------------------------- adaptive rate --


def _greedy_caller(clock: vr.ManualClock, bucket: vr.TokenBucket, fake: FaultInjectingProvider,
                   rate: vr.AdaptiveRate | None, seconds: float,
                   on_call: Callable[[float, bool], None]) -> None:
    """Calls as fast as the bucket allows until ``seconds``; on_call(t, throttled)."""

    async def loop() -> None:
        while clock.now() < seconds:
            if rate is not None and bucket.retry_after() > 0:
                rate.refresh()  # as a policy does when its limiter makes a caller wait
            clock.advance(max(bucket.retry_after(), 1e-6))
            if not bucket.try_acquire():
                continue
            error: vr.RateLimitError | None = None
            try:
                await fake.validate()
            except vr.RateLimitError as exc:
                error = exc
            on_call(clock.now(), error is not None)
            if rate is not None and error is not None:
                rate.observe(error)  # a success is not observed (a policy's stays native)

    asyncio.run(loop())


def quota_run(adaptive: bool, seconds: float = 300.0, settle: float = 60.0) -> tuple[float, float]:
    """The demo's libvirt: (share of provider calls answered RateLimit,
    admitted calls/s), both after ``settle`` seconds."""
    clock = vr.ManualClock()
    bucket = vr.TokenBucket(20, 20, clock=clock)
    fake = FaultInjectingProvider(1, clock=clock, quota=Quota(15, 20))
    counts = [0, 0]  # calls, throttled

    def count(t: float, throttled: bool) -> None:
        if t > settle:
            counts[0] += 1
            counts[1] += throttled

    _greedy_caller(clock, bucket, fake, vr.AdaptiveRate(bucket) if adaptive else None,
                   seconds, count)
    calls, throttled = counts
    return throttled / calls, (calls - throttled) / (seconds - settle)


def quota_raise_run(seconds: float = 200.0, raised_at: float = 120.0,
                    span: float = 5.0) -> float:
    """Quota 15/s raised to 30/s at ``raised_at``, configured 40/s: seconds
    from the raise until ``span`` seconds of admitted calls reach 85% of
    30/s (inf if never)."""
    clock = vr.ManualClock()
    bucket = vr.TokenBucket(40, 40, clock=clock)
    fake = FaultInjectingProvider(1, clock=clock, quota=Quota(15, 20),
                                  schedule=Schedule([(raised_at, Quota(30, 30))]))
    admitted: collections.deque[float] = collections.deque()
    reached = [float("inf")]

    def count(t: float, throttled: bool) -> None:
        if throttled:
            return
        admitted.append(t)
        while admitted and admitted[0] <= t - span:
            admitted.popleft()
        if t >= raised_at + span and len(admitted) >= 0.85 * 30 * span:
            reached[0] = min(reached[0], t - raised_at)

    _greedy_caller(clock, bucket, fake, vr.AdaptiveRate(bucket), seconds, count)
    return reached[0]


# ------------------------------------------------------- adaptive concurrency --


@dataclass
class CapacityRun:
    """One concurrency run: (start time, latency) per call, (time, limit) per call's end."""

    latencies: list[tuple[float, float]] = field(default_factory=list)
    limits: list[tuple[float, int]] = field(default_factory=list)

    def settled(self, after: float, holds: Callable[[int], bool]) -> float:
        """Seconds from ``after`` until the limit satisfies ``holds`` and
        keeps to it to the end of the run (inf if it never does)."""
        since = float("inf")
        for t, limit in self.limits:
            if t < after:
                continue
            if not holds(limit):
                since = float("inf")
            elif since == float("inf"):
                since = t
        return since - after

    def p99(self, started_after: float) -> float:
        """The 99th percentile latency of the calls started after the time given."""
        values = sorted(latency for t, latency in self.latencies if t >= started_after)
        return values[int(0.99 * (len(values) - 1))] if values else float("nan")


def capacity_run(bulkhead: vr.AdaptiveBulkhead, clock: vr.ManualClock,
                 schedule: Schedule, seconds: float = 60.0) -> CapacityRun:
    """CALLERS callers in a closed loop through ``bulkhead`` (on ``clock``)
    against a provider whose Capacity follows ``schedule`` (an event
    simulation: a call's latency is the Capacity's at its start)."""
    run = CapacityRun()
    capacity = Capacity(1 << 30, LATENCY_GROWTH)
    next_change = 0
    events: list[tuple[float, int, int, vr.AdaptiveSlot, float]] = []
    waiting: collections.deque[int] = collections.deque()
    order = 0
    in_flight = 0

    def start(caller: int, t: float) -> None:
        nonlocal order, in_flight
        slot = bulkhead.try_acquire()
        if slot is None:
            waiting.append(caller)
            return
        in_flight += 1
        order += 1
        latency = capacity.latency(BASE_LATENCY, in_flight)
        heapq.heappush(events, (t + latency, order, caller, slot, t))

    for caller in range(CALLERS):
        start(caller, 0.0)
    while events:
        t, _, caller, slot, started = heapq.heappop(events)
        if t > seconds:
            break
        due = schedule.due(next_change, t)
        for _, change in schedule.changes[next_change:due]:
            if isinstance(change, Capacity):
                capacity = change
        next_change = due
        clock.set(t)
        in_flight -= 1
        slot.release()
        run.latencies.append((started, t - started))
        run.limits.append((t, bulkhead.limit))
        while waiting and bulkhead.in_flight < bulkhead.limit:
            start(waiting.popleft(), t)
        start(caller, t)
    return run


def _knees(before: int, after: int) -> Schedule:
    return Schedule([(0.0, Capacity(before, LATENCY_GROWTH)),
                     (CHANGE_AT, Capacity(after, LATENCY_GROWTH))])


def _adaptive(algorithm: LimitAlgorithm) -> tuple[vr.AdaptiveBulkhead, vr.ManualClock]:
    clock = vr.ManualClock()
    return vr.AdaptiveBulkhead(algorithm, clock=clock, max_window=0.1), clock


def _static(limit: int) -> tuple[vr.AdaptiveBulkhead, vr.ManualClock]:
    clock = vr.ManualClock()
    return vr.AdaptiveBulkhead(vr.AIMD(limit), min_limit=limit, max_limit=limit,
                               clock=clock), clock


def algorithms() -> dict[str, Callable[[], LimitAlgorithm]]:
    """The algorithms the concurrency scenarios run: the judged one first."""
    return {
        "AIMD(timeout=1.5x base)": lambda: vr.AIMD(timeout=1.5 * BASE_LATENCY),
        "Gradient2()": vr.Gradient2,
        "Vegas()": lambda: vr.Vegas(random=random.Random(1).random),
    }


# --------------------------------------------------------------------- targets --


@dataclass
class ScenarioTarget(Target):
    """A figure of a scenario against its limit: the ratio is figure / limit
    for an "at most" target, limit / figure for an "at least" one (held at
    <= ``bound``, 1)."""

    figure: float = 0.0
    limit: float = 1.0
    at_least: bool = False
    unit: str = ""
    note: str = ""

    def ratio(self, suite: Suite) -> float | None:
        if self.at_least:
            return self.limit / self.figure if self.figure > 0 else float("inf")
        return self.figure / self.limit

    def shown(self, ratio: float) -> str:
        op = ">=" if self.at_least else "<="
        return f"{self.figure:.3g}{self.unit} (target {op} {self.limit:g}{self.unit})"

    def detail(self, suite: Suite) -> str:
        return self.note

    def figures(self, suite: Suite) -> dict[str, float]:
        return {"figure": self.figure, "limit": self.limit}


def _target(what: str, figure: float, limit: float, *, at_least: bool = False,
            unit: str = "", note: str = "") -> ScenarioTarget:
    return ScenarioTarget(what, (GROUP, what), (GROUP, what), 1.0, figure, limit, at_least,
                          unit, note)


#: The cost cases: the composed policy's success path with and without an adaptive rate.
WITHOUT_ADAPTIVE = "Policy.execute(noop), retry + breaker + bucket"
WITH_ADAPTIVE = "Policy.execute(noop), the same with an adaptive rate"
WITH_ADAPTIVE_ASYNC = "await Policy.execute_async(noop), with an adaptive rate"
WITHOUT_ADAPTIVE_ASYNC = "await Policy.execute_async(noop), retry + breaker + bucket"


def _composed(adaptive: bool) -> vr.Policy:
    """bench.sections' composed policy, with_adaptive_rate() when ``adaptive``."""
    builder = (vr.PolicyBuilder("bench-adaptive").with_retry(vr.RetryConfig.default())
               .with_circuit_breaker(vr.CircuitBreaker("bench-adaptive"))
               .with_rate_limiter(vr.TokenBucket(qps=1e9, burst=1_000_000)))
    return (builder.with_adaptive_rate() if adaptive else builder).build()


def cost_cases(suite: Suite) -> list[Target]:
    """Times the policy's success path with and without an adaptive rate (in
    the same run, interleaved) and returns the target: at most 10% more."""
    def noop() -> None:
        return None

    async def noop_async() -> None:
        return None

    for name, adaptive in ((WITHOUT_ADAPTIVE, False), (WITH_ADAPTIVE, True)):
        suite.add(GROUP, name, "policy.execute(noop)", policy=_composed(adaptive), noop=noop)
    for name, adaptive in ((WITHOUT_ADAPTIVE_ASYNC, False), (WITH_ADAPTIVE_ASYNC, True)):
        suite.add_async(GROUP, name, "await policy.execute_async(noop)",
                        policy=_composed(adaptive), noop=noop_async)
    return [Target("adaptive rate adds <= 10% to Policy.execute's success path",
                   (GROUP, WITH_ADAPTIVE), (GROUP, WITHOUT_ADAPTIVE), 1.10),
            Target("adaptive rate adds <= 10% to Policy.execute_async's success path",
                   (GROUP, WITH_ADAPTIVE_ASYNC), (GROUP, WITHOUT_ADAPTIVE_ASYNC), 1.10)]


def adaptive_targets(suite: Suite) -> list[Target]:
    """Runs every scenario now and returns its targets (the cost ones are
    timed with the suite's cases)."""
    static_share, _ = quota_run(adaptive=False)
    share, admitted = quota_run(adaptive=True)
    targets: list[Target] = [
        _target("quota 15/s, configured 20/s: provider RateLimit answers", share * 100, 3.0,
                unit="%", note=f"a static bucket: {static_share:.1%}"),
        _target("quota 15/s, configured 20/s: admitted", admitted / 15 * 100, 90.0,
                at_least=True, unit="% of quota", note=f"{admitted:.2f} calls/s"),
        _target("quota 15 -> 30/s at 120 s: admitted >= 85% of 30/s within",
                quota_raise_run(), 20.0, unit=" s"),
    ]
    static, clock = _static(64)
    static_p99 = capacity_run(static, clock, _knees(64, 16)).p99(CHANGE_AT + 10)
    notes = []
    judged: tuple[float, float, float] | None = None
    for name, make in algorithms().items():
        down = capacity_run(*_adaptive(make()), _knees(64, 16))
        up = capacity_run(*_adaptive(make()), _knees(16, 64))
        figures = (down.settled(CHANGE_AT, lambda limit: 12 <= limit <= 20),
                   down.p99(CHANGE_AT + 10) / BASE_LATENCY,
                   up.settled(CHANGE_AT, lambda limit: limit >= 51))
        if judged is None:
            judged = figures
        else:
            notes.append(f"{name}: {figures[0]:.3g} s, p99 {figures[1]:.2f}x, up {figures[2]:.3g} s")
    assert judged is not None
    first = next(iter(algorithms()))
    targets += [
        _target(f"knee 64 -> 16, {CALLERS} callers, {first}: limit within 25% of 16 in",
                judged[0], 5.0, unit=" s", note="; ".join(notes)),
        _target("knee 64 -> 16: p99 latency 10 s after, vs the base", judged[1], 2.0,
                unit="x", note=f"a static bulkhead of 64: {static_p99 / BASE_LATENCY:.2f}x"),
        _target("knee 16 -> 64: limit >= 51 in", judged[2], 10.0, unit=" s"),
    ]
    return targets + cost_cases(suite)
