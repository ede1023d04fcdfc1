"""One timer per event loop for every :class:`~.timeouts.TimeoutScope` on it.

A deadline per attempt is the common case (every ResilientProvider call and
every policy with a timeout has one) and it almost never fires: the attempt
ends first. ``loop.call_later`` per deadline costs a ``TimerHandle`` (two
Python ``__init__`` calls), a push into the loop's heap of handles (whose
``__lt__`` is Python), a ``cancel()`` and, later, the loop's sweep of the
cancelled handle. Here the deadlines of a loop are one native heap
(``_core._LoopDeadlines``, with removal by handle), and one ``TimerHandle``
is scheduled, for the earliest deadline, and reused by later deadlines: a
deadline that ends first is removed from the heap at once and its handle is
not cancelled; it fires, finds nothing due and re-arms for the earliest
deadline left. A program whose attempts each get a 30 s deadline schedules
about one handle every 30 s, not one per attempt, and the heap holds only
the deadlines still pending.

Loop time, as ``call_at``: a deadline fires in the loop turn at or after
its time (within the loop's clock resolution), in deadline order, each
once. Thread-affine like the loop itself: every method runs on the loop's
thread.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from . import _core

if TYPE_CHECKING:
    import asyncio

__all__ = ["Deadline", "LoopDeadlines", "deadlines_of"]

#: The ended deadlines the heap may hold besides the live ones: none (an
#: entry that ends is removed at once, wherever it sits in the heap).
_COMPACT_AT = 0

#: ``time.monotonic`` and the native steady clock read the same clock
#: (CLOCK_MONOTONIC) on Linux: there the heap reads the time itself.
_NATIVE_MONOTONIC = sys.platform.startswith("linux")


class Deadline(Protocol):
    """What the loop's timer fires: a scope whose deadline passed."""

    def _fire(self) -> None: ...


class LoopDeadlines(_core._LoopDeadlines):
    """The pending deadlines of one event loop, behind one ``TimerHandle``
    (two for a moment when a deadline earlier than the pending one comes).

    ``add(delay, target)`` fires ``target._fire()`` ``delay`` seconds of
    loop time from now, unless ``end(handle)`` is called with the int it
    returned first (nothing happens if it fired); ``len()`` counts the
    deadlines still pending (native, see ``_core._LoopDeadlines``).
    """

    __slots__ = ("__weakref__",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the loop holds our TimerHandles, and _BY_LOOP is keyed by
        # the loop. For the same reason no TimerHandle is kept here (each
        # holds its loop): a timer earlier than the pending one is added
        # beside it, never moved, and the times of those pending are kept.
        # The time is read natively: CLOCK_MONOTONIC where the loop's time()
        # is asyncio's (time.monotonic), else the loop's own time() (uvloop's
        # is a C method), asked of the weakly held loop with no Python frame.
        if _clock_of(loop) is time.monotonic:
            super().__init__(weakref.ref(loop), None if _NATIVE_MONOTONIC else time.monotonic)
        else:
            super().__init__(weakref.ref(loop), None, ask_loop=True)

    def _fire_due(self) -> None:
        """A TimerHandle of ours fired: every deadline due fires."""
        loop = self._loop()
        if loop is not None:
            self._fire_until(loop.time() + getattr(loop, "_clock_resolution", 0.0))


def _clock_of(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time`` without its frame: ``time.monotonic`` itself where the
    loop's time() is asyncio's (which returns just that), else a function
    that asks the loop (held weakly, as the deadlines hold it)."""
    import asyncio  # loaded: a loop exists

    if getattr(type(loop), "time", None) is asyncio.BaseEventLoop.time:
        return time.monotonic
    loop_ref = weakref.ref(loop)

    def loop_time() -> float:
        running = loop_ref()
        assert running is not None  # called on the running loop
        return running.time()

    return loop_time


#: Each running loop's deadlines (a loop's own lifetime: weakly keyed).
_BY_LOOP: weakref.WeakKeyDictionary[Any, LoopDeadlines] = weakref.WeakKeyDictionary()
#: The last loop asked for and its deadlines: one identity test per deadline
#: in a program with one loop per thread (the common case).
_last: tuple[weakref.ReferenceType[Any] | None, LoopDeadlines | None] = (None, None)


def deadlines_of(loop: asyncio.AbstractEventLoop) -> LoopDeadlines:
    """The deadlines of ``loop`` (created on first use; call it on the loop's thread)."""
    global _last
    ref, deadlines = _last
    if ref is not None and ref() is loop and deadlines is not None:
        return deadlines
    deadlines = _BY_LOOP.get(loop)
    if deadlines is None:
        deadlines = _BY_LOOP[loop] = LoopDeadlines(loop)
    _last = (weakref.ref(loop), deadlines)
    return deadlines
