"""vr.otel's metrics, read with the SDK's InMemoryMetricReader: the events
counter and the breaker state gauge come from the native counters at
collection time, the duration histograms from the traced calls (issue 26)."""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.metrics.view import View  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF  # noqa: E402

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience import otel  # noqa: E402

RETRY3 = vr.RetryConfig(max_attempts=3, base_delay=1.0, max_delay=10.0, jitter=False)


class Metered:
    def __init__(self, default_limits: bool = False) -> None:
        self.reader = InMemoryMetricReader()
        # Every label set the process ever saw is reported (other tests make
        # thousands): above the SDK's default limit of 2,000 per instrument.
        views = [] if default_limits else [View(instrument_name="virtrigaud.*",
                                                aggregation_cardinality_limit=1_000_000)]
        self.provider = MeterProvider(metric_readers=[self.reader], views=views)

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [point for resource in data.resource_metrics for scope in resource.scope_metrics
                for metric in scope.metrics if metric.name == name
                for point in metric.data.data_points]

    def value(self, name: str, **attributes: Any) -> Any:
        """The value of the one point of ``name`` whose attributes include ``attributes``."""
        matching = [point for point in self.points(name)
                    if attributes.items() <= dict(point.attributes).items()]
        assert len(matching) == 1, (attributes, [dict(p.attributes) for p in self.points(name)])
        return matching[0].value


@pytest.fixture
def metered() -> Iterator[Metered]:
    metering = Metered()
    otel.instrument(tracer_provider=TracerProvider(), meter_provider=metering.provider)
    try:
        yield metering
    finally:
        otel.uninstrument()
        metering.provider.shutdown()


