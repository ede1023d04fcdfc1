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
from types import TracebackType

from . import _core, _validate
from .errors import RateLimitError
from .timeouts import TimeoutScope

__all__ = ["Bulkhead"]

MAX_CONCURRENT = 1 << 30


class Bulkhead(_core.Bulkhead):
    """At most ``max_concurrent`` calls in flight; up to ``max_queue`` asyncio waiters.

    Args:
        max_concurrent: int in ``[1, 2**30]``.
        max_queue: asyncio tasks allowed to wait for a slot; int >= 0 (0: none wait).
        provider_type, provider: labels for errors and metrics.

    Use ``with bulkhead:`` (sync, rejects when full), ``async with bulkhead:``
    (waits in the queue when allowed), or :meth:`try_enter` / :meth:`exit`.
    """

    __slots__ = ("max_queue", "provider_type", "provider", "_waiters", "__weakref__")

    def __init__(
        self, max_concurrent: int, max_queue: int = 0, *, provider_type: str = "",
        provider: str = "",
    ) -> None:
        max_concurrent = _validate.integer("Bulkhead", "max_concurrent", max_concurrent, 1,
                                           MAX_CONCURRENT)
        self.max_queue = _validate.integer("Bulkhead", "max_queue", max_queue, 0, MAX_CONCURRENT)
        super().__init__(max_concurrent)
        self.provider_type = provider_type
        self.provider = provider
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = (
            collections.deque()
        )

    def rejection(self) -> RateLimitError:
        """The error a full bulkhead raises."""
        return RateLimitError(
            f"bulkhead full: {self.in_flight}/{self.max_concurrent} calls in flight"
            f"{f' to {self.provider_type}/{self.provider}' if self.provider_type else ''}"
        )

    def enter(self) -> None:
        """Takes a slot or raises RateLimitError; never waits."""
        if not self.try_enter():
            raise self.rejection()

    async def enter_async(self, timeout: float | None = None) -> None:
        """Takes a slot, waiting in the queue (at most ``timeout`` seconds) if allowed.

        Raises RateLimitError when the queue is full or the wait times out.
        Cancelling the waiting task leaves nothing held.
        """
        if self.try_enter():
            return
        if len(self._waiters) >= self.max_queue:
            raise self.rejection()
        loop = asyncio.get_running_loop()
        entry = (loop, loop.create_future())
        self._waiters.append(entry)
        self._add_waiter(1)
        try:
            async with TimeoutScope(timeout, "Bulkhead"):
                while not self.try_enter():
                    await entry[1]
                    entry = (loop, loop.create_future())
                    self._waiters.appendleft(entry)  # keep its place at the head
        except asyncio.TimeoutError:
            raise self.rejection() from None
        finally:
            self._add_waiter(-1)
            try:
                self._waiters.remove(entry)
            except ValueError:
                pass  # already woken and popped

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
