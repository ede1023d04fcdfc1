"""Simulated time for asyncio: an event loop whose clock is a ManualClock.

The demo's controller, policies and fake providers all read one
:class:`SimClock` (a :class:`~virtrigaud_resilience.ManualClock`), and the
event loop's ``time()`` is that clock. Where the loop would block until its
next timer, it moves the clock to that timer instead, so a task sleeping
through a backoff, a token wait or a provider's latency lets every other task
run meanwhile, exactly as in real time, and nothing ever waits for real.

``SimulatedLoop(clock, time_scale=None)`` runs as fast as it can (the
demo's ``--virtual-time``). With ``time_scale=100`` it paces itself: one
real second shows 100 simulated seconds, and a loop that falls behind (the
CPU cannot keep up) catches up at full speed. Pacing only decides *when* in
real time the clock moves, never *where* to: the sequence of events depends
on nothing but the program, so a paced run and an instant run of the same
seeded program do exactly the same things.

``every(seconds, fn)`` registers a real-time hook, called between loop
iterations (never inside a task) at most every ``seconds`` of real time:
the live view draws its frames from there without touching the simulation.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import time
from collections.abc import Callable
from typing import Any

from ..clock import ManualClock

__all__ = ["SimClock", "SimulatedLoop"]


class SimClock(ManualClock):
    """A ManualClock whose ``sleep_async`` is a timer of the running
    :class:`SimulatedLoop`: the sleeping task is suspended until the loop's
    clock reaches its wake-up time, while other tasks run.

    (``ManualClock.sleep_async`` advances the clock itself, which suits one
    task at a time; a fleet of concurrent tasks needs the loop to own time.)
    """

    __slots__ = ()

    async def sleep_async(self, seconds: float) -> None:
        """Sleeps ``seconds`` of simulated time on the running loop (<= 0: yields once)."""
        await asyncio.sleep(seconds if seconds > 0 else 0)

    def __repr__(self) -> str:
        return f"SimClock(now={self.now()!r})"


#: An unpaced loop polls for I/O every this many iterations.
_POLL_EVERY = 64


class _Hook:
    __slots__ = ("period", "fn", "due")

    def __init__(self, period: float, fn: Callable[[], None], due: float) -> None:
        self.period = period
        self.fn = fn
        self.due = due


class _SimulatedSelector:
    """The loop's selector, wrapped: a wait for the next timer becomes a move
    of the simulated clock (after a real-time wait when paced)."""

    def __init__(self, selector: selectors.BaseSelector, clock: SimClock,
                 time_scale: float | None) -> None:
        self._selector = selector
        self._clock = clock
        self._scale = time_scale
        self._real0 = time.perf_counter()
        self._sim0 = clock.now()
        self._skipped = 0
        self.hooks: list[_Hook] = []

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        if self._scale is None and timeout is not None and self._skipped < _POLL_EVERY:
            # Running flat out: poll for I/O (another thread waking the loop)
            # once in a while only; each poll is a system call.
            self._skipped += 1
            if timeout > 0:
                self._clock._advance_ns(math.ceil(timeout * 1e9))
            return []
        self._skipped = 0
        now = time.perf_counter()
        self._run_hooks(now)
        if timeout is None or timeout <= 0:
            # Callbacks are ready (0), or nothing is scheduled at all (None:
            # only I/O or another thread can wake the loop).
            return self._selector.select(timeout)
        if self._scale is not None:
            target = self._real0 + (self._clock.now() + timeout - self._sim0) / self._scale
            while now < target:
                next_hook = min((h.due for h in self.hooks), default=target)
                events = self._selector.select(max(0.0, min(target, next_hook) - now))
                if events:
                    return events  # I/O first; the loop asks again for its timer
                now = time.perf_counter()
                self._run_hooks(now)
        # To the next timer: rounded up to the nanosecond, so it is due.
        self._clock._advance_ns(math.ceil(timeout * 1e9))
        return self._selector.select(0)

    def _run_hooks(self, now: float) -> None:
        for hook in self.hooks:
            if now >= hook.due:
                hook.due = now + hook.period
                hook.fn()

    def __getattr__(self, name: str) -> Any:  # register, unregister, close, ...
        return getattr(self._selector, name)


class SimulatedLoop(asyncio.SelectorEventLoop):
    """An event loop on simulated time (see the module docstring).

    Args:
        clock: the :class:`SimClock` every simulated component reads.
        time_scale: simulated seconds per real second (> 0), or None to run
            as fast as possible.
    """

    def __new__(cls, clock: SimClock, time_scale: float | None = None) -> SimulatedLoop:
        # Checked before the loop exists: a half-built loop complains when collected.
        if not isinstance(clock, SimClock):
            raise TypeError(f"SimulatedLoop clock must be a SimClock, got "
                            f"{type(clock).__name__} {clock!r}")
        if time_scale is not None and not (isinstance(time_scale, (int, float))
                                           and math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"SimulatedLoop time_scale must be > 0 and finite, got "
                             f"{time_scale!r}")
        return super().__new__(cls)

    def __init__(self, clock: SimClock, time_scale: float | None = None) -> None:
        self._sim_selector = _SimulatedSelector(selectors.DefaultSelector(), clock, time_scale)
        super().__init__(self._sim_selector)  # type: ignore[arg-type]
        self._sim_clock = clock

    def time(self) -> float:
        """The simulated clock's time, in seconds."""
        return self._sim_clock.now()

    def every(self, seconds: float, fn: Callable[[], None]) -> None:
        """Calls ``fn()`` between loop iterations, at most every ``seconds``
        of real time (first at the next iteration)."""
        self._sim_selector.hooks.append(_Hook(seconds, fn, time.perf_counter()))
