"""The OpenTelemetry instruments: counts read from the native counters at
collection time, durations recorded by the traced calls.

=============================================  =================  =====================================
instrument                                     kind               attributes
=============================================  =================  =====================================
``virtrigaud.resilience.events``               observable counter ``event.name`` (retry, retry_exhausted,
                                                                  rejected, state_change,
                                                                  retry_budget_exhausted),
                                                                  ``virtrigaud.component``, the policy's
                                                                  name (retries) or the provider labels
``virtrigaud.resilience.attempt.duration``     histogram, s       policy name, attempt number, outcome
``virtrigaud.resilience.execution.duration``   histogram, s       policy name, outcome
``virtrigaud.circuit_breaker.state``           observable gauge   provider labels: 0 closed, 1 half-open,
                                                                  2 open (the worst among the breakers
                                                                  sharing them)
=============================================  =================  =====================================

The counts cost a call nothing: breakers, buckets, bulkheads, retriers and
budgets count whether or not anything reads them (the Prometheus collector,
metrics.py, reads the same counters; both may be on). The duration
histograms are recorded where a call is traced (spans on), since only a
traced call leaves the native path.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation

from .. import _core
from .._tracking import Counters, Labels, add_counters
from ..breaker import BREAKERS
from ..bulkhead import BULKHEADS
from ..ratelimit import BUCKETS
from ..retry import RETRIERS
from ..retry_budget import BUDGETS
from . import _names as names

#: Whether the observable instruments report (instruments cannot be removed
#: from a meter: uninstrument() silences them instead).
observing = False

_STATES = ("closed", "half_open", "open")
#: Where _core.CircuitBreaker._sum_by_labels puts the refusals, the
#: transitions (to closed, half-open, open) and the worst state in a row.
_COLUMN = {"rejected": 2, "to_closed": 3, "worst_state": 8}


class _Monotonic:
    """Cumulative values never reported below an earlier report (an object
    a garbage-collected cycle hides from one snapshot would dip them); a
    count that was never above 0 is not reported (most label sets never
    see most events: their zeros would only fill the reader's limit)."""

    def __init__(self) -> None:
        self._reported: dict[tuple[tuple[str, Any], ...], int] = {}
        self._lock = threading.Lock()

    def observations(self, counts: Iterable[tuple[dict[str, Any], int]]) -> list[Observation]:
        out = []
        with self._lock:
            for attributes, value in counts:
                key = tuple(sorted(attributes.items()))
                reported = self._reported.get(key)
                if reported is None:
                    if not value:
                        continue
                elif value < reported:
                    value = reported
                self._reported[key] = value
                out.append(Observation(value, attributes))
        return out


_events = _Monotonic()


def _provider(component: str, event: str, labels: Labels) -> dict[str, Any]:
    return {names.EVENT_NAME: event, names.COMPONENT: component,
            names.PROVIDER_TYPE: labels[0], names.PROVIDER: labels[1]}


def _summed(census: Any, counters: Any) -> dict[Labels, list[int]]:
    """``counters(obj) -> (labels, values)`` summed over the live objects and
    the dropped totals of ``census``."""
    sums: dict[Labels, list[int]] = {}
    live, dropped = census.snapshot()
    for obj in live:
        add_counters(sums, *counters(obj))
    del live
    _add_dropped(sums, dropped)
    return sums


def _add_dropped(sums: dict[Labels, list[int]], dropped: dict[Labels, Counters]) -> None:
    for labels, values in dropped.items():
        add_counters(sums, labels, values)


def _breaker_sums() -> dict[Labels, list[int]]:
    live, dropped = BREAKERS.snapshot()
    sums: dict[Labels, list[int]] = _core.CircuitBreaker._sum_by_labels(live)
    del live
    _add_dropped(sums, dropped)
    return sums


def _event_counts() -> Iterator[tuple[dict[str, Any], int]]:
    """Every count by attributes, the policies' retries first: a reader
    keeps a bounded number of attribute sets per instrument (the SDK's
    default is 2,000) and folds the rest into one overflow set, so the
    fewest, most read ones come first."""
    retriers = _summed(RETRIERS, lambda r: ((r.name,), (r.retries, r.exhausted)))
    for (policy,), (retries, exhausted) in retriers.items():
        for event, value in (("retry", retries), ("retry_exhausted", exhausted)):
            yield {names.EVENT_NAME: event, names.COMPONENT: "retry",
                   names.POLICY_NAME: policy}, value
    budgets = _summed(BUDGETS, lambda b: ((b.provider_type, b.provider), (b.refused,)))
    for labels, values in budgets.items():
        yield _provider("retry_budget", "retry_budget_exhausted", labels), values[0]
    bulkheads = _summed(BULKHEADS, lambda b: ((b.provider_type, b.provider), (b.rejected,)))
    for labels, values in bulkheads.items():
        yield _provider("bulkhead", "rejected", labels), values[0]
    buckets = _summed(BUCKETS, lambda b: ((b.provider_type, b.provider), b._counters()))
    for labels, values in buckets.items():
        yield _provider("rate_limiter", "rejected", labels), values[1]
    for labels, values in _breaker_sums().items():
        yield _provider("circuit_breaker", "rejected", labels), values[_COLUMN["rejected"]]
        for index, state in enumerate(_STATES):
            yield ({**_provider("circuit_breaker", "state_change", labels), "to": state},
                   values[_COLUMN["to_closed"] + index])


def observe_events(options: CallbackOptions) -> list[Observation]:
    """The events counter's callback: every count, read now."""
    return _events.observations(_event_counts()) if observing else []


def observe_states(options: CallbackOptions) -> list[Observation]:
    """The state gauge's callback: the worst state of the live breakers by labels."""
    if not observing:
        return []
    live, _ = BREAKERS.snapshot()
    sums = _core.CircuitBreaker._sum_by_labels(live)
    return [Observation(values[_COLUMN["worst_state"]],
                        {names.PROVIDER_TYPE: labels[0], names.PROVIDER: labels[1]})
            for labels, values in sums.items()]


#: The histograms made for each meter provider (an instrument cannot be
#: made twice; instrument() after uninstrument() reuses them).
_made: weakref.WeakKeyDictionary[Any, tuple[Histogram, Histogram]] = weakref.WeakKeyDictionary()
_made_lock = threading.Lock()


def instruments(provider: MeterProvider) -> tuple[Histogram, Histogram]:
    """The (attempt, execution) duration histograms on ``provider``; the
    observable instruments too, made on first use."""
    with _made_lock:
        made = _made.get(provider)
        if made is None:
            meter = provider.get_meter(names.SCOPE)
            meter.create_observable_counter(
                names.EVENTS, callbacks=[observe_events], unit="{event}",
                description="Resilience decisions: retries, rejections, breaker transitions, "
                            "budget refusals (event.name)")
            meter.create_observable_gauge(
                names.BREAKER_STATE_GAUGE, callbacks=[observe_states], unit="1",
                description="Circuit breaker state: 0 closed, 1 half-open, 2 open")
            made = (
                meter.create_histogram(names.ATTEMPT_DURATION, unit="s",
                                       description="Duration of each attempt of a policy"),
                meter.create_histogram(names.EXECUTION_DURATION, unit="s",
                                       description="Duration of a policy execution, "
                                                   "attempts and backoff sleeps together"),
            )
            _made[provider] = made
        return made
