"""The first-come-first-served queue of asyncio tasks waiting for a slot.

Shared by :class:`~virtrigaud_resilience.Bulkhead` and
:class:`~virtrigaud_resilience.AdaptiveBulkhead`: each is a native counter of
calls in flight (``_core``) that calls back into this queue by name
(``_hand_off`` when a slot is given back while someone waits, ``_wake`` when
a slot went back to the pool while someone was registering). The protocol
with the native part is the same for both:

- ``_try_take()``: a newcomer's slot, refused while anyone waits;
- ``_take_as_waiter()``: a free slot for the head of the queue;
- ``_add_waiter(delta)``: the native count of registered waiters;
- ``_free()``: gives back a slot that was handed to a waiter that left;
- ``_reject()``: counts an attempt turned away and returns its error.

The queue is shared by event loops and threads (a sync exit hands a slot
to an asyncio waiter): every change happens under the lock, together with
the native count of waiters. An OrderedDict (used as an ordered set) rather
than a deque: a cancelled waiter leaves from anywhere in the queue in O(1);
thousands cancelled at once in any order (a TaskGroup's) would otherwise
take quadratic time.
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from .errors import RateLimitError

from .durations import Seconds
from .timeouts import TimeoutScope

__all__ = ["FifoQueue", "empty_queue"]


def empty_queue() -> tuple[collections.OrderedDict[_Waiter, None], threading.Lock]:
    """A user's ``(_waiters, _lock)`` to start with: nobody waiting."""
    return collections.OrderedDict(), threading.Lock()


class FifoQueue:
    """Mixin: the asyncio waiters of a native slot counter (see the module).

    A class using it sets ``max_queue`` (how many may wait) and
    ``_waiters, _lock = empty_queue()`` in its constructor, and lists them
    in its ``__slots__``."""

    __slots__ = ()

    max_queue: int
    _waiters: collections.OrderedDict[_Waiter, None]
    _lock: threading.Lock

    if TYPE_CHECKING:  # the native part's methods (see the module docstring)
        def _try_take(self) -> bool: ...
        def _take_as_waiter(self) -> bool: ...
        def _add_waiter(self, delta: int) -> None: ...
        def _free(self) -> None: ...
        def _reject(self) -> RateLimitError: ...

    async def _take_async(self, timeout: Seconds | None = None) -> None:
        """Takes a slot, waiting in the queue (at most ``timeout`` seconds)
        when allowed; raises what ``_reject()`` returns when the queue is
        full or the wait times out. Cancelling leaves nothing held."""
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
            async with TimeoutScope(timeout, type(self).__name__):
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
