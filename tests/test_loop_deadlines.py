"""One timer per event loop for every deadline on it (``_loop_deadlines``),
and the TimeoutScopes built on it, on real event loops."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from typing import Any

import pytest
from loop_handles import counted_call_at

from virtrigaud_resilience import _loop_deadlines
from virtrigaud_resilience._loop_deadlines import LoopDeadlines, deadlines_of
from virtrigaud_resilience.timeouts import TimeoutScope


def our_handles(loop: asyncio.AbstractEventLoop) -> list[Any]:
    """The live TimerHandles of ours in the loop's schedule."""
    return [handle for handle in loop._scheduled  # type: ignore[attr-defined]
            if not handle.cancelled()
            and getattr(handle._callback, "__func__", None) is LoopDeadlines._fire_due]


class Recorder:
    def __init__(self, log: list[Any], name: str) -> None:
        self.log, self.name = log, name

    def _fire(self) -> None:
        self.log.append((self.name, time.monotonic()))


async def test_many_pending_deadlines_hold_one_timer_handle() -> None:
    loop = asyncio.get_running_loop()
    deadlines = deadlines_of(loop)
    before = len(loop._scheduled)  # type: ignore[attr-defined]
    log: list[Any] = []
    entries = [deadlines.add(30 + i, Recorder(log, str(i))) for i in range(500)]
    assert len(our_handles(loop)) == 1
    assert len(loop._scheduled) <= before + 1  # type: ignore[attr-defined]
    entries.append(deadlines.add(20, Recorder(log, "earlier")))  # a handle beside, not moved
    assert len(our_handles(loop)) == 2
    for entry in entries:
        deadlines.end(entry)
    assert len(deadlines) == 0 and log == []


async def test_deadlines_that_end_first_reuse_the_one_handle() -> None:
    """Attempts one after another, each with a deadline that does not fire
    (the common case): one TimerHandle for all of them, not one each."""
    loop = asyncio.get_running_loop()
    with counted_call_at(loop) as scheduled:
        for _ in range(1000):
            async with TimeoutScope(30.0) as scope:
                await asyncio.sleep(0)
            assert not scope.fired
    assert scheduled[0] <= 1
    assert len(our_handles(loop)) <= 1


async def test_deadlines_fire_once_in_order_and_ended_ones_never() -> None:
    deadlines = deadlines_of(asyncio.get_running_loop())
    log: list[Any] = []
    started = time.monotonic()
    late = deadlines.add(0.06, Recorder(log, "late"))
    ended = deadlines.add(0.02, Recorder(log, "ended"))
    deadlines.add(0.04, Recorder(log, "middle"))
    early = deadlines.add(0.01, Recorder(log, "early"))  # earlier than the one scheduled
    deadlines.end(ended)
    await asyncio.sleep(0.15)
    assert [name for name, _ in log] == ["early", "middle", "late"]
    fired_at = {name: at - started for name, at in log}
    assert fired_at["early"] >= 0.01 - 0.005 and fired_at["late"] >= 0.06 - 0.005
    deadlines.end(early)  # already fired: nothing happens
    deadlines.end(late)
    assert len(deadlines) == 0


async def test_ended_deadlines_do_not_pile_up() -> None:
    """Scopes that end before their deadline (the common case) leave at
    most about as many entries as are live, plus a constant."""
    deadlines = deadlines_of(asyncio.get_running_loop())
    live = [deadlines.add(60, Recorder([], "live")) for _ in range(10)]
    for _ in range(10_000):
        async with TimeoutScope(30.0):
            await asyncio.sleep(0)
    assert len(deadlines._heap) <= 2 * len(live) + _loop_deadlines._COMPACT_AT + 1
    for entry in live:
        deadlines.end(entry)


async def test_a_deadline_added_last_and_ended_first_leaves_nothing_behind() -> None:
    """One attempt after another, each under a deadline of the same length:
    each entry is removed when its scope ends (a removal, not an ended
    entry waiting for a sweep), around deadlines still live."""
    deadlines = deadlines_of(asyncio.get_running_loop())
    live = [deadlines.add(60, Recorder([], "live")) for _ in range(3)]
    before = len(deadlines._heap)
    for _ in range(500):
        async with TimeoutScope(120.0):
            await asyncio.sleep(0)
        assert len(deadlines._heap) == before and len(deadlines) == len(live)
    earlier = deadlines.add(1, Recorder([], "earlier"))  # moved up the heap: ended, kept
    deadlines.end(earlier)
    assert len(deadlines) == len(live)
    for entry in live:
        deadlines.end(entry)
    assert len(deadlines) == 0


async def test_a_scope_times_out_and_one_that_ends_first_does_not() -> None:
    with pytest.raises(asyncio.TimeoutError):
        async with TimeoutScope(0.02) as scope:
            await asyncio.sleep(5)
    assert scope.fired
    async with TimeoutScope(5.0) as quick:
        await asyncio.sleep(0)
    assert not quick.fired
    async with TimeoutScope(0.2) as outer:  # nested: the inner, shorter one fires
        with pytest.raises(asyncio.TimeoutError):
            async with TimeoutScope(0.01) as inner:
                await asyncio.sleep(5)
    assert inner.fired and not outer.fired


def test_each_loop_has_its_own_deadlines_and_a_closed_loop_is_let_go() -> None:
    """Loops in two threads fire their own scopes; a finished loop is not
    kept alive by its deadlines (collected with them)."""
    fired: dict[str, bool] = {}
    loops: list[weakref.ReferenceType[asyncio.AbstractEventLoop]] = []

    def run(name: str, delay: float) -> None:
        async def main() -> None:
            loops.append(weakref.ref(asyncio.get_running_loop()))
            scope = TimeoutScope(delay)
            try:
                async with scope:
                    await asyncio.sleep(5)
            except asyncio.TimeoutError:
                fired[name] = scope.fired
        asyncio.run(main())

    threads = [threading.Thread(target=run, args=(f"t{i}", 0.01 * (i + 1))) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert fired == {"t0": True, "t1": True}
    gc.collect()
    assert len(loops) == 2 and [ref() for ref in loops] == [None, None]


async def test_a_deadline_whose_fire_raises_does_not_stop_the_later_ones() -> None:
    deadlines = deadlines_of(asyncio.get_running_loop())
    log: list[Any] = []

    class Raising:
        def _fire(self) -> None:
            raise RuntimeError("a broken scope")

    handler_errors: list[Any] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: handler_errors.append(
        context.get("exception")))
    deadlines.add(0.01, Raising())
    deadlines.add(0.03, Recorder(log, "later"))
    await asyncio.sleep(0.1)
    assert [name for name, _ in log] == ["later"]
    assert any(isinstance(error, RuntimeError) for error in handler_errors)
