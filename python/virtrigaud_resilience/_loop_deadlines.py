"""One timer per event loop for every :class:`~.timeouts.TimeoutScope` on it.

A deadline per attempt is the common case (every ResilientProvider call and
every policy with a timeout has one) and it almost never fires: the attempt
ends first. ``loop.call_later`` per deadline costs a ``TimerHandle`` (two
Python ``__init__`` calls), a push into the loop's heap of handles (whose
``__lt__`` is Python), a ``cancel()`` and, later, the loop's sweep of the
cancelled handle. Here a deadline is a tuple pushed on this loop's own heap
(compared in C) and a flag set when it ends; one ``TimerHandle`` is
scheduled, for the earliest deadline that may still fire, and reused by
later deadlines: a program whose attempts each get a 30 s deadline
schedules about one handle every 30 s, not one per attempt. A deadline
that ends while it is the heap's last item (added last and not moved up:
attempts one after another) is removed at once; others that ended stay in
the heap until they reach its head or outnumber the live ones (then the
heap is rebuilt), so memory stays within twice the live deadlines plus a
constant.

Loop time, as ``call_at``: a deadline fires in the loop turn at or after
its time (within the loop's clock resolution), in deadline order, each
once. Thread-affine like the loop itself: every method runs on the loop's
thread.
"""

from __future__ import annotations

import heapq
import itertools
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

__all__ = ["Deadline", "LoopDeadlines", "deadlines_of"]

#: Rebuild the heap once it holds more ended deadlines than this and than live ones.
_COMPACT_AT = 64


class Deadline(Protocol):
    """What the loop's timer fires: a scope whose deadline passed."""

    def _fire(self) -> None: ...


class LoopDeadlines:
    """The pending deadlines of one event loop, behind one ``TimerHandle``
    (two for a moment when a deadline earlier than the pending one comes)."""

    __slots__ = ("_loop", "_time", "_heap", "_ended", "_timers", "_order", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the loop holds our TimerHandles, and _BY_LOOP is keyed by
        # the loop. For the same reason no TimerHandle is kept here (each
        # holds its loop): a timer earlier than the pending one is added
        # beside it, never moved, and the times of those pending are kept.
        self._loop = weakref.ref(loop)
        self._time = _clock_of(loop)
        #: [when, order, scope]; scope None once the deadline ended or fired
        self._heap: list[list[Any]] = []
        self._ended = 0  # entries in the heap whose scope is None
        self._timers: list[float] = []  # the times our pending TimerHandles fire at (a heap)
        self._order = itertools.count()  # ties fire in the order they were added

    def add(self, delay: float, scope: Deadline) -> list[Any]:
        """Fires ``scope._fire()`` ``delay`` seconds of loop time from now,
        unless :meth:`end` is called with the entry returned first."""
        when = self._time() + delay
        entry = [when, next(self._order), scope]
        heapq.heappush(self._heap, entry)
        timers = self._timers
        if not timers or when < timers[0]:
            loop = self._loop()
            assert loop is not None  # called on the running loop
            self._schedule(loop, when)
        return entry

    def end(self, entry: list[Any]) -> None:
        """The deadline will not fire (its scope ended first): no-op if it fired."""
        if entry[2] is not None:
            entry[2] = None
            heap = self._heap
            if heap[-1] is entry:
                # Added last and not moved up (the common case: deadlines of
                # one length, each ended before the next is added): a leaf,
                # removed now rather than kept as an ended entry.
                heap.pop()
                return
            self._ended += 1
            if self._ended > _COMPACT_AT and self._ended * 2 > len(self._heap):
                self._compact()

    def __len__(self) -> int:
        """The deadlines still pending."""
        return len(self._heap) - self._ended

    def _schedule(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        heapq.heappush(self._timers, when)
        loop.call_at(when, self._fire_due)

    def _fire_due(self) -> None:
        loop = self._loop()
        if loop is None:
            return
        heapq.heappop(self._timers)  # this handle's time: the earliest pending
        heap = self._heap
        due = loop.time() + getattr(loop, "_clock_resolution", 0.0)
        try:
            while heap and heap[0][0] <= due:
                entry = heapq.heappop(heap)
                scope = entry[2]
                if scope is None:
                    self._ended -= 1
                else:
                    entry[2] = None
                    scope._fire()
        finally:  # whatever a scope's _fire raised, the deadlines after it still fire
            self._drop_ended_heads()
            heap = self._heap
            timers = self._timers
            if heap and (not timers or heap[0][0] < timers[0]):
                self._schedule(loop, heap[0][0])

    def _drop_ended_heads(self) -> None:
        heap = self._heap
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
            self._ended -= 1

    def _compact(self) -> None:
        live = [entry for entry in self._heap if entry[2] is not None]
        heapq.heapify(live)
        self._heap = live
        self._ended = 0
        # A pending handle stays even with nothing live: the next deadline
        # (of the next attempt, usually) is covered by it.


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
