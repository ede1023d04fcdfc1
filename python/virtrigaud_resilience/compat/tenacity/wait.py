"""tenacity.wait: how long to sleep before the next attempt.

A wait strategy is called after a failed attempt that will be retried
(before the stop strategy, which may look at its answer through
``retry_state.upcoming_sleep``) and returns seconds. ``+`` adds strategies
(and ``sum()`` of strategies works: a 0 start is the identity).

The delays are computed here, in Python, with tenacity's exact arithmetic
(its ``MAX_WAIT`` default cap, its overflow handling): the native ``Backoff``
caps at one day and jitters differently, so it would not mean the same thing.
They only run on the failure path, where the sleep dominates anyway.
"""

from __future__ import annotations

import abc
import math
import random
import typing
import warnings

from ... import _validate
from . import _utils

if typing.TYPE_CHECKING:
    from . import RetryCallState

__all__ = ["wait_base", "WaitBaseT", "wait_fixed", "wait_none", "wait_random", "wait_combine",
           "wait_chain", "wait_exception", "wait_incrementing", "wait_exponential",
           "wait_random_exponential", "wait_full_jitter", "wait_exponential_jitter"]


def _seconds(owner: wait_base, field: str, value: _utils.time_unit_type) -> float:
    return _validate.float_like(type(owner).__name__, field, value)


class wait_base(abc.ABC):  # noqa: N801 (tenacity's names)
    """A wait strategy: ``strategy(retry_state)`` is the sleep in seconds."""

    @abc.abstractmethod
    def __call__(self, retry_state: RetryCallState) -> float: ...

    def __add__(self, other: WaitBaseT) -> wait_combine:
        return wait_combine(self, other)

    def __radd__(self, other: WaitBaseT | int) -> wait_combine | wait_base:
        if isinstance(other, int):
            # sum() starts from 0: adding it changes nothing. Another number
            # is no strategy: refuse it here rather than when the sum is called.
            return self if other == 0 else NotImplemented
        return wait_combine(self, other)


WaitBaseT = typing.Union[wait_base, typing.Callable[["RetryCallState"], typing.Union[float, int]]]


class wait_fixed(wait_base):  # noqa: N801
    """Always ``wait`` seconds (a number or timedelta)."""

    def __init__(self, wait: _utils.time_unit_type) -> None:
        self.wait_fixed = _seconds(self, "wait", wait)

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.wait_fixed


class wait_none(wait_fixed):  # noqa: N801
    """No sleep between attempts."""

    def __init__(self) -> None:
        super().__init__(0)


class wait_random(wait_base):  # noqa: N801
    """A uniform draw in ``[min, max)`` seconds (``random.random()``)."""

    def __init__(self, min: _utils.time_unit_type = 0,  # noqa: A002 (tenacity's names)
                 max: _utils.time_unit_type = 1) -> None:  # noqa: A002
        self.wait_random_min = _seconds(self, "min", min)
        self.wait_random_max = _seconds(self, "max", max)

    def __call__(self, retry_state: RetryCallState) -> float:
        span = self.wait_random_max - self.wait_random_min
        return self.wait_random_min + random.random() * span


class wait_combine(wait_base):  # noqa: N801
    """The sum of ``strategies``' waits (each called with the state, positionally)."""

    def __init__(self, *strategies: WaitBaseT) -> None:
        self.wait_funcs = strategies

    def __call__(self, retry_state: RetryCallState) -> float:
        return float(sum(strategy(retry_state) for strategy in self.wait_funcs))


class wait_chain(wait_base):  # noqa: N801
    """Strategy ``n`` for attempt ``n`` (1-based); the last one from then on."""

    def __init__(self, *strategies: wait_base) -> None:
        if not strategies:
            raise ValueError("wait_chain() requires at least one strategy")
        self.strategies = strategies

    def __call__(self, retry_state: RetryCallState) -> float:
        index = min(max(retry_state.attempt_number, 1), len(self.strategies)) - 1
        return self.strategies[index](retry_state=retry_state)


