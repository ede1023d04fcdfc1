"""An adaptive rate: a TokenBucket's rate that learns the provider's quota.

A configured rate is a guess. :class:`AdaptiveRate` controls a bucket's rate
the way the AWS SDK's adaptive retry mode does (botocore's
``retries/adaptive.py``, ``bucket.py``): CUBIC on throttles.

- **Throttle** (the provider answered with a rate limit): the rate the
  client was really sending is remembered as ``w_max``, and the bucket's
  rate becomes ``beta * w_max``; ``K = cbrt(w_max * (1 - beta) / scale)``.
  The first throttle switches the controller on; before it the bucket runs
  at its configured rate (botocore's bucket is off until then).
- **Success**: the rate grows along ``scale * (t - K)**3 + w_max``, ``t``
  the seconds since the last throttle: fast back to ``w_max``, flat near it,
  then probing beyond.
- Always: at most twice the measured send rate (a client that sends little
  learns nothing about the quota), never above the bucket's configured rate
  (the ``ceiling``), never below ``floor``.

The measured send rate is botocore's (calls counted in half-second time
buckets, smoothed ``0.8 * latest + 0.2 * previous``), read from the bucket's
own native counters (tokens granted: ``admitted + reserved - cancelled``),
so a call costs the controller nothing. Where botocore recomputes the rate on
every response, this does on a throttle and on :meth:`refresh`, at most every
``update_interval`` seconds (100 ms): CUBIC's curve is a function of the
time since the last throttle, so the growth a success would have made is
computed when it is next needed. A policy refreshes when its limiter refuses
or makes a caller wait (the only times its rate binds; both leave the native
success path, which never calls the controller); :meth:`on_success` is the
same refresh, for callers that drive the controller themselves.

What is a throttle: a :class:`~virtrigaud_resilience.RateLimitError` that is
the provider's own answer (an HTTP 429, a gRPC ``RESOURCE_EXHAUSTED``, the
fake provider's quota: :func:`~virtrigaud_resilience.providers.never_sent`
is False for it). Our own limiter's and bulkhead's refusals never are: they
never reached the provider. A throttle that says when to come back (its
``retry_after``, read from ``Retry-After``), and quota headers that say the
quota is spent (``RateLimit-Remaining: 0`` with ``RateLimit-Reset``,
``X-RateLimit-Remaining: 0`` with ``X-RateLimit-Reset``: :meth:`observe_headers`)
make the bucket spend nothing until then: its next token comes at the reset,
and the first success after it restores the learned rate.

Every rate change goes through the bucket's race-free ``set_rate``: each
acquisition is decided wholly under the old rate or wholly under the new one.
A leased bucket (:class:`~virtrigaud_resilience.distributed.LeasedTokenBucket`),
whose rate its fleet lease sets, is told the learned rate as its member's
demand instead (``report_demand``): the fleet's shares then add up to the
provider's quota. Its ceiling is the fleet's rate, and a pause empties it
until the reset, then gives it back its share.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from . import _core, _validate
from ._sent import is_provider_rate_limit
from ._tracking import Census, Counters, Labels

__all__ = ["RATES", "AdaptiveRate", "RateControlled"]

T = TypeVar("T")

#: botocore's RateClocker: time buckets of half a second, smoothing 0.8.
_TIME_BUCKET_SECONDS = 0.5
_SMOOTHING = 0.8
_TIME_BUCKET_NS = round(_TIME_BUCKET_SECONDS * 1e9)
#: A reset beyond this many seconds is taken as a Unix time (X-RateLimit-Reset's habit).
_EPOCH_THRESHOLD = 1e9
#: The longest pause a header may ask for (a day): a typo must not stop a controller for years.
_MAX_PAUSE_SECONDS = 86_400.0


class RateControlled(Protocol):
    """What AdaptiveRate needs of a bucket (a TokenBucket has it all)."""

    @property
    def qps(self) -> float: ...
    @property
    def burst(self) -> int: ...
    @property
    def tokens(self) -> float: ...
    @property
    def admitted(self) -> int: ...
    @property
    def reserved(self) -> int: ...
    @property
    def cancelled(self) -> int: ...
    def set_rate(self, qps: float, burst: int | None = None) -> None: ...
    def _set_rate(self, interval_ns: int, burst: int, max_tokens: int = ...) -> None: ...
    def _now_ns(self) -> int: ...


def _final_counters(rate: AdaptiveRate) -> tuple[Labels, Counters]:
    """A dropped controller's labels and (throttles, pauses, malformed_headers)."""
    return rate.labels, (rate.throttles, rate.pauses, rate.malformed_headers)


