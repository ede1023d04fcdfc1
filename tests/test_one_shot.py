"""What goes back exactly once: a Reservation's tokens, a Permit's outcome, a Bulkhead slot.

Each is a native atomic flag (``_core.OneShot``): of any number of threads
that give the same thing back, one does. The hammer tests interleave Python
threads as often as the interpreter allows (on a free-threaded build they
run truly at once); the switch-point tests put a second call at every
bytecode of the first (switch_points.py), which finds a check-then-set in
Python under the GIL every time; the bulkhead tests are deterministic.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience.bulkhead import BulkheadSlot

from switch_points import each_switch_point

THREADS = 4


pytestmark = pytest.mark.usefixtures("frequent_switches")


def run_together(work: Callable[[], None], threads: int = THREADS) -> None:
    """Runs `work` in `threads` threads released together; re-raises the first error."""
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def body() -> None:
        barrier.wait()
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=body) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]


# ------------------------------------------------------------ Reservation --


def test_a_reservation_refunds_once_whichever_threads_cancel_it() -> None:
    clock = vr.ManualClock()
    bucket = vr.TokenBucket(1.0, burst=1, clock=clock)
    reservations = [bucket.reserve(1) for _ in range(400)]  # 399 waiting
    restored = [0] * THREADS
    index = iter(range(THREADS))
    lock = threading.Lock()
    # A round per reservation, latest first, every thread cancelling the same
    # one at once. The barrier keeps rounds apart: x/time/rate's Cancel gives
    # back nothing while a later reservation still holds its tokens, so a
    # thread running ahead into the next reservation would see a refund
    # legitimately withheld, not a double or a lost one-shot.
    rounds = threading.Barrier(THREADS)

    def cancel_all() -> None:
        with lock:
            me = next(index)
        for r in reversed(reservations):
            rounds.wait()
            restored[me] += r.cancel()

    run_together(cancel_all)
    # One refund per waiting reservation, never two; the first one's time had come.
    assert sum(restored) == 399
    assert bucket.cancelled == 399
    assert bucket.tokens == 0.0


def test_cancel_then_refund_gives_back_once() -> None:
    bucket = vr.TokenBucket(1.0, burst=1, clock=vr.ManualClock())
    bucket.reserve(1)
    r = bucket.reserve(1)  # waits a second
    assert r.cancel() == 1
    assert r._refund() == 0
    assert r.cancel() == 0
    assert bucket.tokens == 0.0


def _waiting_reservation() -> tuple[vr.TokenBucket, vr.Reservation]:
    bucket = vr.TokenBucket(1.0, burst=1, clock=vr.ManualClock())
    bucket.reserve(1)  # the one token
    return bucket, bucket.reserve(1)  # waits a second: its tokens can come back


@pytest.mark.parametrize(("first", "second"), [("cancel", "cancel"), ("cancel", "_refund"),
                                               ("_refund", "cancel"), ("_refund", "_refund")])
def test_a_reservation_given_back_twice_at_any_switch_point_refunds_once(
        first: str, second: str) -> None:
    # The old check-then-set (`if self._cancelled: return 0` then
    # `self._cancelled = True`) refunded twice when the second call came
    # between the two: 2 tokens back for 1 taken.
    def check(subject: tuple[vr.TokenBucket, vr.Reservation], a: int, b: int) -> None:
        bucket, _ = subject
        assert sorted([a, b]) == [0, 1]
        assert bucket.tokens == 0.0  # the reserved token came back, once

    tried = each_switch_point(_waiting_reservation,
                              lambda s: int(getattr(s[1], first)()),
                              lambda s: int(getattr(s[1], second)()), check)
    assert tried > 3  # the Python part of the first call was stepped through


# ----------------------------------------------------------------- Permit --


def test_a_permit_is_reported_once_whichever_threads_report_it() -> None:
    breaker = vr.CircuitBreaker("once", clock=vr.ManualClock())
    permits = [breaker.try_acquire() for _ in range(2000)]
    refused = [0]
    lock = threading.Lock()

    def release_all() -> None:
        for p in permits:
            assert p is not None
            try:
                p.release()
            except RuntimeError:
                with lock:
                    refused[0] += 1

    run_together(release_all)
    assert breaker.released == 2000
    assert refused[0] == 2000 * (THREADS - 1)
    assert all(p is not None and p.reported for p in permits)


def _reporter(how: str) -> Callable[[vr.Permit], int]:
    """Reports a permit as `how` says; 1 if that counted, 0 if it was already reported."""
    def report(permit: vr.Permit) -> int:
        try:
            if how == "record":
                permit.record(None)
            else:
                getattr(permit, how)()
        except RuntimeError:
            return 0
        return 1
    return report


@pytest.mark.parametrize(("first", "second"), [("success", "release"), ("failure", "success"),
                                               ("release", "failure"), ("record", "release")])
def test_a_permit_reported_twice_at_any_switch_point_counts_once(first: str, second: str) -> None:
    # The old check-then-set (`if self._done: raise` then `self._done = True`)
    # counted both reports when the second came between the two.
    def prepare() -> tuple[vr.CircuitBreaker, vr.Permit]:
        breaker = vr.CircuitBreaker("switch-points", clock=vr.ManualClock())
        permit = breaker.try_acquire()
        assert permit is not None
        return breaker, permit

    def check(subject: tuple[vr.CircuitBreaker, vr.Permit], a: int, b: int) -> None:
        breaker, permit = subject
        assert a + b == 1
        assert breaker.successes + breaker.failures + breaker.released == 1
        assert permit.reported

    tried = each_switch_point(prepare, lambda s: _reporter(first)(s[1]),
                              lambda s: _reporter(second)(s[1]), check)
    assert tried > 3


# --------------------------------------------------------------- Bulkhead --


def test_an_unmatched_exit_cannot_let_a_third_call_in() -> None:
    # Two threads hold the two slots; a third thread's exit() without an enter
    # used to free one of theirs, and a third call ran against a limit of 2.
    bh = vr.Bulkhead(2)
    entered = threading.Barrier(3)
    done = threading.Event()

    def hold() -> None:
        with bh:
            entered.wait()
            assert done.wait(5.0)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    entered.wait()
    try:
        with pytest.raises(RuntimeError, match="without a matching enter"):
            bh.exit()
        assert bh.in_flight == 2
        with pytest.raises(vr.RateLimitError):
            bh.enter()
        assert not bh.try_enter()
    finally:
        done.set()
        for t in holders:
            t.join()
    assert bh.in_flight == 0


def test_enter_returns_a_token_that_goes_back_once() -> None:
    bh = vr.Bulkhead(2)
    slot = bh.enter()
    assert isinstance(slot, BulkheadSlot)
    assert slot.bulkhead is bh and not slot.released
    bh.exit(slot)
    assert slot.released and bh.in_flight == 0
    with pytest.raises(RuntimeError, match="already given back"):
        bh.exit(slot)
    with pytest.raises(RuntimeError, match="without a matching enter"):
        bh.exit()  # the token went back: this thread holds nothing
    assert bh.in_flight == 0


def test_a_token_of_another_bulkhead_is_refused() -> None:
    a, b = vr.Bulkhead(1), vr.Bulkhead(1)
    slot = a.enter()
    with pytest.raises(RuntimeError, match="another bulkhead"):
        b.exit(slot)
    assert (a.in_flight, b.in_flight, slot.released) == (1, 0, False)
    a.exit()


def test_a_token_given_back_by_many_threads_frees_one_slot() -> None:
    bh = vr.Bulkhead(3)
    slots = [bh.enter() for _ in range(3)]
    given = [0]
    lock = threading.Lock()

    def give_back_all() -> None:
        for s in slots:
            try:
                bh.exit(s)
            except RuntimeError:
                continue
            with lock:
                given[0] += 1

    run_together(give_back_all)
    assert given[0] == 3
    assert bh.in_flight == 0


def test_a_slot_given_back_twice_at_any_switch_point_frees_once() -> None:
    def prepare() -> tuple[vr.Bulkhead, BulkheadSlot]:
        bh = vr.Bulkhead(2)
        bh.enter()  # held by someone else throughout: must stay held
        return bh, bh.enter()

    def give_back(subject: tuple[vr.Bulkhead, BulkheadSlot]) -> int:
        bh, slot = subject
        try:
            bh.exit(slot)
        except RuntimeError:
            return 0
        return 1

    def check(subject: tuple[vr.Bulkhead, BulkheadSlot], a: int, b: int) -> None:
        bh, slot = subject
        assert a + b == 1
        assert bh.in_flight == 1 and slot.released

    # Bulkhead.exit is one native call, so under the GIL it has no switch
    # point of its own: the one order tried is one call after the other. The native
    # claim itself races on the free-threaded build (the test above).
    assert each_switch_point(prepare, give_back, give_back, check) >= 1


def test_tokenless_exits_give_back_this_threads_slots_latest_first() -> None:
    bh = vr.Bulkhead(3)
    first = bh.enter()
    assert bh.try_enter()
    second_token = bh.enter()
    bh.exit(first)  # out of order, by its token
    bh.exit()  # the latest: second_token
    assert second_token.released
    bh.exit()  # the one try_enter() took
    assert bh.in_flight == 0
    with pytest.raises(RuntimeError):
        bh.exit()


def test_a_slot_taken_in_another_thread_needs_its_token() -> None:
    bh = vr.Bulkhead(1)
    taken: list[BulkheadSlot] = []
    t = threading.Thread(target=lambda: taken.append(bh.enter()))
    t.start()
    t.join()
    with pytest.raises(RuntimeError, match="without a matching enter"):
        bh.exit()
    assert bh.in_flight == 1
    bh.exit(taken[0])
    assert bh.in_flight == 0


async def test_tasks_give_back_their_own_slots() -> None:
    bh = vr.Bulkhead(2, max_queue=2)

    async def hold(release: asyncio.Event) -> None:
        async with bh:
            await release.wait()

    release = asyncio.Event()
    tasks = [asyncio.create_task(hold(release)) for _ in range(2)]
    await asyncio.sleep(0)
    assert bh.in_flight == 2
    with pytest.raises(RuntimeError, match="without a matching enter"):
        bh.exit()  # this task holds none of them
    release.set()
    await asyncio.gather(*tasks)
    assert bh.in_flight == 0
    slot = await bh.enter_async()
    bh.exit(slot)
    assert (bh.in_flight, bh.admitted) == (0, 3)


# ------------------------------------------------- native with-bookkeeping --


def test_with_blocks_in_threads_give_back_their_own_slots() -> None:
    # Each thread nests `with bh:` twice while the others do the same; a thread's
    # tokenless exit() inside its blocks gives back nothing of another thread's.
    bh = vr.Bulkhead(8)
    inside = threading.Barrier(4)

    def nest() -> None:
        with bh:
            with bh:
                inside.wait(5.0)
                assert bh.in_flight == 8
                inside.wait(5.0)
        with pytest.raises(RuntimeError, match="without a matching enter"):
            bh.exit()  # both blocks gave theirs back: this thread holds nothing

    run_together(nest, threads=4)
    assert bh.in_flight == 0


def test_exit_refuses_what_is_not_a_slot_and_slots_are_not_constructible() -> None:
    bh = vr.Bulkhead(1)
    bh.enter()
    with pytest.raises(TypeError, match="BulkheadSlot"):
        bh.exit(object())  # type: ignore[arg-type]
    assert bh.in_flight == 1
    with pytest.raises(TypeError):
        BulkheadSlot()  # type: ignore[call-arg]
    bh.exit()
    assert bh.in_flight == 0


def test_a_long_chain_of_held_slots_is_freed_without_recursion() -> None:
    # A thread that takes 200,000 slots and never gives them back leaves a chain
    # that long in its context; freeing it when the thread ends must not recurse
    # 200,000 deep (a crash), and the slots stay counted as in flight.
    n = 200_000
    bh = vr.Bulkhead(n)

    def take_all() -> None:
        for _ in range(n):
            assert bh.try_enter()

    t = threading.Thread(target=take_all)
    t.start()
    t.join()
    assert bh.in_flight == n
    with pytest.raises(RuntimeError, match="without a matching enter"):
        bh.exit()  # those were the other thread's
