"""aiolimiter 1.x on the native GCRA bucket.

Replace ``from aiolimiter import AsyncLimiter`` with::

    from virtrigaud_resilience.compat.aiolimiter import AsyncLimiter

and nothing else changes. :class:`AsyncLimiter` is aiolimiter's leaky
bucket: it holds up to ``max_rate`` units and drains ``max_rate /
time_period`` units per second; ``acquire(amount)`` (or ``async with
limiter:``, one unit) proceeds at once when the amount fits, else waits.
Waiters queue smallest amount first and first come first served among equal
amounts (as aiolimiter's heap), are woken by one timer at the moment the
first of them fits (never a busy loop), and a caller that finds room goes
ahead of them (as in aiolimiter). A cancelled waiter has taken nothing and
loses nothing; the next one is woken in its place.

The level lives in the native GCRA bucket as nanoseconds of drain time, so
fractional amounts are exact to the nanosecond. Time is the event loop's:
the monotonic clock the native bucket reads for asyncio's own loops, or
``loop.time()`` itself when a loop has its own (uvloop, or a test that
patches it). What still differs from aiolimiter is listed in
docs/migrating.md.
"""

from __future__ import annotations

import asyncio
import itertools
import warnings
from contextlib import AbstractAsyncContextManager
from heapq import heappop, heappush
from types import TracebackType
from typing import Any

from .. import _core, _validate

__all__ = ["AsyncLimiter"]

#: The aiolimiter release whose API and behaviour this module follows.
__version__ = "1.3.0"

LIMITER_REUSED_ACROSS_LOOPS_WARNING = (
    "This AsyncLimiter instance is being re-used across loops. Please create "
    "a new limiter per event loop as re-use can lead to undefined behaviour."
)

_MAX_INTERVAL_NS: int = _core.TOKEN_BUCKET_MAX_INTERVAL_NS
_MAX_TAU_NS: int = _core.TOKEN_BUCKET_MAX_TAU_NS
#: Longest time_period in seconds (about 9 years: the native bucket's longest refill).
MAX_TIME_PERIOD = _MAX_TAU_NS / 1e9


