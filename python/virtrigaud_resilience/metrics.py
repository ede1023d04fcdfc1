"""Prometheus metrics, read from the native counters when scraped.

::

    import prometheus_client
    import virtrigaud_resilience as vr

    vr.metrics.register()                    # into prometheus_client.REGISTRY
    prometheus_client.start_http_server(9100)

Calls pay nothing for this: breakers, buckets and bulkheads count in native
atomics whether or not metrics are registered, and the collector reads each
live object once per scrape. Needs the ``prometheus`` extra
(``prometheus-client``).

The series, over every breaker, bucket, bulkhead and retrier of the process:

========================================================  =======  ==========================================
series                                                    type     value
========================================================  =======  ==========================================
``virtrigaud_circuit_breaker_state``                      gauge    0 closed, 1 half-open, 2 open
``virtrigaud_circuit_breaker_failures_total``             counter  every recorded failure (the guide's series)
``virtrigaud_circuit_breaker_calls_total{outcome}``       counter  ``success``, ``failure``, ``rejected``
``virtrigaud_circuit_breaker_transitions_total{to}``      counter  ``closed``, ``half_open``, ``open``
``virtrigaud_circuit_breaker_failure_rate``               gauge    window mode only: failed / outcomes in
                                                                   the window, -1 below minimum_calls
``virtrigaud_circuit_breaker_slow_call_rate``             gauge    window mode only: slow / outcomes,
                                                                   likewise
``virtrigaud_circuit_breaker_mode``                       gauge    0 normal, 1 disabled, 2 metrics only,
                                                                   3 forced open (BreakerMode)
``virtrigaud_circuit_breaker_calls_by_kind_total{kind}``  counter  resilience4j's kinds: ``successful``,
                                                                   ``failed``, ``not_permitted``,
                                                                   ``ignored``; ``slow`` in window mode only
``virtrigaud_rate_limiter_requests_total{outcome}``       counter  ``admitted``, ``rejected``, ``waited``
``virtrigaud_retry_attempts_total{policy}``               counter  retries begun (attempts after the first)
``virtrigaud_retry_exhausted_total{policy}``              counter  calls that gave up retrying
``virtrigaud_retry_budget_exhausted_total``                counter  retries a retry budget refused
``virtrigaud_retry_budget_available``                     gauge    retries a retry budget allows now
``virtrigaud_bulkhead_in_flight``                         gauge    calls holding a slot now
``virtrigaud_bulkhead_rejected_total``                    counter  attempts turned away
``virtrigaud_distributed_fallback_total{outcome}``        counter  decisions by a distributed bucket's
                                                                   fallback: ``admitted``, ``rejected``
``virtrigaud_distributed_transitions_total{to}``          counter  ``fallback`` (shared store lost),
                                                                   ``shared`` (back to shared accounting),
                                                                   ``newer_config`` (an exact or leased
                                                                   bucket took the fleet's newer
                                                                   qps/burst)
``virtrigaud_fallback_total{policy, reason}``             counter  calls a policy's fallback answered,
                                                                   by the final error's reason
                                                                   (fallback.py)
========================================================  =======  ==========================================

and Virtrigaud's per-call series, which the adapters (``providers/``) record
per call (:mod:`virtrigaud_resilience.rpcstats`):
``virtrigaud_provider_rpc_requests_total{provider_type,method,code}``,
``virtrigaud_provider_rpc_latency_seconds{provider_type,method}`` (a
histogram, buckets 1 ms doubling to 32.768 s) and
``virtrigaud_vm_operations_total{operation,provider_type,provider,outcome}``.

Which breakers have which series: every label set with a breaker has the
state and mode gauges (while one of its breakers lives), the failures, calls,
transitions and the four kinds of calls every breaker counts. A breaker in
window mode judges rates and slow calls, and only a label set with one has
the ``failure_rate`` and ``slow_call_rate`` gauges (while one lives) and the
``calls_by_kind_total{kind="slow"}`` counter (which, like every counter,
stays once reported); a consecutive breaker judges neither, so it has no -1
or 0 series standing for "not judged" (as resilience4j's Micrometer binder
leaves out what a breaker does not measure).

Every series but the retry ones and the per-call ones has the labels ``provider_type`` and
``provider`` (the object's; ``""`` when it has none). The retry series have
``policy``: the policy's name, or the :class:`Retrier`'s ``name``.

Objects sharing labels are summed: counters add up, ``in_flight`` adds up,
and the state gauge shows the **worst** state among them (open over
half-open over closed), so ``virtrigaud_circuit_breaker_state > 0`` fires
when any breaker of that provider is not closed.

Objects come and go (a breaker per VM, say). A dropped object's final
counters are folded into its labels' totals when it is garbage-collected,
so counters never go backwards and nothing leaks: the memory kept is one
entry per label set ever seen (for a breaker's labels, a registered
collector's last samples: about 3.5 KB, which a scrape that finds a series
unchanged reports again instead of making new ones). A dropped object's
gauges stop counting.
(A subclass that defines ``__del__`` must call ``super().__del__()``.)
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Iterator
from typing import Any

try:
    import prometheus_client
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector, CollectorRegistry
    from prometheus_client.samples import Sample
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "virtrigaud_resilience.metrics needs prometheus-client: "
        "pip install 'virtrigaud-resilience[prometheus]'"
    ) from exc

from . import _core
from ._fallback_census import FALLBACK_LIMITERS
from .fallback import fallback_counts
from ._tracking import Counters, Labels, add_counters
from .adaptive_bulkhead import ADAPTIVE_BULKHEADS
from .adaptive_rate import RATES
from .breaker import BREAKERS
from .bulkhead import BULKHEADS
from .ratelimit import BUCKETS
from .retry import RETRIERS
from .retry_budget import BUDGETS
from .rpcstats import LATENCY_BUCKETS, all_operation_stats, all_rpc_stats

__all__ = ["ResilienceCollector", "register", "unregister"]

_PROVIDER = ("provider_type", "provider")
_BREAKER_OUTCOMES = ("success", "failure", "rejected")
_STATES = ("closed", "half_open", "open")
_BUCKET_OUTCOMES = ("admitted", "rejected", "waited")
_FALLBACK_OUTCOMES = ("admitted", "rejected")
_SHARED_STATES = ("fallback", "shared", "newer_config")
#: What the native emitter copies a sample's type and defaults from.
_SAMPLE = Sample("", {}, 0)


class ResilienceCollector(Collector):
    """A prometheus_client collector of every breaker, bucket, bulkhead and retrier.

    Register it with :func:`register` (which refuses to register twice).
    ``collect()`` is thread-safe; concurrent scrapes take turns. A breaker
    series unchanged since the last scrape is reported by the same Sample
    (a tuple) again, and a breaker label set's samples share their labels
    dicts: read them, as prometheus_client's expositions do; never change
    them in place.
    """

    def __init__(self) -> None:
        # Counter high-water marks by (series, labels): a counter is never
        # reported below what was reported before, even for an object that a
        # garbage-collected cycle hides from one snapshot (see Census).
        self._reported: dict[tuple[str, Labels], int] = {}
        # The breakers' series, by labels: the samples reported last, in the
        # order of _collect_breakers' columns (None where none was). An
        # unchanged series is reported by the same sample again (a scrape of
        # 10,000 label sets otherwise makes and frees ~130,000 dicts and
        # tuples), and a counter never below the value of its sample.
        self._reported_breakers: dict[Labels, list[Sample | None]] = {}
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        """The families, without samples: lets a registry detect clashing names."""
        return [*self._families(), *_budget_families()]

    def collect(self) -> Iterator[Metric]:
        """Reads every tracked object now and yields the metric families."""
        with self._lock:
            families = self._families()
            self._collect_breakers(*families[:4], *families[19:23])
            self._collect_buckets(families[4])
            self._collect_retriers(families[5], families[6])
            self._collect_bulkheads(families[7], families[8])
            self._collect_calls(*families[9:12])
            self._collect_fallbacks(families[12], families[13])
            self._collect_policy_fallbacks(families[14])
            self._collect_adaptive(*families[15:19])
            budget_families = _budget_families()
            self._collect_budgets(*budget_families)
        return iter((*families, *budget_families))

    @staticmethod
    def _families() -> tuple[Any, ...]:
        return (
            GaugeMetricFamily(
                "virtrigaud_circuit_breaker_state",
                "Circuit breaker state: 0 closed, 1 half-open, 2 open (the worst state "
                "among breakers sharing the labels).", labels=_PROVIDER),
            CounterMetricFamily(
                "virtrigaud_circuit_breaker_failures",
                "Failures recorded by circuit breakers (every counted failure).",
                labels=_PROVIDER),
            CounterMetricFamily(
                "virtrigaud_circuit_breaker_calls",
                "Calls through circuit breakers by outcome: success, failure, or rejected "
                "(refused without running).", labels=(*_PROVIDER, "outcome")),
            CounterMetricFamily(
                "virtrigaud_circuit_breaker_transitions",
                "Circuit breaker state changes, by the state entered.",
                labels=(*_PROVIDER, "to")),
            CounterMetricFamily(
                "virtrigaud_rate_limiter_requests",
                "Token bucket acquisitions by outcome: admitted at once, rejected, or "
                "waited (granted after a wait).", labels=(*_PROVIDER, "outcome")),
            CounterMetricFamily(
                "virtrigaud_retry_attempts",
                "Retries begun (attempts after the first), by policy.", labels=("policy",)),
            CounterMetricFamily(
                "virtrigaud_retry_exhausted",
                "Calls that gave up retrying a retryable error (all max_attempts > 1 used, "
                "or the overall timeout too short for the next delay), by policy.",
                labels=("policy",)),
            GaugeMetricFamily(
                "virtrigaud_bulkhead_in_flight",
                "Calls holding a bulkhead slot now.", labels=_PROVIDER),
            CounterMetricFamily(
                "virtrigaud_bulkhead_rejected",
                "Attempts turned away by a full bulkhead.", labels=_PROVIDER),
            # Virtrigaud's per-call series, recorded by the adapters (rpcstats.py).
            CounterMetricFamily(
                "virtrigaud_provider_rpc_requests",
                "Total number of provider RPC requests by provider type, method, and code",
                labels=("provider_type", "method", "code")),
            HistogramMetricFamily(
                "virtrigaud_provider_rpc_latency_seconds",
                "Latency of provider RPC requests by provider type and method",
                labels=("provider_type", "method")),
            CounterMetricFamily(
                "virtrigaud_vm_operations",
                "Total number of VM operations by operation, provider type, provider, and outcome",
                labels=("operation", "provider_type", "provider", "outcome")),
            CounterMetricFamily(
                "virtrigaud_distributed_fallback",
                "Decisions of distributed rate limiters made by their fallback while the "
                "shared store (Redis) was unreachable, by outcome.",
                labels=(*_PROVIDER, "outcome")),
            CounterMetricFamily(
                "virtrigaud_distributed_transitions",
                "Distributed rate limiters falling back (to=fallback) and recovering "
                "(to=shared).", labels=(*_PROVIDER, "to")),
            CounterMetricFamily(
                "virtrigaud_fallback",
                "Calls a policy's fallback answered instead of raising, by policy and the "
                "final error's reason.", labels=("policy", "reason")),
            # The adaptive limits (issue 24): adaptive_rate.py, adaptive_bulkhead.py.
            GaugeMetricFamily(
                "virtrigaud_adaptive_rate_qps",
                "The rate adaptive rate controllers learned, calls/s (summed over the "
                "controllers sharing the labels).", labels=_PROVIDER),
            CounterMetricFamily(
                "virtrigaud_adaptive_rate_throttles",
                "Throttles (the provider's own rate limits) adaptive rates observed.",
                labels=_PROVIDER),
            CounterMetricFamily(
                "virtrigaud_adaptive_rate_malformed_headers",
                "RateLimit-* / X-RateLimit-* headers adaptive rates could not read (ignored).",
                labels=_PROVIDER),
            GaugeMetricFamily(
                "virtrigaud_adaptive_bulkhead_limit",
                "The concurrency limit adaptive bulkheads learned (summed over the bulkheads "
                "sharing the labels).", labels=_PROVIDER),
            # Window-mode breakers and the operator's modes (issue 22).
            GaugeMetricFamily(
                "virtrigaud_circuit_breaker_failure_rate",
                "Failed / outcomes in a window-mode breaker's window; -1 below its "
                "minimum_calls (the highest among breakers sharing the labels).",
                labels=_PROVIDER),
            GaugeMetricFamily(
                "virtrigaud_circuit_breaker_slow_call_rate",
                "Slow / outcomes in a window-mode breaker's window; -1 below its "
                "minimum_calls (the highest among breakers sharing the labels).",
                labels=_PROVIDER),
            GaugeMetricFamily(
                "virtrigaud_circuit_breaker_mode",
                "Operator override: 0 normal, 1 disabled, 2 metrics only, 3 forced open "
                "(the highest among breakers sharing the labels).", labels=_PROVIDER),
            CounterMetricFamily(
                "virtrigaud_circuit_breaker_calls_by_kind",
                "Calls through circuit breakers by resilience4j's kinds: successful, "
                "failed, slow (window mode; also successful or failed), not_permitted "
                "(refused), ignored (judged by no rule: disabled, or stale in window mode).",
                labels=(*_PROVIDER, "kind")),
        )

    # Counters by labels are lists; each _collect_* sums the live objects of
    # one Census snapshot (held until read) and its dropped totals. Samples
    # are appended directly (not add_metric): a scrape of 10,000 label sets
    # makes ~80,000 of them.

    def _collect_breakers(self, state: Any, failures: Any, calls: Any, transitions: Any,
                          failure_rate: Any, slow_rate: Any, mode: Any, kinds: Any) -> None:
        # Natively, in one pass over the breakers and one over their label
        # sets (bind_breaker.cpp, samples.hpp): 10,000 label sets make
        # ~130,000 samples. The rows the columns index, by labels:
        # [successes, failures_total, rejected, to_closed, to_half_open,
        # to_open, slow_calls (None where no breaker judges slow calls),
        # ignored], then with a live breaker [worst state, worst mode], then
        # with a window-mode breaker [failure rate, slow-call rate]; a row
        # without a value has no sample there.
        breakers, dropped = BREAKERS.snapshot()
        counter = _counter_name
        columns = (
            (state.samples, state.name, None, None, 8, False),
            (mode.samples, mode.name, None, None, 9, False),
            (failures.samples, counter(failures), None, None, 1, True),
            *((calls.samples, counter(calls), "outcome", outcome, index, True)
              for index, outcome in enumerate(_BREAKER_OUTCOMES)),
            *((transitions.samples, counter(transitions), "to", to, 3 + index, True)
              for index, to in enumerate(_STATES)),
            *((kinds.samples, counter(kinds), "kind", kind, index, True)
              for kind, index in _BREAKER_KINDS),
            (failure_rate.samples, failure_rate.name, None, None, 10, False),
            (slow_rate.samples, slow_rate.name, None, None, 11, False),
        )
        _core.CircuitBreaker._emit_by_labels(breakers, dropped, _PROVIDER, columns, _SAMPLE,
                                             self._reported_breakers)
        del breakers  # read: a breaker dropped from now on is in the next snapshot's totals

    def _collect_buckets(self, requests: Any) -> None:
        sums: dict[Labels, list[int]] = {}
        buckets, dropped = BUCKETS.snapshot()
        for bucket in buckets:
            add_counters(sums, (bucket.provider_type, bucket.provider), bucket._counters())
        _add_all(sums, dropped)
        for labels, values in sums.items():
            base = _provider(*labels)
            for outcome, value in zip(_BUCKET_OUTCOMES, values):
                self._counter(requests, (*labels, outcome), {**base, "outcome": outcome}, value)

    def _collect_retriers(self, attempts: Any, exhausted: Any) -> None:
        sums: dict[Labels, list[int]] = {}
        retriers, dropped = RETRIERS.snapshot()
        for retrier in retriers:
            add_counters(sums, (retrier.name,), (retrier.retries, retrier.exhausted))
        _add_all(sums, dropped)
        for labels, (retries, gave_up) in sums.items():
            self._counter(attempts, labels, {"policy": labels[0]}, retries)
            self._counter(exhausted, labels, {"policy": labels[0]}, gave_up)

    def _collect_bulkheads(self, in_flight: Any, rejected: Any) -> None:
        gauges: dict[Labels, list[int]] = {}
        sums: dict[Labels, list[int]] = {}
        bulkheads, dropped = BULKHEADS.snapshot()
        for bulkhead in bulkheads:
            labels: Labels = (bulkhead.provider_type, bulkhead.provider)
            add_counters(gauges, labels, (bulkhead.in_flight,))
            add_counters(sums, labels, (bulkhead.rejected,))
        _add_all(sums, dropped)
        for labels, (value,) in gauges.items():
            in_flight.samples.append(Sample(in_flight.name, _provider(*labels), value))
        for labels, (value,) in sums.items():
            self._counter(rejected, labels, _provider(*labels), value)

    @staticmethod
    def _collect_calls(requests: Any, latency: Any, operations: Any) -> None:
        # These stats live as long as the process: their counters never go backwards.
        bounds = [f"{bound:g}" for bound in LATENCY_BUCKETS] + ["+Inf"]
        for stats in all_rpc_stats():
            codes, buckets, total = stats.snapshot()
            labels = [stats.provider_type, stats.method]
            for code, count in codes.items():
                requests.add_metric([*labels, code], count)
            cumulative = 0
            series = []
            for bound, count in zip(bounds, buckets):
                cumulative += count
                series.append((bound, cumulative))
            latency.add_metric(labels, series, sum_value=total)
        for op in all_operation_stats():
            labels = [op.operation, op.provider_type, op.provider]
            operations.add_metric([*labels, "success"], op.success)
            operations.add_metric([*labels, "error"], op.error)

    def _collect_fallbacks(self, decisions: Any, transitions: Any) -> None:
        sums: dict[Labels, list[int]] = {}
        limiters, dropped = FALLBACK_LIMITERS.snapshot()
        for limiter in limiters:
            # A live limiter's config changes (0 where it has none) come
            # last: a dropped one's totals, without them, add to the rest.
            add_counters(sums, (limiter.provider_type, limiter.provider),
                         (*limiter._fallback_counters(), getattr(limiter, "config_changes", 0)))
        _add_all(sums, dropped)
        for labels, (admitted, rejected, *moves) in sums.items():
            base = _provider(*labels)
            for outcome, value in zip(_FALLBACK_OUTCOMES, (admitted, rejected)):
                self._counter(decisions, (*labels, outcome), {**base, "outcome": outcome}, value)
            for to, value in zip(_SHARED_STATES, moves):
                self._counter(transitions, (*labels, to), {**base, "to": to}, value)

    def _collect_policy_fallbacks(self, served: Any) -> None:
        # Process-wide counts by label pair (fallback.py): they never go backwards.
        for (policy, reason), value in fallback_counts().items():
            self._counter(served, (policy, reason), {"policy": policy, "reason": reason}, value)

    def _collect_adaptive(self, qps: Any, throttles: Any, malformed: Any, limit: Any) -> None:
        rates: dict[Labels, float] = {}
        sums: dict[Labels, list[int]] = {}
        controllers, dropped = RATES.snapshot()
        for rate in controllers:
            labels = rate.labels
            rates[labels] = rates.get(labels, 0.0) + rate.rate
            add_counters(sums, labels, (rate.throttles, rate.pauses, rate.malformed_headers))
        _add_all(sums, dropped)
        for labels, value in rates.items():
            qps.samples.append(Sample(qps.name, _provider(*labels), value))
        for labels, (seen, _pauses, bad) in sums.items():
            self._counter(throttles, labels, _provider(*labels), seen)
            self._counter(malformed, labels, _provider(*labels), bad)
        limits: dict[Labels, list[int]] = {}
        bulkheads, _ = ADAPTIVE_BULKHEADS.snapshot()
        for bulkhead in bulkheads:
            add_counters(limits, (bulkhead.provider_type, bulkhead.provider), (bulkhead.limit,))
        for labels, (value,) in limits.items():
            limit.samples.append(Sample(limit.name, _provider(*labels), value))

    def _collect_budgets(self, exhausted: Any, available: Any) -> None:
        sums: dict[Labels, list[int]] = {}
        gauges: dict[Labels, list[int]] = {}
        budgets, dropped = BUDGETS.snapshot()
        for budget in budgets:
            labels: Labels = (budget.provider_type, budget.provider)
            add_counters(sums, labels, (budget.refused,))
            add_counters(gauges, labels, (budget.available,))
        _add_all(sums, dropped)
        for labels, (value,) in sums.items():
            self._counter(exhausted, labels, _provider(*labels), value)
        for labels, (value,) in gauges.items():
            available.samples.append(Sample(available.name, _provider(*labels), value))

    def _counter(self, family: Any, key: Labels, labels: dict[str, str], value: int) -> int:
        """Appends a counter sample, never below what this collector reported
        for it before; returns the value reported."""
        series = (family.name, key)
        reported = self._reported.get(series, 0)
        if value < reported:
            value = reported
        else:
            self._reported[series] = value
        family.samples.append(Sample(family.name + "_total", labels, value))
        return value



def _budget_families() -> tuple[Any, Any]:
    """The retry budgets' series (retry_budget.py)."""
    return (
        CounterMetricFamily(
            "virtrigaud_retry_budget_exhausted",
            "Retries refused by retry budgets (the attempt's own error raised instead).",
            labels=_PROVIDER),
        GaugeMetricFamily(
            "virtrigaud_retry_budget_available",
            "Retries the retry budgets allow now (summed over budgets sharing the labels).",
            labels=_PROVIDER),
    )


