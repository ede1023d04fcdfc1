"""AdaptiveBulkhead: a native slot counter whose limit moves once per sampling window.

Time is a ManualClock: RTTs and windows are exact, nothing waits on real
time except the bounded waits that only run long when something is broken.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import virtrigaud_resilience as vr

MS = 0.001


def bulkhead(limit: vr.adaptive_limits.LimitAlgorithm, clock: vr.ManualClock,
             **kwargs: object) -> vr.AdaptiveBulkhead:
    kwargs.setdefault("min_samples", 1)
    return vr.AdaptiveBulkhead(limit, clock=clock, **kwargs)  # type: ignore[arg-type]


async def settle(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# ------------------------------------------------------------------- slots --


def test_acquire_rejects_when_full_and_counts() -> None:
    ab = bulkhead(vr.AIMD(2), vr.ManualClock())
    a, b = ab.acquire(), ab.acquire()
    assert (ab.limit, ab.in_flight) == (2, 2)
    with pytest.raises(vr.RateLimitError, match=r"adaptive bulkhead full: 2/2"):
        ab.acquire()
    assert ab.try_acquire() is None
    a.release()
    b.ignore()
    assert (ab.in_flight, ab.admitted, ab.rejected) == (0, 2, 2)
    with pytest.raises(RuntimeError, match="already given back"):
        a.release()
    assert ab.in_flight == 0 and a.released


def test_with_blocks_nest_and_give_back_the_latest() -> None:
    ab = bulkhead(vr.AIMD(3), vr.ManualClock())
    with ab:
        with ab:
            assert ab.in_flight == 2
        assert ab.in_flight == 1
    assert ab.in_flight == 0
    with pytest.raises(RuntimeError, match="holds no slot"):
        ab.__exit__(None, None, None)


def test_call_runs_in_a_slot() -> None:
    ab = bulkhead(vr.AIMD(1), vr.ManualClock())
    assert ab.call(lambda x: (x, ab.in_flight), 5) == (5, 1)
    assert ab.in_flight == 0


# ---------------------------------------------------------------- windows --


def test_the_limit_moves_once_per_window_not_per_call() -> None:
    clock = vr.ManualClock()
    ab = bulkhead(vr.AIMD(20), clock, min_window=0.1, max_window=0.1)
    slots = [ab.acquire() for _ in range(10)]
    clock.advance(50 * MS)
    for slot in slots:  # ten drops inside one window: no window closed yet
        slot.release(dropped=True)
    assert ab.limit == 20
    clock.advance(60 * MS)  # the window's end has passed: the next release closes it
    ab.acquire().release()
    assert ab.limit == 18  # one backoff (20 * 0.9) for the whole window
    clock.advance(110 * MS)
    ab.acquire().release()  # a window with one success, 1 in flight: app-limited, holds
    assert ab.limit == 18


def test_a_window_needs_min_samples() -> None:
    clock = vr.ManualClock()
    ab = bulkhead(vr.AIMD(20), clock, min_samples=3, min_window=0.1, max_window=0.1)
    clock.advance(1.0)
    ab.acquire().release(dropped=True)
    ab.acquire().release(dropped=True)
    assert ab.limit == 20
    ab.acquire().release(dropped=True)
    assert ab.limit == 18


def test_the_window_is_twice_the_smallest_rtt_within_bounds() -> None:
    clock = vr.ManualClock()
    ab = bulkhead(vr.AIMD(20), clock, min_window=0.1, max_window=1.0)
    clock.advance(0.2)
    slot = ab.acquire()
    clock.advance(0.3)  # RTT 300 ms: the next window lasts 600 ms
    slot.release(dropped=True)
    assert ab.limit == 18
    clock.advance(0.5)
    ab.acquire().release(dropped=True)
    assert ab.limit == 18  # 500 ms < 600 ms: still open
    clock.advance(0.2)
    ab.acquire().release(dropped=True)
    assert ab.limit == 16


def test_gradient2_comes_down_when_latency_grows() -> None:
    clock = vr.ManualClock()
    ab = bulkhead(vr.Gradient2(50), clock, min_window=0.05, max_window=0.05)

    def window(rtt: float) -> None:
        slots = [ab.acquire() for _ in range(min(ab.limit, 40))]
        clock.advance(rtt)
        for slot in slots:
            slot.release()
        clock.advance(0.05)

    for _ in range(20):
        window(0.01)
    high = ab.limit
    for _ in range(15):
        window(0.05)
    assert ab.limit < high / 2, (high, ab.limit)


def test_drops_are_what_the_module_says() -> None:
    clock = vr.ManualClock()
    for exc, dropped in [(vr.RateLimitError("429"), True), (vr.UnavailableError("x"), True),
                         (TimeoutError(), True), (vr.OperationTimeoutError("t"), True),
                         (asyncio.TimeoutError(), True), (ValueError("bug"), None)]:
        ab = bulkhead(vr.AIMD(20), clock, min_window=0.1, max_window=0.1)
        clock.advance(1.0)
        with pytest.raises(type(exc)), ab.acquire():
            raise exc
        # A drop closes the window at once (its end passed) and backs off;
        # an ignored call records no sample, so no window closes.
        assert ab.limit == (18 if dropped else 20), exc
        assert ab._take_window()[0] == 0


# ----------------------------------------------------------------- asyncio --


async def test_waiters_are_served_first_come_first_served() -> None:
    clock = vr.ManualClock()
    ab = bulkhead(vr.AIMD(1), clock, max_queue=3)
    order: list[int] = []
    held = await ab.acquire_async()

    async def waiter(i: int) -> None:
        async with ab:
            order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await settle()
    assert ab.waiting == 3
    with pytest.raises(vr.RateLimitError):  # the queue is full
        await ab.acquire_async()
    held.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert (ab.in_flight, ab.waiting) == (0, 0)


async def test_a_lowered_limit_hands_no_slot_on_until_under_it() -> None:
    clock = vr.ManualClock()
    ab = bulkhead(vr.AIMD(4), clock, max_queue=5)
    slots = [await ab.acquire_async() for _ in range(4)]
    waiter = asyncio.create_task(ab.acquire_async())
    await settle()
    ab._set_limit(2)
    slots[0].ignore()
    slots[1].ignore()
    await settle()
    assert not waiter.done() and ab.in_flight == 2  # 2 in flight, limit 2: full
    slots[2].ignore()
    got = await asyncio.wait_for(waiter, 5)
    assert ab.in_flight == 2
    got.ignore()
    slots[3].ignore()
    assert ab.in_flight == 0


async def test_a_raised_limit_wakes_as_many_waiters_as_it_frees() -> None:
    clock = vr.ManualClock()
    ab = bulkhead(vr.AIMD(1), clock, max_queue=5, min_window=0.1, max_window=0.1)
    first = await ab.acquire_async()
    waiters = [asyncio.create_task(ab.acquire_async()) for _ in range(3)]
    await settle()
    ab._set_limit(4)  # as a window would; the next give-back wakes the queue
    ab._wake()
    got = await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert ab.in_flight == 4
    for slot in [first, *got]:
        slot.ignore()


async def test_a_window_that_raises_the_limit_wakes_the_queue() -> None:
    clock = vr.ManualClock()
    ab = bulkhead(vr.AIMD(2), clock, max_queue=5, min_window=0.1, max_window=0.1)
    a, b = await ab.acquire_async(), await ab.acquire_async()
    waiter = asyncio.create_task(ab.acquire_async())
    await settle()
    clock.advance(0.2)
    a.release()  # hands its slot to the waiter; 2 in flight >= 2 / 2: AIMD + 1
    assert ab.limit == 3
    c = await asyncio.wait_for(waiter, 5)
    assert ab.in_flight == 2
    b.ignore()
    c.ignore()


async def test_a_timed_out_wait_is_rejected_and_leaves_nothing() -> None:
    ab = bulkhead(vr.AIMD(1), vr.ManualClock(), max_queue=1)
    held = ab.acquire()
    with pytest.raises(vr.RateLimitError):
        await ab.acquire_async(timeout=0.01)
    assert (ab.waiting, ab.in_flight, ab.rejected) == (0, 1, 1)
    held.ignore()


async def test_call_async_queues() -> None:
    ab = bulkhead(vr.AIMD(1), vr.ManualClock(), max_queue=2)

    async def work(i: int) -> int:
        await asyncio.sleep(0)
        return i * ab.in_flight

    assert await asyncio.gather(*(ab.call_async(work, i) for i in range(3))) == [0, 1, 2]


# ----------------------------------------------------------------- threads --


def test_threads_never_exceed_the_limit() -> None:
    ab = vr.AdaptiveBulkhead(vr.AIMD(3, min_limit=3, max_limit=3), min_samples=1)
    seen: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(2000):
                slot = ab.try_acquire()
                if slot is not None:
                    seen.append(ab.in_flight)
                    slot.release()
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert max(seen) <= 3 and ab.in_flight == 0


# --------------------------------------------------------------- bad input --


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"min_limit": 10, "max_limit": 5}, ValueError, "AdaptiveBulkhead min_limit must be <="),
    ({"min_limit": 0}, ValueError, "AdaptiveBulkhead min_limit must be >= 1"),
    ({"max_queue": -1}, ValueError, "AdaptiveBulkhead max_queue must be >= 0"),
    ({"min_window": float("nan")}, ValueError, "AdaptiveBulkhead min_window"),
    ({"max_window": float("inf")}, ValueError, "AdaptiveBulkhead max_window"),
    ({"min_window": 2, "max_window": 1}, ValueError, "AdaptiveBulkhead min_window must be <="),
    ({"min_samples": 0}, ValueError, "AdaptiveBulkhead min_samples must be >= 1"),
    ({"limit": 20}, TypeError, "AdaptiveBulkhead limit must be an AIMD, Gradient2 or Vegas"),
    ({"clock": 3}, TypeError, "AdaptiveBulkhead clock"),
    ({"provider": 3}, TypeError, "AdaptiveBulkhead provider must be a str"),
])
def test_bad_input_names_the_field(kwargs: dict[str, object], error: type[Exception],
                                   message: str) -> None:
    with pytest.raises(error, match=message):
        vr.AdaptiveBulkhead(**kwargs)  # type: ignore[arg-type]


def test_the_bounds_bound_the_algorithm() -> None:
    ab = vr.AdaptiveBulkhead(vr.AIMD(500), min_limit=2, max_limit=64)
    assert ab.limit == 64
    assert (ab.algorithm.min_limit, ab.algorithm.max_limit) == (2, 64)
    with pytest.raises(TypeError, match="AdaptiveSlot dropped must be a bool"):
        ab.acquire().release(dropped=1)  # type: ignore[arg-type]


def test_an_algorithm_that_raises_leaves_the_windows_working() -> None:
    class Broken(vr.AIMD):
        fail = True

        def update(self, rtt_ns: int, in_flight: int, dropped: bool) -> int:
            if Broken.fail:
                raise ZeroDivisionError("a bug in a custom algorithm")
            return super().update(rtt_ns, in_flight, dropped)

    clock = vr.ManualClock()
    ab = bulkhead(Broken(20), clock, min_window=0.1, max_window=0.1)
    clock.advance(0.2)
    slot = ab.acquire()
    with pytest.raises(ZeroDivisionError):
        slot.release(dropped=True)
    assert ab.in_flight == 0  # the slot went back before the window closed
    Broken.fail = False
    clock.advance(0.2)
    ab.acquire().release(dropped=True)
    assert ab.limit == 18  # the next window closed and backed off
