"""A deadline that cuts an attempt off is a Timeout, however it is expressed.

Our own scopes are tested with the policy (test_cancellation.py, test_policy.py).
Here: ``asyncio.timeout`` above a child task (``gather()``, a ``TaskGroup``) or
above a class-based awaitable, ``asyncio.wait_for`` where the interpreter makes
it visible, anyio's ``fail_after`` / ``move_on_after``; and, beside each, a
cancellation from outside that must record nothing. A breaker counts a
Timeout as a failure (``failures_total``) and a cancel as a release
(``released``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Coroutine, Generator
from typing import Any

import anyio
import pytest
import virtrigaud_resilience as vr

needs_asyncio_timeout = pytest.mark.skipif(sys.version_info < (3, 11),
                                           reason="asyncio.timeout: Python 3.11+")

#: Long enough for the guarded calls to start, short enough for a quick test.
DEADLINE = 0.02


def breaker() -> vr.CircuitBreaker:
    return vr.CircuitBreaker("deadlines", "fake", "unit", vr.BreakerConfig(failure_threshold=10))


def outcomes(cb: vr.CircuitBreaker) -> tuple[int, int]:
    """(Timeouts counted as failures, cancels released)."""
    return cb.failures_total, cb.released


async def _hang() -> None:
    await asyncio.Event().wait()


# ------------------------------------------- asyncio.timeout above a child task --


@needs_asyncio_timeout
async def test_asyncio_timeout_around_gather_is_a_timeout() -> None:
    cb = breaker()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(cb.call_async(_hang), cb.call_async(_hang))
    assert outcomes(cb) == (2, 0)


@needs_asyncio_timeout
async def test_asyncio_timeout_around_a_task_group_is_a_timeout() -> None:
    cb = breaker()
    policy = vr.PolicyBuilder("tg").with_circuit_breaker(cb).build()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(DEADLINE), asyncio.TaskGroup() as group:
            group.create_task(cb.call_async(_hang))
            group.create_task(policy.execute_async(_hang))
    assert outcomes(cb) == (2, 0)


@needs_asyncio_timeout
async def test_asyncio_timeout_two_tasks_up_is_a_timeout() -> None:
    cb = breaker()

    async def fan_out() -> None:
        await asyncio.gather(cb.call_async(_hang))

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(DEADLINE):
            await asyncio.create_task(fan_out())
    assert outcomes(cb) == (1, 0)


@needs_asyncio_timeout
async def test_a_child_task_cancelled_from_outside_under_a_live_timeout_records_nothing(
) -> None:
    cb = breaker()
    async with asyncio.timeout(60):
        child = asyncio.create_task(cb.call_async(_hang))
        await asyncio.sleep(0.005)
        child.cancel()
        with pytest.raises(asyncio.CancelledError):
            await child
    assert outcomes(cb) == (0, 1)


@needs_asyncio_timeout
async def test_a_task_that_outlived_an_expired_timeout_is_cancelled_not_timed_out() -> None:
    # The child copied a context holding the timeout; the timeout expired and was
    # handled long before the child is cancelled from outside.
    cb = breaker()
    started: list[asyncio.Task[None]] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(DEADLINE):
            started.append(asyncio.create_task(cb.call_async(_hang)))
            await asyncio.sleep(1)
    await asyncio.sleep(0.005)
    started[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await started[0]
    assert outcomes(cb) == (0, 1)


# ---------------------------- asyncio.timeout and class-based awaitables --


class RequestContextManager:
    """A class-based awaitable and async context manager over a coroutine,
    as aiohttp's ``session.get()`` returns: ``await`` it or ``async with`` it."""

    __slots__ = ("_coro",)

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coro.__await__()

    async def __aenter__(self) -> Any:
        return await self._coro

    async def __aexit__(self, *exc: object) -> None:
        return None


@needs_asyncio_timeout
async def test_asyncio_timeout_under_a_class_based_awaitable_is_a_timeout() -> None:
    # task -> RequestContextManager.__await__ -> a coroutine holding the timeout ->
    # call_async: the timeout is below an awaitable that is not a coroutine.
    cb = breaker()

    async def request() -> None:
        async with asyncio.timeout(DEADLINE):
            await cb.call_async(_hang)

    with pytest.raises(TimeoutError):
        await RequestContextManager(request())
    assert outcomes(cb) == (1, 0)


@needs_asyncio_timeout
async def test_asyncio_timeout_above_a_class_based_awaitable_is_a_timeout() -> None:
    cb = breaker()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(DEADLINE):
            await RequestContextManager(cb.call_async(_hang))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(DEADLINE), RequestContextManager(cb.call_async(_hang)):
            pass
    assert outcomes(cb) == (2, 0)


