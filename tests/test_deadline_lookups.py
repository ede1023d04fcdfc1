"""The shortcuts a deadline takes on every attempt keep asyncio's meaning.

A TimeoutScope reads the loop's time as ``time.monotonic`` only where the
loop's ``time()`` is asyncio's own, and finds the running task as
``asyncio.current_task()`` does (timeouts._bind_task_lookup); a loop with a
clock of its own, uvloop, and a scope outside any task still behave.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from virtrigaud_resilience import _loop_deadlines, timeouts
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


def test_the_running_loop_is_asked_for_once_per_loop_not_per_attempt(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # asyncio.get_running_loop() makes a getpid() system call (about 1 us in
    # a VM that traps them): the scope asks once per loop and thread.
    asked = 0
    real = asyncio.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        nonlocal asked
        asked += 1
        return real()

    monkeypatch.setattr(asyncio, "get_running_loop", counting)
    monkeypatch.setattr(timeouts, "_running_loop", timeouts._first_running_loop)

    async def attempts() -> None:
        for _ in range(100):
            async with TimeoutScope(5.0):
                await asyncio.sleep(0)

    asyncio.run(attempts())
    assert asked == 1
    asyncio.run(attempts())  # a new loop on the same thread: asked again, once
    assert asked == 2


def test_each_loop_in_turn_and_each_threads_loop_times_its_own_deadlines() -> None:
    # The loop last found is reused only while it runs on the asking thread.
    for _ in range(3):  # one loop after another on this thread
        assert run_on(asyncio.new_event_loop(), deadline_outcomes()) == (False, True)
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(
        run_on(asyncio.new_event_loop(), deadline_outcomes()))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [(False, True)] * 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_a_fork_forgets_the_loop_found() -> None:
    # A forked child's thread carries its parent's ident and the loop object
    # still says it runs there (forked inside the loop): asyncio's pid check
    # says it does not, and the child must ask again. In a process of its
    # own: forking a test runner's threads is unsafe.
    script = textwrap.dedent("""
        import asyncio, os
        from virtrigaud_resilience import timeouts

        async def fork_inside() -> bytes:
            timeouts._running_loop()  # found: remembered
            assert timeouts._last_loop[1]() is asyncio.get_running_loop()
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report what it remembers, and leave at once
                try:
                    os.write(write, b"forgot" if timeouts._last_loop[1]() is None else b"kept")
                finally:
                    os._exit(0)
            os.close(write)
            os.waitpid(pid, 0)
            with os.fdopen(read, "rb") as pipe:
                return pipe.read()

        print(asyncio.run(fork_inside()).decode())
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=60, check=True)
    assert out.stdout.strip() == "forgot"
