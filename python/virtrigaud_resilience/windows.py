"""Sliding windows for a breaker that judges rates (resilience4j's sliding windows).

A :class:`~virtrigaud_resilience.breaker.BreakerConfig` with ``window=`` set
judges the failure rate and the slow-call rate of the outcomes in its window
instead of counting consecutive failures:

* :class:`CountWindow` ``(n)``: the last ``n`` outcomes (resilience4j's
  ``COUNT_BASED``), ``1 <= n <= 65_535``;
* :class:`TimeWindow` ``(seconds)``: the outcomes of the last ``seconds``
  whole seconds of the breaker's clock, in one-second buckets, the current
  second included (``TIME_BASED``), ``1 <= seconds <= 3_600``.

Both are recorded lock-free in the native core (``sliding_window.hpp``).
"""

from __future__ import annotations

from typing import Any, Final

from . import _core, _validate

__all__ = ["CountWindow", "TimeWindow", "Window", "parse_window"]

#: Largest count window (outcomes) and time window (seconds).
MAX_COUNT: Final[int] = _core.WINDOW_MAX_COUNT
MAX_SECONDS: Final[int] = _core.WINDOW_MAX_SECONDS


class CountWindow:
    """The last ``size`` outcomes; ``size`` an int in ``[1, 65_535]``.

    Raises ValueError (TypeError for a non-int) naming ``size`` and the value.
    """

    __slots__ = ("size",)
    kind: Final = 0  # the native WindowSettings kind

    def __init__(self, size: int) -> None:
        self.size: Final[int] = _validate.integer("CountWindow", "size", size, 1, MAX_COUNT)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.size == self.size

    def __hash__(self) -> int:
        return hash((type(self), self.size))

    def __repr__(self) -> str:
        return f"CountWindow({self.size})"


class TimeWindow:
    """The outcomes of the last ``seconds`` whole seconds, in one-second buckets.

    ``seconds`` an int in ``[1, 3_600]`` (a whole number of seconds as float
    or ``timedelta`` is accepted). Raises ValueError (TypeError for a
    non-number) naming ``seconds`` and the value.
    """

    __slots__ = ("seconds",)
    kind: Final = 1

    def __init__(self, seconds: Any) -> None:
        value = _validate.seconds("TimeWindow", "seconds", seconds, allow_zero=False)
        if value != int(value):
            raise ValueError(f"TimeWindow seconds must be a whole number of seconds, got {seconds!r}")
        self.seconds: Final[int] = _validate.integer("TimeWindow", "seconds", int(value), 1,
                                                     MAX_SECONDS)

    @property
    def size(self) -> int:
        """The number of one-second buckets (== ``seconds``)."""
        return self.seconds

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.seconds == self.seconds

    def __hash__(self) -> int:
        return hash((type(self), self.seconds))

    def __repr__(self) -> str:
        return f"TimeWindow({self.seconds})"


Window = CountWindow | TimeWindow


def parse_window(text: str) -> Window:
    """``count:N`` -> CountWindow(N); ``time:D`` (D a Go duration or seconds:
    ``time:60s``, ``time:2m``, ``time:30``) -> TimeWindow. ValueError otherwise."""
    kind, sep, value = text.strip().partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in ("count", "time"):
        raise ValueError(f"window must be 'count:N' or 'time:DURATION', got {text!r}")
    value = value.strip()
    if kind == "count":
        try:
            size = int(value)
        except ValueError:
            raise ValueError(f"window count must be an integer, got {value!r}") from None
        return CountWindow(size)
    try:
        seconds: Any = float(value)
    except ValueError:
        seconds = value  # a Go duration string
    return TimeWindow(seconds)
