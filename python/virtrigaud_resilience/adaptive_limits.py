"""Concurrency limit algorithms: AIMD, Gradient2 and Vegas.

The formulas and defaults of Netflix's concurrency-limits (Java,
``com.netflix.concurrency.limits.limit``), transcribed step for step so that
a limit sequence here is the Java one (tests/test_adaptive_limits.py checks
it against a plain transcription on recorded RTT traces). Each algorithm
takes one sample per sampling window (:class:`~virtrigaud_resilience.
AdaptiveBulkhead` aggregates the calls of a window natively) and returns the
next limit:

    update(rtt_ns, in_flight, dropped) -> int

``rtt_ns`` is the window's mean round-trip time in nanoseconds (> 0; a
sample of 0 or less is ignored: the Java code divides by it), ``in_flight``
the most calls in flight any call of the window started with, ``dropped``
whether any of them was a drop (a timeout, an Unavailable, a RateLimit).

An algorithm object holds its state (the current estimate, smoothed RTTs),
so one object serves one bulkhead: a bulkhead takes a fresh copy with its
own bounds (:meth:`LimitAlgorithm.bounded`).
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from typing import Any

from . import _validate

__all__ = ["AIMD", "Gradient2", "LimitAlgorithm", "Vegas", "log10_root"]

#: The largest limit any algorithm returns (the native core's bound).
MAX_LIMIT = 1 << 30


def log10_root(limit: int) -> int:
    """Netflix's Log10RootIntFunction (baseline 0): ``max(1, int(log10(limit)))``;
    1 for a limit below 1."""
    return max(1, int(math.log10(limit))) if limit >= 1 else 1


class LimitAlgorithm:
    """The base of the algorithms: the bounds, the validation, the copy."""

    __slots__ = ("min_limit", "max_limit", "initial_limit", "_estimate")

    _owner = "LimitAlgorithm"

    def __init__(self, initial_limit: int, min_limit: int, max_limit: int) -> None:
        owner = self._owner
        self.min_limit = _validate.integer(owner, "min_limit", min_limit, 1, MAX_LIMIT)
        self.max_limit = _validate.integer(owner, "max_limit", max_limit, 1, MAX_LIMIT)
        if self.min_limit > self.max_limit:
            raise ValueError(f"{owner} min_limit must be <= max_limit ({self.max_limit}), "
                             f"got {self.min_limit!r}")
        initial = _validate.integer(owner, "initial_limit", initial_limit, 1, MAX_LIMIT)
        self.initial_limit = min(self.max_limit, max(self.min_limit, initial))
        self._estimate: float = float(self.initial_limit)

    @property
    def limit(self) -> int:
        """The current limit (an int in [min_limit, max_limit])."""
        return int(self._estimate)

    def update(self, rtt_ns: int, in_flight: int, dropped: bool) -> int:
        """Takes one window's sample and returns the next limit."""
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        """The constructor's arguments (for :meth:`bounded`)."""
        raise NotImplementedError

    def bounded(self, min_limit: int, max_limit: int) -> LimitAlgorithm:
        """A fresh copy (initial state) of this algorithm bounded to
        [min_limit, max_limit]; its initial limit clamped into them."""
        params = self._params()
        params.update(min_limit=min_limit, max_limit=max_limit)
        params["initial_limit"] = min(max(params["initial_limit"], min_limit), max_limit)
        return type(self)(**params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args}; limit={self.limit})"


