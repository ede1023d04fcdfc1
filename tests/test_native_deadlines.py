"""call_until's native awaitable and the loop's native deadline heap
(issue 21, item 3: one timer per loop, an attempt that ends first costs a
removal), on asyncio's loop and on uvloop's."""

from __future__ import annotations

import asyncio
import gc
import math
import os
import random
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import pytest
from loop_handles import counted_call_at
from python_calls import python_calls

import virtrigaud_resilience as vr
from virtrigaud_resilience import _core, timeouts
from virtrigaud_resilience._loop_deadlines import LoopDeadlines, deadlines_of
from virtrigaud_resilience.clock import SYSTEM_CLOCK
from virtrigaud_resilience.timeouts import (TimeoutScope, call_until, deadline_for, deadline_scope,
                                            remaining)


def uvloop_or_skip() -> asyncio.AbstractEventLoop:
    uvloop = pytest.importorskip("uvloop")
    return uvloop.new_event_loop()  # type: ignore[no-any-return]


LOOPS = [pytest.param(asyncio.new_event_loop, id="asyncio"),
         pytest.param(uvloop_or_skip, id="uvloop")]


def run_on(new_loop: Callable[[], asyncio.AbstractEventLoop],
           test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    loop = new_loop()
    try:
        loop.run_until_complete(test())
    finally:
        loop.close()


def until(seconds: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """call_until with a deadline ``seconds`` from now on the system clock."""
    return call_until(SYSTEM_CLOCK, deadline_for(SYSTEM_CLOCK, seconds), "op", fn, args, kwargs)


async def noop() -> str:
    return "done"


class Recorder:
    """A deadline target that logs when it fires."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def _fire(self) -> None:
        self.log.append(self.name)


@pytest.mark.parametrize("new_loop", LOOPS)
def test_a_deadline_that_expires_cancels_the_attempt_and_raises_a_timeout(
        new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    async def test() -> None:
        deadlines = deadlines_of(asyncio.get_running_loop())
        cancelled: list[bool] = []

        async def slow() -> None:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        with pytest.raises(vr.OperationTimeoutError, match="op: deadline exceeded") as caught:
            await until(0.02, slow)
        assert cancelled == [True]
        assert isinstance(caught.value.__cause__, TimeoutError)
        assert len(deadlines) == 0
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # its cancel was taken back
        assert remaining() is None and timeouts._SCOPES.get() == ()

    run_on(new_loop, test)


@pytest.mark.parametrize("new_loop", LOOPS)
def test_an_attempt_that_ends_first_removes_its_entry_and_schedules_no_handle(
        new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    async def test() -> None:
        loop = asyncio.get_running_loop()
        deadlines = deadlines_of(loop)
        seen: list[tuple[int, float | None, int]] = []

        async def inside() -> str:
            seen.append((len(deadlines), remaining(), len(timeouts._SCOPES.get())))
            await asyncio.sleep(0)
            return "done"

        with counted_call_at(loop) as scheduled:
            for _ in range(200):
                assert await until(30.0, inside) == "done"
                assert len(deadlines) == 0 and len(deadlines._heap) == 0
        assert scheduled[0] <= 1  # one handle for every attempt, not one each
        assert all(count == 1 and left is not None and 29 < left <= 30 and scopes == 1
                   for count, left, scopes in seen)
        assert remaining() is None and timeouts._SCOPES.get() == ()

    run_on(new_loop, test)


def finish(awaitable: Any) -> Any:
    """Drives an awaitable that never yields to its result."""
    try:
        awaitable.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the attempt yielded")


@pytest.mark.parametrize("new_loop", LOOPS)
def test_the_success_path_runs_no_python_frame(
        new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """Only the user's coroutine runs Python: deadline_for, the scope and its
    deadline are native (once the loop was looked up: its first deadline),
    on asyncio's loop and on uvloop's (asked natively which loop runs)."""
    async def test() -> None:
        assert finish(until(30.0, noop)) == "done"
        deadline, calls = python_calls(partial(deadline_for, SYSTEM_CLOCK, 30.0))
        assert calls == []
        awaitable, calls = python_calls(
            partial(call_until, SYSTEM_CLOCK, deadline, "op", noop, (), {}))
        assert calls == []
        assert python_calls(partial(finish, awaitable)) == ("done", ["finish", "noop"])
        assert len(deadlines_of(asyncio.get_running_loop())) == 0

    run_on(new_loop, test)


async def test_an_entry_ended_anywhere_in_the_heap_is_removed_at_once() -> None:
    """Not only the last one: an ended deadline leaves nothing behind."""
    deadlines = deadlines_of(asyncio.get_running_loop())
    live = [deadlines.add(60 + i, Recorder([], "live")) for i in range(5)]
    for delay in (1.0, 30.0, 61.5, 120.0):  # moved up, to the middle, to a leaf
        async with TimeoutScope(delay):
            assert len(deadlines._heap) == len(live) + 1
        assert len(deadlines._heap) == len(live) == len(deadlines)
    for entry in live:
        deadlines.end(entry)
    assert len(deadlines._heap) == 0


async def test_the_heap_fires_what_is_left_in_deadline_order() -> None:
    """Random adds and removals: the heap stays a heap, and fires exactly the
    deadlines not ended, earliest first."""
    rng = random.Random(21)
    deadlines = deadlines_of(asyncio.get_running_loop())
    log: list[str] = []
    entries: dict[str, int] = {}
    delays: dict[str, float] = {}
    for i in range(400):
        name = f"d{i}"
        delays[name] = 3600 + rng.random() * 100
        entries[name] = deadlines.add(delays[name], Recorder(log, name))
        if rng.random() < 0.4:  # end one of those still pending
            ended = rng.choice(sorted(entries))
            deadlines.end(entries.pop(ended))
    heap = deadlines._heap
    assert len(heap) == len(entries) == len(deadlines)
    assert all(heap[(i - 1) // 2][:2] <= heap[i][:2] for i in range(1, len(heap)))
    assert sorted(target.name for _, _, target in heap) == sorted(entries)
    deadlines._fire_until(math.inf)
    assert log == [target.name for _, _, target in sorted(heap, key=lambda e: e[:2])]
    assert len(deadlines) == 0
    for handle in entries.values():  # fired: ending them does nothing
        deadlines.end(handle)


@pytest.mark.parametrize("new_loop", LOOPS)
def test_many_concurrent_deadlines_share_one_heap_and_each_fires_its_own(
        new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    async def test() -> None:
        deadlines = deadlines_of(asyncio.get_running_loop())

        async def attempt(i: int) -> str:
            if i % 2:  # outlives its deadline
                await asyncio.sleep(5)
            await asyncio.sleep(0.01)
            return f"r{i}"

        async def one(i: int) -> str:
            try:
                return await until(0.05 + (i % 7) * 0.01 if i % 2 else 30.0, attempt, i)
            except vr.OperationTimeoutError:
                return "timeout"

        results = await asyncio.gather(*(one(i) for i in range(300)))
        assert results == [f"r{i}" if i % 2 == 0 else "timeout" for i in range(300)]
        assert len(deadlines) == 0

    run_on(new_loop, test)


@pytest.mark.parametrize("new_loop", LOOPS)
def test_a_cancelled_attempt_stays_cancelled_and_leaves_no_entry(
        new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    async def test() -> None:
        deadlines = deadlines_of(asyncio.get_running_loop())
        started = asyncio.Event()

        async def waits() -> None:
            started.set()
            await asyncio.sleep(5)

        task = asyncio.ensure_future(until(30.0, waits))
        await started.wait()
        assert len(deadlines) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(deadlines) == 0 and len(deadlines._heap) == 0

    run_on(new_loop, test)


async def test_an_attempt_closed_while_suspended_leaves_no_entry() -> None:
    """An awaitable dropped mid-await is closed, as a coroutine is: its
    deadline ends and the context it set is restored."""
    deadlines = deadlines_of(asyncio.get_running_loop())
    awaitable = until(30.0, asyncio.sleep, 5)
    yielded = awaitable.send(None)  # suspended inside asyncio.sleep
    assert yielded is not None and len(deadlines) == 1 and remaining() is not None
    awaitable.close()
    assert len(deadlines) == 0 and remaining() is None and timeouts._SCOPES.get() == ()
    del awaitable, yielded
    gc.collect()


async def test_what_the_attempt_raises_passes_unchanged_when_no_deadline_fired() -> None:
    deadlines = deadlines_of(asyncio.get_running_loop())
    error = ValueError("bad")
    own = TimeoutError("the call's own")

    async def raises(exc: BaseException) -> None:
        raise exc

    for exc in (error, own):
        with pytest.raises(type(exc)) as caught:
            await until(30.0, raises, exc)
        assert caught.value is exc
    assert len(deadlines) == 0


async def test_a_deadline_already_past_raises_without_calling_fn() -> None:
    called: list[bool] = []

    async def never() -> None:
        called.append(True)

    clock = vr.ManualClock()
    with pytest.raises(vr.OperationTimeoutError, match="late: deadline exceeded"):
        await call_until(clock, clock.now(), "late", never, (), {})
    assert called == []


async def test_arguments_and_keywords_reach_fn_and_no_deadline_means_none() -> None:
    async def echo(*args: Any, **kwargs: Any) -> tuple[Any, Any, float | None]:
        return args, kwargs, remaining()

    args, kwargs, left = await call_until(SYSTEM_CLOCK, None, "op", echo, (1, 2), {"k": 3})
    assert (args, kwargs, left) == ((1, 2), {"k": 3}, None)


async def test_an_enclosing_deadline_on_the_same_clock_tightens_deadline_for() -> None:
    clock = vr.ManualClock()
    assert deadline_for(clock, None) is None
    assert deadline_for(clock, 5) == 5.0
    assert deadline_for(clock, -1.0) == -1.0  # as now + timeout: already past

    async def nested() -> tuple[float | None, float | None, float | None]:
        return deadline_for(clock, 5.0), deadline_for(clock, 1.0), deadline_for(SYSTEM_CLOCK, None)

    assert await call_until(clock, 2.0, "outer", nested, (), {}) == (2.0, 1.0, None)


def test_bad_input_is_refused_with_a_clear_error() -> None:
    with pytest.raises(TypeError, match="takes 6 arguments"):
        _core._call_until(SYSTEM_CLOCK, None, "op", noop)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="args must be a tuple and kwargs a dict"):
        _core._call_until(SYSTEM_CLOCK, None, "op", noop, [], {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keywords must be strings"):
        _core._call_until(SYSTEM_CLOCK, None, "op", noop, (), {1: 2})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        deadline_for(SYSTEM_CLOCK, "soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        _core._DeadlineScope(-1.0)
    with pytest.raises(TypeError, match="loop_ref must be a weakref.ref"):
        _core._LoopDeadlines(object(), None)


# -- a policy's per-attempt timeout: its first attempt's deadline armed natively --

def attempt_timeout_policy(name: str, per_attempt: float,
                           breaker: vr.CircuitBreaker | None = None) -> vr.Policy:
    retry = vr.RetryConfig(max_attempts=2, base_delay=0.0, max_delay=0.0, jitter=False)
    builder = vr.PolicyBuilder(name).with_retry(retry).with_timeout(None, per_attempt=per_attempt)
    if breaker is not None:
        builder = builder.with_circuit_breaker(breaker)
    return builder.build()


async def test_a_policys_first_attempt_under_its_attempt_timeout_runs_no_python_frame() -> None:
    cb = vr.CircuitBreaker("native-deadline", "fake", "prod", vr.BreakerConfig())
    policy = attempt_timeout_policy("native-deadline", 30.0, cb)
    assert finish(policy.execute_async(noop)) == "done"  # the loop's first deadline: looked up
    awaitable = policy.execute_async(noop)
    ours = {"policy.py", "retry.py", "timeouts.py", "_loop_deadlines.py", "clock.py",
            os.path.basename(__file__)}
    assert python_calls(partial(finish, awaitable), ours) == ("done", ["finish", "noop"])
    assert cb.successes == 2 and len(deadlines_of(asyncio.get_running_loop())) == 0

    async def inside() -> float | None:
        return remaining()

    left = await policy.execute_async(inside)
    assert left is not None and 29 < left <= 30  # the attempt's deadline is visible


@pytest.mark.parametrize("new_loop", LOOPS)
def test_a_policys_first_attempt_cut_by_its_deadline_is_a_timeout_and_retried(
        new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    async def test() -> None:
        cb = vr.CircuitBreaker("cut", "fake", "prod", vr.BreakerConfig(failure_threshold=5))
        policy = attempt_timeout_policy("cut", 0.02, cb)
        calls: list[int] = []

        async def first_hangs() -> str:
            calls.append(len(calls))
            if len(calls) == 1:
                await asyncio.sleep(5)
            return "second"

        assert await policy.execute_async(first_hangs) == "second"
        assert calls == [0, 1]
        assert (cb.failures_total, cb.successes) == (1, 1)  # the cut attempt: a Timeout
        assert len(deadlines_of(asyncio.get_running_loop())) == 0

        async def always_hangs() -> None:
            await asyncio.sleep(5)

        with pytest.raises(vr.OperationTimeoutError, match="cut attempt: deadline exceeded"):
            await policy.execute_async(always_hangs)
        assert cb.failures_total == 3 and len(deadlines_of(asyncio.get_running_loop())) == 0

    run_on(new_loop, test)


async def test_a_policys_first_attempt_keeps_the_enclosing_deadline() -> None:
    """An enclosing deadline shorter than the attempt's cuts the attempt; one
    already past fails it without calling fn."""
    inner = attempt_timeout_policy("inner", 30.0)
    called: list[bool] = []

    async def slow() -> None:
        called.append(True)
        await asyncio.sleep(5)

    async def through_inner() -> None:
        await inner.execute_async(slow)

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(vr.OperationTimeoutError):
        await until(0.03, through_inner)
    assert loop.time() - started < 4.0 and called
    cb = vr.CircuitBreaker("late", "fake", "prod", vr.BreakerConfig(failure_threshold=5))
    late = attempt_timeout_policy("late", 30.0, cb)
    late_called: list[bool] = []

    async def never() -> None:
        late_called.append(True)

    with deadline_scope(SYSTEM_CLOCK, SYSTEM_CLOCK.now() - 1.0):  # enclosing, already past
        with pytest.raises(vr.OperationTimeoutError, match="late: deadline exceeded"):
            await late.execute_async(never)
    assert late_called == [] and cb.failures_total == 0  # no attempt: nothing recorded


async def test_a_policys_first_attempt_cancelled_from_outside_records_nothing() -> None:
    cb = vr.CircuitBreaker("outside", "fake", "prod", vr.BreakerConfig(failure_threshold=1))
    policy = attempt_timeout_policy("outside", 30.0, cb)
    deadlines = deadlines_of(asyncio.get_running_loop())
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.sleep(5)

    task = asyncio.ensure_future(policy.execute_async(waits))
    await started.wait()
    assert len(deadlines) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(deadlines) == 0 and cb.state is vr.BreakerState.CLOSED
    assert (cb.failures_total, cb.successes) == (0, 0)
