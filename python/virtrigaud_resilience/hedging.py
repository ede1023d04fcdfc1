"""Hedging: a second request for a call slower than usual; the first answer wins.

``PolicyBuilder(...).with_hedging(max_hedges=1, delay="p95", window=1000)``
makes ``execute_async`` start the call as usual and, if it has not answered
after ``delay``, start it again (up to ``max_hedges`` more times, one per
further ``delay``). The first success is the call's result; the others are
cancelled, and each gives back its breaker permit, its token and its
bulkhead slot as any cancelled call does. If every request fails, the last
failure is raised. Each request is a whole execution of the policy (its
breaker, limiter, bulkhead, retries and timeouts), so a hedge takes a token
and a breaker permit like any attempt.

``delay="pNN"`` (``"p95"``, ``"p99.9"``) is that percentile of the last
``window`` successful calls' latencies (from the call's start to its
answer, hedged or not), read from a lock-free native histogram
(``_core.LatencyHistogram``: log-linear buckets at most 6.25% wide) when
the call starts. Until :data:`MIN_SAMPLES` latencies are known the delay is
``floor`` (None: no hedge until then). ``delay`` in seconds is fixed.

No hedge is sent while the breaker is not closed, while the limiter has no
token to spare, or for ``retry_after`` seconds (:data:`PUSHBACK` without one)
after the provider pushed back (an attempt raised a ``RateLimitError`` or
an error with ``retry_after``). Hedging is async only: a sync call cannot be
abandoned. It resends requests: use it for idempotent operations only
(reads, ``describe``), never for a create that is not idempotent.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import _core, _validate
from .errors import RateLimitError

if TYPE_CHECKING:
    import asyncio  # imported where a race runs: `import virtrigaud_resilience` loads no asyncio

__all__ = ["Hedging", "MAX_HEDGES", "MIN_SAMPLES", "PUSHBACK"]

T = TypeVar("T")

#: The most hedges a call may send (gRPC's hedgingPolicy allows 5 attempts in all).
MAX_HEDGES = 10
#: Latencies needed before a percentile is trusted.
MIN_SAMPLES = 20
#: Seconds without hedges after a pushback that named no ``retry_after``.
PUSHBACK = 1.0
_MAX_WINDOW = 1_000_000
_PERCENTILE = re.compile(r"p(\d+(?:\.\d+)?)")


class Hedging:
    """When a call is hedged, and the latencies that decide it (see the module docstring).

    Args:
        owner: the name of what is configured, for error messages.
        max_hedges: extra requests per call, an int in [1, 10].
        delay: ``"pNN"`` with NN in (0, 100), or seconds (>= 0; float,
            ``timedelta`` or a Go duration string).
        window: the latencies the percentile is over, an int in [1, 1_000_000].
        floor: the delay while fewer than :data:`MIN_SAMPLES` latencies are
            known (seconds, >= 0), or None: no hedge until then.

    Raises TypeError or ValueError naming the field for a bad value.
    """

    __slots__ = ("_max_hedges", "_percentile", "_fixed", "_floor", "_histogram",
                 "_pushback_until", "_hedges", "_lock")

    def __init__(self, owner: str, max_hedges: int = 1, delay: str | Any = "p95", *,
                 window: int = 1000, floor: Any = None) -> None:
        self._max_hedges = _validate.integer(owner, "max_hedges", max_hedges, 1, MAX_HEDGES)
        self._percentile, self._fixed = _parse_delay(owner, delay)
        window = _validate.integer(owner, "window", window, 1, _MAX_WINDOW)
        self._floor = None if floor is None else _validate.seconds(owner, "floor", floor)
        self._histogram = _core.LatencyHistogram(window)
        self._pushback_until = -math.inf
        self._hedges = 0
        self._lock = threading.Lock()

    @property
    def max_hedges(self) -> int:
        """Extra requests a call may send."""
        return self._max_hedges

    @property
    def delay(self) -> str | float:
        """The configured delay: ``"pNN"`` or seconds."""
        if self._percentile is not None:
            return f"p{self._percentile:g}"
        assert self._fixed is not None
        return self._fixed

    @property
    def window(self) -> int:
        """The latencies the percentile is over."""
        return int(self._histogram.window)

    @property
    def floor(self) -> float | None:
        """The delay until enough latencies are known, or None (no hedge until then)."""
        return self._floor

    @property
    def hedges(self) -> int:
        """Hedges sent so far (requests beyond each call's first)."""
        return self._hedges

    @property
    def samples(self) -> int:
        """Latencies held now (up to ``window``)."""
        return int(self._histogram.count)

    def delay_now(self) -> float | None:
        """Seconds a call waits before its first hedge, or None: no hedge."""
        if self._percentile is None:
            return self._fixed
        seconds = self._histogram.percentile(self._percentile, MIN_SAMPLES)
        return self._floor if math.isnan(seconds) else seconds

    def record(self, seconds: float) -> None:
        """Adds one successful call's latency."""
        self._histogram.record(seconds)

    def note(self, error: BaseException, now: float) -> None:
        """An attempt failed with ``error`` at ``now``: a pushback (a
        ``RateLimitError``, an error with ``retry_after``) stops hedges for a while."""
        retry_after = getattr(error, "retry_after", None)
        if retry_after or isinstance(error, RateLimitError):
            until = now + (retry_after or PUSHBACK)
            if until > self._pushback_until:
                self._pushback_until = until

    def pushed_back(self, now: float) -> bool:
        """Whether a pushback still holds at ``now``."""
        return now < self._pushback_until

    async def race(self, start: Callable[[], Awaitable[T]], may_hedge: Callable[[], bool],
                   spend: Callable[[], bool] | None = None) -> T:
        """Runs ``start()`` and, while ``may_hedge()`` allows, hedges of it;
        returns the first success (the rest cancelled and awaited) or raises
        the last failure. ``spend()``, when given, is asked last before each
        hedge is sent, and only then (a retry budget's withdrawal): False
        sends none. Times are the running loop's."""
        import asyncio

        loop = asyncio.get_running_loop()
        began = loop.time()
        delay = self.delay_now() if may_hedge() else None
        if delay is None:  # nothing to race: no task, as a plain policy
            result = await start()
            self._histogram.record(loop.time() - began)
            return result
        running: list[asyncio.Future[T]] = [asyncio.ensure_future(start())]
        try:
            return await self._first_success(running, start, delay, may_hedge, spend, began,
                                             loop)
        finally:
            await _cancel_all(running)

    async def _first_success(self, running: list[asyncio.Future[T]],
                             start: Callable[[], Awaitable[T]], delay: float,
                             may_hedge: Callable[[], bool], spend: Callable[[], bool] | None,
                             began: float, loop: asyncio.AbstractEventLoop) -> T:
        import asyncio

        sent = 0
        failure: BaseException | None = None
        while True:
            timeout = delay if sent < self._max_hedges else None
            done, _ = await asyncio.wait(running, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:  # the delay passed with nothing back
                if may_hedge() and (spend is None or spend()):
                    running.append(asyncio.ensure_future(start()))
                    self._count_hedge()
                    sent += 1
                else:
                    sent = self._max_hedges  # no more hedges for this call
                continue
            for task in done:
                running.remove(task)
                error = _failure_of(task)
                if error is None:
                    self._histogram.record(loop.time() - began)
                    return task.result()
                failure = error
            if not running:
                assert failure is not None
                raise failure

    def _count_hedge(self) -> None:
        with self._lock:
            self._hedges += 1

    def describe(self) -> dict[str, Any]:
        """Settings and state, for ``policy.describe()``."""
        return {"max_hedges": self._max_hedges, "delay": self.delay, "window": self.window,
                "floor": self._floor, "samples": self.samples, "delay_now": self.delay_now(),
                "hedges": self._hedges}

    def __repr__(self) -> str:
        return (f"Hedging(max_hedges={self._max_hedges}, delay={self.delay!r}, "
                f"window={self.window})")


def _failure_of(task: asyncio.Future[Any]) -> BaseException | None:
    import asyncio

    if task.cancelled():  # cancelled by something else than this race
        return asyncio.CancelledError()
    return task.exception()


async def _cancel_all(running: list[asyncio.Future[T]]) -> None:
    """Cancels the requests still running and waits until they let go of
    what they hold (their own cancellation handling gives it back)."""
    if not running:
        return
    import asyncio

    for task in running:
        task.cancel()
    await asyncio.wait(running)


def _parse_delay(owner: str, delay: Any) -> tuple[float | None, float | None]:
    """``(percentile, None)`` for ``"pNN"``, ``(None, seconds)`` otherwise."""
    if isinstance(delay, str):
        match = _PERCENTILE.fullmatch(delay.strip())
        if match is not None:
            percentile = float(match.group(1))
            if not 0 < percentile < 100:
                raise ValueError(f"{owner} delay's percentile must be in (0, 100), "
                                 f"got {delay!r}")
            return percentile, None
        if delay.strip().startswith("p"):
            raise ValueError(f"{owner} delay must be 'pNN' (a percentile in (0, 100)) or "
                             f"seconds, got {delay!r}")
    return None, _validate.seconds(owner, "delay", delay)