#: resilience4j's kinds of calls, each a column of the breakers' sums.
_BREAKER_KINDS = (("successful", 0), ("failed", 1), ("slow", 6), ("not_permitted", 2),
                  ("ignored", 7))


def _counter_name(family: Any) -> str:
    """A counter family's sample name, the same str object every scrape (the
    native emitter matches a reported sample's name by identity first)."""
    return sys.intern(family.name + "_total")


def _provider(provider_type: str, provider: str) -> dict[str, str]:
    return {"provider_type": provider_type, "provider": provider}


def _add_all(sums: dict[Labels, list[int]], totals: dict[Labels, Counters]) -> None:
    for labels, counters in totals.items():
        add_counters(sums, labels, counters)


_registered: weakref.WeakKeyDictionary[CollectorRegistry, ResilienceCollector] = (
    weakref.WeakKeyDictionary()
)
_registered_lock = threading.Lock()


def register(registry: CollectorRegistry | None = None) -> ResilienceCollector:
    """Registers the collector in ``registry`` (default ``prometheus_client.REGISTRY``).

    Returns the collector. Raises ValueError if this package's metrics are
    already registered there (call :func:`unregister` first), or if another
    collector already owns one of the names; TypeError for a registry that
    is not a ``CollectorRegistry``.
    """
    registry = _registry(registry)
    collector = ResilienceCollector()
    with _registered_lock:
        try:
            registry.register(collector)  # refuses names it already has
        except ValueError as exc:
            if registry in _registered:
                raise ValueError(
                    "virtrigaud_resilience metrics are already registered in this registry; "
                    "call virtrigaud_resilience.metrics.unregister(registry) first"
                ) from None
            raise ValueError(f"cannot register virtrigaud_resilience metrics: {exc}") from exc
        # An entry left by a direct registry.unregister(collector) is replaced.
        _registered[registry] = collector
    return collector


def unregister(registry: CollectorRegistry | None = None) -> None:
    """Removes the collector :func:`register` put in ``registry``.

    Raises ValueError if it is not registered there.
    """
    registry = _registry(registry)
    with _registered_lock:
        collector = _registered.pop(registry, None)
        if collector is None:
            raise ValueError("virtrigaud_resilience metrics are not registered in this registry")
        try:
            registry.unregister(collector)
        except KeyError:
            pass  # already taken out with registry.unregister(collector)


def _registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    if registry is None:
        return prometheus_client.REGISTRY
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(
            "metrics registry must be a prometheus_client CollectorRegistry, "
            f"got {type(registry).__name__} {registry!r}"
        )
    return registry
