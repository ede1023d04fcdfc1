"""compat.aiolimiter against the real aiolimiter, side by side, and on its own."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any
from unittest import mock

import pytest

from virtrigaud_resilience.compat import aiolimiter as ours

real = pytest.importorskip("aiolimiter")

BOTH = pytest.mark.parametrize("al", [real, ours], ids=["aiolimiter", "compat"])


class LoopClock:
    """Drives the running loop's time() by hand (as aiolimiter's own tests do)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._patch = mock.patch.object(asyncio.get_running_loop(), "time", lambda: self.now)

    def __enter__(self) -> LoopClock:
        self._patch.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._patch.stop()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def schedule(al: Any, requests: list[tuple[float, float]], times: list[float],
                   max_rate: float = 3, period: float = 3) -> list[tuple[float, list[int]]]:
    """Starts acquire(amount) tasks at the given loop times; returns which
    requests are done at each time in ``times``."""
    limiter = al.AsyncLimiter(max_rate, period)
    done: list[int] = []
    seen = []
    with LoopClock() as clock:
        pending = sorted(enumerate(requests), key=lambda item: item[1][0])
        tasks = []
        for now in times:
            clock.now = now
            while pending and pending[0][1][0] <= now:
                index, (_, amount) = pending.pop(0)

                async def take(i: int = index, n: float = amount) -> None:
                    await limiter.acquire(n)
                    done.append(i)

                tasks.append(asyncio.ensure_future(take()))
                await settle()
            await settle()
            seen.append((now, sorted(done)))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return seen