class AIMD(LimitAlgorithm):
    """Additive increase, multiplicative decrease (Netflix AIMDLimit).

    On a drop, or a window whose RTT exceeds ``timeout`` seconds: the limit
    times ``backoff_ratio`` (truncated to an int). Otherwise, when the calls
    in flight reach half the limit: the limit plus 1. Bounded to
    [min_limit, max_limit].

    Args:
        initial_limit: int >= 1 (Netflix: 20).
        backoff_ratio: float in [0.5, 1) (Netflix: 0.9).
        timeout: seconds > 0; an RTT above it counts as a drop (Netflix: 5).
        min_limit, max_limit: ints, 1 <= min_limit <= max_limit <= 2**30.
    """

    __slots__ = ("backoff_ratio", "timeout_ns")
    _owner = "AIMD"

    def __init__(self, initial_limit: int = 20, *, backoff_ratio: float = 0.9,
                 timeout: float = 5.0, min_limit: int = 1, max_limit: int = 1000) -> None:
        super().__init__(initial_limit, min_limit, max_limit)
        ratio = _validate.number("AIMD", "backoff_ratio", backoff_ratio)
        if not 0.5 <= ratio < 1.0:
            raise ValueError(f"AIMD backoff_ratio must be in [0.5, 1), got {backoff_ratio!r}")
        self.backoff_ratio = ratio
        self.timeout_ns = round(_validate.positive("AIMD", "timeout", timeout) * 1e9)

    def update(self, rtt_ns: int, in_flight: int, dropped: bool) -> int:
        limit = int(self._estimate)
        if dropped or rtt_ns > self.timeout_ns:
            limit = int(limit * self.backoff_ratio)
        elif in_flight * 2 >= limit:
            limit += 1
        self._estimate = float(min(self.max_limit, max(self.min_limit, limit)))
        return int(self._estimate)

    def _params(self) -> dict[str, Any]:
        return {"initial_limit": self.initial_limit, "backoff_ratio": self.backoff_ratio,
                "timeout": self.timeout_ns / 1e9, "min_limit": self.min_limit,
                "max_limit": self.max_limit}


class _ExpAvg:
    """Netflix ExpAvgMeasurement: the plain mean of the first ``warmup``
    samples, then an exponential average with factor 2 / (window + 1)."""

    __slots__ = ("window", "warmup", "value", "_sum", "_count")

    def __init__(self, window: int, warmup: int) -> None:
        self.window = window
        self.warmup = warmup
        self.value = 0.0
        self._sum = 0.0
        self._count = 0

    def add(self, sample: float) -> float:
        if self._count < self.warmup:
            self._count += 1
            self._sum += sample
            self.value = self._sum / self._count
        else:
            factor = 2.0 / (self.window + 1)
            self.value = self.value * (1 - factor) + sample * factor
        return self.value


class Gradient2(LimitAlgorithm):
    """The gradient of a long-term RTT over the window's RTT (Netflix Gradient2Limit).

    The long RTT is an exponential average over ``long_window`` samples
    (after a warm-up of 10, their plain mean); when it exceeds twice the
    window's RTT it decays by 5% (load went away). While the calls in
    flight stay under half the limit, the limit holds (the caller is not
    using it). Otherwise::

        gradient = clamp(rtt_tolerance * long_rtt / rtt, 0.5, 1.0)
        new = limit * gradient + queue_size
        limit = limit * (1 - smoothing) + new * smoothing

    bounded to [min_limit, max_limit]. Drops carry no extra signal here
    (their latency does), as in Netflix's.

    Args:
        initial_limit: int >= 1 (Netflix: 20).
        smoothing: float in (0, 1] (Netflix: 0.2).
        rtt_tolerance: float >= 1 (Netflix: 1.5).
        long_window: samples, int >= 1 (Netflix: 600).
        queue_size: float >= 0, added each window (Netflix: 4).
        min_limit, max_limit: ints, 1 <= min_limit <= max_limit <= 2**30.
    """

    __slots__ = ("smoothing", "rtt_tolerance", "long_window", "queue_size", "_long_rtt")
    _owner = "Gradient2"

    def __init__(self, initial_limit: int = 20, *, smoothing: float = 0.2,
                 rtt_tolerance: float = 1.5, long_window: int = 600, queue_size: float = 4,
                 min_limit: int = 1, max_limit: int = 1000) -> None:
        super().__init__(initial_limit, min_limit, max_limit)
        self.smoothing = _validate.positive("Gradient2", "smoothing", smoothing, maximum=1.0)
        self.rtt_tolerance = _validate.at_least("Gradient2", "rtt_tolerance", rtt_tolerance, 1.0)
        self.long_window = _validate.integer("Gradient2", "long_window", long_window, 1)
        self.queue_size = _validate.non_negative("Gradient2", "queue_size", queue_size)
        self._long_rtt = _ExpAvg(self.long_window, 10)

    def update(self, rtt_ns: int, in_flight: int, dropped: bool) -> int:
        if rtt_ns <= 0:
            return int(self._estimate)
        short = float(rtt_ns)
        long = self._long_rtt.add(short)
        if long / short > 2:
            self._long_rtt.value = long * 0.95
        if in_flight < self._estimate / 2:
            return int(self._estimate)
        gradient = max(0.5, min(1.0, self.rtt_tolerance * long / short))
        new = self._estimate * gradient + self.queue_size
        new = self._estimate * (1 - self.smoothing) + new * self.smoothing
        self._estimate = max(float(self.min_limit), min(float(self.max_limit), new))
        return int(self._estimate)

    def _params(self) -> dict[str, Any]:
        return {"initial_limit": self.initial_limit, "smoothing": self.smoothing,
                "rtt_tolerance": self.rtt_tolerance, "long_window": self.long_window,
                "queue_size": self.queue_size, "min_limit": self.min_limit,
                "max_limit": self.max_limit}