def unique(prefix: str) -> str:
    """A name no other test's objects share (the counts are process-wide)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def flaky(failures: int) -> Any:
    calls: list[int] = []

    def fn() -> int:
        calls.append(1)
        if len(calls) <= failures:
            raise vr.UnavailableError("provider down")
        return 42

    return fn


def test_retries_and_exhausted_calls_are_counted_by_policy(metered: Metered) -> None:
    name = unique("create-vm")
    policy = vr.PolicyBuilder(name).with_retry(RETRY3).with_clock(vr.ManualClock()).build()
    assert policy.execute(flaky(2)) == 42
    with pytest.raises(vr.UnavailableError):
        policy.execute(flaky(5))
    events = "virtrigaud.resilience.events"
    assert metered.value(events, **{"event.name": "retry", "virtrigaud.policy.name": name}) == 4
    assert metered.value(events, **{"event.name": "retry_exhausted",
                                    "virtrigaud.policy.name": name}) == 1


def test_rejections_and_transitions_are_counted_by_provider(metered: Metered) -> None:
    provider = unique("prod")
    breaker = vr.CircuitBreaker("vm-ops", "vsphere", provider,
                                vr.BreakerConfig(failure_threshold=1))
    bucket = vr.TokenBucket(0.001, 1, provider_type="vsphere", provider=provider)
    bulkhead = vr.Bulkhead(1, provider_type="vsphere", provider=provider)
    with pytest.raises(vr.UnavailableError):
        breaker.call(flaky(1))
    with pytest.raises(vr.CircuitOpenError):
        breaker.call(flaky(0))
    assert bucket.try_acquire() and not bucket.try_acquire()
    with bulkhead:
        with pytest.raises(vr.RateLimitError):
            vr.PolicyBuilder("p").with_bulkhead(bulkhead).build().execute(flaky(0))

    def count(component: str, event: str, **more: str) -> int:
        value: int = metered.value("virtrigaud.resilience.events", **{
            "event.name": event, "virtrigaud.component": component,
            "virtrigaud.provider": provider, **more})
        return value

    assert count("circuit_breaker", "rejected") == 1
    assert count("circuit_breaker", "state_change", to="open") == 1
    assert not [point for point in metered.points("virtrigaud.resilience.events")
                if point.attributes.get("virtrigaud.provider") == provider
                and point.attributes.get("to") == "closed"]  # a count never above 0: no point
    assert count("rate_limiter", "rejected") == 1
    assert count("bulkhead", "rejected") == 1
    state = metered.value("virtrigaud.circuit_breaker.state", **{"virtrigaud.provider": provider})
    assert state == 2  # open


def test_a_dropped_breakers_counts_stay(metered: Metered) -> None:
    provider = unique("prod")
    breaker = vr.CircuitBreaker("vm-ops", "vsphere", provider)
    breaker.force_open()
    with pytest.raises(vr.CircuitOpenError):
        breaker.call(flaky(0))
    rejected = {"event.name": "rejected", "virtrigaud.component": "circuit_breaker",
                "virtrigaud.provider": provider}
    assert metered.value("virtrigaud.resilience.events", **rejected) == 1
    del breaker
    gc.collect()
    assert metered.value("virtrigaud.resilience.events", **rejected) == 1
    assert not [point for point in metered.points("virtrigaud.circuit_breaker.state")
                if point.attributes.get("virtrigaud.provider") == provider]  # no live breaker


def test_durations_are_recorded_per_attempt_and_per_execution(metered: Metered) -> None:
    name = unique("create-vm")
    policy = vr.PolicyBuilder(name).with_retry(RETRY3).with_clock(vr.ManualClock()).build()
    assert policy.execute(flaky(2)) == 42
    attempts = [point for point in metered.points("virtrigaud.resilience.attempt.duration")
                if point.attributes["virtrigaud.policy.name"] == name]
    assert sorted((p.attributes["virtrigaud.attempt.number"], p.attributes["virtrigaud.outcome"],
                   p.count) for p in attempts) == [(0, "failure", 1), (1, "failure", 1),
                                                   (2, "success", 1)]
    (execution,) = [point for point in metered.points("virtrigaud.resilience.execution.duration")
                    if point.attributes["virtrigaud.policy.name"] == name]
    assert execution.count == 1 and execution.attributes["virtrigaud.outcome"] == "success"
    # ManualClock sleeps take no time: the execution is its attempts, give or take.
    assert execution.sum >= sum(point.sum for point in attempts)


def test_with_traces_sampled_out_the_counts_are_there_and_calls_stay_native() -> None:
    metering = Metered()
    otel.instrument(tracer_provider=TracerProvider(sampler=ALWAYS_OFF),
                    meter_provider=metering.provider)
    try:
        assert not otel.traces_calls()
        name = unique("native")
        policy = vr.PolicyBuilder(name).with_retry(RETRY3).with_clock(vr.ManualClock()).build()
        assert policy.execute(flaky(1)) == 42
        assert metering.value("virtrigaud.resilience.events", **{
            "event.name": "retry", "virtrigaud.policy.name": name}) == 1
        assert not [point for point in metering.points("virtrigaud.resilience.attempt.duration")
                    if point.attributes["virtrigaud.policy.name"] == name]
    finally:
        otel.uninstrument()


def test_uninstrument_silences_the_observable_instruments(metered: Metered) -> None:
    name = unique("p")
    vr.PolicyBuilder(name).with_retry(RETRY3).with_clock(vr.ManualClock()).build().execute(
        flaky(1))
    assert metered.points("virtrigaud.resilience.events")
    otel.uninstrument()
    assert metered.points("virtrigaud.resilience.events") == []
    otel.instrument(tracer_provider=TracerProvider(), meter_provider=metered.provider)
    assert metered.value("virtrigaud.resilience.events", **{  # the same instruments again
        "event.name": "retry", "virtrigaud.policy.name": name}) == 1


def test_the_prometheus_collector_reads_the_same_counts(metered: Metered) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from virtrigaud_resilience import metrics

    registry = prometheus_client.CollectorRegistry()
    metrics.register(registry)
    name = unique("both")
    policy = vr.PolicyBuilder(name).with_retry(RETRY3).with_clock(vr.ManualClock()).build()
    assert policy.execute(flaky(2)) == 42
    assert registry.get_sample_value("virtrigaud_retry_attempts_total", {"policy": name}) == 2
    assert metered.value("virtrigaud.resilience.events", **{
        "event.name": "retry", "virtrigaud.policy.name": name}) == 2


def test_the_retries_come_first_within_the_readers_default_limit() -> None:
    """With the SDK's default limit (2,000 attribute sets an instrument)
    and more label sets than that in the process, a policy's retries are
    still reported: they come first, and zeros take no place."""
    breakers = [vr.CircuitBreaker("crowd", "crowd", unique("p")) for _ in range(2_100)]
    for breaker in breakers:
        breaker.force_open()
        with pytest.raises(vr.CircuitOpenError):
            breaker.call(flaky(0))
    metering = Metered(default_limits=True)
    otel.instrument(tracer_provider=TracerProvider(), meter_provider=metering.provider)
    try:
        name = unique("crowded")
        policy = vr.PolicyBuilder(name).with_retry(RETRY3).with_clock(vr.ManualClock()).build()
        assert policy.execute(flaky(1)) == 42
        assert metering.value("virtrigaud.resilience.events", **{
            "event.name": "retry", "virtrigaud.policy.name": name}) == 1
        assert any(point.attributes.get("otel.metric.overflow")  # the limit was reached
                   for point in metering.points("virtrigaud.resilience.events"))
    finally:
        otel.uninstrument()
        metering.provider.shutdown()
