"""The shortcuts a deadline takes on every attempt keep asyncio's meaning.

A TimeoutScope reads the loop's time as ``time.monotonic`` only where the
loop's ``time()`` is asyncio's own, and finds the running task as
``asyncio.current_task()`` does (timeouts._bind_task_lookup); a loop with a
clock of its own, uvloop, and a scope outside any task still behave.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from virtrigaud_resilience import _loop_deadlines
from virtrigaud_resilience.timeouts import TimeoutScope


class AheadLoop(asyncio.SelectorEventLoop):
    """A loop whose clock is an hour ahead of time.monotonic()."""

    def time(self) -> float:
        return time.monotonic() + 3600.0


def run_on(loop: asyncio.AbstractEventLoop, coro: object) -> object:
    try:
        return loop.run_until_complete(coro)  # type: ignore[arg-type]
    finally:
        loop.close()


async def deadline_outcomes() -> tuple[bool, bool]:
    """(a 5 s scope around a short sleep fired?, a 10 ms scope around a long wait fired?)."""
    async with TimeoutScope(5.0) as roomy:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        async with TimeoutScope(0.01) as tight:
            await asyncio.sleep(5.0)
    assert time.monotonic() - started < 4.0  # the tight one fired, long before 5 s
    return roomy.fired, tight.fired


def test_a_loop_with_a_clock_of_its_own_times_deadlines_on_it() -> None:
    # Read on time.monotonic, the roomy deadline would be an hour overdue on
    # this loop's clock and fire at once.
    loop = AheadLoop()
    assert _loop_deadlines._clock_of(loop) is not time.monotonic
    assert run_on(loop, deadline_outcomes()) == (False, True)


def test_asyncios_own_loop_reads_time_monotonic() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert _loop_deadlines._clock_of(loop) is time.monotonic
    finally:
        loop.close()
    assert run_on(asyncio.new_event_loop(), deadline_outcomes()) == (False, True)


def test_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    assert _loop_deadlines._clock_of(loop) is not time.monotonic
    assert run_on(loop, deadline_outcomes()) == (False, True)


def test_each_task_gets_its_own_deadline() -> None:
    async def one(timeout: float, wait: float) -> bool:
        try:
            async with TimeoutScope(timeout):
                await asyncio.sleep(wait)
        except asyncio.TimeoutError:
            return True
        return False

    async def both() -> list[bool]:
        return await asyncio.gather(one(0.01, 5.0), one(5.0, 0.02))

    assert asyncio.run(both()) == [True, False]  # the first task's deadline cancels only it


def test_outside_a_task_or_a_loop_it_refuses() -> None:
    async def in_a_callback() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[BaseException] = loop.create_future()

        def callback() -> None:
            try:
                TimeoutScope(1.0)._start()
            except BaseException as exc:  # the assertion below reads it
                done.set_result(exc)

        loop.call_soon(callback)
        error = await done
        assert isinstance(error, RuntimeError) and "inside an asyncio task" in str(error)

    asyncio.run(in_a_callback())
    with pytest.raises(RuntimeError, match="no running event loop"):
        TimeoutScope(1.0)._start()
