"""PolicyBuilder.with_hedging: hedged async calls on a simulated event loop.

Time is the demo's SimulatedLoop: a SimClock the loop, the policy, its
breaker and its bucket all read, so concurrent requests sleep in virtual
time and each run is deterministic. The provider's latencies are scripted
(or drawn from a seeded log-normal for the issue's target).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience import _core
from virtrigaud_resilience.demo.simloop import SimClock, SimulatedLoop
from virtrigaud_resilience.hedging import MIN_SAMPLES
from virtrigaud_resilience.policy import HedgedPolicy

T = TypeVar("T")


def run(clock: SimClock, main: Callable[[], Awaitable[T]]) -> T:
    loop = SimulatedLoop(clock)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


class Provider:
    """Requests that take the scripted latencies in turn (then ``rest``);
    records each request's start and whether it finished or was cancelled."""

    def __init__(self, clock: SimClock, *latencies: float, rest: float = 0.05,
                 error: Callable[[int], BaseException | None] = lambda n: None) -> None:
        self.clock = clock
        self.latencies = list(latencies)
        self.rest = rest
        self.error = error
        self.started: list[float] = []
        self.finished = 0
        self.cancelled = 0

    async def __call__(self, value: str = "answer") -> str:
        n = len(self.started)
        self.started.append(self.clock.now())
        latency = self.latencies.pop(0) if self.latencies else self.rest
        try:
            await asyncio.sleep(latency)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        error = self.error(n)
        if error is not None:
            raise error
        return f"{value} #{n}"


def hedged(clock: SimClock, delay: Any = 0.2, *, max_hedges: int = 1, **more: Any) -> vr.PolicyBuilder:
    return vr.PolicyBuilder("hedged").with_clock(clock).with_hedging(max_hedges, delay, **more)


# -- the race -------------------------------------------------------------------

def test_a_slow_request_is_hedged_and_the_hedge_wins() -> None:
    clock = SimClock()
    provider = Provider(clock, 1.0, 0.1)
    policy = hedged(clock, 0.2).build()

    async def main() -> tuple[str, float]:
        result = await policy.execute_async(provider, "vm-1")
        return result, clock.now()

    result, finished = run(clock, main)
    assert result == "vm-1 #1"  # the hedge's answer
    assert finished == pytest.approx(0.3)  # sent at 0.2, answered 0.1 later
    assert provider.started == [0.0, pytest.approx(0.2)]
    assert provider.cancelled == 1 and policy.hedging.hedges == 1


def test_a_fast_request_sends_no_hedge() -> None:
    clock = SimClock()
    provider = Provider(clock, 0.1)
    policy = hedged(clock, 0.2).build()
    assert run(clock, lambda: policy.execute_async(provider)) == "answer #0"
    assert len(provider.started) == 1 and policy.hedging.hedges == 0


def test_up_to_max_hedges_one_per_delay() -> None:
    clock = SimClock()
    provider = Provider(clock, 5.0, 5.0, 5.0, 0.05)
    policy = hedged(clock, 0.2, max_hedges=2).build()

    async def main() -> float:
        await policy.execute_async(provider)
        return clock.now()

    assert run(clock, main) == pytest.approx(5.0)  # three requests, none faster
    assert provider.started == [0.0, pytest.approx(0.2), pytest.approx(0.4)]
    assert policy.hedging.hedges == 2


def test_losers_give_back_what_they_hold() -> None:
    clock = SimClock()
    provider = Provider(clock, 1.0, 0.1)
    bucket = vr.TokenBucket(qps=0.001, burst=10, clock=clock)
    breaker = vr.CircuitBreaker("hedge-held", "fake", "prod", clock=clock)
    bulkhead = vr.Bulkhead(4)
    policy = (hedged(clock, 0.2).with_rate_limiter(bucket).with_circuit_breaker(breaker)
              .with_bulkhead(bulkhead).build())

    async def main() -> set[asyncio.Task[Any]]:
        await policy.execute_async(provider)
        return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    assert run(clock, main) == set()
    assert bulkhead.in_flight == 0
    assert bucket.tokens == pytest.approx(8, abs=0.01)  # the hedge took a token too
    assert breaker.successes == 1 and breaker.failures == 0  # the loser recorded nothing
    assert breaker.state is vr.BreakerState.CLOSED


