"""The breakers' names on vr.otel's events counter and state gauge (issue 26,
Deliver 3: "breaker/limiter/policy name; provider labels"), read with the
SDK's InMemoryMetricReader; and ``metric_names=False``, which sums them by
provider labels alone (a breaker per VM)."""

from __future__ import annotations

import gc
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from test_otel_metrics import Metered, flaky, metered, unique  # noqa: E402,F401 (a fixture)

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience import otel  # noqa: E402
from virtrigaud_resilience.breaker import BREAKERS  # noqa: E402

EVENTS = "virtrigaud.resilience.events"
STATE = "virtrigaud.circuit_breaker.state"
NAME = "virtrigaud.circuit_breaker.name"


def refuse(breaker: vr.CircuitBreaker, times: int) -> None:
    """Has ``breaker`` (open: see opened()) refuse ``times`` calls."""
    for _ in range(times):
        with pytest.raises(vr.CircuitOpenError):
            breaker.call(flaky(0))


def opened(name: str, provider: str) -> vr.CircuitBreaker:
    """A breaker that failed once, so opened (a counted transition to open)."""
    breaker = vr.CircuitBreaker(name, "vsphere", provider, vr.BreakerConfig(failure_threshold=1))
    with pytest.raises(vr.UnavailableError):
        breaker.call(flaky(1))
    return breaker


def rejected(provider: str, **more: Any) -> dict[str, Any]:
    return {"event.name": "rejected", "virtrigaud.component": "circuit_breaker",
            "virtrigaud.provider_type": "vsphere", "virtrigaud.provider": provider, **more}


def exactly(metered: Metered, instrument: str, attributes: dict[str, Any]) -> Any:
    """The value of the point of ``instrument`` with exactly ``attributes``."""
    (value,) = [point.value for point in metered.points(instrument)
                if dict(point.attributes) == attributes]
    return value


def sets_of(metered: Metered, instrument: str, provider: str) -> list[dict[str, Any]]:
    """The attribute sets of ``instrument`` under ``provider``."""
    return [dict(point.attributes) for point in metered.points(instrument)
            if point.attributes.get("virtrigaud.provider") == provider]


def test_two_breakers_under_the_same_labels_are_two_sets_by_name(metered: Metered) -> None:
    provider = unique("prod")
    vm1, vm2 = opened("vm-1", provider), opened("vm-2", provider)
    refuse(vm1, 1)
    refuse(vm2, 2)
    assert metered.value(EVENTS, **rejected(provider, **{NAME: "vm-1"})) == 1
    assert metered.value(EVENTS, **rejected(provider, **{NAME: "vm-2"})) == 2
    for name in ("vm-1", "vm-2"):
        assert metered.value(EVENTS, **{"event.name": "state_change", "to": "open",
                                        "virtrigaud.provider": provider, NAME: name}) == 1
    assert metered.value(STATE, **{"virtrigaud.provider": provider, NAME: "vm-1"}) == 2
    vm2.reset()
    assert metered.value(STATE, **{"virtrigaud.provider": provider, NAME: "vm-2"}) == 0
    # Every set of the breakers carries a name: none is by labels alone.
    assert all(NAME in attributes for attributes in sets_of(metered, EVENTS, provider))
    assert len(sets_of(metered, STATE, provider)) == 2


def test_limiters_bulkheads_and_budgets_have_no_name_their_labels(metered: Metered) -> None:
    provider = unique("prod")
    bucket = vr.TokenBucket(0.001, 1, provider_type="vsphere", provider=provider)
    assert bucket.try_acquire() and not bucket.try_acquire()
    (attributes,) = sets_of(metered, EVENTS, provider)
    assert attributes == {"event.name": "rejected", "virtrigaud.component": "rate_limiter",
                          "virtrigaud.provider_type": "vsphere", "virtrigaud.provider": provider}


