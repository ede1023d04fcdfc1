"""Bulkheads: at most N calls in flight against one provider.

Unbounded concurrency against one hypervisor is a known failure of
controllers; a bulkhead caps it. Sync callers never wait: a full bulkhead
raises :class:`~virtrigaud_resilience.RateLimitError` at once. asyncio
callers may queue: up to ``max_queue`` tasks wait for a slot, the rest are
rejected. The queue is first come, first served, as ``asyncio.Semaphore``:
a freed slot goes straight to the longest waiter, and while anyone waits a
newcomer (a task re-entering in a loop, a sync caller, a policy's native
fast path) is refused even if a slot happens to be free. Slots are always
returned, on exception and on cancellation too; a slot handed to a waiter
that was cancelled meanwhile passes on to the next.

Each slot taken is a :class:`BulkheadSlot` token that goes back exactly
once: :meth:`Bulkhead.exit` gives back the token it is passed, or the
latest one the calling thread or asyncio task took and still holds, and
raises RuntimeError, changing nothing, when there is none. An exit that no
enter matched can therefore never free another caller's slot and let one
call too many in. The bookkeeping is native (``_core``): ``with bulkhead:``
is two native calls, with no Python frame.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

from . import _core, _validate
from ._tracking import Census, Counters, Labels, ProviderLabelled, provider_labels
from .durations import Seconds
from .errors import RateLimitError
from .timeouts import TimeoutScope

__all__ = ["Bulkhead", "BulkheadSlot"]

MAX_CONCURRENT = 1 << 30


def _final_counters(bulkhead: Bulkhead) -> tuple[Labels, Counters]:
    """A dropped bulkhead's labels and (rejected,)."""
    return (bulkhead.provider_type, bulkhead.provider), (bulkhead.rejected,)


#: Every live bulkhead, for the metrics collector (see _tracking.py).
BULKHEADS: Census[Bulkhead] = Census(_final_counters)