@needs_asyncio_timeout
async def test_asyncio_timeout_in_the_frame_that_enters_the_guard_is_a_timeout() -> None:
    # Python 3.11 used to hide this one (the walk missed the running frame).
    cb = breaker()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(DEADLINE), cb.guard():
            await _hang()
    assert outcomes(cb) == (1, 0)


# ------------------------------------------------------ asyncio.wait_for --


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="asyncio.wait_for cancels a task of its own before 3.12")
async def test_wait_for_around_a_fan_out_is_a_timeout() -> None:
    cb = breaker()

    async def fan_out() -> None:  # the children are created inside wait_for's timeout
        await asyncio.gather(cb.call_async(_hang), cb.call_async(_hang))

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(fan_out(), DEADLINE)
    assert outcomes(cb) == (2, 0)


@needs_asyncio_timeout
async def test_a_task_created_before_the_timeout_reads_as_a_cancel() -> None:
    # The documented limit: a task (or gather()) created outside the timeout
    # and only awaited inside it is cancelled by its awaiter, not by the
    # timeout it never saw; so is asyncio.wait_for(asyncio.gather(...)).
    cb = breaker()
    gathered = asyncio.gather(cb.call_async(_hang))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(DEADLINE):
            await gathered
    assert outcomes(cb) == (0, 1)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="visible from 3.12 (see above)")
async def test_wait_for_before_3_12_reads_as_a_cancel() -> None:
    # The documented limit: wait_for runs the call in a task of its own and
    # cancels it from outside; nothing tells that from any other cancel.
    cb = breaker()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(cb.call_async(_hang), DEADLINE)
    assert outcomes(cb) == (0, 1)


# --------------------------------------------------------------- anyio --


async def test_anyio_fail_after_is_a_timeout() -> None:
    cb = breaker()
    policy = vr.PolicyBuilder("anyio").with_circuit_breaker(cb).build()
    with pytest.raises(TimeoutError):
        with anyio.fail_after(DEADLINE):
            await cb.call_async(_hang)
    with pytest.raises(TimeoutError):
        with anyio.fail_after(DEADLINE):
            await policy.execute_async(_hang)
    assert outcomes(cb) == (2, 0)


async def test_anyio_move_on_after_around_a_task_group_is_a_timeout() -> None:
    cb = breaker()
    with anyio.move_on_after(DEADLINE) as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(cb.call_async, _hang)
            group.start_soon(cb.call_async, _hang)
    assert scope.cancelled_caught
    assert outcomes(cb) == (2, 0)


async def test_anyio_cancel_without_a_deadline_records_nothing() -> None:
    cb = breaker()
    async with anyio.create_task_group() as group:
        group.start_soon(cb.call_async, _hang)
        await anyio.sleep(0.005)
        group.cancel_scope.cancel()
    with anyio.move_on_after(60) as scope:  # a deadline, far off
        scope.cancel()
        await cb.call_async(_hang)
    assert outcomes(cb) == (0, 2)


async def test_an_expired_anyio_deadline_outside_a_shield_is_not_this_cancel() -> None:
    # The outer deadline passes while the call runs shielded from it; then the
    # shielded scope itself is cancelled (no deadline): a cancel, not a Timeout.
    cb = breaker()
    with anyio.move_on_after(DEADLINE):
        with anyio.CancelScope(shield=True) as shielded:
            asyncio.get_running_loop().call_later(DEADLINE * 3, shielded.cancel)
            await cb.call_async(_hang)
    assert outcomes(cb) == (0, 1)


# ---------------------------------------------- installed without asyncio --


@needs_asyncio_timeout
def test_the_timeout_hook_waits_for_asyncio_and_then_leaves() -> None:
    # `import virtrigaud_resilience` loads no asyncio; asyncio's timeouts are
    # tracked from the moment asyncio is imported, and the import hook is gone.
    code = textwrap.dedent("""
        import sys
        import virtrigaud_resilience as vr
        assert "asyncio" not in sys.modules
        hooks = [type(f).__name__ for f in sys.meta_path]
        import asyncio
        assert not any(type(f).__name__ == "_TrackOnImport" for f in sys.meta_path)
        assert "exec_module" not in vars(asyncio.timeouts.__loader__)

        async def main():
            cb = vr.CircuitBreaker("x", config=vr.BreakerConfig(failure_threshold=5))
            try:
                async with asyncio.timeout(0.01):
                    await asyncio.gather(cb.call_async(asyncio.sleep, 5))
            except TimeoutError:
                pass
            return cb.failures_total

        print(hooks.count("_TrackOnImport"), asyncio.run(main()))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]


@needs_asyncio_timeout
def test_asyncio_timeout_is_tracked_once() -> None:
    from virtrigaud_resilience import _foreign_deadlines

    enter = asyncio.timeouts.Timeout.__aenter__
    _foreign_deadlines.install()
    _foreign_deadlines._track(asyncio.timeouts)
    assert asyncio.timeouts.Timeout.__aenter__ is enter
