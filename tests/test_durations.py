"""Go duration parsing and formatting (virtrigaud_resilience.durations)."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from virtrigaud_resilience.durations import (
    MAX_DURATION,
    MIN_DURATION,
    format_duration,
    parse_duration,
)

NS = 1
US = 1_000
MS = 1_000_000
S = 1_000_000_000
M = 60 * S
H = 3600 * S
INT64_MAX = (1 << 63) - 1

# Go's own table (src/time/time_test.go, parseDurationTests), in nanoseconds.
GO_VALID = [
    ("0", 0),
    ("5s", 5 * S),
    ("30s", 30 * S),
    ("1478s", 1478 * S),
    ("-5s", -5 * S),
    ("+5s", 5 * S),
    ("-0", 0),
    ("+0", 0),
    ("5.0s", 5 * S),
    ("5.6s", 5 * S + 600 * MS),
    ("5.s", 5 * S),
    (".5s", 500 * MS),
    ("1.0s", 1 * S),
    ("1.00s", 1 * S),
    ("1.004s", 1 * S + 4 * MS),
    ("1.0040s", 1 * S + 4 * MS),
    ("100.00100s", 100 * S + 1 * MS),
    ("10ns", 10 * NS),
    ("11us", 11 * US),
    ("12\u00b5s", 12 * US),
    ("12\u03bcs", 12 * US),
    ("13ms", 13 * MS),
    ("14s", 14 * S),
    ("15m", 15 * M),
    ("16h", 16 * H),
    ("3h30m", 3 * H + 30 * M),
    ("10.5s4m", 4 * M + 10 * S + 500 * MS),
    ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
    ("1h2m3s4ms5us6ns", 1 * H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS),
    ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
    ("52763797000ns", 52763797000 * NS),
    ("0.3333333333333333333h", 20 * M),
    ("9007199254740993ns", (1 << 53) + 1),
    ("9223372036854775807ns", INT64_MAX),
    ("9223372036.854775807s", INT64_MAX),
    ("-9223372036854775808ns", -(1 << 63)),
    ("-9223372036.854775808s", -(1 << 63)),
    ("0.100000000000000000000h", 6 * M),
    ("0.830103483285477580700h", 49 * M + 48 * S + 372539827 * NS),
]


@pytest.mark.parametrize(("text", "nanos"), GO_VALID)
def test_parse_matches_go_table(text: str, nanos: int) -> None:
    # nanos / S is int / int: correctly rounded, as parse_duration converts.
    assert parse_duration(text) == nanos / S


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("1.5", 1.5),
        ("-2", -2.0),
        ("+7", 7.0),
        (".25", 0.25),
        ("0.0", 0.0),
        ("  30s\n", 30.0),
        ("\t1m30s ", 90.0),
        ("0001s", 1.0),
    ],
)
def test_bare_numbers_are_seconds_and_whitespace_is_stripped(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_exact_floats() -> None:
    # Integer-nanosecond arithmetic: no 1.5000000000000002 or 0.10000000000000002.
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("100ms") == 0.1
    assert parse_duration("0.1s") == 0.1
    assert parse_duration("1m0.3s") == 60.3
    assert parse_duration("4m") == 240.0
    assert parse_duration("10m") == 600.0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-", "empty"),
        ("+", "empty"),
        ("s", "expected a number"),
        (".", "expected a number"),
        ("-.", "expected a number"),
        (".s", "expected a number"),
        ("+.s", "expected a number"),
        ("1.", "missing unit"),
        ("1h2", "missing unit"),
        ("1s1", "missing unit"),
        ("1d", "unknown unit 'd'"),
        ("1x", "unknown unit 'x'"),
        ("1S", "unknown unit 'S'"),
        ("1H", "unknown unit 'H'"),
        ("1sec", "unknown unit 'sec'"),
        ("1 s", "unknown unit ' s'"),
        ("1h 30m", "unknown unit 'h '"),
        ("1e3s", r"unknown unit 'e' \(exponents are not allowed\)"),
        ("1e400", "unknown unit 'e'"),
        ("1E-3", "unknown unit 'E-'"),
        ("nan", "expected a number"),
        ("NaN", "expected a number"),
        ("inf", "expected a number"),
        ("-inf", "expected a number"),
        ("Infinity", "expected a number"),
        ("1s.", "expected a number"),
        ("--1s", "expected a number"),
        ("+-1s", "expected a number"),
        ("1_000s", "unknown unit '_'"),
        ("\u0661s", "expected a number"),  # ARABIC-INDIC DIGIT ONE: Go takes ASCII only
        ("\x85\x85", "empty"),  # U+0085 is whitespace to Python's str.strip()
        ("\xffff", "expected a number"),
        ("9223372036854775808ns", "overflows"),
        ("9223372036.854775808s", "overflows"),
        ("-9223372036854775809ns", "overflows"),
        ("3000000h", "overflows"),
        ("999999999999h", "overflows"),
        ("2562047h47m16.854775808s", "overflows"),
        ("9" * 5000 + "s", "overflows"),
    ],
)
def test_invalid_text_is_a_value_error_naming_the_text(text: str, reason: str) -> None:
    shown = repr(text) if len(text) <= 100 else repr(text[:100])
    with pytest.raises(ValueError, match=r"^invalid duration " + re.escape(shown)) as info:
        parse_duration(text)
    assert re.search(reason, str(info.value)), str(info.value)


def test_long_input_is_quoted_clipped() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("x" * 10_000)
    assert len(str(info.value)) < 300
    assert "..." in str(info.value)


@pytest.mark.parametrize("value", [None, 30, 1.5, b"1s", ["1s"], True])
def test_non_str_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="duration must be a str"):
        parse_duration(value)  # type: ignore[arg-type]


def test_long_fraction_is_read_like_go() -> None:
    # Go stops reading fraction digits once they would overflow and computes
    # the fraction in float64, which rounds 0.999999999999999999s up to 1s.
    # A long fraction must not hit Python's int-parsing digit limit either.
    assert parse_duration("0." + "9" * 5000 + "s") == 1.0
    assert parse_duration("0.999999999s") == 0.999999999
    assert parse_duration("1." + "0" * 5000 + "1h") == 3600.0


def test_limits() -> None:
    assert parse_duration("2562047h47m16.854775807s") == MAX_DURATION
    assert parse_duration("-2562047h47m16.854775808s") == MIN_DURATION


# Go's durationTests (Duration.String), as (expected text, nanoseconds).
GO_STRINGS = [
    ("0s", 0),
    ("1ns", 1 * NS),
    ("1.1\u00b5s", 1100 * NS),
    ("2.2ms", 2200 * US),
    ("3.3s", 3300 * MS),
    ("4m5s", 4 * M + 5 * S),
    ("4m5.001s", 4 * M + 5001 * MS),
    ("5h6m7.001s", 5 * H + 6 * M + 7001 * MS),
    ("8m0.000000001s", 8 * M + 1 * NS),
    ("2562047h47m16.854775807s", INT64_MAX),
    ("-2562047h47m16.854775808s", -(1 << 63)),
    ("1h0m0s", 1 * H),
    ("1m30s", 90 * S),
    ("100ms", 100 * MS),
    ("1.5\u00b5s", 1500 * NS),
    ("-2.5s", -2500 * MS),
    ("500ms", 500 * MS),
    ("4m0s", 4 * M),
    ("999ns", 999 * NS),
    ("1\u00b5s", 1 * US),
    ("1ms", 1 * MS),
    ("1s", 1 * S),
    ("1.000000001s", 1 * S + 1),
]


@pytest.mark.parametrize(("text", "nanos"), GO_STRINGS)
def test_format_matches_go_table(text: str, nanos: int) -> None:
    assert format_duration(nanos / S) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (90, "1m30s"), (3600, "1h0m0s"), (-1, "-1s"), (4e-10, "0s"), (6e-10, "1ns"),
     (1.4e-9, "1ns"), (1.6e-9, "2ns"), (0.099999999, "99.999999ms")],
)
def test_format_ints_and_rounding_to_nanoseconds(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e20, -1e20, MAX_DURATION * 2])
def test_format_rejects_unrepresentable(value: float) -> None:
    with pytest.raises(ValueError, match=r"time\.Duration range|cannot format"):
        format_duration(value)


@pytest.mark.parametrize("value", ["1s", None, True, b"1"])
def test_format_rejects_non_numbers(value: object) -> None:
    with pytest.raises(TypeError, match="seconds must be a number"):
        format_duration(value)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

_seconds = st.floats(min_value=MIN_DURATION, max_value=MAX_DURATION, allow_nan=False)


@given(_seconds)
def test_format_then_parse_round_trips_within_a_nanosecond(seconds: float) -> None:
    back = parse_duration(format_duration(seconds))
    # 0.5 ns from rounding to nanoseconds, plus the float's own spacing.
    assert abs(back - seconds) <= 1e-9 + math.ulp(seconds)


@given(st.integers(min_value=-(1 << 63), max_value=INT64_MAX))
def test_nanosecond_strings_parse_exactly(nanos: int) -> None:
    assert parse_duration(f"{nanos}ns") == nanos / S


_UNIT_NANOS = {"ns": NS, "us": US, "\u00b5s": US, "\u03bcs": US, "ms": MS, "s": S, "m": M, "h": H}
_element = st.tuples(
    st.integers(min_value=0, max_value=10_000),
    st.one_of(st.none(), st.text(alphabet="0123456789", max_size=25)),
    st.sampled_from(sorted(_UNIT_NANOS)),
)


def _element_text(element: tuple[int, str | None, str]) -> str:
    whole, frac, unit = element
    return f"{whole}{'' if frac is None else '.' + frac}{unit}"


def _exact_nanos(element: tuple[int, str | None, str]) -> Fraction:
    # Independent oracle: the exact rational value. Go (and so parse_duration)
    # truncates each element to whole nanoseconds through float64, which may
    # land up to 1 ns away from it.
    whole, frac, unit = element
    value = Fraction(whole) + (Fraction(int(frac), 10 ** len(frac)) if frac else 0)
    return value * _UNIT_NANOS[unit]


@given(st.lists(_element, min_size=1, max_size=8), st.sampled_from(["", "+", "-"]))
def test_composite_is_the_sum_of_its_parts(
    elements: list[tuple[int, str | None, str]], sign: str
) -> None:
    text = sign + "".join(_element_text(e) for e in elements)
    result = parse_duration(text)
    exact = sum((_exact_nanos(e) for e in elements), Fraction(0)) / S
    if sign == "-":
        exact = -exact
    # Within 1 ns per element of the exact value, plus the float's spacing.
    slack = Fraction(len(elements), S) + Fraction(math.ulp(result))
    assert abs(Fraction(result) - exact) <= slack
    # And the sum of the parts, each parsed alone: the same nanoseconds, so
    # equal up to each float's rounding (every part is at most the whole).
    parts = sum((Fraction(parse_duration(_element_text(e))) for e in elements), Fraction(0))
    if sign == "-":
        parts = -parts
    assert abs(Fraction(result) - parts) <= (len(elements) + 1) * Fraction(math.ulp(result))


_garbage = st.one_of(
    st.text(),
    st.text(alphabet="0123456789.+-eEsmhnuµμ _\t", max_size=30),
    st.binary().map(lambda b: b.decode("latin-1")),
)


@given(_garbage)
def test_garbage_only_ever_raises_value_error(text: str) -> None:
    try:
        result = parse_duration(text)
    except ValueError as exc:
        assert str(exc).startswith("invalid duration ")
    else:
        assert math.isfinite(result)
        assert MIN_DURATION <= result <= MAX_DURATION


@given(st.one_of(st.integers(), st.floats(), st.none(), st.binary(), st.lists(st.text())))
def test_non_strings_only_ever_raise_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        parse_duration(value)  # type: ignore[arg-type]