class Bulkhead(_core.Bulkhead, ProviderLabelled):
    """At most ``max_concurrent`` calls in flight; up to ``max_queue`` asyncio waiters.

    Args:
        max_concurrent: int in ``[1, 2**30]``.
        max_queue: asyncio tasks allowed to wait for a slot; int >= 0 (0: none wait).
        provider_type, provider: labels for errors and metrics (str).

    ``admitted`` counts slots granted; ``rejected`` counts attempts turned
    away (``try_enter()`` False, a full bulkhead raised, a queued wait timed
    out; each retry of a policy is an attempt); a task that queued and got
    its slot is not a rejection.

    Use ``with bulkhead:`` (sync, rejects when full), ``async with bulkhead:``
    (waits in the queue when allowed), or :meth:`enter` / :meth:`enter_async`
    / :meth:`try_enter` and :meth:`exit`. :meth:`exit` without a matching
    enter raises RuntimeError and changes nothing.
    """

    __slots__ = ("max_queue", "_provider_type", "_provider", "_waiters", "_lock", "__weakref__")

    def __init__(
        self, max_concurrent: int, max_queue: int = 0, *, provider_type: str = "",
        provider: str = "",
    ) -> None:
        max_concurrent, self.max_queue = self.check_size(max_concurrent, max_queue)
        self._provider_type, self._provider = provider_labels("Bulkhead", provider_type,
                                                              provider)
        super().__init__(max_concurrent)
        # The queue is shared by event loops and threads (a sync exit() hands
        # a slot to an asyncio waiter): every change happens under the lock,
        # together with the native count of waiters. An OrderedDict (used as
        # an ordered set) rather than a deque: a cancelled waiter leaves from
        # anywhere in the queue in O(1); thousands cancelled at once in any
        # order (a TaskGroup's) would otherwise take quadratic time.
        self._waiters: collections.OrderedDict[_Waiter, None] = collections.OrderedDict()
        self._lock = threading.Lock()
        BULKHEADS.track(self)

    def __del__(self, _retire: Callable[[Bulkhead], None] = BULKHEADS.retire) -> None:
        # Bound at definition: module globals may be gone at interpreter exit.
        _retire(self)

    @staticmethod
    def check_size(max_concurrent: int, max_queue: int) -> tuple[int, int]:
        """Validates (max_concurrent, max_queue) as the constructor does."""
        return (_validate.integer("Bulkhead", "max_concurrent", max_concurrent, 1, MAX_CONCURRENT),
                _validate.integer("Bulkhead", "max_queue", max_queue, 0, MAX_CONCURRENT))

    def _reject(self) -> RateLimitError:
        """Counts one attempt turned away and returns the error it gets."""
        self._count_rejection()
        return self.rejection()

    def rejection(self) -> RateLimitError:
        """The error a full bulkhead raises (building it counts nothing)."""
        return RateLimitError(
            f"bulkhead full: {self.in_flight}/{self.max_concurrent} calls in flight"
            f"{f' to {self.provider_type}/{self.provider}' if self.provider_type else ''}"
        )

    # enter(), try_enter(), exit() and the context manager are native
    # (_core.Bulkhead): each slot a BulkheadSlot in a per-bulkhead ContextVar.

    def _take(self) -> None:
        """enter() without a token: a policy's attempt, whose slot its native
        exit gives back."""
        if not self._try_take():
            raise self._reject()

    async def enter_async(self, timeout: Seconds | None = None) -> BulkheadSlot:
        """Takes a slot, waiting in the queue (at most ``timeout`` seconds) if
        allowed, and returns its token (see :meth:`exit`).

        Raises RateLimitError when the queue is full or the wait times out.
        Cancelling the waiting task leaves nothing held (a slot handed to it
        meanwhile goes to the next waiter); a cancellation from outside that
        coincides with the timeout stays a ``CancelledError``.
        """
        await self._take_async(timeout)
        return self._hold()  # native: records the slot as this task's latest

    async def _take_async(self, timeout: Seconds | None = None) -> None:
        """enter_async() without a token (see :meth:`_take`)."""
        import asyncio  # here, not at import time (see timeouts.py)

        if self._try_take():
            return
        if len(self._waiters) >= self.max_queue:
            raise self._reject()
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop)
        with self._lock:
            self._waiters[waiter] = None
            self._add_waiter(1)
        try:
            async with TimeoutScope(timeout, "Bulkhead"):
                while not self._claim(waiter):
                    await waiter.future
                    waiter.future = loop.create_future()  # woken to try again
        except asyncio.TimeoutError:
            raise self._reject() from None
        finally:
            if not waiter.entered:
                self._leave(waiter)

    def _claim(self, waiter: _Waiter) -> bool:
        """The waiter's slot, if it was handed one or heads the queue beside a free one."""
        with self._lock:
            if not waiter.granted:
                if not self._waiters or next(iter(self._waiters)) is not waiter \
                        or not self._take_as_waiter():
                    return False
                del self._waiters[waiter]
                self._add_waiter(-1)
            waiter.entered = True
            return True

    def _leave(self, waiter: _Waiter) -> None:
        """A waiter gives up (cancelled or timed out): whatever it was given goes on."""
        with self._lock:
            if waiter.granted:
                handed = True
            else:
                handed = False
                del self._waiters[waiter]
                self._add_waiter(-1)
        if handed:
            self._free()  # the slot handed to it goes to the next waiter, or back
        elif waiter.woken:
            self._wake()  # it was woken for a free slot: the next head is, instead

    def _hand_off(self) -> bool:
        """Native hook on exit: gives the exiting caller's slot to the longest
        waiter (it stays in flight); False when nobody waits."""
        with self._lock:
            if not self._waiters:
                return False
            waiter = self._waiters.popitem(last=False)[0]
            self._add_waiter(-1)
            waiter.granted = True
        waiter.resolve()
        return True

    def _wake(self) -> None:
        """Native hook after a slot went back to the pool while someone was
        registering: the head of the queue tries to take it (any thread)."""
        with self._lock:
            waiter = next(iter(self._waiters)) if self._waiters else None
            if waiter is not None:
                waiter.woken = True
        if waiter is not None:
            waiter.resolve()

    async def __aenter__(self) -> Bulkhead:
        if not self._try_take():  # a free slot: no wait, no second coroutine
            await self._take_async()
        self._hold()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.exit()

    def __repr__(self) -> str:
        return (f"Bulkhead(max_concurrent={self.max_concurrent}, max_queue={self.max_queue}, "
                f"in_flight={self.in_flight}, waiting={self.waiting})")


#: One slot of a :class:`Bulkhead`, taken by ``enter`` / ``enter_async``:
#: give it back with ``bulkhead.exit(slot)`` (exactly once; a native atomic
#: flag decides which of several exits counts). ``slot.bulkhead`` is its
#: bulkhead, ``slot.released`` whether it went back.
BulkheadSlot = _core.BulkheadSlot


class _Waiter:
    """One task queued for a slot: woken through ``future`` on its own loop."""

    __slots__ = ("loop", "future", "granted", "woken", "entered")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False  # an exiting caller handed it its slot
        self.woken = False    # told to try taking a free slot
        self.entered = False  # it holds a slot and has left the queue

    def resolve(self) -> None:
        """Wakes the task, from any thread."""
        self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
