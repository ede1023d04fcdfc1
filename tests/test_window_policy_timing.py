"""Slow calls through a Policy (issue 22): every path times its attempts.

A breaker judging slow calls (``slow_call_duration``) times each attempt on
its clock, from admission to outcome, success or failure alike, whichever
path the attempt takes: the native first attempt of ``execute`` and of
``execute_async`` (the awaitable keeps its admission's time itself), the
Python path of a policy with a timeout, and the retries. ``CircuitBreaker.call_async``
of such a breaker stays native too. The clock is a ManualClock: the calls
advance it, so "slow" is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

import virtrigaud_resilience as vr
from virtrigaud_resilience import _core
from virtrigaud_resilience.breaker import BreakerConfig, CircuitBreaker
from virtrigaud_resilience.windows import CountWindow

NS = 1_000_000_000
#: The slow-call duration the breakers judge by.
SLOW = 1.0
NO_JITTER = vr.RetryConfig(max_attempts=2, base_delay=0.5, max_delay=1.0, jitter=False)


def timed_breaker(clock: vr.ManualClock) -> CircuitBreaker:
    """A window breaker that never opens on these few calls (judging from 100)."""
    return CircuitBreaker("timed", "vsphere", "prod",
                          BreakerConfig(window=CountWindow(100), minimum_calls=100,
                                        slow_call_duration=SLOW), clock=clock)


def policy(clock: vr.ManualClock, breaker: CircuitBreaker, path: str) -> vr.Policy:
    """A policy whose first attempt takes ``path``: "native" (no timeout),
    "python" (a timeout: every attempt in Python), "retry" (a first attempt
    that fails fast, then the retry under test)."""
    builder = vr.PolicyBuilder("timed").with_clock(clock).with_circuit_breaker(breaker)
    if path == "python":
        builder = builder.with_timeout(3600)
    if path == "retry":
        builder = builder.with_retry(NO_JITTER)
    return builder.build()


class Call:
    """A provider call taking ``seconds`` on the clock, then returning or raising."""

    def __init__(self, clock: vr.ManualClock, seconds: float, fails: bool,
                 fails_first_fast: bool) -> None:
        self.clock, self.seconds, self.fails = clock, seconds, fails
        self.first = fails_first_fast

    def step(self) -> str:
        if self.first:  # a fast failure first: the retry is what is timed
            self.first = False
            raise vr.UnavailableError("down, fast")
        self.clock._advance_ns(round(self.seconds * NS))
        if self.fails:
            raise vr.UnavailableError("down, after a while")
        return "ok"

    def __call__(self) -> str:
        return self.step()

    async def run_async(self) -> str:
        await asyncio.sleep(0)  # suspend once: the awaitable drives a real coroutine
        return self.step()


def run(p: vr.Policy, call: Call, is_async: bool) -> object:
    try:
        if is_async:
            return asyncio.run(_await(p.execute_async(call.run_async)))
        return p.execute(call)
    except vr.UnavailableError as exc:
        return exc


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("path", ["native", "python", "retry"])
@pytest.mark.parametrize("fails", [False, True], ids=["success", "failure"])
def test_a_policy_times_every_attempt_for_a_slow_call_breaker(is_async: bool, path: str,
                                                              fails: bool) -> None:
    clock = vr.ManualClock()
    breaker = timed_breaker(clock)
    p = policy(clock, breaker, path)
    retry = path == "retry"
    # At the slow-call duration exactly: slow.
    outcome = run(p, Call(clock, SLOW, fails, retry), is_async)
    assert isinstance(outcome, vr.UnavailableError) if fails else outcome == "ok"
    assert breaker.slow_calls == 1
    assert breaker.failures_total == (1 if fails else 0) + (1 if retry else 0)
    # Just under it: not slow (and the retry's fast failure was not slow either).
    run(p, Call(clock, SLOW - 1e-9, fails, retry), is_async)
    assert breaker.slow_calls == 1
    assert breaker.slow_call_rate == -1.0  # below minimum_calls: no rate yet


@pytest.mark.parametrize("fails", [False, True], ids=["success", "failure"])
def test_call_async_of_a_timed_breaker_stays_native(fails: bool) -> None:
    """The native awaitable keeps the admission's clock time itself: no
    Python coroutine in between (the awaitable is the native AsyncCall)."""
    clock = vr.ManualClock()
    breaker = timed_breaker(clock)
    call = Call(clock, SLOW, fails, False)
    awaitable = breaker.call_async(call.run_async)
    assert type(awaitable).__name__ == "AsyncCall" and type(awaitable).__module__ == _core.__name__
    try:
        assert asyncio.run(_await(awaitable)) == "ok"
    except vr.UnavailableError:
        assert fails
    assert breaker.slow_calls == 1 and breaker.failures_total == (1 if fails else 0)


def test_an_untimed_breaker_records_no_slow_call_on_any_path() -> None:
    clock = vr.ManualClock()
    breaker = CircuitBreaker("untimed", "vsphere", "prod",
                             BreakerConfig(window=CountWindow(100), minimum_calls=100),
                             clock=clock)
    for path in ("native", "python"):
        for is_async in (False, True):
            run(policy(clock, breaker, path), Call(clock, 10 * SLOW, False, False), is_async)
    assert breaker.slow_calls == 0 and breaker.successes == 4


def test_a_cancelled_slow_attempt_records_nothing() -> None:
    """Cancelling the awaiting task from outside records no outcome (slow or
    not) and gives back what the attempt held, on the timed native path too."""
    clock = vr.ManualClock()
    breaker = timed_breaker(clock)
    p = policy(clock, breaker, "native")
    started = asyncio.Event()

    async def hangs() -> None:
        clock._advance_ns(2 * NS)
        started.set()
        await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.ensure_future(p.execute_async(hangs))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert breaker.slow_calls == 0 and breaker.successes == 0 and breaker.failures_total == 0


@pytest.mark.parametrize("fails", [False, True], ids=["success", "failure"])
def test_an_adaptive_policy_times_its_native_async_attempts(fails: bool) -> None:
    """The adaptive rate's hooks sit between the awaitable and the policy: a
    failure's admission time (the hook's sixth argument) passes through them."""
    clock = vr.ManualClock()
    breaker = timed_breaker(clock)
    p = (vr.PolicyBuilder("timed-adaptive").with_clock(clock).with_circuit_breaker(breaker)
         .with_rate_limiter(vr.TokenBucket(qps=1000, burst=1000, clock=clock))
         .with_adaptive_rate().build())
    outcome = run(p, Call(clock, SLOW, fails, False), is_async=True)
    assert isinstance(outcome, vr.UnavailableError) if fails else outcome == "ok"
    assert breaker.slow_calls == 1
    assert breaker.failures_total == (1 if fails else 0)