def test_cancelling_the_caller_cancels_every_request() -> None:
    clock = SimClock()
    provider = Provider(clock, 5.0, 5.0)
    bulkhead = vr.Bulkhead(4)
    policy = hedged(clock, 0.2).with_bulkhead(bulkhead).build()

    async def main() -> None:
        task = asyncio.ensure_future(policy.execute_async(provider))
        await asyncio.sleep(1.0)
        assert len(provider.started) == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(clock, main)
    assert provider.cancelled == 2 and bulkhead.in_flight == 0


def test_every_request_failing_raises_the_last_failure() -> None:
    clock = SimClock()
    provider = Provider(clock, 1.0, 0.5, error=lambda n: vr.NotFoundError(f"request {n}"))
    policy = hedged(clock, 0.2).build()
    with pytest.raises(vr.NotFoundError, match="request 0"):
        run(clock, lambda: policy.execute_async(provider))
    assert provider.finished == 2


def test_a_fallback_answers_for_the_whole_race() -> None:
    clock = SimClock()
    provider = Provider(clock, 1.0, 0.5, error=lambda n: vr.UnavailableError(f"request {n}"))
    policy = hedged(clock, 0.2).with_fallback(lambda e: f"cached after {e}").build()
    assert run(clock, lambda: policy.execute_async(provider)) == \
        "cached after Unavailable: request 0"
    assert provider.finished == 2


def test_a_failed_first_request_leaves_the_hedge_running() -> None:
    clock = SimClock()
    provider = Provider(clock, 0.5, 0.5, error=lambda n: vr.NotFoundError("x") if n == 0 else None)
    policy = hedged(clock, 0.2).build()
    assert run(clock, lambda: policy.execute_async(provider)) == "answer #1"


# -- when not to hedge -------------------------------------------------------------

def test_no_hedge_while_the_breaker_is_not_closed() -> None:
    clock = SimClock()
    breaker = vr.CircuitBreaker("hedge-open", "fake", "prod",
                                vr.BreakerConfig(failure_threshold=1, reset_timeout=10.0,
                                                 half_open_max_calls=1), clock=clock)
    with pytest.raises(vr.UnavailableError):
        breaker.call(lambda: (_ for _ in ()).throw(vr.UnavailableError("down")))
    clock.advance(10.0)  # half-open: one probe
    provider = Provider(clock, 1.0)
    policy = hedged(clock, 0.2).with_circuit_breaker(breaker).build()
    assert run(clock, lambda: policy.execute_async(provider)) == "answer #0"
    assert len(provider.started) == 1


def test_no_hedge_without_a_token_to_spare() -> None:
    clock = SimClock()
    bucket = vr.TokenBucket(qps=0.001, burst=1, clock=clock)
    provider = Provider(clock, 1.0)
    policy = hedged(clock, 0.2).with_rate_limiter(bucket).build()
    assert run(clock, lambda: policy.execute_async(provider)) == "answer #0"
    assert len(provider.started) == 1


@pytest.mark.parametrize("kind", ["ratio", "tokens", "quota"])
def test_hedges_count_against_the_retry_budget(kind: str) -> None:
    """A hedge is a retry to the retry budget: none goes while the budget
    refuses (an empty ratio budget; gRPC A6: none at or below half the
    tokens), and a quota budget's retry cost is taken for one that goes."""
    clock = SimClock()
    if kind == "ratio":
        budget = vr.RetryBudget.ratio(0.5, min_per_second=0, clock=clock)
    elif kind == "tokens":
        budget = vr.RetryBudget.tokens(max_tokens=2, token_ratio=0.1)
        assert budget.try_withdraw() is False  # a failure's token: 1 left, at half
    else:
        budget = vr.RetryBudget.quota(capacity=100, retry_cost=5, refund=0)
    provider = Provider(clock, 1.0, 1.0, 1.0)
    policy = hedged(clock, 0.2).with_retry_budget(budget).build()
    run(clock, lambda: policy.execute_async(provider))
    if kind == "quota":
        assert policy.hedging.hedges == 1 and budget._balance() == 95
    else:
        assert policy.hedging.hedges == 0 and len(provider.started) == 1


