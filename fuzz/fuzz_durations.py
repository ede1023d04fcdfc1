"""Fuzz target: the Go duration parser and formatter (virtrigaud_resilience.durations).

Run with atheris (libFuzzer flags pass through), e.g.::

    python fuzz/fuzz_durations.py -max_total_time=20 /tmp/work fuzz/corpus/fuzz_durations

or replay files: ``python fuzz/fuzz_durations.py crash-123 fuzz/corpus/fuzz_durations/*``.
``scripts/fuzz.sh`` runs every target for a bounded time.

The input is used twice:

* all of it, decoded as UTF-8 (undecodable bytes become lone surrogates,
  which a Python str may hold), is handed to ``parse_duration``;
* its first 8 bytes, read as a float64, are handed to ``format_duration``.

What must hold (the docstrings' contracts), else the target raises and
libFuzzer reports a crash:

* ``parse_duration`` returns a finite float in [MIN_DURATION, MAX_DURATION]
  or raises ValueError "invalid duration <quoted text>: <why>", with the text
  quoted clipped to 100 characters; never another exception;
* the value round-trips: ``parse_duration(format_duration(v)) == v`` exactly
  (v is a whole number of nanoseconds, so formatting loses nothing), and the
  formatted text is canonical (formatting it again gives the same text);
* the sign is symmetric: "-" before an unsigned text negates the value;
* ``format_duration`` formats every finite float in the Go range (and
  rejects the rest with ValueError), and reading it back lands within a
  nanosecond (plus the float's own spacing) of the input.
"""

from __future__ import annotations

import math
import struct
import sys

import atheris
from _instrument import instrument_packages
from virtrigaud_resilience.durations import (
    MAX_DURATION,
    MIN_DURATION,
    format_duration,
    parse_duration,
)

# The docstring promises the text is quoted, clipped to 100 characters.
_MAX_QUOTED = 100


def check_parse(text: str) -> None:
    """Every property of ``parse_duration`` listed in the module docstring."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        _check_message(text, str(exc))
        return
    assert type(seconds) is float, (text, seconds)
    assert math.isfinite(seconds), (text, seconds)
    assert MIN_DURATION <= seconds <= MAX_DURATION, (text, seconds)

    canonical = format_duration(seconds)
    back = parse_duration(canonical)
    assert back == seconds, (text, seconds, canonical, back)
    assert format_duration(back) == canonical, (text, canonical)

    body = text.strip()
    if body[:1] not in ("+", "-"):
        # Unsigned: the negative reads as the same magnitude. (-2**63 ns is
        # in range but +2**63 ns is not, so only this direction always holds.)
        assert parse_duration("-" + body) == -seconds, (text, seconds)


def _check_message(text: str, message: str) -> None:
    quoted = repr(text) if len(text) <= _MAX_QUOTED else repr(text[:_MAX_QUOTED]) + "..."
    prefix = f"invalid duration {quoted}: "
    assert message.startswith(prefix), (text, message)
    # Bounded whatever the input's length: the reason may quote another
    # clipped part of the text, each quoted character at most 10 long
    # ('\U0010ffff'), plus some words.
    assert len(message) <= 2 * (10 * _MAX_QUOTED + 5) + 200, (text, message)


def check_format(value: float) -> None:
    """``format_duration`` on any float64: a Go string in range, ValueError outside."""
    in_range = math.isfinite(value) and MIN_DURATION <= value <= MAX_DURATION
    try:
        text = format_duration(value)
    except ValueError:
        assert not in_range, value
        return
    assert in_range, (value, text)
    back = parse_duration(text)
    # 0.5 ns from rounding to nanoseconds, plus the spacing of the floats.
    assert abs(back - value) <= 1e-9 + math.ulp(value), (value, text, back)
    assert format_duration(back) == text, (value, text, back)


def test_one_input(data: bytes) -> None:
    check_parse(data.decode("utf-8", "surrogateescape"))
    if len(data) >= 8:
        check_format(struct.unpack("<d", data[:8])[0])


def main() -> None:
    instrument_packages("virtrigaud_resilience")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