def _stock_time(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop.time()`` is asyncio's own (the monotonic clock the native bucket reads)."""
    return (getattr(type(loop), "time", None) is asyncio.BaseEventLoop.time
            and "time" not in getattr(loop, "__dict__", {}))


class AsyncLimiter(AbstractAsyncContextManager[None]):
    """A leaky bucket rate limiter (aiolimiter's), for asyncio.

    ``async with limiter:`` acquires one unit; :meth:`acquire` any amount.

    Args:
        max_rate: units the bucket holds (the burst), and units drained per
            ``time_period``; a finite number > 0.
        time_period: seconds to drain ``max_rate`` units; a finite number > 0
            (at most about 9 years). Default 60.

    Raises:
        ValueError, TypeError: a bad argument, naming it and its value.
    """

    __slots__ = ("_max_rate", "_time_period", "_bucket", "_tau_ns", "_unit_ns", "_cost_one",
                 "_event_loop", "_loop_time", "_done", "_waiters", "_next_count", "_waker_handle")

    def __init__(self, max_rate: float, time_period: float = 60) -> None:
        self._max_rate = _validate.positive("AsyncLimiter", "max_rate", max_rate)
        self._time_period = _validate.positive("AsyncLimiter", "time_period", time_period,
                                               maximum=MAX_TIME_PERIOD)
        self._max_rate, self._time_period = max_rate, time_period  # as given (int stays int)
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._loop_time: Any = None  # the loop's time() when it is not the stock one
        self._done: asyncio.Future[None] | None = None
        # (amount, arrival, future): smallest amount first, then first come.
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._next_count = itertools.count().__next__
        self._waker_handle: asyncio.TimerHandle | None = None
        self._bucket = self._new_bucket()

    def _new_bucket(self) -> _core.TokenBucket:
        """An empty (full-capacity) native bucket whose capacity is the drain
        time of max_rate units, tau ns (burst * interval, as close to the
        period as whole nanoseconds allow)."""
        period_ns = min(max(round(float(self._time_period) * 1e9), 1), _MAX_TAU_NS)
        burst = max(1, -(-period_ns // _MAX_INTERVAL_NS))
        interval = period_ns // burst
        self._tau_ns = burst * interval
        self._unit_ns = self._tau_ns / float(self._max_rate)
        self._cost_one = self._cost(1) if 1 <= self._max_rate else -1
        return _core.TokenBucket(interval, burst, None)

    @property
    def max_rate(self) -> float:
        """The configured ``max_rate``: the capacity, drained per ``time_period``."""
        return self._max_rate

    @property
    def time_period(self) -> float:
        """The configured ``time_period`` in seconds."""
        return self._time_period

    def _cost(self, amount: float) -> int:
        """Nanoseconds of drain time ``amount`` units take (max_rate units: tau exactly)."""
        if amount >= self._max_rate:
            return self._tau_ns if amount == self._max_rate else self._tau_ns + 1
        return round(amount / float(self._max_rate) * self._tau_ns)

    # -- the loop and its time -----------------------------------------------------

    def _bind(self) -> asyncio.AbstractEventLoop:
        """The running loop; a limiter moves to it when its previous loop is
        closed or stopped (warning, as aiolimiter does) and drops the waiters
        of the old loop."""
        loop = asyncio.get_running_loop()
        old = self._event_loop
        if loop is old:
            return loop
        if old is not None:
            if not old.is_closed() and old.is_running():
                return old  # aiolimiter's rule: still bound to a loop that runs
            self._waiters = [w for w in self._waiters if w[2].get_loop() is loop]
            warnings.warn(LIMITER_REUSED_ACROSS_LOOPS_WARNING, RuntimeWarning, stacklevel=3)
        self._switch_time(None if _stock_time(loop) else loop.time)
        self._event_loop = loop
        done: asyncio.Future[None] = loop.create_future()
        done.set_result(None)
        self._done = done
        return loop

    def _switch_time(self, loop_time: Any) -> None:
        """Moves the level to another timeline (the native clock or a loop's own)."""
        if self._event_loop is not None and (loop_time is None) == (self._loop_time is None):
            self._loop_time = loop_time
            return
        debt = self._bucket._debt_ns(self._now())
        self._loop_time = loop_time
        self._bucket = self._new_bucket()
        if debt:
            self._bucket._try_acquire_ns(min(debt, self._tau_ns), self._now())

    def _now(self) -> int:
        """Now in ns on the limiter's timeline (-1: the native bucket's clock)."""
        loop_time = self._loop_time
        return -1 if loop_time is None else round(loop_time() * 1e9)

    # -- acquiring -----------------------------------------------------------------------

    def has_capacity(self, amount: float = 1) -> bool:
        """Whether ``amount`` units would be granted now (takes nothing)."""
        self._bind()
        return self._bucket._debt_ns(self._now()) + self._cost(amount) <= self._tau_ns

    async def acquire(self, amount: float = 1) -> None:
        """Takes ``amount`` units, waiting until they fit.

        Raises:
            ValueError: ``amount`` is not a number between 0 and ``max_rate``
                (NaN included), with aiolimiter's message.
        """
        if not 0 <= amount <= self._max_rate:
            raise ValueError("Amount must be a number between 0 and the maximum capacity")
        loop = self._bind()
        cost = self._cost(amount)
        arrival = -1
        while not self._bucket._try_acquire_ns(cost, self._now()):
            if arrival < 0:
                arrival = self._next_count()  # a waiter woken too late keeps its place
            waiter: asyncio.Future[None] = loop.create_future()
            waiter.add_done_callback(self._wake_soon)
            heappush(self._waiters, (amount, arrival, waiter))
            self._wake_next()
            await waiter
        if self._waiters:
            self._wake_next()  # the level rose: the timer must wait longer

    def _wake_soon(self, _: object) -> None:
        # A waiter is done (woken or cancelled): look at the queue again once
        # its task had the chance to take its units.
        loop = self._event_loop
        if loop is not None and not loop.is_closed():
            loop.call_soon(self._wake_next)

    def _wake_next(self, *_args: object) -> None:
        """Wakes the first waiter if it fits now, else sets one timer for when it will."""
        handle, self._waker_handle = self._waker_handle, None
        if handle is not None:
            handle.cancel()
        heap = self._waiters
        while heap and heap[0][2].done():
            heappop(heap)
        if not heap:
            return
        amount, _, waiter = heap[0]
        wait_ns = self._bucket._debt_ns(self._now()) + self._cost(amount) - self._tau_ns
        if wait_ns <= 0:
            heappop(heap)
            waiter.set_result(None)
            return
        loop = self._event_loop
        assert loop is not None
        self._waker_handle = loop.call_later(wait_ns / 1e9, self._wake_next)

    def __aenter__(self) -> Any:  # an awaitable, as an async def's coroutine would be
        """``async with limiter:`` takes one unit (waiting for it)."""
        done = self._done
        if (done is not None and self._loop_time is None and self._cost_one >= 0
                and self._bucket._try_acquire_ns(self._cost_one)):
            return done  # granted: an already-finished future, no coroutine to run
        return self.acquire()

    def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                  tb: TracebackType | None) -> Any:
        return self._done if self._done is not None else _nothing()

    def __repr__(self) -> str:
        level = self._bucket._debt_ns(self._now()) / self._unit_ns if self._unit_ns else 0.0
        return (f"<AsyncLimiter(max_rate={self._max_rate!r}, time_period={self._time_period!r}) "
                f"at {id(self):#x} [level: {level:f}, waiters: {len(self._waiters)}]>")


async def _nothing() -> None:
    return None

