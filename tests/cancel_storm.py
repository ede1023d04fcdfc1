"""A cancellation storm: many tasks parked deep in an await chain, cancelled at once.

Each task awaits a chain of ``depth`` coroutines; the innermost parks in a
guarded call (``Policy.execute_async``, ``CircuitBreaker.call_async``, a
queued ``Bulkhead.enter_async``) or, for the baseline, on a bare future.
:func:`storm` cancels every task in one loop turn and returns the seconds
until the last one has finished. What a guarded task costs beyond a bare one
is its cancellation path: telling a deadline from an outside cancel and
giving back what it held. That path must not grow with the depth of the
chain, with the objects the frames hold, nor with the number of tasks
cancelled beside it (the tasks are cancelled last parked first, the worst
order for a queue).

Imported by tests/test_cancellation.py, which asserts the ratio; run it to
bench (the issue's target is each guarded kind within 3x of ``bare``)::

    PYTHONPATH=python python tests/cancel_storm.py --tasks 10000 --depth 20
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable

import virtrigaud_resilience as vr

#: The kinds of parked task :func:`storm` knows; "bare" is the baseline.
KINDS = ("bare", "execute_async", "execute_async+timeout", "call_async", "enter_async")


def _parkers(kind: str, tasks: int) -> tuple[Callable[[], Awaitable[None]], Callable[[], None]]:
    """(park, check): ``park()`` suspends the calling task in the guarded
    call of ``kind`` until cancelled; ``check()`` asserts, after the storm,
    that nothing is left held."""
    async def on_a_future() -> None:
        await asyncio.get_running_loop().create_future()

    if kind == "bare":
        return on_a_future, lambda: None
    if kind == "call_async":
        breaker = vr.CircuitBreaker("storm")

        async def through_the_breaker() -> None:
            await breaker.call_async(on_a_future)

        def breaker_recorded_nothing() -> None:
            assert (breaker.failures_total, breaker.released) == (0, tasks)
        return through_the_breaker, breaker_recorded_nothing
    if kind.startswith("execute_async"):
        bulkhead = vr.Bulkhead(tasks)
        builder = (vr.PolicyBuilder("storm").with_retry(vr.RetryConfig(max_attempts=2))
                   .with_circuit_breaker(vr.CircuitBreaker("storm")).with_bulkhead(bulkhead))
        if kind.endswith("+timeout"):  # the Python path: a deadline scope per call
            builder = builder.with_timeout(3600.0)
        policy = builder.build()

        async def through_the_policy() -> None:
            await policy.execute_async(on_a_future)

        def policy_gave_everything_back() -> None:
            assert bulkhead.in_flight == 0
        return through_the_policy, policy_gave_everything_back
    if kind == "enter_async":
        queue = vr.Bulkhead(1, max_queue=tasks)
        queue.enter()  # the only slot is taken for good: every task queues

        async def queued() -> None:
            await queue.enter_async()

        def queue_is_empty() -> None:
            assert (queue.in_flight, queue.waiting) == (1, 0)
        return queued, queue_is_empty
    raise ValueError(f"storm kind must be one of {KINDS}, got {kind!r}")


async def _chain(depth: int, park: Callable[[], Awaitable[None]]) -> None:
    if depth <= 1:
        await park()
    else:
        await _chain(depth - 1, park)


async def storm(kind: str, tasks: int = 10_000, depth: int = 20) -> float:
    """Seconds from cancelling ``tasks`` tasks parked at ``depth`` in
    ``kind`` (one of :data:`KINDS`) until all have finished; every task
    must end with ``CancelledError`` and leave nothing held."""
    park, check = _parkers(kind, tasks)
    parked = [asyncio.create_task(_chain(depth, park)) for _ in range(tasks)]
    for _ in range(depth + 5):  # every task reaches its parking place
        await asyncio.sleep(0)
    gc.collect()
    gc.disable()  # a collection inside the timed window would land on one kind only
    try:
        start = time.perf_counter()
        for task in reversed(parked):  # last parked first: the worst order for a queue
            task.cancel()
        await asyncio.wait(parked)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    assert all(task.cancelled() for task in parked), f"{kind}: a task did not end cancelled"
    check()
    return elapsed


async def ratios(kinds: tuple[str, ...], tasks: int, depth: int,
                 rounds: int) -> dict[str, tuple[float, float]]:
    """{kind: (best seconds, best / best of bare)} over ``rounds`` rounds,
    the kinds interleaved so that a load spike hits all alike."""
    best = dict.fromkeys(("bare", *kinds), float("inf"))
    for _ in range(rounds):
        for kind in best:
            best[kind] = min(best[kind], await storm(kind, tasks, depth))
    return {kind: (seconds, seconds / best["bare"]) for kind, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(ratios(KINDS[1:], args.tasks, args.depth, args.rounds))
    print(f"{args.tasks} tasks at depth {args.depth}, cancelled at once (best of {args.rounds})")
    for kind, (seconds, ratio) in result.items():
        print(f"  {kind:<24} {seconds * 1e3:8.1f} ms  {ratio:5.2f}x bare")


if __name__ == "__main__":
    main()