def test_a_dropped_breakers_counts_stay_under_its_name(metered: Metered) -> None:
    provider = unique("prod")
    kept, dropped = opened("vm-kept", provider), opened("vm-gone", provider)
    refuse(kept, 1)
    refuse(dropped, 3)
    assert metered.value(EVENTS, **rejected(provider, **{NAME: "vm-gone"})) == 3
    del dropped
    gc.collect()
    assert metered.value(EVENTS, **rejected(provider, **{NAME: "vm-gone"})) == 3
    assert metered.value(EVENTS, **rejected(provider, **{NAME: "vm-kept"})) == 1
    assert metered.value(EVENTS, **{"event.name": "state_change", "to": "open",
                                    "virtrigaud.provider": provider, NAME: "vm-gone"}) == 1
    # A new breaker under the dropped one's name adds to its set.
    again = opened("vm-gone", provider)
    refuse(again, 1)
    assert metered.value(EVENTS, **rejected(provider, **{NAME: "vm-gone"})) == 4
    # The gauge is the live breakers' only.
    assert sorted(a[NAME] for a in sets_of(metered, STATE, provider)) == ["vm-gone", "vm-kept"]
    del again
    gc.collect()
    assert [a[NAME] for a in sets_of(metered, STATE, provider)] == ["vm-kept"]


def test_breakers_dropped_before_instrument_stay_under_their_labels() -> None:
    provider = unique("prod")
    early = opened("vm-early", provider)
    refuse(early, 2)
    del early
    gc.collect()
    metering = Metered()
    otel.instrument(tracer_provider=TracerProvider(), meter_provider=metering.provider)
    try:
        (attributes,) = [a for a in sets_of(metering, EVENTS, provider)
                         if a["event.name"] == "rejected"]
        assert NAME not in attributes  # its name was not kept: its labels hold its counts
        assert exactly(metering, EVENTS, rejected(provider)) == 2
    finally:
        otel.uninstrument()
        metering.provider.shutdown()


def test_metric_names_false_sums_the_breakers_by_labels() -> None:
    provider = unique("prod")
    vm1, vm2 = opened("vm-1", provider), opened("vm-2", provider)
    refuse(vm1, 1)
    refuse(vm2, 2)
    gone = opened("vm-3", provider)
    refuse(gone, 4)
    metering = Metered()
    otel.instrument(tracer_provider=TracerProvider(), meter_provider=metering.provider,
                    metric_names=False)
    try:
        del gone
        gc.collect()
        assert [a for a in sets_of(metering, EVENTS, provider) if a["event.name"] == "rejected"
                ] == [rejected(provider)]  # one set, no name
        assert metering.value(EVENTS, **rejected(provider)) == 7
        assert metering.value(EVENTS, **{"event.name": "state_change", "to": "open",
                                         "virtrigaud.provider": provider}) == 3
        assert sets_of(metering, STATE, provider) == [
            {"virtrigaud.provider_type": "vsphere", "virtrigaud.provider": provider}]
        assert not [key for key in BREAKERS.dropped_totals(by_name=True) if len(key) > 2]
    finally:
        otel.uninstrument()
        metering.provider.shutdown()


def test_switching_names_on_and_off_counts_each_refusal_once() -> None:
    provider = unique("prod")
    metering = Metered()
    try:
        otel.instrument(tracer_provider=TracerProvider(), meter_provider=metering.provider)
        gone = opened("vm-gone", provider)
        refuse(gone, 2)
        del gone
        gc.collect()  # dropped while names are kept: under its name
        live = opened("vm-live", provider)
        refuse(live, 1)
        otel.instrument(tracer_provider=TracerProvider(), meter_provider=metering.provider,
                        metric_names=False)
        assert metering.value(EVENTS, **rejected(provider)) == 3
        otel.instrument(tracer_provider=TracerProvider(), meter_provider=metering.provider)
        # The labels' set went down to the breakers dropped before the names
        # were kept again (all, since off forgot them): a restart, not 3 held.
        assert metering.value(EVENTS, **rejected(provider, **{NAME: "vm-live"})) == 1
        assert exactly(metering, EVENTS, rejected(provider)) == 2
        assert sum(point.value for point in metering.points(EVENTS)
                   if point.attributes.get("virtrigaud.provider") == provider
                   and point.attributes["event.name"] == "rejected") == 3
    finally:
        otel.uninstrument()
        metering.provider.shutdown()


def test_instrument_twice_is_idempotent(metered: Metered) -> None:
    provider = unique("prod")
    gone = opened("vm-gone", provider)
    refuse(gone, 2)
    del gone
    gc.collect()
    otel.instrument(tracer_provider=TracerProvider(), meter_provider=metered.provider)
    otel.instrument(tracer_provider=TracerProvider(), meter_provider=metered.provider,
                    metric_names=True)
    assert metered.value(EVENTS, **rejected(provider, **{NAME: "vm-gone"})) == 2
    assert len([a for a in sets_of(metered, EVENTS, provider)
                if a["event.name"] == "rejected"]) == 1


