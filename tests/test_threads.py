"""Python threads hammering one bucket, breaker, policy, bulkhead, reservation,
permit and the ``vr.retry`` cache: what the design guarantees.

The clock is a frozen ManualClock, so the outcome does not depend on timing.
A tiny switch interval makes the interpreter interleave the threads often;
on a free-threaded build (``.ci/run`` runs this file on one) the threads run
truly in parallel. Selected with ``-m threads``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience import BreakerState

THREADS = 4
CALLS = 20_000  # per thread
TOTAL = THREADS * CALLS
T = TypeVar("T")

pytestmark = [pytest.mark.threads, pytest.mark.usefixtures("frequent_switches")]


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


# -------------------------------------------------------------------- policy --


def test_shared_policy_counts_every_call_on_every_layer(clock: vr.ManualClock) -> None:
    cb = vr.CircuitBreaker("t", config=vr.BreakerConfig(failure_threshold=1), clock=clock)
    tb = vr.TokenBucket(qps=10, burst=TOTAL, clock=clock)
    bh = vr.Bulkhead(THREADS)
    policy = vr.Policy("t", breaker=cb, limiter=tb, bulkhead=bh, clock=clock)

    def work() -> int:
        execute = policy.execute
        return sum(execute(int, 1) for _ in range(CALLS))

    assert sum(hammer(work)) == TOTAL
    assert cb.successes == TOTAL
    assert (tb.admitted, tb.rejected, tb.tokens) == (TOTAL, 0, 0)
    assert (bh.admitted, bh.rejected, bh.in_flight) == (TOTAL, 0, 0)
    assert cb.state is BreakerState.CLOSED


def test_separate_objects_in_each_thread_count_exactly(clock: vr.ManualClock) -> None:
    def work() -> tuple[int, int, int]:
        cb = vr.CircuitBreaker("t", clock=clock)
        tb = vr.TokenBucket(qps=10, burst=CALLS // 2, clock=clock)
        policy = vr.Policy("t", breaker=cb, clock=clock)
        for i in range(CALLS):
            policy.execute(int, i)
            tb.try_acquire()
        return cb.successes, tb.admitted, tb.rejected

    assert hammer(work) == [(CALLS, CALLS // 2, CALLS - CALLS // 2)] * THREADS


# ------------------------------------------------------------------ bulkhead --


def test_bulkhead_never_exceeds_its_limit_and_frees_every_slot() -> None:
    limit = 2
    bh = vr.Bulkhead(limit)
    inside = [0]
    peak = [0]
    lock = threading.Lock()

    def work() -> int:
        entered = 0
        for _ in range(CALLS // 4):
            if not bh.try_enter():
                continue
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            with lock:
                inside[0] -= 1
            bh.exit()
            entered += 1
        return entered

    entered = sum(hammer(work))
    assert peak[0] <= limit
    assert bh.admitted == entered
    assert bh.admitted + bh.rejected == THREADS * (CALLS // 4)
    assert bh.in_flight == 0
    with pytest.raises(RuntimeError):
        bh.exit()  # every slot was given back exactly once: none is left to free


# ------------------------------------------------------ one-shot release tokens --


ROUNDS = 300


def race_in_rounds(prepare: Callable[[], T], act: Callable[[T], int],
                   check: Callable[[T, list[int]], None]) -> None:
    """ROUNDS times: `prepare` one object, then THREADS threads `act` on it at
    once; `check` sees the object and every thread's result."""
    barrier = threading.Barrier(THREADS + 1)
    current: list[T] = []
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            rounds()
        except threading.BrokenBarrierError:
            pass  # the main thread failed a check and gave up

    def rounds() -> None:
        for _ in range(ROUNDS):
            barrier.wait()  # the round's object is ready
            try:
                result = act(current[0])
            except BaseException as exc:  # noqa: BLE001 - surfaced below
                with lock:
                    errors.append(exc)
            else:
                with lock:
                    results.append(result)
            barrier.wait()  # every thread acted

    workers = [threading.Thread(target=run) for _ in range(THREADS)]
    for w in workers:
        w.start()
    try:
        for _ in range(ROUNDS):
            current[:] = [prepare()]
            results.clear()
            barrier.wait()
            barrier.wait()
            assert errors == []
            check(current[0], list(results))
    except BaseException:
        barrier.abort()  # frees the workers; their BrokenBarrierError is moot
        raise
    finally:
        for w in workers:
            w.join()


def test_reservation_cancelled_by_many_threads_refunds_once(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=10, burst=10, clock=clock)
    assert tb.try_acquire(10)  # drained: every reservation waits, so its refund shows

    def check(r: vr.Reservation, restored: list[int]) -> None:
        assert sorted(restored) == [0] * (THREADS - 1) + [2]
        assert tb.tokens == 0  # exactly the two reserved tokens came back

    race_in_rounds(lambda: tb.reserve(2), lambda r: r.cancel(), check)


def test_permit_reported_by_many_threads_counts_once(clock: vr.ManualClock) -> None:
    cb = vr.CircuitBreaker("t", clock=clock)
    before = [0]

    def prepare() -> vr.Permit:
        before[0] = cb.successes
        permit = cb.try_acquire()
        assert permit is not None
        return permit

    def report(permit: vr.Permit) -> int:
        try:
            permit.success()
        except RuntimeError:  # already reported
            return 0
        return 1

    def check(permit: vr.Permit, reported: list[int]) -> None:
        assert sum(reported) == 1
        assert cb.successes == before[0] + 1

    race_in_rounds(prepare, report, check)
    assert cb.released == 0


# --------------------------------------------------------- the vr.retry cache --


def test_retry_cache_under_threads_builds_one_retrier_per_config(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    retry_module = importlib.import_module("virtrigaud_resilience.retry")
    monkeypatch.setattr(retry_module, "_RETRIERS_BY_CONFIG", {})
    size = retry_module._RETRIERS_CACHE_SIZE
    # More configs than the cache holds: threads read while others evict.
    configs = [vr.RetryConfig(max_attempts=1 + i % 5, base_delay=i * 1e-3, max_delay=1.0)
               for i in range(size + 16)]

    def work() -> int:
        done = 0
        for i in range(CALLS // 10):
            config = configs[i % len(configs)]
            assert vr.retry(config, int, "5") == 5
            assert retry_module._retrier_for(config).config is config
            done += 1
        return done

    assert sum(hammer(work)) == THREADS * (CALLS // 10)
    assert len(retry_module._RETRIERS_BY_CONFIG) <= size