SCHEDULES = {
    "a burst of max_rate, then the drain rate": (
        [(0, 1)] * 6, [0, 0.5, 1, 1.5, 2, 2.5, 3, 4]),
    # Observed just after each boundary: aiolimiter's float level can miss an
    # exact one by an ulp (test_boundaries_are_exact_to_the_nanosecond).
    "big and small amounts, fractions": (
        [(0, 1), (0, 3), (0, 0.5), (0.2, 2.5), (1, 0), (1.5, 1)],
        [0, 0.4, 1.001, 1.5, 2.001, 3.001, 4.001, 5.001, 6.001, 7.001, 8.001]),
    "a newcomer that fits goes ahead of a waiter": (
        [(0, 1), (0, 3), (0.1, 1)], [0, 0.1, 1, 2, 3]),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
async def test_admissions_over_time_match_aiolimiter(name: str) -> None:
    requests, times = SCHEDULES[name]
    assert await schedule(ours, requests, times) == await schedule(real, requests, times)


async def test_boundaries_are_exact_to_the_nanosecond() -> None:
    # 1.5 units in, 0.2 s, then 0.8 s at 1 unit/s: 0.5 left, so 2.5 fit at t = 1
    # exactly (aiolimiter's float level reads 0.5000000000000001 there).
    limiter = ours.AsyncLimiter(3, 3)
    with LoopClock() as clock:
        await limiter.acquire(1.5)
        clock.now = 0.2
        assert not limiter.has_capacity(2.5)
        clock.now = 1
        assert limiter.has_capacity(2.5)
        clock.now = 0.999999999
        assert not limiter.has_capacity(2.5)


@BOTH
async def test_equal_waiters_are_woken_first_come_first_served(al: Any) -> None:
    # One unit per 50 ms: a waiter that comes later can take capacity ahead
    # of a parked one only if the loop stalls a whole period between two
    # tasks' first steps (at 10 ms, a loaded machine did that to both).
    limiter = al.AsyncLimiter(1, 0.05)
    order: list[int] = []

    async def take(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    await asyncio.gather(*(take(i) for i in range(8)))
    assert order == list(range(8))


@BOTH
async def test_smaller_amounts_are_woken_first(al: Any) -> None:
    # aiolimiter's waiters are a heap of (amount, arrival): not plain FIFO.
    limiter = al.AsyncLimiter(2, 0.1)
    await limiter.acquire(2)
    order: list[str] = []

    async def take(name: str, amount: float) -> None:
        await limiter.acquire(amount)
        order.append(name)

    big = asyncio.ensure_future(take("big", 2))
    await asyncio.sleep(0)
    small = asyncio.ensure_future(take("small", 1))
    await asyncio.wait_for(asyncio.gather(big, small), 2)
    assert order == ["small", "big"]


@BOTH
async def test_a_cancelled_waiter_loses_nothing_and_the_next_takes_its_turn(al: Any) -> None:
    limiter = al.AsyncLimiter(3, 3)
    with LoopClock() as clock:
        await limiter.acquire(1)
        first = asyncio.ensure_future(limiter.acquire(3))
        second = asyncio.ensure_future(limiter.acquire(3))
        await settle()
        assert not first.done() and not second.done()
        first.cancel()
        await settle()
        clock.now = 1  # the level drained to 0: room for 3, the second's turn now
        await settle()
        assert second.done() and first.cancelled()
        assert not limiter.has_capacity(0.5)  # the second took 3; the first took nothing


async def test_waiting_is_not_a_busy_loop() -> None:
    limiter = ours.AsyncLimiter(1, 0.3)
    await limiter.acquire()
    cpu, wall = time.process_time(), time.perf_counter()
    await limiter.acquire()  # waits ~0.3 s for the drain
    assert time.perf_counter() - wall >= 0.25
    assert time.process_time() - cpu < 0.1


@BOTH
@pytest.mark.parametrize("amount", [-1, -math.inf, math.nan, 4, 3.0001])
async def test_amounts_outside_zero_to_max_rate_are_refused(al: Any, amount: float) -> None:
    limiter = al.AsyncLimiter(3)
    with pytest.raises(ValueError, match="Amount must be a number between 0 and the maximum"):
        await limiter.acquire(amount)


@BOTH
async def test_has_capacity_and_fractional_amounts(al: Any) -> None:
    limiter = al.AsyncLimiter(1)
    with LoopClock() as clock:
        assert limiter.has_capacity() and not limiter.has_capacity(42)
        await limiter.acquire(0)
        await limiter.acquire(0.5)
        assert limiter.has_capacity(0.5) and not limiter.has_capacity(0.5000001)
        clock.now = 30  # drains 0.5 (1 unit per 60 s)
        async with limiter as entered:
            assert entered is None
        assert not limiter.has_capacity(0.0001)


def test_a_limiter_serves_several_loops_in_turn() -> None:
    limiter = ours.AsyncLimiter(2, 0.05)
    finished: list[int] = []

    async def use(n: int) -> None:
        for _ in range(n):
            async with limiter:
                finished.append(len(finished))

    asyncio.run(use(3))  # 2 at once, 1 after a drain
    with pytest.warns(RuntimeWarning, match="re-used across loops"):
        asyncio.run(use(3))  # a new loop: the level carried over, waiters work
    assert finished == list(range(6))


def test_the_limiter_keeps_the_loops_clock_when_it_has_its_own() -> None:
    async def scenario() -> bool:
        limiter = ours.AsyncLimiter(1, 10)
        with LoopClock() as clock:
            await limiter.acquire()
            clock.now = 9.9
            full = not limiter.has_capacity()
            clock.now = 10
            return full and limiter.has_capacity()

    assert asyncio.run(scenario())


@pytest.mark.parametrize("field,value,error", [
    ("max_rate", 0, ValueError), ("max_rate", -1, ValueError), ("max_rate", math.nan, ValueError),
    ("max_rate", math.inf, ValueError), ("max_rate", "10", TypeError),
    ("max_rate", True, TypeError), ("time_period", 0, ValueError),
    ("time_period", -5, ValueError), ("time_period", math.inf, ValueError),
    ("time_period", 1e12, ValueError), ("time_period", None, TypeError),
])
def test_bad_configuration_is_refused_naming_the_field(field: str, value: Any,
                                                       error: type[Exception]) -> None:
    kwargs: dict[str, Any] = {"max_rate": 10, "time_period": 60, field: value}
    with pytest.raises(error, match=f"AsyncLimiter {field}"):
        ours.AsyncLimiter(**kwargs)


@BOTH
def test_attributes(al: Any) -> None:
    limiter = al.AsyncLimiter(42, 81)
    assert (limiter.max_rate, limiter.time_period) == (42, 81)
    assert "AsyncLimiter(max_rate=42, time_period=81)" in repr(limiter)


@BOTH
async def test_a_waiter_cancelled_after_its_wake_up_passes_the_turn_on(al: Any) -> None:
    limiter = al.AsyncLimiter(1, 1)
    with LoopClock() as clock:
        await limiter.acquire()
        first = asyncio.ensure_future(limiter.acquire())
        await settle()
        second = asyncio.ensure_future(limiter.acquire())
        await settle()
        clock.now = 1
        limiter._wake_next()  # room for one: the first is woken (its task has not run yet)...
        first.cancel()  # ...and is cancelled before it takes its unit
        await settle()
        assert first.cancelled() and second.done()
        assert not limiter.has_capacity()  # the second took the unit the first left
