"""tenacity.stop: when to stop retrying.

A stop strategy is called after a failed attempt that the retry strategy
wants to retry (after the ``after`` hook and the wait strategy) and answers
whether to give up now. ``&`` and ``|`` combine strategies.
"""

from __future__ import annotations

import abc
import threading
import typing

from ... import _validate
from . import _utils

if typing.TYPE_CHECKING:
    from . import RetryCallState

__all__ = ["stop_base", "StopBaseT", "stop_any", "stop_all", "stop_never", "stop_when_event_set",
           "stop_after_attempt", "stop_after_delay", "stop_before_delay"]


class stop_base(abc.ABC):  # noqa: N801 (tenacity's names)
    """A stop strategy: ``strategy(retry_state)`` is True to give up."""

    @abc.abstractmethod
    def __call__(self, retry_state: RetryCallState) -> bool: ...

    def __and__(self, other: stop_base) -> stop_all:
        return stop_all(self, other)

    def __or__(self, other: stop_base) -> stop_any:
        return stop_any(self, other)


StopBaseT = typing.Union[stop_base, typing.Callable[["RetryCallState"], bool]]


class stop_any(stop_base):  # noqa: N801
    """Stops when any of ``stops`` says so (evaluated in order, short-circuit)."""

    def __init__(self, *stops: StopBaseT) -> None:
        self.stops = stops

    def __call__(self, retry_state: RetryCallState) -> bool:
        return any(stop(retry_state) for stop in self.stops)


class stop_all(stop_base):  # noqa: N801
    """Stops when all of ``stops`` say so (evaluated in order, short-circuit)."""

    def __init__(self, *stops: StopBaseT) -> None:
        self.stops = stops

    def __call__(self, retry_state: RetryCallState) -> bool:
        return all(stop(retry_state) for stop in self.stops)


class _stop_never(stop_base):  # noqa: N801
    """Never stops."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        return False


stop_never = _stop_never()


class stop_when_event_set(stop_base):  # noqa: N801
    """Stops once ``event`` is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.event.is_set()


class stop_after_attempt(stop_base):  # noqa: N801
    """Stops when the attempt just made is number ``max_attempt_number`` or later."""

    def __init__(self, max_attempt_number: int) -> None:
        if isinstance(max_attempt_number, (str, bytes)):  # compared with an int: never works
            raise TypeError(f"stop_after_attempt max_attempt_number must be a number, "
                            f"got {type(max_attempt_number).__name__} {max_attempt_number!r}")
        _validate.float_like("stop_after_attempt", "max_attempt_number", max_attempt_number)
        self.max_attempt_number = max_attempt_number

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.attempt_number >= self.max_attempt_number


class _delay_stop(stop_base):
    """Reads ``seconds_since_start``, which exists once an attempt has an outcome."""

    def __init__(self, max_delay: _utils.time_unit_type) -> None:
        self.max_delay = _validate.float_like(type(self).__name__, "max_delay", max_delay)

    @staticmethod
    def _since_start(retry_state: RetryCallState) -> float:
        elapsed = retry_state.seconds_since_start
        if elapsed is None:
            raise RuntimeError("__call__() called but seconds_since_start is not set")
        return elapsed


class stop_after_delay(_delay_stop):  # noqa: N801
    """Stops once ``max_delay`` seconds (a number or timedelta) have passed since
    the first attempt began, measured when the last attempt ended: the total
    may exceed ``max_delay`` by the last sleep and attempt."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._since_start(retry_state) >= self.max_delay


class stop_before_delay(_delay_stop):  # noqa: N801
    """Stops when the coming sleep would end ``max_delay`` seconds or more after
    the first attempt began (so the limit is never slept past)."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._since_start(retry_state) + retry_state.upcoming_sleep >= self.max_delay
