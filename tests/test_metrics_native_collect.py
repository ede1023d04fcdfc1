"""The collector's breaker series, summed and sampled natively (samples.hpp).

A scrape of 10,000 breakers over 10,000 label sets makes ~80,000 samples;
issue 21 wants our collect() under 50 ms, which a Python loop over them
cannot be. What the series say is tested in test_metrics.py; here: that the
work per breaker and per sample stays out of Python, and the native
functions' own contract (bad input is a TypeError or ValueError, never a
crash; clamping; rows without a column's value).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any
from uuid import uuid4

import pytest

prometheus_client = pytest.importorskip("prometheus_client")

import virtrigaud_resilience as vr  # noqa: E402
from prometheus_client.samples import Sample  # noqa: E402
from virtrigaud_resilience import _core, metrics  # noqa: E402


@pytest.fixture
def collector() -> Iterator[Any]:
    registry = prometheus_client.CollectorRegistry()
    yield metrics.register(registry)
    metrics.unregister(registry)


def python_calls_during(work: Any) -> int:
    """How many Python functions run while ``work()`` runs (with the garbage
    collector off: finalizers of other tests' garbage are not the work's)."""
    calls = 0

    def count(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    gc.collect()
    gc.disable()
    sys.setprofile(count)
    try:
        work()
    finally:
        sys.setprofile(None)
        gc.enable()
    return calls


def test_a_scrape_runs_no_python_per_breaker_or_per_label_set(collector: Any) -> None:
    def calls_with(count: int) -> int:
        provider = uuid4().hex
        breakers = [vr.CircuitBreaker(f"vm-{i}", "per-label", f"{provider}-{i}")
                    for i in range(count)]
        breakers[0].force_open()
        calls = python_calls_during(lambda: list(collector.collect()))
        del breakers
        return calls

    calls_with(10)  # the first scrape's one-time work
    few = calls_with(10)
    # The dropped breakers' label sets stay (their counters are kept), so the
    # second scrape covers over 1,000 more. Before: _counter() per sample, 7
    # per label set (over 7,000 more calls).
    assert calls_with(1_000) - few < 100


def test_sums_by_labels_in_the_order_they_first_appear() -> None:
    kind = uuid4().hex
    a1, b1, a2 = (vr.CircuitBreaker("x", kind, p, vr.BreakerConfig(1)) for p in "aba")
    a1.call(int)
    a2.call(int)
    with pytest.raises(ZeroDivisionError):
        b1.call(divmod, 1, 0)
    a2.force_open()
    sums = _core.CircuitBreaker._sum_by_labels([a1, b1, a2])
    # [successes, failures_total, rejected, to_closed, to_half_open, to_open,
    #  slow_calls, ignored, worst state, worst mode (3: forced open)]
    assert list(sums.items()) == [((kind, "a"), [2, 0, 0, 0, 0, 1, 0, 0, 2, 3]),
                                  ((kind, "b"), [0, 1, 0, 0, 0, 1, 0, 0, 2, 0])]


@pytest.mark.parametrize("bad", [[object()], [_core.TokenBucket(1, 1)], ["breaker"]])
def test_sums_refuse_what_is_not_a_breaker(bad: list[Any]) -> None:
    with pytest.raises(TypeError, match="_sum_by_labels.. takes a list of initialised"):
        _core.CircuitBreaker._sum_by_labels(bad)


PROTO = Sample("", {}, 0)
NAMES = ("provider_type", "provider")


def column(samples: list[Any], index: int, clamped: bool = True,
           extra: tuple[Any, Any] = (None, None)) -> tuple[Any, ...]:
    return (samples, "series_total", *extra, index, clamped)


def test_emitted_samples_are_prometheus_samples_with_their_labels() -> None:
    calls: list[Any] = []
    _core._emit_samples({("t", "p"): [3, 4]}, NAMES,
                        (column(calls, 1, extra=("outcome", "ok")), column(calls, 0)), PROTO, {})
    assert calls == [Sample("series_total", {"provider_type": "t", "provider": "p",
                                             "outcome": "ok"}, 4),
                     Sample("series_total", {"provider_type": "t", "provider": "p"}, 3)]
    assert all(type(s) is Sample and s.timestamp is None for s in calls)


def test_a_clamped_value_never_goes_below_the_one_reported_before() -> None:
    reported: dict[Any, list[Any]] = {}
    for value, shown in ((5, 5), (3, 5), (7, 7)):
        out: list[Any] = []
        gauge: list[Any] = []
        _core._emit_samples({("t", "p"): [value]}, NAMES,
                            (column(out, 0), column(gauge, 0, clamped=False)), PROTO, reported)
        assert [s.value for s in out] == [shown] and [s.value for s in gauge] == [value]
    # The samples reported last, one per column.
    assert [s.value for s in reported[("t", "p")]] == [7, 7]


def test_an_unchanged_series_is_reported_by_the_same_sample() -> None:
    reported: dict[Any, list[Any]] = {}

    def emit(values: list[Any]) -> list[list[Any]]:
        lists: list[list[Any]] = [[], [], []]
        _core._emit_samples({("t", "p"): values}, NAMES,
                            (column(lists[0], 0), column(lists[1], 1, extra=("outcome", "x")),
                             column(lists[2], 2, clamped=False)), PROTO, reported)
        return lists

    first = emit([1, 2**70, 0.5])
    again = emit([1, 2**70, 0.5])  # equal values, other objects for the big int and the float
    assert all(a[0] is b[0] for a, b in zip(first, again))
    changed = emit([2, 2**70, 1])  # 1 == 1.0, but prints otherwise: a new sample
    assert changed[0][0] is not first[0][0] and changed[1][0] is first[1][0]
    assert changed[2][0] is not first[2][0] and type(changed[2][0].value) is int
    # A new sample keeps its series' labels dict; the exposition only reads it.
    assert changed[0][0].labels is first[0][0].labels
    assert [s[0] for s in changed] == [
        Sample("series_total", {"provider_type": "t", "provider": "p"}, 2),
        Sample("series_total", {"provider_type": "t", "provider": "p", "outcome": "x"}, 2**70),
        Sample("series_total", {"provider_type": "t", "provider": "p"}, 1)]


def test_a_counter_reported_once_stays_when_its_row_has_no_value() -> None:
    reported: dict[Any, list[Any]] = {}
    for values, counters, gauges in (([4, 1], [4], [1]), ([None], [4], []), ([], [4], []),
                                     ([5, 2], [5], [2])):
        counter: list[Any] = []
        gauge: list[Any] = []
        _core._emit_samples({("t", "p"): values}, NAMES,
                            (column(counter, 0), column(gauge, 1, clamped=False)), PROTO,
                            reported)
        assert [s.value for s in counter] == counters and [s.value for s in gauge] == gauges
    # Never reported, a None is no sample.
    out: list[Any] = []
    _core._emit_samples({("t", "q"): [None]}, NAMES, (column(out, 0),), PROTO, reported)
    assert out == []


def test_a_row_without_a_columns_value_gets_no_sample_there() -> None:
    counter: list[Any] = []
    gauge: list[Any] = []
    _core._emit_samples({("t", "live"): [1, 2], ("t", "dropped"): [1]}, NAMES,
                        (column(counter, 0), column(gauge, 1, clamped=False)), PROTO, None)
    assert [s.labels["provider"] for s in counter] == ["live", "dropped"]
    assert [s.labels["provider"] for s in gauge] == ["live"]


@pytest.mark.parametrize(("rows", "columns", "reported", "error", "message"), [
    ({("t", "p"): [1]}, (("not a list", "n", None, None, 0, True),), None, TypeError,
     "columns are"),
    ({("t", "p"): [1]}, (([], "n", None, None, 0),), None, TypeError, "columns are"),
    ({("t",): [1]}, (([], "n", None, None, 0, True),), None, ValueError,
     "one value per label"),
    ({("t", "p"): [1]}, (([], "n", None, None, 0, True),), {("t", "p"): [1, 2]}, ValueError,
     "one list per key"),
    ({("t", "p"): [1]}, (([], "n", None, None, 0, True),), [], TypeError, "dict or None"),
    ({("t", "p"): [1]}, (([], "n", None, None, 0, True),), {("t", "p"): [("n", {}, 1)]},
     TypeError, "columns' own"),
    ({("t", "p"): [1]}, (([], "n", None, None, 0, True),), {("t", "p"): [Sample("m", {}, 1)]},
     TypeError, "columns' own"),
])
def test_bad_input_to_the_emitter_is_an_error_naming_it(
        rows: Any, columns: Any, reported: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        _core._emit_samples(rows, NAMES, columns, PROTO, reported)


def collections_during(work: Any) -> int:
    """How many times the garbage collector runs while ``work()`` runs."""
    runs = 0

    def count(phase: str, info: dict[str, Any]) -> None:
        nonlocal runs
        if phase == "start":
            runs += 1

    gc.callbacks.append(count)
    try:
        work()
    finally:
        gc.callbacks.remove(count)
    return runs


def test_building_the_samples_runs_the_garbage_collector_at_most_once() -> None:
    # 10,000 label sets allocate ~130,000 dicts and tuples: the collector
    # would run on every 700th (none can be in a cycle); paused, it runs at
    # most once, just after.
    rows = {("t", f"p{i}"): [i, 0, 1] for i in range(10_000)}
    lists: list[list[Any]] = [[], [], []]
    columns = (column(lists[0], 0), column(lists[1], 1, extra=("outcome", "x")),
               column(lists[2], 2, clamped=False))
    assert gc.isenabled()
    assert collections_during(lambda: _core._emit_samples(rows, NAMES, columns, PROTO, {})) <= 1
    assert gc.isenabled()  # running again
    assert [len(samples) for samples in lists] == [10_000] * 3


def test_summing_the_breakers_runs_the_garbage_collector_at_most_once() -> None:
    breakers = [vr.CircuitBreaker(f"vm-{i}", "gc-sum", f"p-{uuid4().hex}") for i in range(5_000)]
    sums: dict[Any, Any] = {}
    runs = collections_during(lambda: sums.update(_core.CircuitBreaker._sum_by_labels(breakers)))
    assert runs <= 1 and len(sums) == 5_000 and gc.isenabled()


def test_a_collector_disabled_by_the_caller_stays_disabled() -> None:
    gc.disable()
    try:
        _core._emit_samples({("t", "p"): [1]}, NAMES, (column([], 0),), PROTO, None)
        _core.CircuitBreaker._sum_by_labels([vr.CircuitBreaker("vm", "gc-off", "p")])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_samples_without_an_extra_label_share_their_rows_labels() -> None:
    state: list[Any] = []
    failures: list[Any] = []
    calls: list[Any] = []
    _core._emit_samples({("t", "p"): [1, 2]}, NAMES,
                        (column(state, 0, clamped=False), column(failures, 1),
                         column(calls, 1, extra=("outcome", "failure"))), PROTO, {})
    assert state[0].labels is failures[0].labels  # one dict, read-only to the exposition
    assert calls[0].labels == {**state[0].labels, "outcome": "failure"}
    assert state[0].labels == {"provider_type": "t", "provider": "p"}


def test_rows_may_be_any_sequence_of_ints_or_an_int() -> None:
    out: list[Any] = []
    _core._emit_samples({("t", "a"): (1, 2), ("t", "b"): range(3, 5), ("t", "c"): 9}, NAMES,
                        (column(out, 0, clamped=False),), PROTO, None)
    assert [s.value for s in out] == [1, 3, 9]


# ---- the collector's breaker series: which appear, their values, their reuse

WINDOW_SERIES = ("virtrigaud_circuit_breaker_failure_rate",
                 "virtrigaud_circuit_breaker_slow_call_rate")
BY_KIND = "virtrigaud_circuit_breaker_calls_by_kind_total"


def scraped(registry: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The exposition's samples (text parsed back), by (name, labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = prometheus_client.generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def of(samples: dict[Any, float], kind: str) -> dict[tuple[str, str | None], float]:
    """The samples of provider type ``kind``, by (name, provider, and the extra label)."""
    out = {}
    for (name, labels), value in samples.items():
        label = dict(labels)
        if label.get("provider_type") == kind:
            extra = label.get("outcome", label.get("to", label.get("kind")))
            out[(name, f"{label['provider']}/{extra}" if extra else label["provider"])] = value
    return out


@pytest.fixture
def registry() -> Iterator[Any]:
    reg = prometheus_client.CollectorRegistry()
    metrics.register(reg)
    yield reg
    metrics.unregister(reg)


def test_a_windowless_fleets_scrape_has_no_window_series(registry: Any) -> None:
    kind = uuid4().hex
    fleet = [vr.CircuitBreaker(f"vm-{i}", kind, f"p{i % 3}", vr.BreakerConfig(1))
             for i in range(9)]
    fleet[0].call(int)
    with pytest.raises(ZeroDivisionError):
        fleet[1].call(divmod, 1, 0)
    mine = of(scraped(registry), kind)
    assert not [k for k in mine if k[0] in WINDOW_SERIES or k[1].endswith("/slow")]
    # The kinds every breaker has are all there, for every label set.
    for provider in ("p0", "p1", "p2"):
        for kind_ in ("successful", "failed", "not_permitted", "ignored"):
            assert (BY_KIND, f"{provider}/{kind_}") in mine
    assert mine[(BY_KIND, "p0/successful")] == 1 and mine[(BY_KIND, "p1/failed")] == 1
    assert len(mine) == 3 * (1 + 1 + 1 + 3 + 3 + 4)
    del fleet


def test_a_mixed_fleets_series_and_values(registry: Any) -> None:
    kind = uuid4().hex
    clock = vr.ManualClock()
    windowed = vr.BreakerConfig(window=vr.CountWindow(10), minimum_calls=2,
                                failure_rate_threshold=1.0, slow_call_duration=1.0,
                                half_open_lease=None)

    def slow() -> None:
        clock.advance(1.0)

    # "mixed": a consecutive and two window-mode breakers; "plain": consecutive only.
    plain = vr.CircuitBreaker("a", kind, "plain", vr.BreakerConfig(5), clock=clock)
    mixed_plain = vr.CircuitBreaker("b", kind, "mixed", vr.BreakerConfig(5), clock=clock)
    busy = vr.CircuitBreaker("c", kind, "mixed", windowed, clock=clock)
    idle = vr.CircuitBreaker("d", kind, "mixed", windowed, clock=clock)
    busy.call(slow)
    busy.call(int)
    for breaker in (busy, busy, mixed_plain, plain):
        with pytest.raises(ZeroDivisionError):
            breaker.call(divmod, 1, 0)
    mixed_plain.call(int)
    mine = of(scraped(registry), kind)
    # The rates: the highest of the window-mode breakers (idle: -1, below minimum_calls).
    assert mine[("virtrigaud_circuit_breaker_failure_rate", "mixed")] == 0.5
    assert mine[("virtrigaud_circuit_breaker_slow_call_rate", "mixed")] == 0.25
    assert mine[(BY_KIND, "mixed/slow")] == 1
    assert not [k for k in mine if k[1] == "plain" and k[0] in WINDOW_SERIES]
    assert (BY_KIND, "plain/slow") not in mine
    # The counts: summed over every breaker of the labels, whatever its mode.
    for series, labels, value in (
            (BY_KIND, "mixed/successful", 3), (BY_KIND, "mixed/failed", 3),
            (BY_KIND, "plain/failed", 1), (BY_KIND, "plain/successful", 0),
            ("virtrigaud_circuit_breaker_failures_total", "mixed", 3),
            ("virtrigaud_circuit_breaker_calls_total", "mixed/success", 3),
            ("virtrigaud_circuit_breaker_state", "mixed", 0)):
        assert mine[(series, labels)] == value, (series, labels)
    # The window-mode breakers dropped: their rates go (gauges of live
    # breakers), their slow calls stay (a counter).
    del busy, idle
    gc.collect()
    mine = of(scraped(registry), kind)
    assert not [k for k in mine if k[0] in WINDOW_SERIES]
    assert mine[(BY_KIND, "mixed/slow")] == 1 and mine[(BY_KIND, "mixed/failed")] == 3
    del plain, mixed_plain
    gc.collect()


def test_an_unchanged_fleet_is_reported_by_the_same_samples(collector: Any) -> None:
    kind = uuid4().hex
    fleet = [vr.CircuitBreaker(f"vm-{i}", kind, f"p{i}", vr.BreakerConfig(1)) for i in range(50)]

    def samples() -> dict[tuple[str, frozenset[Any]], Any]:
        return {(s.name, frozenset(s.labels.items())): s
                for family in collector.collect() for s in family.samples
                if s.labels.get("provider_type") == kind}

    first = samples()
    fleet[7].call(int)
    second = samples()
    changed = {k for k in first if first[k] is not second[k]}
    assert changed == {
        ("virtrigaud_circuit_breaker_calls_total",
         frozenset({("provider_type", kind), ("provider", "p7"), ("outcome", "success")})),
        (BY_KIND, frozenset({("provider_type", kind), ("provider", "p7"),
                             ("kind", "successful")}))}
    assert all(second[k].value == 1 for k in changed)
    del fleet


@pytest.mark.parametrize(("dropped", "error", "message"), [
    ([], TypeError, r"_emit_by_labels\(\): incompatible(.|\n)*dropped: dict"),
    ({("t", "p"): (1, 2)}, ValueError, "label tuples to 8 counters"),
    ({"t": (0,) * 8}, ValueError, "label tuples to 8 counters"),
    ({("t", "p"): (0,) * 7 + (-1,)}, OverflowError, "negative"),
    ({("t", "p"): (0,) * 7 + ("1",)}, TypeError, "int"),
])
def test_bad_dropped_totals_are_an_error_naming_them(
        dropped: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        _core.CircuitBreaker._emit_by_labels([], dropped, NAMES, (column([], 0),), PROTO, {})


def test_the_one_pass_emitter_refuses_what_is_not_a_breaker() -> None:
    with pytest.raises(TypeError, match="_emit_by_labels.. takes a list of initialised"):
        _core.CircuitBreaker._emit_by_labels([object()], {}, NAMES, (column([], 0),), PROTO, {})
