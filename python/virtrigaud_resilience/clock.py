"""Time sources: the monotonic system clock and a ManualClock tests drive by hand.

Every primitive reads time as int64 nanoseconds from its clock: the steady
(monotonic) clock by default, or a :class:`ManualClock`. Anything in this
package that sleeps (a rate limiter waiting for tokens, a retry backing off)
sleeps *through the clock*, so under a ``ManualClock`` it advances virtual
time instead of blocking: tests of a 60-second reset timeout run in
microseconds.
"""

from __future__ import annotations

import time
from typing import Protocol

from . import _core, _testing_switch, _validate

__all__ = ["ManualClock", "SystemClock", "SYSTEM_CLOCK", "Sleeper", "sleeper_for", "monotonic",
           "pause", "pause_async"]

#: About 146 years in seconds: time beyond 2**62 ns is refused, so no sum overflows.
MAX_CLOCK_SECONDS = float(2**62) / 1e9


def monotonic() -> float:
    """Seconds of the monotonic clock the native primitives use."""
    return _core.monotonic_ns() / 1e9


class Sleeper(Protocol):
    """What the policies need from a clock: the time and a way to wait."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    async def sleep_async(self, seconds: float) -> None: ...


class SystemClock:
    """The monotonic clock; sleeping blocks the thread or suspends the task."""

    __slots__ = ()

    def now(self) -> float:
        """Seconds of the monotonic clock (not wall-clock time)."""
        return _core.monotonic_ns() / 1e9

    def sleep(self, seconds: float) -> None:
        """Blocks the calling thread for ``seconds`` (>= 0)."""
        if seconds > 0:
            time.sleep(seconds)

    async def sleep_async(self, seconds: float) -> None:
        """Suspends the calling task for ``seconds`` (>= 0)."""
        import asyncio

        await asyncio.sleep(seconds if seconds > 0 else 0)

    def __repr__(self) -> str:
        return "SystemClock()"


#: The shared system clock.
SYSTEM_CLOCK = SystemClock()


class ManualClock(_core.ManualClock):
    """A thread-safe clock that moves only when told to.

    Pass it as ``clock=`` to any primitive or policy. Time is in float
    seconds from ``start`` and never goes backwards. :meth:`sleep` and
    :meth:`sleep_async` advance the clock instead of waiting, so code that
    backs off or waits for tokens runs instantly and deterministically.

    >>> clock = ManualClock()
    >>> clock.advance(61.0)
    >>> clock.now()
    61.0
    """

    __slots__ = ()

    def __init__(self, start: float = 0.0) -> None:
        start = _validate.non_negative("ManualClock", "start", start, maximum=MAX_CLOCK_SECONDS)
        super().__init__(_to_ns(start))

    def advance(self, seconds: float) -> None:
        """Moves time forward by ``seconds`` (finite, >= 0)."""
        seconds = _validate.seconds("ManualClock", "seconds", seconds)
        if self.now() + seconds > MAX_CLOCK_SECONDS:
            raise ValueError(
                f"ManualClock seconds would move the clock past {MAX_CLOCK_SECONDS:g} s, "
                f"got {seconds!r}"
            )
        self._advance_ns(_to_ns(seconds))

    def set(self, seconds: float) -> None:
        """Moves time to ``seconds``; raises ValueError if that is in the past."""
        seconds = _validate.non_negative(
            "ManualClock", "seconds", seconds, maximum=MAX_CLOCK_SECONDS
        )
        if not self._set_ns(_to_ns(seconds)):
            raise ValueError(
                f"ManualClock cannot go backwards: now {self.now()!r}, got {seconds!r}"
            )

    def sleep(self, seconds: float) -> None:
        """Advances the clock by ``seconds`` instead of blocking (negative: no-op)."""
        if seconds > 0:
            self.advance(seconds)

    async def sleep_async(self, seconds: float) -> None:
        """Advances the clock by ``seconds``, then yields to the event loop once."""
        import asyncio

        self.sleep(seconds)
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"ManualClock(now={self.now()!r})"


def sleeper_for(clock: ManualClock | None) -> Sleeper:
    """The clock to sleep on: ``clock`` itself, or the system clock for None."""
    return SYSTEM_CLOCK if clock is None else clock


def check_clock(owner: str, clock: object) -> ManualClock | None:
    """Validates a ``clock=`` argument: a ManualClock or None."""
    native = _validate.optional_instance(owner, "clock", clock, _core.ManualClock)
    return native  # type: ignore[return-value]


def _to_ns(seconds: float) -> int:
    return round(seconds * 1e9)


# -- backoff sleeps and token waits (vr.testing's seam) -------------------------

def pause(sleeper: Sleeper, seconds: float) -> None:
    """A backoff sleep or a token wait of ``seconds`` on ``sleeper``: on the
    system clock it returns at once while ``vr.testing.set(sleep=False)``
    holds; a ManualClock advances as always (its waits are virtual)."""
    if sleeper is SYSTEM_CLOCK:
        seconds = _testing_switch.waited(seconds)
    sleeper.sleep(seconds)


async def pause_async(sleeper: Sleeper, seconds: float) -> None:
    """The asyncio form of :func:`pause` (a skipped wait still yields to the loop once)."""
    if sleeper is SYSTEM_CLOCK:
        seconds = _testing_switch.waited(seconds)
    await sleeper.sleep_async(seconds)
