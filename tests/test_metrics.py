"""The prometheus collector (``vr.metrics``): series, labels, lifecycle, registration.

The collector reports every breaker, bucket, bulkhead and retrier alive in the
process, so each test gives its objects unique labels (:func:`unique`) and
looks only at those. Time moves only through a ManualClock; nothing sleeps.
Since every scrape renders the whole process, the module runs in an
interpreter of its own in a longer session (tests/fresh_interpreter.py).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from uuid import uuid4

import prometheus_client
import pytest
import virtrigaud_resilience as vr
from prometheus_client.parser import text_string_to_metric_families
from virtrigaud_resilience import breaker as breaker_module

pytestmark = pytest.mark.fresh_interpreter

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

STATE = "virtrigaud_circuit_breaker_state"
FAILURES = "virtrigaud_circuit_breaker_failures_total"
CALLS = "virtrigaud_circuit_breaker_calls_total"
TRANSITIONS = "virtrigaud_circuit_breaker_transitions_total"
REQUESTS = "virtrigaud_rate_limiter_requests_total"
RETRIES = "virtrigaud_retry_attempts_total"
EXHAUSTED = "virtrigaud_retry_exhausted_total"
IN_FLIGHT = "virtrigaud_bulkhead_in_flight"
BULKHEAD_REJECTED = "virtrigaud_bulkhead_rejected_total"

#: family name (as the parser reports it) -> type
FAMILY_TYPES = {
    "virtrigaud_circuit_breaker_state": "gauge",
    "virtrigaud_circuit_breaker_failures": "counter",
    "virtrigaud_circuit_breaker_calls": "counter",
    "virtrigaud_circuit_breaker_transitions": "counter",
    "virtrigaud_rate_limiter_requests": "counter",
    "virtrigaud_retry_attempts": "counter",
    "virtrigaud_retry_exhausted": "counter",
    "virtrigaud_bulkhead_in_flight": "gauge",
    "virtrigaud_bulkhead_rejected": "counter",
    "virtrigaud_retry_budget_exhausted": "counter",
    "virtrigaud_retry_budget_available": "gauge",
}


class Boom(Exception):
    """A plain failure: counts toward opening a breaker."""


def fail() -> None:
    raise Boom("boom")


def ok() -> str:
    return "ok"


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid4().hex}"


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(registry: prometheus_client.CollectorRegistry) -> Samples:
    return parse(prometheus_client.generate_latest(registry).decode())


def key(series: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (series, frozenset(labels.items()))


def mine(samples: Samples, **labels: str) -> Samples:
    """The samples carrying all of ``labels``."""
    wanted = set(labels.items())
    return {k: v for k, v in samples.items() if wanted <= k[1]}


def breaker_config(threshold: int = 3, reset: float = 30.0, half_open: int = 1) -> vr.BreakerConfig:
    return vr.BreakerConfig(failure_threshold=threshold, reset_timeout=reset,
                            half_open_max_calls=half_open)


def fail_times(cb: vr.CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Boom):
            cb.call(fail)


@pytest.fixture
def registry() -> Iterator[prometheus_client.CollectorRegistry]:
    """A fresh registry with the collector registered (unregistered afterwards)."""
    reg = prometheus_client.CollectorRegistry()
    vr.metrics.register(reg)
    try:
        yield reg
    finally:
        vr.metrics.unregister(reg)


# ------------------------------------------------------------------ breakers --


def test_breaker_outage_across_scrapes(
    registry: prometheus_client.CollectorRegistry, clock: vr.ManualClock
) -> None:
    prov = unique()
    labels = {"provider_type": "vsphere", "provider": prov}
    cb = vr.CircuitBreaker("outage", "vsphere", prov, breaker_config(), clock=clock)

    def state() -> float:
        return scrape(registry)[key(STATE, **labels)]

    assert cb.call(ok) == "ok"
    assert cb.call(ok) == "ok"
    assert state() == 0

    fail_times(cb, 3)
    assert cb.state is vr.BreakerState.OPEN
    assert state() == 2
    with pytest.raises(vr.CircuitOpenError):
        cb.call(ok)
    assert state() == 2

    clock.advance(30)
    permit = cb.try_acquire()
    assert permit is not None
    assert state() == 1
    permit.success()
    assert cb.state is vr.BreakerState.CLOSED  # type: ignore[comparison-overlap]
    samples = scrape(registry)
    assert samples[key(STATE, **labels)] == 0

    assert samples[key(FAILURES, **labels)] == 3
    assert samples[key(CALLS, outcome="success", **labels)] == 3
    assert samples[key(CALLS, outcome="failure", **labels)] == 3
    assert samples[key(CALLS, outcome="rejected", **labels)] == 1
    for to in ("open", "half_open", "closed"):
        assert samples[key(TRANSITIONS, to=to, **labels)] == 1
    # The mode gauge and the calls by kind (no rate gauges and no slow calls:
    # a consecutive breaker judges neither).
    assert samples[key("virtrigaud_circuit_breaker_mode", **labels)] == 0
    for kind, value in (("successful", 3), ("failed", 3), ("not_permitted", 1), ("ignored", 0)):
        assert samples[key("virtrigaud_circuit_breaker_calls_by_kind_total", kind=kind,
                           **labels)] == value
    # Exactly these series for these labels, no more.
    assert len(mine(samples, **labels)) == 1 + 1 + 3 + 3 + 1 + 4


def test_help_and_type_lines(registry: prometheus_client.CollectorRegistry) -> None:
    # One object of each kind, so every family has at least one sample.
    prov = unique()
    objects = (vr.CircuitBreaker("h", "t", prov), vr.TokenBucket(provider_type="t", provider=prov),
               vr.Bulkhead(1, provider_type="t", provider=prov), vr.Retrier(name=prov),
               vr.RetryBudget.tokens(provider_type="t", provider=prov))
    text = prometheus_client.generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in FAMILY_TYPES.items():
        assert families[name].type == kind, name
        assert families[name].documentation, name
        # The text format names counters with their _total suffix in HELP and TYPE.
        exposed = f"{name}_total" if kind == "counter" else name
        assert f"# TYPE {exposed} {kind}\n" in text
        assert f"# HELP {exposed} {families[name].documentation}\n" in text
    assert "0 closed, 1 half-open, 2 open" in families["virtrigaud_circuit_breaker_state"].documentation
    # Counters are exposed with the _total suffix, gauges without.
    assert f"{FAILURES}{{" in text and f"{STATE}{{" in text
    assert f"{IN_FLIGHT}{{" in text and f"{BULKHEAD_REJECTED}{{" in text
    del objects


def test_breakers_sharing_labels_show_the_worst_state_and_sum_counters(
    registry: prometheus_client.CollectorRegistry, clock: vr.ManualClock
) -> None:
    prov = unique()
    labels = {"provider_type": "kvm", "provider": prov}
    a = vr.CircuitBreaker("a", "kvm", prov, breaker_config(threshold=2), clock=clock)
    b = vr.CircuitBreaker("b", "kvm", prov, breaker_config(threshold=5), clock=clock)
    fail_times(a, 2)
    fail_times(b, 1)
    b.call(ok)
    with pytest.raises(vr.CircuitOpenError):
        a.call(ok)
    assert (a.state, b.state) == (vr.BreakerState.OPEN, vr.BreakerState.CLOSED)

    samples = scrape(registry)
    assert samples[key(STATE, **labels)] == 2
    assert samples[key(FAILURES, **labels)] == 3
    assert samples[key(CALLS, outcome="failure", **labels)] == 3
    assert samples[key(CALLS, outcome="success", **labels)] == 1
    assert samples[key(CALLS, outcome="rejected", **labels)] == 1
    assert samples[key(TRANSITIONS, to="open", **labels)] == 1

    # Half-open beats closed; open beats half-open.
    clock.advance(30)
    permit = a.try_acquire()
    assert permit is not None and a.state is vr.BreakerState.HALF_OPEN
    assert scrape(registry)[key(STATE, **labels)] == 1
    b.force_open()
    assert scrape(registry)[key(STATE, **labels)] == 2
    b.reset()
    permit.success()
    assert scrape(registry)[key(STATE, **labels)] == 0


def test_manual_override_counts_transitions(
    registry: prometheus_client.CollectorRegistry, clock: vr.ManualClock
) -> None:
    prov = unique()
    labels = {"provider_type": "manual", "provider": prov}
    cb = vr.CircuitBreaker("m", "manual", prov, breaker_config(), clock=clock)
    cb.force_open()
    samples = scrape(registry)
    assert samples[key(STATE, **labels)] == 2  # held open reads as open
    assert samples[key(TRANSITIONS, to="open", **labels)] == 1
    with pytest.raises(vr.CircuitOpenError):
        cb.call(ok)
    cb.reset()
    samples = scrape(registry)
    assert samples[key(STATE, **labels)] == 0
    assert samples[key(TRANSITIONS, to="closed", **labels)] == 1
    assert samples[key(TRANSITIONS, to="half_open", **labels)] == 0
    assert samples[key(CALLS, outcome="rejected", **labels)] == 1


def test_breaker_without_labels_reports_empty_labels(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    cb = vr.CircuitBreaker(unique("unlabelled"))
    samples = scrape(registry)
    assert key(STATE, provider_type="", provider="") in samples
    del cb


# ------------------------------------------------------------ rate limiters --


def test_rate_limiter_outcomes(
    registry: prometheus_client.CollectorRegistry, clock: vr.ManualClock
) -> None:
    prov = unique()
    labels = {"provider_type": "vsphere", "provider": prov}
    bucket = vr.TokenBucket(1.0, 2, clock=clock, provider_type="vsphere", provider=prov)

    assert bucket.try_acquire()
    assert bucket.try_acquire()
    assert not bucket.try_acquire()
    assert not bucket.acquire(timeout=0)  # would have to wait: refused
    samples = scrape(registry)
    assert samples[key(REQUESTS, outcome="admitted", **labels)] == 2
    assert samples[key(REQUESTS, outcome="rejected", **labels)] == 2
    assert samples[key(REQUESTS, outcome="waited", **labels)] == 0

    reservation = bucket.reserve()
    assert reservation.delay > 0
    assert bucket.acquire()  # waits through the ManualClock
    assert clock.now() > 0
    clock.advance(10)  # refill
    assert bucket.reserve().delay == 0  # no wait: admitted, not waited
    samples = scrape(registry)
    assert samples[key(REQUESTS, outcome="admitted", **labels)] == 3
    assert samples[key(REQUESTS, outcome="rejected", **labels)] == 2
    assert samples[key(REQUESTS, outcome="waited", **labels)] == 2
    assert len(mine(samples, **labels)) == 3


def test_rate_limiter_registry_buckets_carry_their_labels(
    registry: prometheus_client.CollectorRegistry, clock: vr.ManualClock
) -> None:
    prov_a, prov_b = unique(), unique()
    limiters = vr.RateLimiterRegistry(qps=1.0, burst=1, clock=clock)
    limiters.check("vsphere", prov_a)
    with pytest.raises(vr.RateLimitError):
        limiters.check("vsphere", prov_a)
    limiters.check("libvirt", prov_b)
    assert limiters.get("vsphere", prov_a).provider == prov_a

    samples = scrape(registry)
    assert samples[key(REQUESTS, outcome="admitted", provider_type="vsphere", provider=prov_a)] == 1
    assert samples[key(REQUESTS, outcome="rejected", provider_type="vsphere", provider=prov_a)] == 1
    assert samples[key(REQUESTS, outcome="admitted", provider_type="libvirt", provider=prov_b)] == 1
    assert samples[key(REQUESTS, outcome="rejected", provider_type="libvirt", provider=prov_b)] == 0
    assert not mine(samples, provider_type="libvirt", provider=prov_a)


def test_waiting_policy_counts_waited_not_rejected(
    registry: prometheus_client.CollectorRegistry, clock: vr.ManualClock
) -> None:
    prov = unique()
    labels = {"provider_type": "wait", "provider": prov}
    bucket = vr.TokenBucket(1.0, 1, clock=clock, provider_type="wait", provider=prov)
    policy = (vr.PolicyBuilder(unique("waits")).with_rate_limiter(bucket, wait=True)
              .with_clock(clock).build())
    assert policy.execute(ok) == "ok"
    assert policy.execute(ok) == "ok"  # waits 1 s on the clock
    assert clock.now() == 1.0
    samples = scrape(registry)
    assert (samples[key(REQUESTS, outcome="admitted", **labels)],
            samples[key(REQUESTS, outcome="waited", **labels)],
            samples[key(REQUESTS, outcome="rejected", **labels)]) == (1, 1, 0)


def test_rate_limited_policy_counts_a_rejection(
    registry: prometheus_client.CollectorRegistry, clock: vr.ManualClock
) -> None:
    prov = unique()
    labels = {"provider_type": "pol", "provider": prov}
    bucket = vr.TokenBucket(1.0, 1, clock=clock, provider_type="pol", provider=prov)
    policy = vr.PolicyBuilder(unique("limited")).with_rate_limiter(bucket).build()
    assert policy.execute(ok) == "ok"
    with pytest.raises(vr.RateLimitError):
        policy.execute(ok)
    samples = scrape(registry)
    assert samples[key(REQUESTS, outcome="admitted", **labels)] == 1
    assert samples[key(REQUESTS, outcome="rejected", **labels)] == 1
    assert samples[key(REQUESTS, outcome="waited", **labels)] == 0


# -------------------------------------------------------------------- retry --


def retry_policy(name: str, clock: vr.ManualClock) -> vr.Policy:
    return (vr.PolicyBuilder(name)
            .with_retry(vr.RetryConfig(max_attempts=3, base_delay=0.01))
            .with_clock(clock)
            .build())


def flaky(failures: int) -> Callable[[], str]:
    """A function that raises UnavailableError ``failures`` times, then returns "done"."""
    left = [failures]

    def call() -> str:
        if left[0] > 0:
            left[0] -= 1
            raise vr.UnavailableError("down")
        return "done"

    return call


def test_retry_attempts_and_exhaustion(
    registry: prometheus_client.CollectorRegistry, clock: vr.ManualClock
) -> None:
    recovering, dead = unique("recovers"), unique("dead")
    policy = retry_policy(recovering, clock)
    assert policy.execute(flaky(2)) == "done"

    doomed = retry_policy(dead, clock)
    with pytest.raises(vr.UnavailableError):
        doomed.execute(flaky(10**6))

    samples = scrape(registry)
    assert samples[key(RETRIES, policy=recovering)] == 2
    assert samples[key(EXHAUSTED, policy=recovering)] == 0
    assert samples[key(RETRIES, policy=dead)] == 2
    assert samples[key(EXHAUSTED, policy=dead)] == 1
    # The retry series carry only the policy label.
    assert not any(("provider", recovering) in labels for _, labels in samples)


def test_retrier_name_is_the_policy_label(
    registry: prometheus_client.CollectorRegistry, clock: vr.ManualClock
) -> None:
    name = unique("retrier")
    retrier = vr.Retrier(vr.RetryConfig(max_attempts=4, base_delay=0.01), clock=clock, name=name)
    assert retrier.call(flaky(3)) == "done"
    assert scrape(registry)[key(RETRIES, policy=name)] == 3


# ----------------------------------------------------------------- bulkhead --


def test_bulkhead_in_flight_and_rejections(registry: prometheus_client.CollectorRegistry) -> None:
    prov = unique()
    labels = {"provider_type": "vsphere", "provider": prov}
    bulkhead = vr.Bulkhead(1, provider_type="vsphere", provider=prov)
    samples = scrape(registry)
    assert samples[key(IN_FLIGHT, **labels)] == 0
    assert samples[key(BULKHEAD_REJECTED, **labels)] == 0

    with bulkhead:
        assert scrape(registry)[key(IN_FLIGHT, **labels)] == 1
        with pytest.raises(vr.RateLimitError, match="bulkhead full"):
            bulkhead.enter()
        assert not bulkhead.try_enter()
    samples = scrape(registry)
    assert samples[key(IN_FLIGHT, **labels)] == 0
    assert samples[key(BULKHEAD_REJECTED, **labels)] == 2


async def test_bulkhead_queued_waiter_is_not_a_rejection(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    prov = unique()
    labels = {"provider_type": "kvm", "provider": prov}
    bulkhead = vr.Bulkhead(1, max_queue=1, provider_type="kvm", provider=prov)
    bulkhead.enter()
    entered = asyncio.Event()
    leave = asyncio.Event()

    async def waiter() -> None:
        async with bulkhead:
            entered.set()
            await leave.wait()

    task = asyncio.create_task(waiter())
    for _ in range(5):
        await asyncio.sleep(0)
    assert bulkhead.waiting == 1
    bulkhead.exit()
    await asyncio.wait_for(entered.wait(), 5)
    samples = scrape(registry)
    assert samples[key(IN_FLIGHT, **labels)] == 1
    assert samples[key(BULKHEAD_REJECTED, **labels)] == 0
    leave.set()
    await task
    samples = scrape(registry)
    assert samples[key(IN_FLIGHT, **labels)] == 0
    assert samples[key(BULKHEAD_REJECTED, **labels)] == 0


# ---------------------------------------------------------------- lifecycle --


def test_dropped_breakers_keep_their_counters(
    registry: prometheus_client.CollectorRegistry, clock: vr.ManualClock
) -> None:
    prov = unique()
    labels = {"provider_type": "vm", "provider": prov}
    breakers = [vr.CircuitBreaker(f"vm-{i}", "vm", prov, breaker_config(threshold=2), clock=clock)
                for i in range(20)]
    for cb in breakers:
        fail_times(cb, 2)  # opens each one
    before = scrape(registry)
    assert before[key(STATE, **labels)] == 2
    assert before[key(FAILURES, **labels)] == 40
    assert before[key(TRANSITIONS, to="open", **labels)] == 20

    del breakers, cb
    gc.collect()
    after = scrape(registry)
    assert key(STATE, **labels) not in after  # no live breaker, no gauge
    for series, value in mine(before, **labels).items():
        if series[0] not in (STATE, "virtrigaud_circuit_breaker_mode"):  # the gauges
            assert after[series] == value, series
    assert len(mine(after, **labels)) == len(mine(before, **labels)) - 2  # the two gauges

    newcomer = vr.CircuitBreaker("vm-new", "vm", prov, breaker_config(threshold=2), clock=clock)
    fail_times(newcomer, 1)
    newcomer.call(ok)
    samples = scrape(registry)
    assert samples[key(STATE, **labels)] == 0
    assert samples[key(FAILURES, **labels)] == 41
    assert samples[key(CALLS, outcome="failure", **labels)] == 41
    assert samples[key(CALLS, outcome="success", **labels)] == 1
    assert samples[key(TRANSITIONS, to="open", **labels)] == 20

    del newcomer
    gc.collect()
    samples = scrape(registry)
    assert samples[key(FAILURES, **labels)] == 41
    assert key(STATE, **labels) not in samples


def test_dropped_buckets_keep_their_counters(
    registry: prometheus_client.CollectorRegistry, clock: vr.ManualClock
) -> None:
    prov = unique()
    labels = {"provider_type": "vm", "provider": prov}
    buckets = [vr.TokenBucket(1.0, 1, clock=clock, provider_type="vm", provider=prov)
               for _ in range(10)]
    for bucket in buckets:
        assert bucket.try_acquire()
        assert not bucket.try_acquire()
    del buckets, bucket
    gc.collect()
    samples = scrape(registry)
    assert samples[key(REQUESTS, outcome="admitted", **labels)] == 10
    assert samples[key(REQUESTS, outcome="rejected", **labels)] == 10

    again = vr.TokenBucket(1.0, 1, clock=clock, provider_type="vm", provider=prov)
    assert again.try_acquire()
    assert scrape(registry)[key(REQUESTS, outcome="admitted", **labels)] == 11


def test_dropped_retriers_keep_their_counters(
    registry: prometheus_client.CollectorRegistry, clock: vr.ManualClock
) -> None:
    name = unique("policy")
    for _ in range(3):
        policy = retry_policy(name, clock)
        with pytest.raises(vr.UnavailableError):
            policy.execute(flaky(10**6))
    del policy
    gc.collect()
    samples = scrape(registry)
    assert samples[key(RETRIES, policy=name)] == 6
    assert samples[key(EXHAUSTED, policy=name)] == 3

    assert retry_policy(name, clock).execute(flaky(1)) == "done"
    gc.collect()
    samples = scrape(registry)
    assert samples[key(RETRIES, policy=name)] == 7
    assert samples[key(EXHAUSTED, policy=name)] == 3


def test_dropped_bulkheads_keep_rejections_and_lose_the_gauge(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    prov = unique()
    labels = {"provider_type": "vm", "provider": prov}
    bulkhead = vr.Bulkhead(1, provider_type="vm", provider=prov)
    bulkhead.enter()
    assert not bulkhead.try_enter()
    bulkhead.exit()
    del bulkhead
    gc.collect()
    samples = scrape(registry)
    assert key(IN_FLIGHT, **labels) not in samples
    assert samples[key(BULKHEAD_REJECTED, **labels)] == 1


@pytest.mark.parametrize(
    ("construct", "error"),
    [
        pytest.param(lambda p: vr.CircuitBreaker("x", "t", p, config="bad"),  # type: ignore[arg-type]
                     TypeError,
                     id="breaker-config"),
        pytest.param(lambda p: vr.CircuitBreaker("x", "t", p, clock="bad"),  # type: ignore[arg-type]
                     TypeError,
                     id="breaker-clock"),
        pytest.param(lambda p: vr.TokenBucket(-1.0, provider_type="t", provider=p), ValueError,
                     id="bucket-qps"),
        pytest.param(lambda p: vr.TokenBucket(1.0, 0, provider_type="t", provider=p), ValueError,
                     id="bucket-burst"),
        pytest.param(lambda p: vr.Bulkhead(0, provider_type="t", provider=p), ValueError,
                     id="bulkhead-size"),
        pytest.param(lambda p: vr.Retrier(name=p, on_retry=42),  # type: ignore[arg-type]
                     TypeError,
                     id="retrier-on-retry"),
    ],
)
def test_failed_constructor_tracks_nothing(
    registry: prometheus_client.CollectorRegistry,
    construct: Callable[[str], object],
    error: type[Exception],
) -> None:
    prov = unique()
    unraisable: list[object] = []
    previous = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with pytest.raises(error):
            construct(prov)
        gc.collect()
    finally:
        sys.unraisablehook = previous
    assert unraisable == []
    samples = scrape(registry)
    assert mine(samples, provider=prov) == {}
    assert mine(samples, policy=prov) == {}


def test_failed_policy_constructor_tracks_nothing(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    name = unique("bad-policy")
    with pytest.raises(ValueError, match="timeout"):
        vr.PolicyBuilder(name).with_timeout(-1).build()
    gc.collect()
    assert mine(scrape(registry), policy=name) == {}


def test_breaker_dropped_during_a_scrape_is_counted_once(
    registry: prometheus_client.CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    prov = unique()
    labels = {"provider_type": "race", "provider": prov}
    holder = [vr.CircuitBreaker(f"r{i}", "race", prov) for i in range(3)]
    for cb in holder:
        fail_times(cb, 1)
    del cb
    census = breaker_module.BREAKERS
    original = census.live

    def live_then_drop() -> list[vr.CircuitBreaker]:
        snapshot = original()
        holder.clear()  # another thread drops its last references right now
        return snapshot

    monkeypatch.setattr(census, "live", live_then_drop)
    first = scrape(registry)[key(FAILURES, **labels)]
    monkeypatch.undo()
    assert holder == []  # the scrape did read the live objects through live()
    gc.collect()
    second = scrape(registry)[key(FAILURES, **labels)]
    assert (first, second) == (3, 3)


# ------------------------------------------------------------- registration --


def test_register_twice_refused() -> None:
    reg = prometheus_client.CollectorRegistry()
    collector = vr.metrics.register(reg)
    try:
        assert isinstance(collector, vr.metrics.ResilienceCollector)
        with pytest.raises(ValueError, match="already registered"):
            vr.metrics.register(reg)
        vr.metrics.unregister(reg)
        with pytest.raises(ValueError, match="not registered"):
            vr.metrics.unregister(reg)
        again = vr.metrics.register(reg)
        assert again is not collector
        cb = vr.CircuitBreaker("r", "reg", unique())
        assert key(STATE, provider_type="reg", provider=cb.provider) in scrape(reg)
    finally:
        vr.metrics.unregister(reg)


def test_unregister_removes_the_series() -> None:
    reg = prometheus_client.CollectorRegistry()
    vr.metrics.register(reg)
    cb = vr.CircuitBreaker("u", "unreg", unique())
    assert mine(scrape(reg), provider=cb.provider)
    vr.metrics.unregister(reg)
    assert scrape(reg) == {}


def test_unregister_when_never_registered() -> None:
    with pytest.raises(ValueError, match="not registered"):
        vr.metrics.unregister(prometheus_client.CollectorRegistry())


@pytest.mark.parametrize("bad", ["nope", 42, object()])
def test_register_rejects_a_non_registry(bad: object) -> None:
    with pytest.raises(TypeError, match="CollectorRegistry"):
        vr.metrics.register(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="CollectorRegistry"):
        vr.metrics.unregister(bad)  # type: ignore[arg-type]


def test_register_refused_when_a_name_clashes() -> None:
    reg = prometheus_client.CollectorRegistry()
    squatter = prometheus_client.Gauge("virtrigaud_circuit_breaker_state", "not ours",
                                       registry=reg)
    with pytest.raises(ValueError):
        vr.metrics.register(reg)
    # The failed registration left nothing behind.
    with pytest.raises(ValueError, match="not registered"):
        vr.metrics.unregister(reg)
    reg.unregister(squatter)
    vr.metrics.register(reg)
    vr.metrics.unregister(reg)


def test_register_again_after_a_direct_registry_unregister() -> None:
    # The registry is the truth: taking our collector out by hand does not
    # leave register()/unregister() believing it is still there.
    reg = prometheus_client.CollectorRegistry()
    collector = vr.metrics.register(reg)
    reg.unregister(collector)
    again = vr.metrics.register(reg)
    reg.unregister(again)
    vr.metrics.unregister(reg)  # tolerates the collector being gone already
    with pytest.raises(ValueError, match="not registered"):
        vr.metrics.unregister(reg)


@pytest.mark.parametrize("make", [
    lambda: vr.TokenBucket(1.0, 1, provider_type="a", provider="b"),
    lambda: vr.Bulkhead(1, provider_type="a", provider="b"),
    lambda: vr.CircuitBreaker("n", "a", "b"),
], ids=["bucket", "bulkhead", "breaker"])
@pytest.mark.parametrize("label", ["provider_type", "provider"])
def test_labels_are_read_only(make: Callable[[], object], label: str) -> None:
    # A label changed later would move live counts between series (and a
    # non-str one would break every scrape).
    obj = make()
    with pytest.raises(AttributeError):
        setattr(obj, label, 5)
    assert getattr(obj, label) in ("a", "b")


def test_retrier_name_is_read_only() -> None:
    r = vr.Retrier(name="mine")
    with pytest.raises(AttributeError):
        r.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError, match="Retrier name must be a str, got int 5"):
        vr.Retrier(name=5)  # type: ignore[arg-type]


def test_policy_bulkhead_from_a_size_takes_the_breaker_labels(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    prov = unique()
    policy = (vr.PolicyBuilder(unique("p")).with_bulkhead(1)
              .with_circuit_breaker(vr.CircuitBreaker("b", "sized", prov)).build())
    assert policy.bulkhead is not None
    assert (policy.bulkhead.provider_type, policy.bulkhead.provider) == ("sized", prov)
    with pytest.raises(ValueError, match="Bulkhead max_concurrent must be >= 1, got 0"):
        vr.PolicyBuilder("p").with_bulkhead(0)  # still checked at once
    policy.bulkhead.enter()
    with pytest.raises(vr.RateLimitError, match="bulkhead full"):
        policy.execute(ok)
    got = mine(scrape(registry), provider=prov)
    assert got[key(IN_FLIGHT, provider_type="sized", provider=prov)] == 1
    assert got[key(BULKHEAD_REJECTED, provider_type="sized", provider=prov)] == 1
    policy.bulkhead.exit()


def test_star_import_works_without_prometheus_client() -> None:
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "from virtrigaud_resilience import *\n"
            "import virtrigaud_resilience as vr\n"
            "try:\n    vr.metrics\nexcept ImportError as e:\n    print('needs:', e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "needs: virtrigaud_resilience.metrics needs prometheus-client" in result.stdout


def test_two_registries_scrape_the_same_values(clock: vr.ManualClock) -> None:
    first, second = prometheus_client.CollectorRegistry(), prometheus_client.CollectorRegistry()
    vr.metrics.register(first)
    vr.metrics.register(second)
    try:
        prov = unique()
        cb = vr.CircuitBreaker("two", "dual", prov, breaker_config(), clock=clock)
        fail_times(cb, 3)
        bucket = vr.TokenBucket(1.0, 1, clock=clock, provider_type="dual", provider=prov)
        bucket.try_acquire()
        bucket.try_acquire()
        a, b = mine(scrape(first), provider=prov), mine(scrape(second), provider=prov)
        assert a == b
        assert a[key(STATE, provider_type="dual", provider=prov)] == 2
        assert a[key(FAILURES, provider_type="dual", provider=prov)] == 3
        assert a[key(REQUESTS, outcome="rejected", provider_type="dual", provider=prov)] == 1
    finally:
        vr.metrics.unregister(first)
        vr.metrics.unregister(second)


def test_default_registry(clock: vr.ManualClock) -> None:
    vr.metrics.register()
    try:
        with pytest.raises(ValueError, match="already registered"):
            vr.metrics.register(prometheus_client.REGISTRY)
        cb = vr.CircuitBreaker("default", "def", unique(), clock=clock)
        samples = parse(prometheus_client.generate_latest().decode())
        assert samples[key(STATE, provider_type="def", provider=cb.provider)] == 0
    finally:
        vr.metrics.unregister()


# --------------------------------------------------------------------- HTTP --


def test_http_scrape(registry: prometheus_client.CollectorRegistry, clock: vr.ManualClock) -> None:
    prov = unique()
    labels = {"provider_type": "http", "provider": prov}
    cb = vr.CircuitBreaker("http", "http", prov, breaker_config(), clock=clock)
    fail_times(cb, 3)
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            samples = parse(response.read().decode())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert samples[key(STATE, **labels)] == 2
    assert samples[key(FAILURES, **labels)] == 3
    assert samples[key(TRANSITIONS, to="open", **labels)] == 1


# ------------------------------------------------------------------ threads --


def test_concurrent_calls_churn_and_scrapes(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    """4 threads call, take tokens and create/drop breakers while the main thread scrapes."""
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # interleave the threads finely
    prov = unique("threads")
    churn = unique("churn")
    labels = {"provider_type": "hot", "provider": prov}
    churn_labels = {"provider_type": "hot", "provider": churn}
    # A threshold nobody reaches: every call runs, so the outcome counts are exact.
    config = vr.BreakerConfig(failure_threshold=4_000_000)
    cb = vr.CircuitBreaker("hot", "hot", prov, config)
    clock = vr.ManualClock()  # never advanced: the bucket admits exactly its burst
    burst = 500
    bucket = vr.TokenBucket(1.0, burst, clock=clock, provider_type="hot", provider=prov)
    minimum = 1_000  # calls per worker, whatever the scraper does
    stop = threading.Event()
    made = {"success": 0, "failure": 0, "bucket": 0, "churned": 0}
    errors: list[BaseException] = []

    def keep_going(count: int) -> bool:
        return count < minimum or not stop.is_set()

    def succeed() -> None:
        while keep_going(made["success"]):
            cb.call(ok)
            made["success"] += 1

    def failing() -> None:
        while keep_going(made["failure"]):
            with pytest.raises(Boom):
                cb.call(fail)
            made["failure"] += 1

    def limiter() -> None:
        while keep_going(made["bucket"]):
            bucket.try_acquire()
            made["bucket"] += 1

    def churner() -> None:
        while keep_going(made["churned"] * 10):
            temps = [vr.CircuitBreaker(f"temp-{i}", "hot", churn, config) for i in range(5)]
            for temp in temps:
                fail_times(temp, 2)
                temp.call(ok)
            made["churned"] += len(temps)
            del temps, temp

    start = threading.Barrier(5)

    def run(target: Callable[[], None]) -> None:
        try:
            start.wait(10)
            target()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(target,))
               for target in (succeed, failing, limiter, churner)]
    for t in threads:
        t.start()
    history: list[Samples] = []
    try:
        start.wait(10)
        for _ in range(50):
            history.append(mine(scrape(registry), provider_type="hot"))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        sys.setswitchinterval(previous_interval)
    assert errors == []
    assert not any(t.is_alive() for t in threads)
    gc.collect()
    final = mine(scrape(registry), provider_type="hot")
    history.append(final)
    # The scrapes really overlapped the calls.
    seen = {h.get(key(CALLS, outcome="success", **labels)) for h in history}
    assert len(seen) > 2

    for earlier, later in itertools.pairwise(history):
        for series, value in earlier.items():
            if series[0] in (STATE, IN_FLIGHT):
                continue
            assert later.get(series, value) >= value, series

    assert final[key(CALLS, outcome="success", **labels)] == made["success"]
    assert final[key(CALLS, outcome="failure", **labels)] == made["failure"]
    assert final[key(FAILURES, **labels)] == made["failure"]
    assert final[key(CALLS, outcome="rejected", **labels)] == 0
    assert final[key(REQUESTS, outcome="admitted", **labels)] == burst
    assert final[key(REQUESTS, outcome="rejected", **labels)] == made["bucket"] - burst
    assert final[key(STATE, **labels)] == 0

    # The churned breakers are all gone; their counters are folded, exactly once each.
    assert key(STATE, **churn_labels) not in final
    fresh = prometheus_client.CollectorRegistry()
    vr.metrics.register(fresh)
    try:
        truth = scrape(fresh)
    finally:
        vr.metrics.unregister(fresh)
    assert truth[key(FAILURES, **churn_labels)] == 2 * made["churned"]
    assert truth[key(CALLS, outcome="success", **churn_labels)] == made["churned"]
    assert truth[key(TRANSITIONS, to="open", **churn_labels)] == 0
    # The scraping collector says the same: no breaker dropped mid-scrape was
    # counted twice (see test_breaker_dropped_during_a_scrape_is_counted_once).
    assert final[key(FAILURES, **churn_labels)] == 2 * made["churned"]
    assert final[key(CALLS, outcome="success", **churn_labels)] == made["churned"]


# -------------------------------------------------------------------- scale --


def test_scrape_of_ten_thousand_breakers(registry: prometheus_client.CollectorRegistry) -> None:
    prov = unique("many")
    groups = 100
    breakers = [vr.CircuitBreaker(f"vm-{i}", f"g{i % groups}", prov,
                                  vr.BreakerConfig(failure_threshold=2))
                for i in range(10_000)]
    for cb in breakers[:groups]:  # the first breaker of each group opens
        fail_times(cb, 2)
    for i, cb in enumerate(breakers[groups:], groups):
        if i % 2:
            fail_times(cb, 1)
        else:
            cb.call(ok)
    samples = mine(scrape(registry), provider=prov)
    others = 10_000 // groups - 1
    for g in range(groups):
        labels = {"provider_type": f"g{g}", "provider": prov}
        # Breakers in group g have i = g, g+100, ...: all even or all odd.
        successes = others if g % 2 == 0 else 0
        failures = others if g % 2 else 0
        assert samples[key(CALLS, outcome="success", **labels)] == successes
        assert samples[key(FAILURES, **labels)] == failures + 2
        assert samples[key(TRANSITIONS, to="open", **labels)] == 1
        assert samples[key(STATE, **labels)] == 2
    assert len([k for k in samples if k[0] == STATE]) == groups
    del breakers, cb
    gc.collect()


def test_window_breakers_rates_mode_and_calls_by_kind(
    registry: prometheus_client.CollectorRegistry, clock: vr.ManualClock
) -> None:
    prov = unique()
    labels = {"provider_type": "vm", "provider": prov}
    config = vr.BreakerConfig(window=vr.CountWindow(10), minimum_calls=4,
                              slow_call_duration=1.0, half_open_lease=None)
    cb = vr.CircuitBreaker("w", "vm", prov, config, clock=clock)

    def slow() -> None:
        clock.advance(1.0)

    cb.call(slow)
    fail_times(cb, 1)
    samples = scrape(registry)
    assert samples[key("virtrigaud_circuit_breaker_failure_rate", **labels)] == -1
    assert samples[key("virtrigaud_circuit_breaker_slow_call_rate", **labels)] == -1
    cb.call(lambda: None)
    cb.call(lambda: None)
    samples = scrape(registry)
    assert samples[key("virtrigaud_circuit_breaker_failure_rate", **labels)] == 0.25
    assert samples[key("virtrigaud_circuit_breaker_slow_call_rate", **labels)] == 0.25
    cb.disable()
    fail_times(cb, 2)
    cb.force_open()
    with pytest.raises(vr.CircuitOpenError):
        cb.call(lambda: None)
    samples = scrape(registry)
    assert samples[key("virtrigaud_circuit_breaker_mode", **labels)] == 3  # forced open
    for kind, value in (("successful", 3), ("failed", 3), ("slow", 1), ("not_permitted", 1),
                        ("ignored", 2)):
        assert samples[key("virtrigaud_circuit_breaker_calls_by_kind_total", kind=kind,
                           **labels)] == value, kind
    cb.reset()
    cb.metrics_only()
    assert scrape(registry)[key("virtrigaud_circuit_breaker_mode", **labels)] == 2