class Vegas(LimitAlgorithm):
    """TCP Vegas on the estimated queue (Netflix VegasLimit).

    ``rtt_noload`` is the smallest RTT seen (re-probed: every
    ``jitter * probe_multiplier * limit`` samples, jitter uniform in
    [0.5, 1), the next sample becomes it). The queue is
    ``ceil(limit * (1 - rtt_noload / rtt))``; with ``L = log10_root(limit)``:
    a drop lowers the limit by L; while in flight stays under half the
    limit it holds; a queue <= L raises it by 6L (alpha 3L, beta 6L), a
    queue < 3L by L, a queue > 6L lowers it by L; otherwise it holds. Then
    bounded to [min_limit, max_limit] and smoothed:
    ``limit = (1 - smoothing) * limit + smoothing * new``.

    Args:
        initial_limit: int >= 1 (Netflix: 20).
        smoothing: float in (0, 1] (Netflix: 1.0).
        probe_multiplier: int >= 1 (Netflix: 30).
        random: a callable returning floats in [0, 1) for the probe jitter
            (default: a ``random.Random()`` of its own; pass a seeded one to
            replay a run).
        min_limit, max_limit: ints, 1 <= min_limit <= max_limit <= 2**30.
    """

    __slots__ = ("smoothing", "probe_multiplier", "random", "rtt_noload", "_probe_count",
                 "_probe_jitter")
    _owner = "Vegas"

    def __init__(self, initial_limit: int = 20, *, smoothing: float = 1.0,
                 probe_multiplier: int = 30, random: Callable[[], float] | None = None,
                 min_limit: int = 1, max_limit: int = 1000) -> None:
        super().__init__(initial_limit, min_limit, max_limit)
        self.smoothing = _validate.positive("Vegas", "smoothing", smoothing, maximum=1.0)
        self.probe_multiplier = _validate.integer("Vegas", "probe_multiplier",
                                                  probe_multiplier, 1)
        if random is not None and not callable(random):
            raise TypeError(f"Vegas random must be a callable or None, got "
                            f"{type(random).__name__} {random!r}")
        self.random = random if random is not None else _random.Random().random
        self.rtt_noload = 0
        self._probe_count = 0
        self._probe_jitter = self._jitter()

    def _jitter(self) -> float:
        # Java: ThreadLocalRandom.nextDouble(0.5, 1).
        return 0.5 + 0.5 * self.random()

    def update(self, rtt_ns: int, in_flight: int, dropped: bool) -> int:
        if rtt_ns <= 0:
            return int(self._estimate)
        self._probe_count += 1
        if self._probe_jitter * self.probe_multiplier * self._estimate <= self._probe_count:
            self._probe_jitter = self._jitter()
            self._probe_count = 0
            self.rtt_noload = rtt_ns
            return int(self._estimate)
        if self.rtt_noload == 0 or rtt_ns < self.rtt_noload:
            self.rtt_noload = rtt_ns
            return int(self._estimate)
        return self._update_estimate(rtt_ns, in_flight, dropped)

    def _update_estimate(self, rtt_ns: int, in_flight: int, dropped: bool) -> int:
        estimate = self._estimate
        queue = math.ceil(estimate * (1 - self.rtt_noload / rtt_ns))
        log = log10_root(int(estimate))
        if dropped:
            new = estimate - log
        elif in_flight * 2 < estimate:
            return int(estimate)
        elif queue <= log:
            new = estimate + 6 * log
        elif queue < 3 * log:
            new = estimate + log
        elif queue > 6 * log:
            new = estimate - log
        else:
            return int(estimate)
        new = max(float(self.min_limit), min(float(self.max_limit), new))
        self._estimate = (1 - self.smoothing) * estimate + self.smoothing * new
        return int(self._estimate)

    def _params(self) -> dict[str, Any]:
        return {"initial_limit": self.initial_limit, "smoothing": self.smoothing,
                "probe_multiplier": self.probe_multiplier, "random": self.random,
                "min_limit": self.min_limit, "max_limit": self.max_limit}