class wait_exception(wait_base):  # noqa: N801
    """``predicate(exception)`` seconds, from the exception the attempt raised
    (RuntimeError when the attempt returned instead)."""

    def __init__(self, predicate: typing.Callable[[BaseException], float]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        if outcome is None:
            raise RuntimeError("__call__() called before outcome was set")
        exception = outcome.exception()
        if exception is None:
            raise RuntimeError("outcome failed but the exception is None")
        return self.predicate(exception)


class wait_incrementing(wait_base):  # noqa: N801
    """``start + increment * (attempt - 1)`` seconds, within ``[0, max]``."""

    def __init__(self, start: _utils.time_unit_type = 0,
                 increment: _utils.time_unit_type = 100,
                 max: _utils.time_unit_type = _utils.MAX_WAIT) -> None:  # noqa: A002
        self.start = _seconds(self, "start", start)
        self.increment = _seconds(self, "increment", increment)
        self.max = _seconds(self, "max", max)

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self.start + self.increment * (retry_state.attempt_number - 1)
        return max(0, min(wait, self.max))


class wait_exponential(wait_base):  # noqa: N801
    """``multiplier * exp_base ** (attempt - 1)`` seconds, within ``[max(min, 0), max]``.

    No jitter: right for waiting out an outage, not for spreading contending
    clients (use :class:`wait_random_exponential`). Past the attempt where the
    cap is reached the power is not computed at all, so huge attempt numbers
    cannot overflow.
    """

    def __init__(self, multiplier: float = 1,
                 max: _utils.time_unit_type = _utils.MAX_WAIT,  # noqa: A002
                 exp_base: float = 2,
                 min: _utils.time_unit_type = 0) -> None:  # noqa: A002
        _validate.float_like(type(self).__name__, "multiplier", multiplier)
        _validate.float_like(type(self).__name__, "exp_base", exp_base)
        self.multiplier = multiplier
        self.min = _seconds(self, "min", min)
        self.max = _seconds(self, "max", max)
        self.exp_base = exp_base

    def _capped(self, exponent: int) -> bool:
        """Whether ``multiplier * exp_base**exponent`` is past ``max`` (by logarithms)."""
        if not (self.multiplier > 0 and self.max > 0 and self.exp_base > 1
                and math.isfinite(self.max)):
            return False
        ceiling = math.log(self.max, self.exp_base) - math.log(self.multiplier, self.exp_base)
        return exponent > ceiling

    def __call__(self, retry_state: RetryCallState) -> float:
        floor = max(0, self.min)
        exponent = retry_state.attempt_number - 1
        if self._capped(exponent):
            return max(floor, self.max)
        try:
            wait = self.multiplier * self.exp_base ** exponent
        except OverflowError:
            return self.max
        return max(floor, min(wait, self.max))


class wait_random_exponential(wait_exponential):  # noqa: N801
    """A uniform draw in ``[min, wait_exponential's wait]`` (AWS "full jitter")."""

    def __call__(self, retry_state: RetryCallState) -> float:
        return random.uniform(self.min, super().__call__(retry_state=retry_state))


wait_full_jitter = wait_random_exponential


class wait_exponential_jitter(wait_base):  # noqa: N801
    """``multiplier * exp_base ** (attempt - 1) + uniform(0, jitter)`` seconds,
    within ``[max(min, 0), max]`` (Google Cloud's retry strategy). ``initial``
    is the deprecated name of ``multiplier``."""

    def __init__(self, initial: float = 1,
                 max: _utils.time_unit_type = _utils.MAX_WAIT,  # noqa: A002
                 exp_base: float = 2,
                 jitter: _utils.time_unit_type = 1,
                 min: _utils.time_unit_type = 0,  # noqa: A002
                 multiplier: float = 1) -> None:
        if initial != 1:
            if multiplier != 1:
                raise ValueError(
                    "Cannot specify both 'initial' and 'multiplier' — use 'multiplier' only")
            warnings.warn("The 'initial' parameter is deprecated, use 'multiplier' instead",
                          DeprecationWarning, stacklevel=2)
            multiplier = initial
        _validate.float_like(type(self).__name__, "multiplier", multiplier)
        _validate.float_like(type(self).__name__, "exp_base", exp_base)
        self.multiplier = multiplier
        self.max = _seconds(self, "max", max)
        self.exp_base = exp_base
        self.jitter = _seconds(self, "jitter", jitter)
        self.min = _seconds(self, "min", min)

    def __call__(self, retry_state: RetryCallState) -> float:
        jitter = random.uniform(0, self.jitter)
        try:
            wait = self.multiplier * self.exp_base ** (retry_state.attempt_number - 1) + jitter
        except OverflowError:
            wait = self.max
        return max(max(0, self.min), min(wait, self.max))
