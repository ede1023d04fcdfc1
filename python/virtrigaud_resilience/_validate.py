"""Argument validation shared by every constructor and config parser.

Each helper raises ``TypeError`` for a value of the wrong type and
``ValueError`` for a value out of range, and the message always names the
owner, the field and the offending value, e.g.
``ValueError: TokenBucket qps must be > 0, got -1``.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")


def _describe(value: Any) -> str:
    return repr(value)


def number(owner: str, field: str, value: Any) -> float:
    """Return ``value`` as a finite float; bool, str and other types are a TypeError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{owner} {field} must be a number, got {type(value).__name__} {_describe(value)}"
        )
    try:
        result = float(value)
    except OverflowError:
        raise ValueError(f"{owner} {field} must be finite, got {_describe(value)}") from None
    if not math.isfinite(result):
        raise ValueError(f"{owner} {field} must be finite, got {_describe(value)}")
    return result


def positive(owner: str, field: str, value: Any, *, maximum: float | None = None) -> float:
    """A finite float > 0 (and <= maximum when given)."""
    result = number(owner, field, value)
    if result <= 0:
        raise ValueError(f"{owner} {field} must be > 0, got {_describe(value)}")
    return _at_most(owner, field, value, result, maximum)


def non_negative(owner: str, field: str, value: Any, *, maximum: float | None = None) -> float:
    """A finite float >= 0 (and <= maximum when given)."""
    result = number(owner, field, value)
    if result < 0:
        raise ValueError(f"{owner} {field} must be >= 0, got {_describe(value)}")
    return _at_most(owner, field, value, result, maximum)


def at_least(owner: str, field: str, value: Any, minimum: float) -> float:
    """A finite float >= minimum."""
    result = number(owner, field, value)
    if result < minimum:
        raise ValueError(f"{owner} {field} must be >= {minimum:g}, got {_describe(value)}")
    return result


def integer(owner: str, field: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """An int (not bool) in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{owner} {field} must be an int, got {type(value).__name__} {_describe(value)}"
        )
    if value < minimum:
        raise ValueError(f"{owner} {field} must be >= {minimum}, got {_describe(value)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{owner} {field} must be <= {maximum}, got {_describe(value)}")
    return int(value)


def optional_instance(owner: str, field: str, value: T | None, cls: type[T]) -> T | None:
    """``value`` itself if it is None or an instance of ``cls``; else TypeError."""
    if value is not None and not isinstance(value, cls):
        raise TypeError(
            f"{owner} {field} must be a {cls.__name__} or None, "
            f"got {type(value).__name__} {_describe(value)}"
        )
    return value


def string(owner: str, field: str, value: Any) -> str:
    """A str (labels and names: anything else is a TypeError)."""
    if not isinstance(value, str):
        raise TypeError(
            f"{owner} {field} must be a str, got {type(value).__name__} {_describe(value)}"
        )
    return value


def boolean(owner: str, field: str, value: Any) -> bool:
    """A real bool; 0/1 and strings are a TypeError (a typo should not flip a switch)."""
    if not isinstance(value, bool):
        raise TypeError(
            f"{owner} {field} must be a bool, got {type(value).__name__} {_describe(value)}"
        )
    return value


def seconds(
    owner: str,
    field: str,
    value: Any,
    *,
    allow_zero: bool = True,
    maximum: float | None = None,
) -> float:
    """A duration in float seconds from a number, a ``timedelta`` or a Go duration string.

    Go duration strings ("1m30s", "100ms") are parsed by
    :func:`virtrigaud_resilience.durations.parse_duration`.
    """
    if isinstance(value, timedelta):
        result = number(owner, field, value.total_seconds())
    elif isinstance(value, str):
        from .durations import parse_duration

        try:
            result = parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"{owner} {field}: {exc}") from None
    else:
        result = number(owner, field, value)
    if result < 0 or (result == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{owner} {field} must be {bound} seconds, got {_describe(value)}")
    return _at_most(owner, field, value, result, maximum)


def _at_most(owner: str, field: str, value: Any, result: float, maximum: float | None) -> float:
    if maximum is not None and result > maximum:
        raise ValueError(f"{owner} {field} must be <= {maximum:g}, got {_describe(value)}")
    return result


def float_like(owner: str, field: str, value: Any) -> float:
    """``float(value)`` (numbers, Fractions, Decimals, numeric strings: what
    the drop-ins' peers accept), refusing NaN, which no comparison can use;
    a ``timedelta`` gives its seconds. The errors name the field."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    try:
        result = float(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(
            f"{owner} {field} must be a number of seconds, "
            f"got {type(value).__name__} {_describe(value)}"
        ) from None
    if math.isnan(result):
        raise ValueError(f"{owner} {field} must not be NaN, got {_describe(value)}")
    return result