def test_uninstrument_forgets_the_dropped_breakers_names(metered: Metered) -> None:
    provider = unique("prod")
    gone = opened("vm-gone", provider)
    del gone
    gc.collect()
    assert (("vsphere", provider, "vm-gone") in BREAKERS.dropped_totals(by_name=True))
    otel.uninstrument()
    assert not [key for key in BREAKERS.dropped_totals(by_name=True) if len(key) > 2]
    assert ("vsphere", provider) in BREAKERS.dropped_totals(by_name=True)


def test_the_prometheus_collector_still_sums_by_labels(metered: Metered) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from virtrigaud_resilience import metrics

    registry = prometheus_client.CollectorRegistry()
    metrics.register(registry)
    provider = unique("prod")
    kept, gone = opened("vm-kept", provider), opened("vm-gone", provider)
    refuse(kept, 1)
    refuse(gone, 2)
    del gone
    gc.collect()  # dropped while the names are kept
    labels = {"provider_type": "vsphere", "provider": provider}
    assert registry.get_sample_value("virtrigaud_circuit_breaker_calls_total",
                                     {**labels, "outcome": "rejected"}) == 3
    assert all(len(key) == 2 for key in BREAKERS.snapshot()[1])


@pytest.mark.parametrize("value", [1, 0, "no", None])
def test_metric_names_must_be_a_bool(value: Any) -> None:
    with pytest.raises(TypeError, match=r"otel.instrument\(\) metric_names must be a bool, got "):
        otel.instrument(metric_names=value)
    assert not otel.is_instrumented()


def test_the_native_sum_by_name_adds_the_dropped_to_their_rows() -> None:
    from virtrigaud_resilience import _core

    kind = unique("kind")
    x1, y, x2 = (vr.CircuitBreaker(name, kind, "p", vr.BreakerConfig(1)) for name in "xyx")
    x1.call(int)
    with pytest.raises(ZeroDivisionError):
        y.call(divmod, 1, 0)
    x2.force_open()
    dropped = {(kind, "p", "x"): (1, 2, 3, 4, 5, 6, 7, 8), (kind, "p"): (0, 0, 9, 0, 0, 0, 0, 0)}
    sums = _core.CircuitBreaker._sum_by_name([x1, y, x2], dropped)
    # [successes, failures_total, rejected, to_closed, to_half_open, to_open,
    #  slow_calls, ignored, worst state, worst mode (3: forced open)]
    assert list(sums.items()) == [((kind, "p", "x"), [2, 2, 3, 4, 5, 7, 7, 8, 2, 3]),
                                  ((kind, "p", "y"), [0, 1, 0, 0, 0, 1, 0, 0, 2, 0]),
                                  ((kind, "p"), [0, 0, 9, 0, 0, 0, 0, 0, 0, 0])]


@pytest.mark.parametrize(("breakers", "dropped", "error", "match"), [
    ([object()], {}, TypeError, r"_sum_by_name\(\) takes a list of initialised CircuitBreakers"),
    ([], {("a", "b", "c"): (1, 2)}, ValueError, r"_sum_by_name\(\) dropped maps label tuples to 8"),
    ([], {"abc": (0,) * 8}, ValueError, r"_sum_by_name\(\) dropped maps label tuples to 8"),
])
def test_the_native_sum_by_name_refuses_bad_input(breakers: list[Any], dropped: dict[Any, Any],
                                                  error: type[Exception], match: str) -> None:
    from virtrigaud_resilience import _core

    with pytest.raises(error, match=match):
        _core.CircuitBreaker._sum_by_name(breakers, dropped)


def test_the_native_sum_by_name_runs_the_garbage_collector_at_most_once() -> None:
    """A key tuple and a list per breaker: paused, the collector would
    otherwise run on every 700th allocation (none can be in a cycle)."""
    from test_metrics_native_collect import collections_during

    from virtrigaud_resilience import _core

    breakers = [vr.CircuitBreaker(f"vm-{i}", "gc-sum", "p") for i in range(5_000)]
    sums: dict[Any, Any] = {}
    runs = collections_during(
        lambda: sums.update(_core.CircuitBreaker._sum_by_name(breakers, {})))
    assert runs <= 1 and len(sums) == 5_000 and gc.isenabled()
