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

from collections.abc import Callable
from types import TracebackType

from . import _core, _validate
from ._fifo_queue import FifoQueue, _Waiter, empty_queue  # noqa: F401 (_Waiter: for the tests)
from ._tracking import Census, Counters, Labels, ProviderLabelled, provider_labels
from .durations import Seconds
from .errors import RateLimitError

__all__ = ["Bulkhead", "BulkheadSlot"]

MAX_CONCURRENT = 1 << 30


def _final_counters(bulkhead: Bulkhead) -> tuple[Labels, Counters]:
    """A dropped bulkhead's labels and (rejected,)."""
    return (bulkhead.provider_type, bulkhead.provider), (bulkhead.rejected,)


#: Every live bulkhead, for the metrics collector (see _tracking.py).
BULKHEADS: Census[Bulkhead] = Census(_final_counters)


class Bulkhead(_core.Bulkhead, FifoQueue, ProviderLabelled):
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
        self._waiters, self._lock = empty_queue()  # FifoQueue: the asyncio waiters
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

    # _take_async() and the queue's hooks (_hand_off, _wake) are FifoQueue's.

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
