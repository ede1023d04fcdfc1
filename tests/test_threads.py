"""Python threads hammering one bucket and one breaker: what the design guarantees.

The clock is a frozen ManualClock, so the outcome does not depend on timing.
A tiny switch interval makes the interpreter interleave the threads often.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience import BreakerState

THREADS = 4
CALLS = 20_000  # per thread
TOTAL = THREADS * CALLS
T = TypeVar("T")


@pytest.fixture(autouse=True)
def frequent_switches() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def hammer(work: Callable[[], T], threads: int = THREADS) -> list[T]:
    """Runs `work` in `threads` threads started together; returns their results."""
    barrier = threading.Barrier(threads)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            result = work()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(result)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert len(results) == threads
    return results


class Boom(Exception):
    pass


# -------------------------------------------------------------------- bucket --


@pytest.mark.parametrize("burst", [1, 20, 1000])
def test_frozen_bucket_admits_exactly_burst(clock: vr.ManualClock, burst: int) -> None:
    tb = vr.TokenBucket(qps=10, burst=burst, clock=clock)

    def work() -> int:
        acquire = tb.try_acquire
        return sum(1 for _ in range(CALLS) if acquire())

    admitted = hammer(work)
    assert sum(admitted) == burst
    assert tb.admitted == burst
    assert tb.admitted + tb.rejected == TOTAL
    assert tb.tokens == 0


def test_frozen_bucket_admits_exactly_burst_with_n(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=10, burst=999, clock=clock)

    def work() -> int:
        return sum(3 for _ in range(CALLS // 4) if tb.try_acquire(3))

    assert sum(hammer(work)) == 999
    assert tb.admitted + tb.rejected == TOTAL // 4


def test_concurrent_reservations_each_get_their_own_slot(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=10, burst=5, clock=clock)
    per_thread = 2_000

    def work() -> list[int]:
        return [round(tb.reserve().delay * 1e9) for _ in range(per_thread)]

    delays = sorted(d for chunk in hammer(work) for d in chunk)
    n = THREADS * per_thread
    assert delays == [0] * 5 + [k * 100_000_000 for k in range(1, n - 5 + 1)]
    assert (tb.admitted, tb.reserved) == (5, n - 5)
    assert tb.tokens == 5 - n


# ------------------------------------------------------------------- breaker --


def test_breaker_counts_every_success(clock: vr.ManualClock) -> None:
    cb = vr.CircuitBreaker("t", config=vr.BreakerConfig(failure_threshold=1), clock=clock)

    def work() -> int:
        call = cb.call
        for i in range(CALLS):
            call(int, i)
        return CALLS

    hammer(work)
    assert cb.successes == TOTAL
    assert (cb.failures_total, cb.rejected, cb.released) == (0, 0, 0)
    assert cb.transitions == (0, 0, 0)
    assert cb.state is BreakerState.CLOSED


def test_breaker_counts_every_outcome_under_mixed_load(clock: vr.ManualClock) -> None:
    cb = vr.CircuitBreaker(
        "t", config=vr.BreakerConfig(failure_threshold=TOTAL + 1), clock=clock
    )

    def fail() -> None:
        raise Boom

    def work() -> tuple[int, int]:
        ok = failed = 0
        for i in range(CALLS):
            if i % 3:
                cb.call(int)
                ok += 1
            else:
                try:
                    cb.call(fail)
                except Boom:
                    failed += 1
        return ok, failed

    results = hammer(work)
    assert cb.successes == sum(r[0] for r in results)
    assert cb.failures_total == sum(r[1] for r in results)
    assert cb.successes + cb.failures_total == TOTAL
    assert cb.rejected == 0
    assert cb.state is BreakerState.CLOSED
    assert cb.failures < TOTAL


@pytest.mark.parametrize("threshold", [1, 50, 1000])
def test_failing_breaker_opens_exactly_once(clock: vr.ManualClock, threshold: int) -> None:
    cb = vr.CircuitBreaker(
        "t",
        config=vr.BreakerConfig(failure_threshold=threshold, reset_timeout=1e6),
        clock=clock,
    )
    events: list[tuple[BreakerState, BreakerState]] = []
    cb.add_listener(lambda b, old, new: events.append((old, new)))

    def fail() -> None:
        raise Boom

    def work() -> tuple[int, int]:
        failed = rejected = 0
        for _ in range(CALLS):
            try:
                cb.call(fail)
            except vr.CircuitOpenError:
                rejected += 1
            except Boom:
                failed += 1
        return failed, rejected

    results = hammer(work)
    failed = sum(r[0] for r in results)
    rejected = sum(r[1] for r in results)
    assert failed + rejected == TOTAL
    assert cb.failures_total == failed
    assert cb.rejected == rejected
    assert cb.successes == 0
    # `threshold` failures open it; each other thread may have had one call in
    # flight, admitted before the open: it still records (stale, moving nothing).
    assert threshold <= failed <= threshold + THREADS - 1
    assert cb.transitions == (0, 0, 1)
    assert events == [(BreakerState.CLOSED, BreakerState.OPEN)]
    assert cb.state is BreakerState.OPEN


@pytest.mark.parametrize("half_open", [1, 3, 64])
def test_half_open_admits_exactly_max_probes(clock: vr.ManualClock, half_open: int) -> None:
    cb = vr.CircuitBreaker(
        "t",
        config=vr.BreakerConfig(
            failure_threshold=1, reset_timeout=10.0, half_open_max_calls=half_open
        ),
        clock=clock,
    )
    with pytest.raises(Boom):
        cb.call(_raise_boom)
    clock.advance(10.0)

    def work() -> list[vr.Permit]:
        permits = []
        for _ in range(CALLS // 10):
            permit = cb.try_acquire()
            if permit is not None:
                permits.append(permit)
        return permits

    permits = [p for chunk in hammer(work) for p in chunk]
    assert len(permits) == half_open
    assert cb.half_open_calls == half_open
    assert cb.transitions == (0, 1, 1)
    assert cb.rejected == THREADS * (CALLS // 10) - half_open

    def report() -> int:
        reported = 0
        while True:
            try:
                permit = permits.pop()
            except IndexError:
                return reported
            permit.success()
            reported += 1

    assert sum(hammer(report)) == half_open
    assert cb.state is BreakerState.CLOSED
    assert cb.transitions == (1, 1, 1)  # closed exactly once


def _raise_boom() -> None:
    raise Boom