def test_no_hedges_while_the_provider_pushes_back() -> None:
    clock = SimClock()
    throttled = vr.RateLimitError("slow down", retry_after=5.0)
    provider = Provider(clock, 0.01, 1.0, 1.0, error=lambda n: throttled if n == 0 else None)
    policy = hedged(clock, 0.2).build()

    async def main() -> list[float]:
        with pytest.raises(vr.RateLimitError):
            await policy.execute_async(provider)
        await policy.execute_async(provider)  # within retry_after: no hedge
        await asyncio.sleep(5.0)
        await policy.execute_async(provider)  # after it: hedged again
        return provider.started

    started = run(clock, main)
    assert len(started) == 4 and policy.hedging.hedges == 1


def test_a_percentile_delay_waits_for_samples_then_follows_them() -> None:
    clock = SimClock()
    provider = Provider(clock, rest=0.1)
    policy = hedged(clock, "p50").build()

    async def main() -> None:
        for _ in range(MIN_SAMPLES):
            await policy.execute_async(provider)

    run(clock, main)
    assert policy.hedging.hedges == 0 and policy.hedging.samples == MIN_SAMPLES
    assert policy.hedging.delay_now() == pytest.approx(0.1, rel=0.07)  # one bucket's width


def test_a_floor_is_the_delay_until_enough_samples() -> None:
    clock = SimClock()
    policy = hedged(clock, "p95", floor=0.3).build()
    assert policy.hedging.delay_now() == 0.3


# -- the target, end to end -----------------------------------------------

P50, P99 = 0.060, 0.500
SIGMA = math.log(P99 / P50) / 2.3263478740408408


def p99_of_calls(hedging: bool, calls: int = 4000, seed: int = 7) -> tuple[float, int]:
    """``calls`` sequential calls of a log-normal provider; (p99, requests sent)."""
    clock = SimClock()
    draw = random.Random(seed).lognormvariate
    sent = 0

    async def provider() -> None:
        nonlocal sent
        sent += 1
        await asyncio.sleep(draw(math.log(P50), SIGMA))

    builder = vr.PolicyBuilder("target").with_clock(clock)
    policy = (builder.with_hedging(1, "p95") if hedging else builder).build()

    async def main() -> list[float]:
        latencies = []
        for _ in range(calls):
            began = clock.now()
            await policy.execute_async(provider)
            latencies.append(clock.now() - began)
        return latencies

    latencies = sorted(run(clock, main))
    return latencies[int(calls * 0.99)], sent


def test_a_p95_hedge_cuts_the_p99_to_three_quarters_for_few_extra_requests() -> None:
    unhedged, _ = p99_of_calls(False)
    hedged_p99, sent = p99_of_calls(True)
    assert hedged_p99 <= 0.75 * unhedged
    assert sent - 4000 <= 0.07 * 4000


# -- sync, describe, bad input ------------------------------------------------------

def test_a_sync_call_is_refused_naming_execute_async() -> None:
    policy = vr.PolicyBuilder("sync").with_hedging().build()
    assert isinstance(policy, HedgedPolicy)
    with pytest.raises(TypeError, match="execute_async"):
        policy.execute(lambda: "never")


def test_describe_shows_the_hedging_stage() -> None:
    policy = vr.PolicyBuilder("described").with_hedging(2, "p99", window=500).build()
    stage = policy.describe()["stages"][0]
    assert stage == {"stage": "hedging", "max_hedges": 2, "delay": "p99", "window": 500,
                     "floor": None, "samples": 0, "delay_now": None, "hedges": 0}
    assert "hedging 2x after p99" in repr(policy)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"max_hedges": 0}, ValueError, "max_hedges must be >= 1"),
    ({"max_hedges": 11}, ValueError, "max_hedges must be <= 10"),
    ({"max_hedges": 1.5}, TypeError, "max_hedges must be an int"),
    ({"delay": "p0"}, ValueError, r"delay's percentile must be in \(0, 100\)"),
    ({"delay": "p100"}, ValueError, r"delay's percentile must be in \(0, 100\)"),
    ({"delay": "p-5"}, ValueError, "delay must be 'pNN'"),
    ({"delay": -0.1}, ValueError, "delay must be >= 0"),
    ({"delay": None}, TypeError, "delay must be a number"),
    ({"window": 0}, ValueError, "window must be >= 1"),
    ({"floor": -1}, ValueError, "floor must be >= 0"),
])
def test_bad_input_names_the_field(kwargs: dict[str, Any], error: type[Exception],
                                   match: str) -> None:
    with pytest.raises(error, match=f"PolicyBuilder {match}"):
        vr.PolicyBuilder("bad").with_hedging(**kwargs)


