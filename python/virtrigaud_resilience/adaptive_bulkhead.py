"""An adaptive bulkhead: a concurrency limit that follows measured latency and drops.

A :class:`~virtrigaud_resilience.Bulkhead` of 64 protects a provider that
can take 64; when the provider's capacity falls (a vCenter under a storage
vMotion) 64 calls in flight queue inside it and everyone's latency grows.
:class:`AdaptiveBulkhead` moves its limit the way Netflix's concurrency-
limits does (:mod:`~virtrigaud_resilience.adaptive_limits`: AIMD, Gradient2,
Vegas), on the round-trip times and drops of the calls it admitted.

The in-flight count and the limit are native atomics (``_core``): taking a
slot is one compare-and-swap, giving it back records the call's sample (its
RTT, the calls in flight when it started, whether it was a drop) into the
current sampling window with a few atomic adds. Once per window (from
``min_window`` to ``max_window`` seconds: twice the window's smallest RTT
within those bounds, as Netflix's WindowedLimit; and at least
``min_samples`` calls) the call that closes it runs the algorithm once and
stores the next limit. No call runs the algorithm otherwise.

Asyncio callers queue first come, first served exactly as the Bulkhead's do
(the same code, :mod:`~virtrigaud_resilience._fifo_queue`); a lowered limit
takes nothing from the calls in flight, but no freed slot is handed on
until the calls in flight are under it; a raised limit wakes the waiters.

What counts as a drop: the block or call raised a TimeoutError (our
:class:`~virtrigaud_resilience.OperationTimeoutError` included), an
:class:`~virtrigaud_resilience.UnavailableError` or a
:class:`~virtrigaud_resilience.RateLimitError` (a provider's 429, or a
bulkhead downstream that was full). Any other exception releases the slot
without a sample (Netflix's ``onIgnore``): its latency says nothing about
load. This bulkhead's own refusals are never samples.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, TypeVar

from . import _core, _validate
from ._fifo_queue import FifoQueue, empty_queue
from ._tracking import Census, Counters, Labels, ProviderLabelled, provider_labels
from .adaptive_limits import MAX_LIMIT, Gradient2, LimitAlgorithm
from .clock import ManualClock, check_clock
from .durations import Seconds
from .errors import RateLimitError, UnavailableError

__all__ = ["ADAPTIVE_BULKHEADS", "AdaptiveBulkhead", "AdaptiveSlot", "is_drop"]

T = TypeVar("T")

_DROPS: tuple[type[BaseException], ...] = (TimeoutError, UnavailableError, RateLimitError)


def is_drop(exc: BaseException | None) -> bool:
    """Whether a call that raised ``exc`` was a drop (see the module)."""
    if exc is None:
        return False
    if isinstance(exc, _DROPS):
        return True
    asyncio = sys.modules.get("asyncio")  # 3.10: asyncio.TimeoutError is its own class
    return asyncio is not None and isinstance(exc, asyncio.TimeoutError)


def _final_counters(bulkhead: AdaptiveBulkhead) -> tuple[Labels, Counters]:
    """A dropped adaptive bulkhead's labels and (rejected,)."""
    return (bulkhead.provider_type, bulkhead.provider), (bulkhead.rejected,)


#: Every live AdaptiveBulkhead, for the metrics collector (see _tracking.py).
ADAPTIVE_BULKHEADS: Census[AdaptiveBulkhead] = Census(_final_counters)


