"""Bulkheads: at most N calls in flight against one provider.

Unbounded concurrency against one hypervisor is a known failure of
controllers; a bulkhead caps it. Sync callers never wait: a full bulkhead
raises :class:`~virtrigaud_resilience.RateLimitError` at once. asyncio
callers may queue: up to ``max_queue`` tasks wait for a slot (FIFO among
waiters), the rest are rejected. Slots are always returned, on exception
and on cancellation too.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from types import TracebackType

from . import _core, _validate
from ._tracking import Census, Counters, Labels
from .errors import RateLimitError
from .timeouts import TimeoutScope

__all__ = ["Bulkhead"]

MAX_CONCURRENT = 1 << 30


def _final_counters(bulkhead: Bulkhead) -> tuple[Labels, Counters]:
    """A dropped bulkhead's labels and (rejected,)."""
    return (bulkhead.provider_type, bulkhead.provider), (bulkhead.rejected,)


#: Every live bulkhead, for the metrics collector (see _tracking.py).
BULKHEADS: Census[Bulkhead] = Census(_final_counters)


class Bulkhead(_core.Bulkhead):
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
    (waits in the queue when allowed), or :meth:`try_enter` / :meth:`exit`.
    """

    __slots__ = ("max_queue", "_provider_type", "_provider", "_waiters", "__weakref__")

    def __init__(
        self, max_concurrent: int, max_queue: int = 0, *, provider_type: str = "",
        provider: str = "",
    ) -> None:
        max_concurrent, self.max_queue = self.check_size(max_concurrent, max_queue)
        self._provider_type = _validate.string("Bulkhead", "provider_type", provider_type)
        self._provider = _validate.string("Bulkhead", "provider", provider)
        super().__init__(max_concurrent)
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = (
            collections.deque()
        )
        BULKHEADS.track(self)

    def __del__(self, _retire: Callable[[Bulkhead], None] = BULKHEADS.retire) -> None:
        # Bound at definition: module globals may be gone at interpreter exit.
        _retire(self)

    @staticmethod
    def check_size(max_concurrent: int, max_queue: int) -> tuple[int, int]:
        """Validates (max_concurrent, max_queue) as the constructor does."""
        return (_validate.integer("Bulkhead", "max_concurrent", max_concurrent, 1, MAX_CONCURRENT),
                _validate.integer("Bulkhead", "max_queue", max_queue, 0, MAX_CONCURRENT))

    @property
    def provider_type(self) -> str:
        """The provider type label (read-only: metrics sum by it)."""
        return self._provider_type

    @property
    def provider(self) -> str:
        """The provider label (read-only: metrics sum by it)."""
        return self._provider

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

    def enter(self) -> None:
        """Takes a slot or raises RateLimitError; never waits."""
        if not self._try_take():
            raise self._reject()

    async def enter_async(self, timeout: float | None = None) -> None:
        """Takes a slot, waiting in the queue (at most ``timeout`` seconds) if allowed.

        Raises RateLimitError when the queue is full or the wait times out.
        Cancelling the waiting task leaves nothing held.
        """
        if self._try_take():
            return
        if len(self._waiters) >= self.max_queue:
            raise self._reject()
        loop = asyncio.get_running_loop()
        entry = (loop, loop.create_future())
        self._waiters.append(entry)
        self._add_waiter(1)
        entered = False
        try:
            async with TimeoutScope(timeout, "Bulkhead"):
                while not self._try_take():
                    await entry[1]
                    entry = (loop, loop.create_future())
                    self._waiters.appendleft(entry)  # keep its place at the head
                entered = True
        except asyncio.TimeoutError:
            raise self._reject() from None
        finally:
            self._add_waiter(-1)
            try:
                self._waiters.remove(entry)
            except ValueError:
                # Woken (popped) but leaving without the slot (cancelled or
                # timed out): pass the wake-up on, or the next waiter could
                # sleep forever beside a free slot.
                if not entered:
                    self._wake()

    def _wake(self) -> None:
        """Native hook after a slot was freed: wakes the first waiter (any thread)."""
        while self._waiters:
            try:
                loop, future = self._waiters.popleft()
            except IndexError:
                return
            if not future.done():
                loop.call_soon_threadsafe(_resolve, future)
                return

    def __enter__(self) -> Bulkhead:
        self.enter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.exit()

    async def __aenter__(self) -> Bulkhead:
        await self.enter_async()
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


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