# -- the native histogram ----------------------------------------------------------

def test_the_histogram_holds_the_last_window() -> None:
    histogram = _core.LatencyHistogram(100)
    for _ in range(100):
        histogram.record(1.0)
    assert histogram.percentile(50) == pytest.approx(1.0, rel=0.07)
    for _ in range(100):  # the window slides: the 1 s samples are gone
        histogram.record(0.010)
    assert histogram.count == 100 and histogram.recorded == 200
    assert histogram.percentile(99) == pytest.approx(0.010, rel=0.07)


def test_the_histograms_percentiles_are_within_a_bucket() -> None:
    draw = random.Random(3).lognormvariate
    samples = sorted(draw(math.log(0.06), 0.9) for _ in range(1000))
    histogram = _core.LatencyHistogram(1000)
    for sample in samples:
        histogram.record(sample)
    for percent in (50, 90, 95, 99):
        exact = samples[int(len(samples) * percent / 100) - 1]
        assert histogram.percentile(percent) == pytest.approx(exact, rel=0.07), percent


def test_the_histogram_is_nan_below_min_samples_and_checks_its_input() -> None:
    histogram = _core.LatencyHistogram(10)
    histogram.record(0.5)
    assert math.isnan(histogram.percentile(50, 2))
    with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\)"):
        histogram.percentile(100)
    with pytest.raises(ValueError, match="window must be in"):
        _core.LatencyHistogram(0)


def test_the_histogram_under_threads_keeps_exact_counts() -> None:
    import threading

    histogram = _core.LatencyHistogram(64)

    def writer(seconds: float) -> None:
        for _ in range(20_000):
            histogram.record(seconds)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (0.001, 0.002, 0.004, 0.008)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert histogram.recorded == 80_000 and histogram.count == 64
    for _ in range(64):  # one writer's window: every earlier sample evicted exactly once
        histogram.record(1.0)
    assert histogram.percentile(1) == pytest.approx(1.0, rel=0.07)


# -- ResilientProvider(hedged=...) ---------------------------------------------------

def resilient(clock: SimClock, **kwargs: Any) -> Any:
    from virtrigaud_resilience.providers import FaultInjectingProvider, Latency, ResilientProvider

    fake = FaultInjectingProvider(1, clock=clock, latency=Latency(0.06, 0.5), errors={})
    return ResilientProvider(fake, "proxmox", "edge", clock=clock,
                             breakers=vr.BreakerRegistry(clock=clock),
                             limiters=vr.RateLimiterRegistry(clock=clock), **kwargs)


def test_a_resilient_provider_hedges_the_operations_it_names() -> None:
    clock = SimClock()
    provider = resilient(clock, hedged={"Describe": "p95"})
    assert isinstance(provider.policy("describe"), HedgedPolicy)
    assert not isinstance(provider.policy("create"), HedgedPolicy)


def test_a_resilient_provider_refuses_to_hedge_what_is_not_idempotent() -> None:
    with pytest.raises(ValueError, match="hedged names 'create', which is not idempotent"):
        resilient(SimClock(), hedged={"create": "p95"}, idempotent={"create": False})


@pytest.mark.parametrize(("hedged", "error", "match"), [
    ({"describe": "p0"}, ValueError, r"hedged 'describe' delay's percentile"),
    ({"explode": "p95"}, ValueError, "hedged operation must be one of"),
    (["describe"], TypeError, "hedged must be a mapping"),
])
def test_a_resilient_providers_bad_hedged_names_the_field(hedged: Any, error: type[Exception],
                                                          match: str) -> None:
    with pytest.raises(error, match=f"ResilientProvider {match}"):
        resilient(SimClock(), hedged=hedged)
