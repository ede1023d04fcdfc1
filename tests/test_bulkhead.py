"""Bulkhead: bounded in-flight calls; sync callers are rejected, asyncio callers may queue.

No test waits on real time except the enter_async timeout (10 ms) and the
bounded waits that only run long when something is broken.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import virtrigaud_resilience as vr


async def settle(n: int = 5) -> None:
    """Lets queued tasks run up to their next suspension."""
    for _ in range(n):
        await asyncio.sleep(0)


# ------------------------------------------------------------------- sync --


def test_sync_with_rejects_when_full() -> None:
    bh = vr.Bulkhead(2)
    assert (bh.max_concurrent, bh.max_queue, bh.in_flight, bh.waiting) == (2, 0, 0, 0)
    with bh:
        assert bh.in_flight == 1
        with bh:
            assert bh.in_flight == 2
            with pytest.raises(vr.RateLimitError, match="bulkhead full") as info, bh:
                pytest.fail("entered a full bulkhead")
            assert vr.is_retryable(info.value)
            assert bh.in_flight == 2
        assert bh.in_flight == 1
    assert bh.in_flight == 0
    assert bh.admitted == 2
    assert bh.rejected == 1


def test_sync_slot_returned_on_exception() -> None:
    bh = vr.Bulkhead(1)
    for _ in range(3):
        with pytest.raises(ZeroDivisionError), bh:
            assert bh.in_flight == 1
            1 / 0  # noqa: B018
        assert bh.in_flight == 0
    with bh:
        pass
    assert bh.admitted == 4
    assert bh.rejected == 0


def test_sync_base_exceptions_return_the_slot_too() -> None:
    bh = vr.Bulkhead(1)
    with pytest.raises(KeyboardInterrupt), bh:
        raise KeyboardInterrupt
    assert bh.in_flight == 0


def test_try_enter_and_exit() -> None:
    bh = vr.Bulkhead(3)
    assert [bh.try_enter() for _ in range(5)] == [True, True, True, False, False]
    assert bh.in_flight == 3
    bh.exit()
    assert bh.try_enter() is True
    assert bh.try_enter() is False
    assert (bh.admitted, bh.rejected) == (4, 3)
    for _ in range(3):
        bh.exit()
    assert bh.in_flight == 0


def test_enter_never_waits() -> None:
    bh = vr.Bulkhead(1, max_queue=10)  # a queue is for asyncio callers only
    bh.enter()
    with pytest.raises(vr.RateLimitError):
        bh.enter()
    assert bh.waiting == 0
    bh.exit()


def test_rejection_names_the_provider() -> None:
    bh = vr.Bulkhead(1, provider_type="vsphere", provider="prod")
    bh.enter()
    with pytest.raises(vr.RateLimitError, match="1/1 calls in flight to vsphere/prod"):
        bh.enter()
    assert "in_flight=1" in repr(bh)


@pytest.mark.parametrize(("args", "error"), [
    ((0,), ValueError), ((-1,), ValueError), ((2**30 + 1,), ValueError), ((1.5,), TypeError),
    (("2",), TypeError), ((1, -1), ValueError), ((True,), TypeError),
])
def test_constructor_validates(args: tuple, error: type) -> None:
    with pytest.raises(error, match="max_concurrent|max_queue"):
        vr.Bulkhead(*args)


def test_threads_never_exceed_the_limit() -> None:
    bh = vr.Bulkhead(3)
    peak = [0]
    lock = threading.Lock()
    ok = [0]
    rejected = [0]
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(500):
            try:
                with bh, lock:
                    peak[0] = max(peak[0], bh.in_flight)
                    ok[0] += 1
            except vr.RateLimitError:
                with lock:
                    rejected[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] <= 3
    assert bh.in_flight == 0
    assert ok[0] + rejected[0] == 4000
    assert bh.admitted == ok[0]
    assert bh.rejected == rejected[0]


# ------------------------------------------------------------------ async --


async def test_async_with_enters_at_once_when_free() -> None:
    bh = vr.Bulkhead(2)
    async with bh, bh:
        assert bh.in_flight == 2
    assert bh.in_flight == 0
    assert bh.waiting == 0


async def test_async_with_without_queue_rejects() -> None:
    bh = vr.Bulkhead(1)  # max_queue=0: nobody waits
    bh.enter()
    with pytest.raises(vr.RateLimitError):
        async with bh:
            pytest.fail("entered a full bulkhead")
    assert bh.waiting == 0
    assert bh.in_flight == 1
    bh.exit()


async def test_async_queue_is_fifo_and_bounded() -> None:
    bh = vr.Bulkhead(1, max_queue=3)
    bh.enter()
    order: list[int] = []

    async def worker(i: int) -> None:
        async with bh:
            order.append(i)
            assert bh.in_flight == 1
            await asyncio.sleep(0)

    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(worker(i)))
        await settle()
    assert bh.waiting == 3
    # a fourth would exceed max_queue: rejected at once
    with pytest.raises(vr.RateLimitError):
        await bh.enter_async()
    assert bh.waiting == 3
    assert order == []
    bh.exit()
    await asyncio.wait_for(asyncio.gather(*tasks), 2.0)
    assert order == [0, 1, 2]
    assert bh.in_flight == 0
    assert bh.waiting == 0


async def test_async_slot_returned_on_exception() -> None:
    bh = vr.Bulkhead(1, max_queue=1)
    with pytest.raises(ValueError):
        async with bh:
            raise ValueError("x")
    assert bh.in_flight == 0
    bh.enter()
    waiter = asyncio.create_task(bh.enter_async())
    await settle()
    assert bh.waiting == 1
    bh.exit()
    slot = await asyncio.wait_for(waiter, 2.0)
    assert bh.in_flight == 1
    assert bh.waiting == 0
    bh.exit(slot)


async def test_enter_async_timeout_leaves_nothing_held() -> None:
    bh = vr.Bulkhead(1, max_queue=2)
    bh.enter()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(vr.RateLimitError):
        await bh.enter_async(timeout=0.01)
    assert loop.time() - t0 >= 0.009
    assert bh.waiting == 0
    assert bh.in_flight == 1
    # the task is not left cancelled: it can await again
    await asyncio.sleep(0)
    assert getattr(asyncio.current_task(), "cancelling", lambda: 0)() == 0  # 3.11+
    bh.exit()
    # the timed-out waiter left no stale entry: the next waiter gets the next slot
    bh.enter()
    waiter = asyncio.create_task(bh.enter_async(timeout=1.0))
    await settle()
    bh.exit()
    slot = await asyncio.wait_for(waiter, 2.0)
    assert bh.in_flight == 1
    bh.exit(slot)


async def test_enter_async_timeout_not_needed_when_free() -> None:
    bh = vr.Bulkhead(1, max_queue=1)
    await bh.enter_async(timeout=0.01)
    assert bh.in_flight == 1
    await asyncio.sleep(0.015)  # the timer was cancelled: nothing fires now
    assert bh.in_flight == 1
    bh.exit()


async def test_enter_async_timeout_validated() -> None:
    bh = vr.Bulkhead(1, max_queue=1)
    bh.enter()
    with pytest.raises(ValueError, match="timeout"):
        await bh.enter_async(timeout=-1)
    assert bh.waiting == 0
    bh.exit()


async def test_cancelling_a_queued_waiter() -> None:
    bh = vr.Bulkhead(1, max_queue=2)
    bh.enter()
    waiter = asyncio.create_task(bh.enter_async())
    await settle()
    assert bh.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bh.waiting == 0
    assert bh.in_flight == 1
    bh.exit()
    assert bh.in_flight == 0
    # nothing stale: a new waiter queues and is woken normally
    bh.enter()
    second = asyncio.create_task(bh.enter_async())
    await settle()
    assert bh.waiting == 1
    bh.exit()
    slot = await asyncio.wait_for(second, 2.0)
    assert bh.in_flight == 1
    bh.exit(slot)


async def test_cancelling_the_first_of_two_waiters_keeps_the_second() -> None:
    bh = vr.Bulkhead(1, max_queue=2)
    bh.enter()
    first = asyncio.create_task(bh.enter_async())
    await settle()
    second = asyncio.create_task(bh.enter_async())
    await settle()
    assert bh.waiting == 2
    first.cancel()
    await settle()
    assert bh.waiting == 1
    bh.exit()
    slot = await asyncio.wait_for(second, 2.0)
    assert first.cancelled()
    assert bh.in_flight == 1
    assert bh.waiting == 0
    bh.exit(slot)


async def test_cancelled_woken_waiter_passes_the_wakeup_on() -> None:
    bh = vr.Bulkhead(1, max_queue=2)
    bh.enter()
    first = asyncio.create_task(bh.enter_async())
    await settle()
    second = asyncio.create_task(bh.enter_async())
    await settle()
    bh.exit()       # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs: it passes the wake-up on
    slot = await asyncio.wait_for(second, 2.0)
    assert first.cancelled()
    assert (bh.in_flight, bh.waiting, bh.rejected) == (1, 0, 0)
    bh.exit(slot)



async def test_exit_from_another_thread_wakes_a_waiter() -> None:
    bh = vr.Bulkhead(1, max_queue=1)
    held = bh.enter()
    waiter = asyncio.create_task(bh.enter_async())
    await settle()
    assert bh.waiting == 1
    t = threading.Thread(target=bh.exit, args=(held,))
    t.start()
    t.join()
    slot = await asyncio.wait_for(waiter, 2.0)
    assert bh.in_flight == 1
    assert bh.waiting == 0
    bh.exit(slot)


async def test_native_policy_fast_path_frees_a_slot_for_an_asyncio_waiter() -> None:
    bh = vr.Bulkhead(1, max_queue=1)
    policy = vr.PolicyBuilder("native").with_bulkhead(bh).build()
    release = threading.Event()
    inside = threading.Event()

    def blocking_call(x: int) -> int:
        inside.set()
        assert release.wait(2.0)
        return x * 2

    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(policy.execute(blocking_call, 21)))
    t.start()
    try:
        assert await asyncio.get_running_loop().run_in_executor(None, inside.wait, 2.0)
        assert bh.in_flight == 1
        waiter = asyncio.create_task(bh.enter_async())
        await settle()
        assert bh.waiting == 1
        release.set()  # the native fast path exits the bulkhead from the other thread
        slot = await asyncio.wait_for(waiter, 2.0)
    finally:
        release.set()
        t.join()
    assert result == [42]
    assert bh.in_flight == 1
    assert bh.waiting == 0
    bh.exit(slot)


async def test_native_policy_fast_path_failure_also_wakes_a_waiter() -> None:
    bh = vr.Bulkhead(1, max_queue=1)
    policy = vr.PolicyBuilder("native").with_bulkhead(bh).build()
    waiter_task: list[asyncio.Task] = []
    loop = asyncio.get_running_loop()

    def failing() -> None:
        # queue a waiter while this call holds the slot, then fail (non-retryable)
        fut = asyncio.run_coroutine_threadsafe(_queue(bh, waiter_task), loop)
        fut.result(2.0)
        raise vr.NotFoundError("gone")

    with pytest.raises(vr.NotFoundError):
        await loop.run_in_executor(None, policy.execute, failing)
    slot = await asyncio.wait_for(waiter_task[0], 2.0)
    assert bh.in_flight == 1
    bh.exit(slot)


async def _queue(bh: vr.Bulkhead, out: list) -> None:
    out.append(asyncio.create_task(bh.enter_async()))
    await settle()
    assert bh.waiting == 1


async def test_policy_async_queues_for_the_bulkhead() -> None:
    bh = vr.Bulkhead(1, max_queue=1)
    policy = vr.PolicyBuilder("q").with_bulkhead(bh).build()
    bh.enter()

    async def work() -> str:
        assert bh.in_flight == 1
        return "done"

    task = asyncio.create_task(policy.execute_async(work))
    await settle()
    assert bh.waiting == 1
    third = policy.execute_async(work)
    with pytest.raises(vr.RateLimitError):  # the queue (1) is full
        await third
    bh.exit()
    assert await asyncio.wait_for(task, 2.0) == "done"
    assert bh.in_flight == 0
    assert bh.waiting == 0


# --------------------------------------------------------------- counters --


def test_counters_sync() -> None:
    bh = vr.Bulkhead(2)
    bh.enter()
    bh.enter()
    for _ in range(3):
        with pytest.raises(vr.RateLimitError):
            bh.enter()
    bh.exit()
    bh.enter()
    assert (bh.in_flight, bh.admitted, bh.rejected) == (2, 3, 3)


async def test_counters_async_rejections() -> None:
    bh = vr.Bulkhead(1, max_queue=0)
    bh.enter()
    for _ in range(2):
        with pytest.raises(vr.RateLimitError):
            await bh.enter_async()
    assert (bh.in_flight, bh.admitted, bh.rejected) == (1, 1, 2)
    bh.exit()


async def test_counters_queued_then_admitted_is_not_a_rejection() -> None:
    bh = vr.Bulkhead(1, max_queue=2)
    bh.enter()
    waiters = [asyncio.create_task(bh.enter_async()) for _ in range(2)]
    await settle()
    assert bh.waiting == 2
    held = None  # this task's own slot first, then each waiter's in turn
    for w in waiters:
        bh.exit(held)
        held = await asyncio.wait_for(w, 2.0)
    bh.exit(held)
    assert bh.admitted == 3
    assert bh.rejected == 0


# ------------------------------------------------ first come, first served --


async def test_a_freed_slot_goes_to_the_longest_waiter_not_to_a_looping_task() -> None:
    # A task that exits and re-enters at once must queue behind the waiter already
    # there: the slot is handed to the waiter as it is freed, so nobody can take it
    # in between (asyncio.Semaphore's guarantee, and the docstring's).
    bh = vr.Bulkhead(1, max_queue=4)
    order: list[str] = []

    async def looper() -> None:
        for n in range(3):
            async with bh:
                order.append(f"loop{n}")
                await asyncio.sleep(0)

    async def waiter() -> None:
        async with bh:
            order.append("waiter")

    await bh.enter_async()
    loop_task = asyncio.create_task(looper())
    await settle()
    wait_task = asyncio.create_task(waiter())
    await settle()
    assert bh.waiting == 2
    bh.exit()
    await asyncio.gather(loop_task, wait_task)
    # the looper queued first: it gets the first slot, then must yield to the waiter
    assert order == ["loop0", "waiter", "loop1", "loop2"]
    assert (bh.in_flight, bh.waiting) == (0, 0)


async def test_a_newcomer_cannot_barge_past_a_queued_waiter() -> None:
    # The sync path (and a policy's native fast path) asks for a slot without
    # queueing: while a waiter is queued it is refused, even when a slot is free
    # for the instant between the exit and the waiter's wake-up.
    bh = vr.Bulkhead(1, max_queue=1)
    policy = vr.PolicyBuilder("barge").with_bulkhead(bh).build()
    bh.enter()
    waiter = asyncio.create_task(bh.enter_async())
    await settle()
    bh.exit()  # handed straight to the waiter: still in flight
    assert bh.in_flight == 1
    assert not bh.try_enter()
    with pytest.raises(vr.RateLimitError):
        bh.enter()
    with pytest.raises(vr.RateLimitError):
        policy.execute(lambda: "barged")
    slot = await waiter
    assert bh.in_flight == 1
    bh.exit(slot)
    assert bh.in_flight == 0
    assert policy.execute(lambda: "fair") == "fair"


async def test_a_slot_handed_to_a_cancelled_waiter_passes_on() -> None:
    bh = vr.Bulkhead(1, max_queue=2)
    bh.enter()
    first = asyncio.create_task(bh.enter_async())
    second = asyncio.create_task(bh.enter_async())
    await settle()
    bh.exit()        # handed to `first`...
    first.cancel()   # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    slot = await second  # the slot went on to `second`
    assert (bh.in_flight, bh.waiting) == (1, 0)
    bh.exit(slot)
    assert bh.in_flight == 0


async def test_a_slot_handed_over_from_another_thread() -> None:
    bh = vr.Bulkhead(1, max_queue=1)
    held = bh.enter()
    waiter = asyncio.create_task(bh.enter_async())
    await settle()
    exiting = threading.Thread(target=bh.exit, args=(held,))
    exiting.start()
    exiting.join()
    assert bh.in_flight == 1  # handed over, never back in the pool
    assert not bh.try_enter()
    bh.exit(await asyncio.wait_for(waiter, 5.0))
    assert (bh.in_flight, bh.admitted) == (0, 2)


# ------------------------------------------------------------ exit misuse --


def test_exit_without_enter_is_refused_and_changes_nothing() -> None:
    bh = vr.Bulkhead(1)
    with pytest.raises(RuntimeError, match="without a matching enter"):
        bh.exit()
    assert bh.in_flight == 0
    # the limit still holds: one slot, not two
    bh.enter()
    with pytest.raises(vr.RateLimitError):
        bh.enter()
    bh.exit()
    with pytest.raises(RuntimeError):
        bh.exit()  # a second exit for one enter
    assert bh.in_flight == 0


# ---------------------------------- a timeout that coincides with a cancel --


@pytest.mark.skipif(not hasattr(asyncio.Task, "cancelling"), reason="Task.cancelling: 3.11+")
async def test_enter_async_timeout_coinciding_with_a_cancel_stays_cancelled(
        deadline_with_outside_cancel: None) -> None:
    # The wait times out and, in the same instant, the task is cancelled from outside:
    # the task must stop (CancelledError), not see a retryable "bulkhead full".
    bh = vr.Bulkhead(1, max_queue=1)
    bh.enter()
    task = asyncio.create_task(bh.enter_async(timeout=0.005))
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5.0)  # bounded: a regression must fail, not hang
    assert (bh.in_flight, bh.waiting, bh.rejected) == (1, 0, 0)
    bh.exit()