class AdaptiveBulkhead(_core.AdaptiveBulkhead, FifoQueue, ProviderLabelled):
    """A bulkhead whose limit a :class:`LimitAlgorithm` moves once per sampling window.

    Args:
        limit: the algorithm (``AIMD(...)``, ``Gradient2(...)``, ``Vegas(...)``;
            default ``Gradient2()``). The bulkhead runs a fresh copy of it
            bounded to [min_limit, max_limit]; the object passed is not changed.
        min_limit, max_limit: ints, 1 <= min_limit <= max_limit <= 2**30.
        max_queue: asyncio tasks allowed to wait for a slot; int >= 0.
        min_window, max_window: seconds bounding a sampling window,
            0 < min_window <= max_window (default 0.1 and 1.0).
        min_samples: calls a window needs before it closes; int >= 1 (10).
        clock: a ManualClock to measure RTTs and windows on (tests, virtual
            time), or None for the monotonic clock.
        provider_type, provider: labels for errors (str).

    ``limit`` (the int now), ``in_flight``, ``waiting``, ``admitted``,
    ``rejected`` are native reads; ``algorithm`` is the running copy.
    """

    __slots__ = ("algorithm", "max_queue", "min_window_ns", "max_window_ns", "_held",
                 "_provider_type", "_provider", "_waiters", "_lock", "__weakref__")

    def __init__(self, limit: LimitAlgorithm | None = None, *, min_limit: int = 1,
                 max_limit: int = 1000, max_queue: int = 0, min_window: Seconds = 0.1,
                 max_window: Seconds = 1.0, min_samples: int = 10,
                 clock: ManualClock | None = None, provider_type: str = "",
                 provider: str = "") -> None:
        owner = "AdaptiveBulkhead"
        algorithm = Gradient2() if limit is None else limit
        if not isinstance(algorithm, LimitAlgorithm):
            raise TypeError(f"{owner} limit must be an AIMD, Gradient2 or Vegas, got "
                            f"{type(limit).__name__} {limit!r}")
        lo = _validate.integer(owner, "min_limit", min_limit, 1, MAX_LIMIT)
        hi = _validate.integer(owner, "max_limit", max_limit, 1, MAX_LIMIT)
        if lo > hi:
            raise ValueError(f"{owner} min_limit must be <= max_limit ({hi}), got {lo!r}")
        queue = _validate.integer(owner, "max_queue", max_queue, 0, MAX_LIMIT)
        shortest = _validate.seconds(owner, "min_window", min_window, allow_zero=False)
        longest = _validate.seconds(owner, "max_window", max_window, allow_zero=False)
        if shortest > longest:
            raise ValueError(f"{owner} min_window must be <= max_window ({longest:g}), "
                             f"got {min_window!r}")
        samples = _validate.integer(owner, "min_samples", min_samples, 1)
        native_clock = check_clock(owner, clock)
        self._provider_type, self._provider = provider_labels(owner, provider_type, provider)
        self.algorithm = algorithm.bounded(lo, hi)
        super().__init__(self.algorithm.limit, native_clock)
        self.max_queue = queue
        self._waiters, self._lock = empty_queue()  # FifoQueue: the asyncio waiters
        self.min_window_ns = round(shortest * 1e9)
        self.max_window_ns = round(longest * 1e9)
        self._set_min_samples(samples)
        self._set_window_end(self._now_ns() + self.min_window_ns)
        # The slots `with bulkhead:` took in this thread or task, latest first.
        self._held: ContextVar[AdaptiveSlot | None] = ContextVar(
            "virtrigaud_adaptive_slots", default=None)
        ADAPTIVE_BULKHEADS.track(self)

    def __del__(self, _retire: Callable[[AdaptiveBulkhead], None] = ADAPTIVE_BULKHEADS.retire,
                ) -> None:
        # Bound at definition: module globals may be gone at interpreter exit.
        _retire(self)

    # -- slots -----------------------------------------------------------------

    def _reject(self) -> RateLimitError:
        """Counts one attempt turned away and returns the error it gets."""
        self._count_rejection()
        where = f" to {self.provider_type}/{self.provider}" if self.provider_type else ""
        return RateLimitError(
            f"adaptive bulkhead full: {self.in_flight}/{self.limit} calls in flight{where}")

    def _slot(self) -> AdaptiveSlot:
        # in_flight after taking ours: what this call started with (Netflix's).
        return AdaptiveSlot(self, self._now_ns(), self.in_flight)

    def try_acquire(self) -> AdaptiveSlot | None:
        """A slot if one is free and nobody is queued, else None (counted
        as a rejection). Never waits."""
        if self._try_take():
            return self._slot()
        self._count_rejection()
        return None

    def acquire(self) -> AdaptiveSlot:
        """A slot, or RateLimitError when none is free (or tasks are queued).
        Never waits. Give it back with ``slot.release()`` or ``with slot:``."""
        if self._try_take():
            return self._slot()
        raise self._reject()

    async def acquire_async(self, timeout: Seconds | None = None) -> AdaptiveSlot:
        """A slot, waiting in the FIFO queue (at most ``timeout`` seconds)
        when allowed. Raises RateLimitError when the queue is full or the
        wait times out; cancelling the wait leaves nothing held."""
        await self._take_async(timeout)
        return self._slot()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a slot (RateLimitError when full); its
        outcome is the call's sample."""
        with self.acquire():
            return fn(*args, **kwargs)

    async def call_async(self, fn: Callable[..., Awaitable[T]], *args: Any,
                         **kwargs: Any) -> T:
        """``await fn(*args, **kwargs)`` in a slot, queueing when allowed."""
        with await self.acquire_async():
            return await fn(*args, **kwargs)

    # -- `with bulkhead:` --------------------------------------------------------

    def _push(self, slot: AdaptiveSlot) -> None:
        slot._below = self._held.get()
        self._held.set(slot)

    def _pop(self) -> AdaptiveSlot:
        slot = self._held.get()
        while slot is not None and slot._claimed:  # released through the slot itself
            slot = slot._below
        if slot is None:
            raise RuntimeError("AdaptiveBulkhead: exit without a matching enter "
                               "(this thread or task holds no slot)")
        self._held.set(slot._below)
        return slot

    def __enter__(self) -> AdaptiveBulkhead:
        self._push(self.acquire())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._pop().finish(exc)

    async def __aenter__(self) -> AdaptiveBulkhead:
        self._push(await self.acquire_async())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._pop().finish(exc)

    # -- the queue and the window (called by the native part) ------------------------

    def _claim(self, waiter: Any) -> bool:
        """FifoQueue's claim; then, while slots stay free (a raised limit),
        the next waiter is woken too."""
        entered = super()._claim(waiter)
        if entered and self.waiting > 0 and self.in_flight < self.limit:
            self._wake()
        return entered

    def _on_window(self, now_ns: int) -> None:
        """Closes a sampling window (native hook, once per window): one
        update of the algorithm, the new limit stored, the next window set."""
        samples, rtt_sum_ns, min_rtt_ns, max_in_flight, drops = self._take_window()
        # The claim pushed the window's end to the end of time: whatever
        # happens below, the next window gets a real end.
        length = self.min_window_ns
        try:
            if samples == 0:  # taken by a racing close: nothing to learn
                return
            length = min(max(2 * min_rtt_ns, self.min_window_ns), self.max_window_ns)
            before = self.limit
            limit = self.algorithm.update(rtt_sum_ns // samples, max_in_flight, drops > 0)
            self._set_limit(limit)
        finally:
            self._set_window_end(now_ns + length)
        if limit > before and self.waiting > 0:
            self._wake()

    def __repr__(self) -> str:
        return (f"AdaptiveBulkhead(limit={self.limit}, in_flight={self.in_flight}, "
                f"waiting={self.waiting}, algorithm={self.algorithm!r})")


class AdaptiveSlot(_core.OneShot):
    """One slot of an :class:`AdaptiveBulkhead`, given back exactly once.

    ``release(dropped=False)`` records the call's RTT (from the slot's
    taking to now) as a success or a drop; ``ignore()`` gives the slot back
    without a sample; ``with slot:`` does one of the three from the
    exception the block raised (see :func:`is_drop`). A second give-back of
    the same slot raises RuntimeError and changes nothing.
    """

    __slots__ = ("bulkhead", "start_ns", "in_flight", "_below")

    def __init__(self, bulkhead: AdaptiveBulkhead, start_ns: int, in_flight: int) -> None:
        self.bulkhead = bulkhead
        self.start_ns = start_ns
        self.in_flight = in_flight
        self._below: AdaptiveSlot | None = None

    def _give_back(self, dropped: bool, sample: bool) -> None:
        if not self._claim():
            raise RuntimeError("AdaptiveSlot: this slot was already given back")
        self.bulkhead._release(self.start_ns, self.in_flight, dropped, sample)

    def release(self, dropped: bool = False) -> None:
        """Gives the slot back with its sample: a drop when ``dropped``."""
        self._give_back(_validate.boolean("AdaptiveSlot", "dropped", dropped), True)

    def ignore(self) -> None:
        """Gives the slot back without a sample."""
        self._give_back(False, False)

    def finish(self, exc: BaseException | None) -> None:
        """Gives the slot back as a call that raised ``exc`` (None: succeeded)."""
        if exc is None:
            self._give_back(False, True)
        elif is_drop(exc):
            self._give_back(True, True)
        else:
            self._give_back(False, False)

    def __enter__(self) -> AdaptiveSlot:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finish(exc)

    @property
    def released(self) -> bool:
        """Whether the slot was given back."""
        return bool(self._claimed)

    def __repr__(self) -> str:
        return f"AdaptiveSlot(released={self.released})"
