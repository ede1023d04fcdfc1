"""Go duration strings (``time.ParseDuration`` / ``Duration.String``) as float seconds.

The Go code this library follows configures every time span as a Go
duration ("30s", "1m30s", "100ms"), and so do its ConfigMaps. This module
reads and writes that syntax exactly, with one extension: a bare number
without a unit ("30", "1.5", "-2") means seconds, because that is what a
Python user (and the guide's ``CB_RESET_SECONDS`` key) means by it.

Arithmetic is done in integer nanoseconds, like Go, and converted to float
seconds only at the end, so "1.5s" is exactly ``1.5`` and "100ms" is the
float nearest to 0.1 (``0.1``).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import TypeAlias

__all__ = [
    "MAX_DURATION",
    "MIN_DURATION",
    "Seconds",
    "format_duration",
    "parse_duration",
]

#: What every duration argument of this library accepts: float (or int)
#: seconds, a :class:`datetime.timedelta`, or a Go duration string ("1m30s").
Seconds: TypeAlias = float | str | timedelta

_NS_PER_SECOND = 1_000_000_000
_INT64_MAX = (1 << 63) - 1
_OVERFLOW = "overflows Go's int64 nanoseconds"
_MAX_QUOTED = 100

#: The longest duration Go's ``time.Duration`` (int64 nanoseconds) can hold, in
#: seconds (the float nearest to it: about 292 years).
MAX_DURATION: float = _INT64_MAX / _NS_PER_SECOND
#: The most negative duration Go's ``time.Duration`` can hold, in seconds.
MIN_DURATION: float = -(1 << 63) / _NS_PER_SECOND

# Nanoseconds per unit; both micro signs are accepted, as in Go.
_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # U+00B5 MICRO SIGN
    "\u03bcs": 1_000,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": _NS_PER_SECOND,
    "m": 60 * _NS_PER_SECOND,
    "h": 3600 * _NS_PER_SECOND,
}

# One "<number><unit>" element of Go's grammar. The unit is everything up to
# the next digit or '.', exactly as Go scans it, so an unknown unit is
# reported as written. [0-9] (not \d) because Go accepts ASCII digits only.
_ELEMENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")

# The bare-number extension: a plain decimal with digits on both sides of an
# optional point. No exponent, no "nan"/"inf", no trailing "1.".
_BARE = re.compile(r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+")


def parse_duration(text: str) -> float:
    """Parse a Go duration string and return it in float seconds.

    The grammar is Go's ``time.ParseDuration``: an optional sign followed by
    one or more ``<decimal><unit>`` elements, e.g. "300ms", "-1.5h",
    "1h2m3.5s". Units: ``ns``, ``us``/``µs``/``μs``, ``ms``, ``s``, ``m``,
    ``h``. "0" alone is zero. Extension: a bare number with no unit ("30",
    "1.5", "-2") is seconds. Surrounding whitespace is ignored.

    Negative durations are returned negative; range checks are the caller's.

    Raises:
        TypeError: ``text`` is not a ``str``.
        ValueError: anything else Go would reject (empty text, a missing or
            unknown unit, no digits, an exponent, "nan", "inf") or a duration
            outside Go's int64-nanosecond range. The message quotes ``text``.
    """
    if not isinstance(text, str):
        raise TypeError(f"duration must be a str, got {type(text).__name__} {text!r}")
    body = text.strip()
    negative = body[:1] == "-"
    if body[:1] in ("-", "+"):
        body = body[1:]
    if not body:
        raise _invalid(text, "empty")
    if _BARE.fullmatch(body):
        nanos = _bare_seconds_to_nanos(text, body)
    else:
        nanos = _go_elements_to_nanos(text, body)
    return _to_seconds(text, -nanos if negative else nanos)


def _bare_seconds_to_nanos(text: str, body: str) -> int:
    whole, _, frac = body.partition(".")
    return _element_nanos(text, whole, frac, _NS_PER_SECOND)


def _go_elements_to_nanos(text: str, body: str) -> int:
    """Sum the ``<decimal><unit>`` elements of ``body`` in nanoseconds (Go's loop)."""
    total = 0
    pos = 0
    while pos < len(body):
        match = _ELEMENT.match(body, pos)
        # The pattern can match the empty string; that only happens on input
        # it cannot consume, which is handled as "no digits" below.
        assert match is not None
        whole, frac, unit = match.group(1), match.group(2), match.group(3)
        if not whole and not frac:
            raise _invalid(text, f"expected a number at {_quote(body[pos:])}")
        if not unit:
            raise _invalid(text, "missing unit")
        if unit not in _UNITS:
            raise _invalid(text, f"unknown unit {_quote(unit)}{_exponent_hint(unit)}")
        total += _element_nanos(text, whole, frac or "", _UNITS[unit])
        pos = match.end()
    return total


def _exponent_hint(unit: str) -> str:
    # "1e3s" reads as number 1, unit "e"; say why instead of leaving it a puzzle.
    return " (exponents are not allowed)" if unit.lower().rstrip("+-") == "e" else ""


def _element_nanos(text: str, whole: str, frac: str, unit: int) -> int:
    """Nanoseconds of one ``<whole>.<frac><unit>`` element, computed as Go does.

    The integer part is exact. The fraction goes through float64 exactly as
    in Go's ``ParseDuration`` (``uint64(float64(f) * (float64(unit) / scale))``),
    so every string parses to the same nanosecond count as in Go, including
    the cases where the rounding lands on a whole unit ("0.3333333333333333333h"
    is 20m, "0.999999999999999999s" is 1s).
    """
    whole = whole.lstrip("0")
    # 2**63 has 19 digits; checking the length first keeps a 10,000-digit
    # number clear of Python's int-parsing digit limit.
    if len(whole) > 19 or int(whole or "0") > _INT64_MAX + 1:
        raise _invalid(text, _OVERFLOW)
    value = int(whole or "0")
    if value > (_INT64_MAX + 1) // unit:
        raise _invalid(text, _OVERFLOW)
    nanos = value * unit
    fraction, scale = _leading_fraction(frac)
    if fraction:
        nanos += int(float(fraction) * (float(unit) / scale))
    if nanos > _INT64_MAX + 1:
        # Checked per element (as Go does) so the message is about overflow.
        raise _invalid(text, _OVERFLOW)
    return nanos


def _leading_fraction(digits: str) -> tuple[int, float]:
    """Go's ``leadingFraction``: the digits as an int and 10**n as a float.

    Digits that would overflow a uint64 are skipped (they cannot change the
    result by a nanosecond), so the length of ``digits`` does not matter.
    """
    value = 0
    scale = 1.0
    for char in digits:
        if value > _INT64_MAX // 10:
            break
        candidate = value * 10 + ord(char) - 48
        if candidate > _INT64_MAX + 1:
            break
        value = candidate
        scale *= 10
    return value, scale


def _to_seconds(text: str, nanos: int) -> float:
    # Go allows exactly -2**63 ns but not +2**63 ns.
    if nanos > _INT64_MAX or nanos < -(1 << 63):
        raise _invalid(text, _OVERFLOW)
    # int / int is correctly rounded in Python, so "100ms" gives exactly 0.1.
    return nanos / _NS_PER_SECOND


def _invalid(text: str, reason: str) -> ValueError:
    return ValueError(f"invalid duration {_quote(text)}: {reason}")


def _quote(text: str) -> str:
    # Clip what we quote: the text may be arbitrary (and arbitrarily long) input.
    return repr(text) if len(text) <= _MAX_QUOTED else repr(text[:_MAX_QUOTED]) + "..."


def format_duration(seconds: float) -> str:
    """Format float seconds the way Go's ``Duration.String()`` does.

    The value is rounded to the nearest nanosecond first (ties to even).
    Examples: ``90.0`` -> "1m30s", ``0.1`` -> "100ms", ``1.5e-6`` -> "1.5µs"
    (U+00B5), ``0`` -> "0s", ``3600`` -> "1h0m0s", ``-2.5`` -> "-2.5s".
    :func:`parse_duration` reads the result back to within 1 ns.

    Raises:
        TypeError: ``seconds`` is not an ``int`` or ``float`` (``bool`` included).
        ValueError: ``seconds`` is NaN, infinite, or outside the range of Go's
            ``time.Duration`` (about +-292 years).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(
            f"seconds must be a number, got {type(seconds).__name__} {seconds!r}"
        )
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise ValueError(f"cannot format {seconds!r} as a duration")
    if not MIN_DURATION <= seconds <= MAX_DURATION:
        raise ValueError(f"{seconds!r} seconds is outside Go's time.Duration range")
    # Imported here: fractions pulls in decimal, about 4 ms of the package's
    # 60 ms import on 3.10, for formatting alone.
    from fractions import Fraction

    # Fraction is exact, so the rounding to nanoseconds is the only error.
    # MAX_DURATION / MIN_DURATION are the floats nearest the int64 limits and
    # round just past them; clamp so that the limits themselves format.
    nanos = round(Fraction(seconds) * _NS_PER_SECOND)
    return _format_nanos(min(max(nanos, -(1 << 63)), _INT64_MAX))


def _format_nanos(nanos: int) -> str:
    sign = "-" if nanos < 0 else ""
    magnitude = abs(nanos)
    if magnitude == 0:
        return "0s"
    if magnitude < _NS_PER_SECOND:
        return sign + _format_sub_second(magnitude)
    whole_seconds, frac_nanos = divmod(magnitude, _NS_PER_SECOND)
    hours, rest = divmod(whole_seconds, 3600)
    minutes, secs = divmod(rest, 60)
    tail = f"{secs}{_fraction(frac_nanos, 9)}s"
    if hours:
        return f"{sign}{hours}h{minutes}m{tail}"
    if minutes:
        return f"{sign}{minutes}m{tail}"
    return sign + tail


def _format_sub_second(nanos: int) -> str:
    # Go picks the largest unit that keeps the integer part non-zero.
    if nanos < 1_000:
        return f"{nanos}ns"
    if nanos < 1_000_000:
        return f"{nanos // 1_000}{_fraction(nanos % 1_000, 3)}\u00b5s"
    return f"{nanos // 1_000_000}{_fraction(nanos % 1_000_000, 6)}ms"


def _fraction(value: int, digits: int) -> str:
    """".123" for value=123, digits=3 with trailing zeros dropped; "" when value is 0."""
    if value == 0:
        return ""
    return "." + f"{value:0{digits}d}".rstrip("0")
