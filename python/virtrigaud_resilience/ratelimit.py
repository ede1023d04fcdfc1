"""Rate limiting: a lock-free GCRA token bucket with reservations.

Modelled on golang.org/x/time/rate: :meth:`TokenBucket.try_acquire` is
``AllowN``, :meth:`TokenBucket.reserve` is ``ReserveN`` and
:meth:`TokenBucket.acquire` / :meth:`TokenBucket.acquire_async` are
``WaitN``. The bucket starts full.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from . import _core, _validate
from ._specialised import HotMethods
from ._tracking import Census, Counters, Labels, ProviderLabelled, provider_labels
from .clock import ManualClock, check_clock, pause, pause_async, sleeper_for
from .durations import Seconds
from .errors import RateLimitError

__all__ = ["TokenBucket", "Reservation", "RateLimiterRegistry", "MIN_QPS", "MAX_QPS", "MAX_BURST"]

MAX_QPS = 1e9
#: One token per 2**42 ns (about 73 minutes).
MIN_QPS = 1e9 / _core.TOKEN_BUCKET_MAX_INTERVAL_NS
MAX_BURST: int = _core.TOKEN_BUCKET_MAX_BURST
#: The longest time a whole bucket may take to refill (burst / qps), in seconds (~9 years).
MAX_REFILL_SECONDS = _core.TOKEN_BUCKET_MAX_TAU_NS / 1e9
_UNLIMITED_WAIT_NS: int = _core.TOKEN_BUCKET_MAX_WAIT_NS
_UNLIMITED_WAIT_SECONDS = _UNLIMITED_WAIT_NS / 1e9


def _interval_ns(qps: float) -> int:
    return min(max(round(1e9 / qps), 1), _core.TOKEN_BUCKET_MAX_INTERVAL_NS)


def validate_rate(owner: str, qps: Any, burst: Any) -> tuple[float, int]:
    """The one rule for a rate: returns ``(float(qps), burst)`` or raises.

    Accepted exactly when a :class:`TokenBucket` can be built: ``qps`` a
    finite int or float (not bool) in ``[MIN_QPS, MAX_QPS]``; ``burst`` an int
    (not bool) in ``[1, MAX_BURST]``; and a full refill, ``burst`` tokens at
    ``qps`` rounded to whole nanoseconds per token, at most
    ``MAX_REFILL_SECONDS``. Shared by TokenBucket, RateLimiterRegistry and
    ``config.RateLimitConfig`` so a config that validates always builds its
    buckets; ``owner`` starts each message.

    Raises:
        TypeError: a wrong type; ``"<owner> <field> must be ..., got <type> <value>"``.
        ValueError: a value out of range; ``"<owner> <field> must be ..., got <value>"``
            (a refill too long names both fields).
    """
    number = _validate.positive(owner, "qps", qps)
    if number < MIN_QPS:
        raise ValueError(
            f"{owner} qps must be >= {MIN_QPS:.6g} (one token per 73 minutes), got {qps!r}"
        )
    if number > MAX_QPS:
        raise ValueError(f"{owner} qps must be <= {MAX_QPS:g}, got {qps!r}")
    burst = _validate.integer(owner, "burst", burst, 1, MAX_BURST)
    # The native bucket keeps burst * interval in int64 nanoseconds; the
    # interval is rounded, so this (not burst / qps) is the exact test.
    if burst * _interval_ns(number) > _core.TOKEN_BUCKET_MAX_TAU_NS:
        raise ValueError(
            f"{owner} burst / qps (the refill time) must be <= {MAX_REFILL_SECONDS:.4g} s, "
            f"got burst={burst!r}, qps={qps!r}"
        )
    return number, burst


def _check_rate(qps: float, burst: int) -> tuple[int, int]:
    """Validates (qps, burst) as TokenBucket and returns (interval_ns, burst)."""
    number, burst = validate_rate("TokenBucket", qps, burst)
    return _interval_ns(number), burst


class Reservation(_core.OneShot):
    """Tokens reserved for use after :attr:`delay` seconds (x/time/rate's Reservation).

    Act after the delay, or :meth:`cancel` to give the tokens back. The
    tokens come back at most once, whichever threads cancel (a native
    atomic flag decides which call refunds).
    """

    __slots__ = ("_bucket", "_n", "_tat_after", "_time_to_act_ns", "_config", "delay")

    #: Seconds to wait, from the moment of reserving, before using the tokens.
    delay: float

    def __init__(self, bucket: TokenBucket, n: int, delay_ns: int, tat_after: int,
                 time_to_act_ns: int, config: int) -> None:
        self._bucket = bucket
        self._n = n
        self._tat_after = tat_after
        self._time_to_act_ns = time_to_act_ns
        self._config = config  # the rate it was made under: a refund needs the same
        self.delay = delay_ns / 1e9

    @property
    def tokens(self) -> int:
        """The number of tokens reserved."""
        return self._n

    @property
    def time_to_act(self) -> float:
        """The bucket clock's time (seconds) at which the tokens may be used."""
        return self._time_to_act_ns / 1e9

    def delay_from_now(self) -> float:
        """Seconds still to wait (0 when the time has come)."""
        return max(0, self._time_to_act_ns - self._bucket._now_ns()) / 1e9

    def cancel(self) -> int:
        """Gives the tokens back, if the reservation has not yet acted.

        As golang.org/x/time/rate's ``Cancel``: tokens reserved by later
        callers since this reservation stay theirs, so fewer than
        :attr:`tokens` may come back. Nothing comes back once
        :meth:`TokenBucket.set_rate` changed the rate since the reservation
        (its arrival time belongs to the old rate). Idempotent. Returns the
        tokens restored.
        """
        if not self._claim():
            return 0
        restored: int = self._bucket._cancel(self._n, self._tat_after, self._time_to_act_ns,
                                             self._config)
        return restored

    def wait(self) -> None:
        """Sleeps (on the bucket's clock) until the tokens may be used.

        If the sleep is interrupted (KeyboardInterrupt), the reservation is
        cancelled and the exception propagates.
        """
        delay = self.delay_from_now()
        if delay > 0:
            try:
                pause(self._bucket._sleeper, delay)  # vr.testing may skip it
            except BaseException:
                self.cancel()
                raise

    async def wait_async(self) -> None:
        """The asyncio form of :meth:`wait`; cancelling the task cancels the reservation."""
        delay = self.delay_from_now()
        if delay > 0:
            try:
                await pause_async(self._bucket._sleeper, delay)
            except BaseException:
                self.cancel()
                raise

    def _refund(self) -> int:
        """Gives the tokens back even if their time has come: the call they
        were taken for never ran (a policy's bulkhead refused it)."""
        if not self._claim():
            return 0
        refunded: int = self._bucket._refund(self._n, self._tat_after, self._config)
        return refunded

    def __repr__(self) -> str:
        return f"Reservation(tokens={self._n}, delay={self.delay!r})"


class CountedLimiter(Protocol):
    """What the metrics collector reads from a rate limiter: its labels and
    ``_counters()``, (admitted, rejected, waited). TokenBucket and the
    distributed buckets are such limiters."""

    @property
    def provider_type(self) -> str: ...

    @property
    def provider(self) -> str: ...

    def _counters(self) -> tuple[int, int, int]: ...


def _final_counters(bucket: CountedLimiter) -> tuple[Labels, Counters]:
    """A dropped bucket's labels and (admitted, rejected, reserved)."""
    return (bucket.provider_type, bucket.provider), bucket._counters()


#: Every live bucket, for the metrics collector (see _tracking.py).
BUCKETS: Census[CountedLimiter] = Census(_final_counters, native=_core.TokenBucket)


class TokenBucket(_core.TokenBucket, ProviderLabelled):
    """A token bucket of ``burst`` tokens refilled at ``qps`` tokens per second.

    Lock-free (GCRA over one atomic word) and safe to share between threads
    and tasks. The bucket starts full.

    Args:
        qps: refill rate in tokens per second; finite, in ``[MIN_QPS, 1e9]``
            (MIN_QPS is one token per ~73 minutes). Rounded to a whole
            number of nanoseconds per token.
        burst: capacity in tokens; int in ``[1, 1_048_575]``; the refill
            time ``burst / qps`` must be at most ~9 years.
        clock: a :class:`ManualClock`, or None for the monotonic clock.
        provider_type, provider: labels for metrics and events (str).

    Raises:
        ValueError, TypeError: naming the parameter and the value.
    """

    # Weak references are the native type's (no "__weakref__" here: from
    # 3.12 a subclass's would cost two words before the object).
    __slots__ = ("_provider_type", "_provider", "_sleeper")

    def __init__(self, qps: float = 10.0, burst: int = 20, clock: ManualClock | None = None,
                 *, provider_type: str = "", provider: str = "") -> None:
        if type(self) is not TokenBucket:
            _HOT_METHODS.follow(type(self))  # a base method patched since?
        interval, burst = _check_rate(qps, burst)
        clock = check_clock("TokenBucket", clock)
        self._provider_type, self._provider = provider_labels("TokenBucket", provider_type,
                                                              provider)
        super().__init__(interval, burst, clock)
        self._sleeper = sleeper_for(clock)
        BUCKETS.track(self)

    def __del__(self, _retire: Callable[[CountedLimiter], None] = BUCKETS.retire) -> None:
        # Bound at definition: module globals may be gone at interpreter exit.
        _retire(self)

    # try_acquire(n=1) -> bool is native (AllowN): see _core.pyi.

    def reserve(self, n: int = 1) -> Reservation:
        """Reserves n tokens (1 <= n <= burst) and returns how long to wait.

        Always succeeds; the tokens are yours after ``reservation.delay``
        seconds. Waiters queue fairly in reservation order.
        """
        n = self._check_n(n)
        ok, delay_ns, tat_after, time_to_act, config = self._reserve(n, _UNLIMITED_WAIT_NS)
        if not ok:  # only past the ~9-year wait limit
            raise ValueError(f"TokenBucket cannot reserve {n} tokens: the wait would exceed limits")
        return Reservation(self, n, delay_ns, tat_after, time_to_act, config)

    def acquire(self, n: int = 1, timeout: Seconds | None = None) -> bool:
        """Waits until n tokens are available and takes them (WaitN).

        Returns False at once, taking nothing, if the wait would exceed
        ``timeout`` seconds (>= 0; None, or any value beyond the longest
        possible wait of ~9 years, means no limit). Sleeps through the
        bucket's clock. If the sleep is interrupted (KeyboardInterrupt), the
        tokens are given back.
        """
        reservation = self._reserve_within(n, timeout)
        if reservation is None:
            return False
        reservation.wait()
        return True

    async def acquire_async(self, n: int = 1, timeout: Seconds | None = None) -> bool:
        """The asyncio form of :meth:`acquire`.

        Cancelling the waiting task gives the reserved tokens back.
        """
        reservation = self._reserve_within(n, timeout)
        if reservation is None:
            return False
        await reservation.wait_async()
        return True

    def retry_after(self, n: int = 1) -> float:
        """Seconds until n tokens are available (0 if they are now); takes nothing.

        What a rejected caller should be told to wait (``RateLimitError.retry_after``).
        """
        return max(0.0, (n - self.tokens) / self.qps)

    def set_rate(self, qps: float, burst: int | None = None) -> None:
        """Changes the rate (and the burst, when given) at run time.

        The tokens available now are kept (capped at the new burst), and so
        is any debt, in tokens, of reservations still waiting. Safe to call
        while other threads acquire: each acquisition is decided wholly
        under the old rate or wholly under the new one (the rate and the
        bucket's arrival time change together, in one atomic step).
        Reservations made before the change can no longer be cancelled for
        tokens back.
        """
        interval, new_burst = _check_rate(qps, self.burst if burst is None else burst)
        self._set_rate(interval, new_burst)

    def _reserve_within(self, n: int, timeout: Seconds | None) -> Reservation | None:
        n = self._check_n(n)
        max_wait = _UNLIMITED_WAIT_NS
        if timeout is not None:
            seconds = _validate.seconds("TokenBucket", "timeout", timeout)
            # Beyond the longest wait there is no limit (and no float overflow).
            max_wait = min(round(min(seconds, _UNLIMITED_WAIT_SECONDS) * 1e9), max_wait)
        ok, delay_ns, tat_after, time_to_act, config = self._reserve(n, max_wait)
        return Reservation(self, n, delay_ns, tat_after, time_to_act, config) if ok else None

    def _check_n(self, n: int) -> int:
        n = _validate.integer("TokenBucket", "n", n, 1)
        if n > self.burst:
            raise ValueError(f"TokenBucket n must be <= burst ({self.burst}), got {n!r}")
        return n

    async def __aenter__(self) -> TokenBucket:
        """``async with bucket:`` waits for one token (aiolimiter's idiom).

        Cancelling the waiting task gives the token back; leaving the block
        gives nothing back (the token is spent).
        """
        await self.acquire_async(1)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _core._specialise(cls)

    def __repr__(self) -> str:
        return f"TokenBucket(qps={self.qps!r}, burst={self.burst!r}, tokens={self.tokens:.3f})"



class RateLimiterRegistry:
    """One bucket per (provider_type, provider), created once: the guide's
    ``ProviderManager.getLimiter`` ("each provider instance has its own rate
    limiter"). Thread-safe.

    Rate limits are back-pressure, never a silent drop: :meth:`check` raises
    :class:`RateLimitError` whose ``retry_after`` is the wait for a token,
    and :meth:`wait` waits up to ``max_wait`` seconds before doing the same.
    """

    def __init__(self, qps: float = 10.0, burst: int = 20, *,
                 clock: ManualClock | None = None) -> None:
        _check_rate(qps, burst)
        self.qps = float(qps)
        self.burst = burst
        self._clock = check_clock("RateLimiterRegistry", clock)
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()

    def get(self, provider_type: str, provider: str) -> TokenBucket:
        """The bucket for this provider, created full on first use."""
        key = (provider_type, provider)
        bucket = self._buckets.get(key)
        if bucket is None:
            with self._lock:
                bucket = self._buckets.get(key)
                if bucket is None:
                    bucket = TokenBucket(self.qps, self.burst, clock=self._clock,
                                         provider_type=provider_type, provider=provider)
                    self._buckets[key] = bucket
        return bucket

    def check(self, provider_type: str, provider: str, n: int = 1) -> None:
        """Takes n tokens or raises RateLimitError (``retry_after`` = the wait)."""
        bucket = self.get(provider_type, provider)
        if not bucket.try_acquire(n):
            raise self._limited(bucket, provider_type, provider, n)

    def wait(self, provider_type: str, provider: str, n: int = 1,
             max_wait: Seconds | None = None) -> None:
        """Waits for n tokens; raises RateLimitError (taking nothing) if that
        would take longer than ``max_wait`` seconds."""
        bucket = self.get(provider_type, provider)
        if not bucket.acquire(n, max_wait):
            raise self._limited(bucket, provider_type, provider, n)

    async def wait_async(self, provider_type: str, provider: str, n: int = 1,
                         max_wait: Seconds | None = None) -> None:
        """The asyncio form of :meth:`wait`; cancellation gives the tokens back."""
        bucket = self.get(provider_type, provider)
        if not await bucket.acquire_async(n, max_wait):
            raise self._limited(bucket, provider_type, provider, n)

    def remove(self, provider_type: str, provider: str) -> bool:
        """Forgets this provider's bucket; returns whether there was one."""
        with self._lock:
            return self._buckets.pop((provider_type, provider), None) is not None

    def list(self) -> list[tuple[str, str, TokenBucket]]:
        """(provider_type, provider, bucket) for every bucket."""
        return [(t, p, b) for (t, p), b in list(self._buckets.items())]

    def __len__(self) -> int:
        return len(self._buckets)

    @staticmethod
    def _limited(bucket: TokenBucket, provider_type: str, provider: str, n: int) -> RateLimitError:
        return RateLimitError(
            f"rate limit exceeded for {provider_type}:{provider} "
            f"({bucket.qps:g}/s, burst {bucket.burst})",
            retry_after=bucket.retry_after(n),
        )

    def __repr__(self) -> str:
        return f"RateLimiterRegistry(qps={self.qps!r}, burst={self.burst!r}, buckets={len(self)})"


#: The native hot methods of TokenBucket and its subclasses (see _specialised.py).
_HOT_METHODS = HotMethods(TokenBucket)