#: Every live AdaptiveRate, for the metrics collector (see _tracking.py).
RATES: Census[AdaptiveRate] = Census(_final_counters)


class AdaptiveRate:
    """A CUBIC controller on ``bucket``'s rate (see the module).

    Args:
        bucket: the TokenBucket whose rate it controls; its rate and burst
            when this is built are the ceiling (the configured rate).
        floor: the lowest rate, calls/s; finite, > 0 and <= the ceiling (0.5,
            botocore's minimum fill rate).
        beta: the multiplicative decrease, in (0, 1) (0.7).
        scale: CUBIC's scale constant C, > 0 (0.4).
        update_interval: seconds between rate updates on success, >= 0 (0.1).

    Raises TypeError / ValueError naming the field for anything else (NaN
    and infinities included).
    """

    __slots__ = ("bucket", "ceiling", "ceiling_burst", "floor", "beta", "scale",
                 "update_interval_ns", "leased", "enabled", "w_max", "k", "last_throttle_ns",
                 "throttles", "pauses", "malformed_headers", "_learned", "_sent_mark",
                 "_time_bucket", "_measured", "_next_update_ns", "_paused_until_ns", "_settled_ns", "_lock",
                 "__weakref__")

    @classmethod
    def for_bucket(cls, bucket: RateControlled) -> AdaptiveRate:
        """The one controller (defaults) of ``bucket``, made on first use:
        every policy sharing a bucket (a ResilientProvider's operations,
        the components built from one ConfigMap) must report to the same
        controller, or two would fight over its rate. Its floor is 0.5/s,
        or the bucket's rate where that is lower."""
        with _SHARED_LOCK:
            found = _SHARED.get(bucket)
            if found is None:  # a bucket slower than the default floor is its own floor
                ceiling = getattr(bucket, "fleet_qps", None) or bucket.qps
                found = _SHARED[bucket] = cls(bucket, floor=min(0.5, float(ceiling)))
            return found

    def __init__(self, bucket: RateControlled, *, floor: float = 0.5, beta: float = 0.7,
                 scale: float = 0.4, update_interval: float = 0.1) -> None:
        owner = "AdaptiveRate"
        if not all(hasattr(bucket, name) for name in ("qps", "burst", "tokens", "set_rate",
                                                       "_now_ns")):
            raise TypeError(f"{owner} bucket must be a TokenBucket, got "
                            f"{type(bucket).__name__} {bucket!r}")
        self.bucket = bucket
        #: A leased bucket: its lease sets the rate; the learned one is its demand.
        self.leased = callable(getattr(bucket, "report_demand", None))
        self.ceiling = float(getattr(bucket, "fleet_qps") if self.leased else bucket.qps)
        self.ceiling_burst = int(getattr(bucket, "fleet_burst") if self.leased else bucket.burst)
        self.floor = _validate.positive(owner, "floor", floor)
        if self.floor > self.ceiling:
            raise ValueError(f"{owner} floor must be <= the bucket's rate ({self.ceiling:g}), "
                             f"got {floor!r}")
        self.beta = _validate.number(owner, "beta", beta)
        if not 0.0 < self.beta < 1.0:
            raise ValueError(f"{owner} beta must be in (0, 1), got {beta!r}")
        self.scale = _validate.positive(owner, "scale", scale)
        self.update_interval_ns = round(
            _validate.non_negative(owner, "update_interval", update_interval, maximum=60.0) * 1e9)
        now = bucket._now_ns()
        self.enabled = False
        self.w_max = self.ceiling
        self.k = 0.0
        self.last_throttle_ns = now
        #: Throttles seen; pauses taken (Retry-After or spent-quota headers);
        #: quota headers that could not be read (ignored).
        self.throttles = 0
        self.pauses = 0
        self.malformed_headers = 0
        self._learned = self.ceiling  # the rate CUBIC set last (a pause aside)
        self._sent_mark = _tokens_granted(bucket)
        self._time_bucket = math.floor(now / 1e9 / _TIME_BUCKET_SECONDS) * _TIME_BUCKET_SECONDS
        self._measured = 0.0
        self._next_update_ns = now
        self._paused_until_ns = 0
        self._settled_ns = now
        self._lock = threading.Lock()
        RATES.track(self)

    def __del__(self, _retire: Callable[[AdaptiveRate], None] = RATES.retire) -> None:
        # Bound at definition: module globals may be gone at interpreter exit.
        _retire(self)

    @property
    def labels(self) -> Labels:
        """The bucket's (provider_type, provider), for the metrics ("" if it has none)."""
        return (getattr(self.bucket, "provider_type", ""), getattr(self.bucket, "provider", ""))

    # -- signals ---------------------------------------------------------------------

    def refresh(self) -> None:
        """Brings the rate up to date: the CUBIC growth since the last
        throttle, capped at twice the measured send rate. At most once per
        ``update_interval`` (otherwise a clock read and a compare), nothing
        before the first throttle nor during a pause."""
        now = self.bucket._now_ns()
        if now >= self._next_update_ns and self.enabled:
            with self._lock:
                self._update(now, throttled=False)

    def on_success(self) -> None:
        """A call the provider answered without throttling: :meth:`refresh`
        (the call itself was counted by the bucket when it took its token)."""
        self.refresh()

    def on_throttle(self, retry_after: float | None = None, sent_ns: int | None = None) -> None:
        """The provider throttled a call; ``retry_after`` (seconds, or None)
        is when it said to come back: the bucket spends nothing until then.

        ``sent_ns`` (the bucket's clock, ``bucket._now_ns()``, when the call
        was sent; None: unknown) lets a burst of throttles count once: a call
        sent before the latest decrease took effect (the decrease, and the
        tokens reserved before it, which still go out at the old spacing)
        was sent at the rate that decrease already corrected, so its throttle
        lowers nothing again (TCP's one reduction per round trip). A decrease
        takes effect one time bucket of the measured rate (0.5 s) after it at
        the earliest: the measured rate the next decrease is judged on cannot
        show it sooner. A policy passes the throttle's arrival as its send
        time (its native path keeps none): the arrivals within that time
        bucket are the calls the decrease already corrected. botocore, which
        knows no send times, decreases on every throttle; so does this
        without ``sent_ns``."""
        if retry_after is not None:
            retry_after = _validate.non_negative("AdaptiveRate", "retry_after", retry_after)
        now = self.bucket._now_ns()
        with self._lock:
            self.throttles += 1
            if sent_ns is None or not self.enabled or sent_ns >= self._settled_ns:
                self._update(now, throttled=True)
                # Tokens reserved before the decrease still go out at the old
                # spacing: the new rate governs the calls sent after them.
                reserved_ns = round(max(0.0, -self.bucket.tokens) / self._learned * 1e9)
                self._settled_ns = now + max(_TIME_BUCKET_NS, reserved_ns)
            if retry_after is not None and retry_after > 0:
                self._pause(now, retry_after)

    def observe(self, exc: BaseException | None, sent_ns: int | None = None) -> None:
        """A call's outcome: None a success, the provider's rate limit a
        throttle (with its ``retry_after``, and ``sent_ns``: see
        :meth:`on_throttle`); anything else says nothing."""
        if exc is None:
            self.on_success()
        elif is_provider_rate_limit(exc):
            self.on_throttle(getattr(exc, "retry_after", None), sent_ns)

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Quota headers of a response (names case-insensitive):
        ``RateLimit-Remaining: 0`` with ``RateLimit-Reset`` (seconds) or
        ``X-RateLimit-Remaining: 0`` with ``X-RateLimit-Reset`` (seconds, or
        a Unix time) pause the bucket until the reset. A malformed value is
        ignored and counted in ``malformed_headers``; never raises for a
        mapping of strings."""
        lowered = {str(k).lower(): v for k, v in headers.items()}
        for prefix in ("ratelimit-", "x-ratelimit-"):
            remaining = lowered.get(prefix + "remaining")
            if remaining is None:
                continue
            spent = _parse_number(remaining)
            reset = _parse_number(lowered.get(prefix + "reset"))
            if spent is None or spent < 0 or reset is None or reset < 0:
                self.malformed_headers += 1
                continue
            if spent == 0:
                if reset > _EPOCH_THRESHOLD:
                    reset = reset - time.time()
                if reset > 0:
                    now = self.bucket._now_ns()
                    with self._lock:
                        self._pause(now, min(reset, _MAX_PAUSE_SECONDS))
            return

    # -- wrapping a call -------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, its outcome observed."""
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self.observe(exc)
            raise
        self.on_success()
        return result

    async def call_async(self, fn: Callable[..., Awaitable[T]], *args: Any,
                         **kwargs: Any) -> T:
        """``await fn(*args, **kwargs)``, its outcome observed."""
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self.observe(exc)
            raise
        self.on_success()
        return result

    # -- the controller (under the lock) -----------------------------------------------

    @property
    def rate(self) -> float:
        """The bucket's rate now (calls/s); a leased bucket's: the learned
        rate it asks its fleet for (its share may be less)."""
        return self._learned if self.leased else float(self.bucket.qps)

    @property
    def measured_rate(self) -> float:
        """The smoothed rate of calls observed (calls/s)."""
        return self._measured

    def _measure(self, now_ns: int) -> float:
        """botocore's RateClocker.record(): the smoothed calls/s, from the
        tokens the bucket granted since the last time bucket closed. A gap
        of n time buckets since then smooths n times at their mean rate
        (botocore, recording every response, never has n > 1)."""
        bucket = math.floor(now_ns / 1e9 / _TIME_BUCKET_SECONDS) * _TIME_BUCKET_SECONDS
        if bucket > self._time_bucket:
            sent = _tokens_granted(self.bucket)
            span = bucket - self._time_bucket
            current = (sent - self._sent_mark) / span
            kept = (1 - _SMOOTHING) ** max(1.0, span / _TIME_BUCKET_SECONDS)
            self._measured = current + (self._measured - current) * kept
            self._sent_mark = sent
            self._time_bucket = bucket
        return self._measured

    def _update(self, now_ns: int, *, throttled: bool) -> None:
        measured = self._measure(now_ns)
        self._next_update_ns = now_ns + self.update_interval_ns
        if throttled:
            rate_to_use = measured if not self.enabled else min(measured, self._learned)
            self.w_max = rate_to_use
            self.k = (self.w_max * (1 - self.beta) / self.scale) ** (1 / 3)
            self.last_throttle_ns = now_ns
            new = rate_to_use * self.beta
            self.enabled = True
        elif not self.enabled:
            return
        else:
            if now_ns < self._paused_until_ns:
                return  # spending nothing until the reset
            dt = (now_ns - self.last_throttle_ns) / 1e9
            new = self.scale * (dt - self.k) ** 3 + self.w_max
        new = min(new, 2 * measured, self.ceiling)
        self._apply(max(new, self.floor), now_ns)

    def _apply(self, rate: float, now_ns: int) -> None:
        self._learned = rate
        if now_ns < self._paused_until_ns:
            return  # the pause holds (a throttle within it): the rate applies once it ends
        if self.leased:
            self._report(rate)
            return
        # botocore's bucket holds one second of its rate; never more than configured.
        burst = max(1, min(self.ceiling_burst, int(rate)))
        if rate != self.bucket.qps or burst != self.bucket.burst or self._paused_until_ns:
            self._paused_until_ns = 0
            self.bucket.set_rate(rate, burst)

    def _pause(self, now_ns: int, seconds: float) -> None:
        """The bucket spends nothing for ``seconds``: emptied, its next
        token at the end, then one per ``seconds`` (never faster than the
        rate it had) until the first success restores the rate. A pause no
        longer than the bucket's own spacing of tokens changes nothing."""
        until = now_ns + round(seconds * 1e9)
        if until <= self._paused_until_ns or seconds * self.bucket.qps <= 1.0:
            return
        self.pauses += 1
        self._paused_until_ns = until
        self._next_update_ns = until
        interval = min(max(1, round(seconds * 1e9)), _core.TOKEN_BUCKET_MAX_INTERVAL_NS)
        if self.leased:
            self.bucket._pause_share(interval)  # type: ignore[attr-defined]
        else:
            self.bucket._set_rate(interval, 1, 0)

    def _report(self, rate: float) -> None:
        """A leased bucket's learned rate: its member's demand (a pause over,
        back to its share)."""
        if self._paused_until_ns:
            self._paused_until_ns = 0
            self.bucket._resume_share()  # type: ignore[attr-defined]
        self.bucket.report_demand(rate)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return (f"AdaptiveRate(rate={self.rate:g}, ceiling={self.ceiling:g}, "
                f"floor={self.floor:g}, throttles={self.throttles})")


#: The controllers of for_bucket(), by bucket (dropped with it).
_SHARED: weakref.WeakKeyDictionary[Any, AdaptiveRate] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def _tokens_granted(bucket: RateControlled) -> int:
    """The calls the bucket has let through: its native counters, read
    without touching its state (tokens taken, plus reserved, less refunded)."""
    return bucket.admitted + bucket.reserved - bucket.cancelled


def _parse_number(value: object) -> float | None:
    """A header's number (finite, as float), or None."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None
