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
                                                                  (and the breaker's name)
``virtrigaud.resilience.attempt.duration``     histogram, s       policy name, attempt number, outcome
``virtrigaud.resilience.execution.duration``   histogram, s       policy name, outcome
``virtrigaud.circuit_breaker.state``           observable gauge   provider labels and breaker name: 0
                                                                  closed, 1 half-open, 2 open (the worst
                                                                  among the breakers sharing them)
=============================================  =================  =====================================

The breakers' name (``virtrigaud.circuit_breaker.name``) is on their
counts and states unless :func:`report_names` turned it off (instrument()'s
``metric_names=False``): then they are summed by provider labels alone.
Buckets, bulkheads and retry budgets have no name: their provider labels.

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
#: Whether the breakers' counts and states are by name too (report_names()).
by_name = True

_STATES = ("closed", "half_open", "open")
#: Where _core.CircuitBreaker._sum_by_labels (and _sum_by_name) puts the
#: refusals, the transitions (to closed, half-open, open) and the worst
#: state in a row.
_COLUMN = {"rejected": 2, "to_closed": 3, "worst_state": 8}


#: What a count is of: (component, event.name, the state ``to`` or None,
#: the key: (policy name,) for retries, else the provider labels and, for
#: breakers reported by name, the name).
CountKey = tuple[str, str, str | None, tuple[str, ...]]
#: A count: what of, and its value.
Count = tuple[CountKey, int]


class _Monotonic:
    """Cumulative values never reported below an earlier report (an object
    a garbage-collected cycle hides from one snapshot would dip them); a
    count that was never above 0 is not reported (most label sets never
    see most events: their zeros would only fill the reader's limit)."""

    def __init__(self) -> None:
        self._reported: dict[CountKey, int] = {}
        self._lock = threading.Lock()

    def observations(self, counts: Iterable[Count]) -> list[Observation]:
        out = []
        with self._lock:
            for key, value in counts:
                reported = self._reported.get(key)
                if reported is None:
                    if not value:
                        continue  # before its attributes are made: most counts are 0
                elif value < reported:
                    value = reported
                self._reported[key] = value
                out.append(Observation(value, _attributes(*key)))
        return out

    def forget(self) -> None:
        """Forgets what was reported (the attribute sets changed meaning)."""
        with self._lock:
            self._reported.clear()


_events = _Monotonic()


def _attributes(component: str, event: str, to: str | None,
                key: tuple[str, ...]) -> dict[str, Any]:
    """A count's attributes (see Count)."""
    attributes: dict[str, Any] = {names.EVENT_NAME: event, names.COMPONENT: component}
    if component == "retry":
        attributes[names.POLICY_NAME] = key[0]
        return attributes
    attributes.update(_labelled(key))
    if to is not None:
        attributes["to"] = to
    return attributes


def _labelled(key: tuple[str, ...]) -> dict[str, str]:
    """The provider labels of ``key`` and, when it has one, the breaker's name."""
    if len(key) > 2:
        return {names.PROVIDER_TYPE: key[0], names.PROVIDER: key[1], names.BREAKER_NAME: key[2]}
    return {names.PROVIDER_TYPE: key[0], names.PROVIDER: key[1]}


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


def _breaker_sums() -> dict[tuple[str, ...], list[int]]:
    """The breakers' rows (live and dropped), by labels and name or by labels."""
    if by_name:
        live, dropped = BREAKERS.snapshot_by_name()
        sums: dict[tuple[str, ...], list[int]] = _core.CircuitBreaker._sum_by_name(live, dropped)
        return sums
    live, dropped = BREAKERS.snapshot()
    sums = _core.CircuitBreaker._sum_by_labels(live)
    del live
    _add_dropped(sums, dropped)
    return sums


def _event_counts() -> Iterator[Count]:
    """Every count, the policies' retries first: a reader keeps a bounded
    number of attribute sets per instrument (the SDK's default is 2,000)
    and folds the rest into one overflow set, so the fewest, most read ones
    come first."""
    retriers = _summed(RETRIERS, lambda r: ((r.name,), (r.retries, r.exhausted)))
    for policy, (retries, exhausted) in retriers.items():
        yield ("retry", "retry", None, policy), retries
        yield ("retry", "retry_exhausted", None, policy), exhausted
    budgets = _summed(BUDGETS, lambda b: ((b.provider_type, b.provider), (b.refused,)))
    for labels, values in budgets.items():
        yield ("retry_budget", "retry_budget_exhausted", None, labels), values[0]
    bulkheads = _summed(BULKHEADS, lambda b: ((b.provider_type, b.provider), (b.rejected,)))
    for labels, values in bulkheads.items():
        yield ("bulkhead", "rejected", None, labels), values[0]
    buckets = _summed(BUCKETS, lambda b: ((b.provider_type, b.provider), b._counters()))
    for labels, values in buckets.items():
        yield ("rate_limiter", "rejected", None, labels), values[1]
    rejected, to_closed = _COLUMN["rejected"], _COLUMN["to_closed"]
    for key, values in _breaker_sums().items():
        yield ("circuit_breaker", "rejected", None, key), values[rejected]
        for index, state in enumerate(_STATES):
            yield ("circuit_breaker", "state_change", state, key), values[to_closed + index]


def observe_events(options: CallbackOptions) -> list[Observation]:
    """The events counter's callback: every count, read now."""
    return _events.observations(_event_counts()) if observing else []


def observe_states(options: CallbackOptions) -> list[Observation]:
    """The state gauge's callback: the worst state of the live breakers by
    labels and name (or by labels)."""
    if not observing:
        return []
    live, _ = BREAKERS.snapshot()
    sums = (_core.CircuitBreaker._sum_by_name(live, {}) if by_name
            else _core.CircuitBreaker._sum_by_labels(live))
    worst = _COLUMN["worst_state"]
    return [Observation(values[worst], _labelled(key)) for key, values in sums.items()]


def report_names(on: bool) -> None:
    """Whether the breakers' counts and states carry their names (``on``) or
    are summed by provider labels alone. While on, the breakers dropped keep
    their totals under their names (a name per dropped breaker, kept until
    turned off: the census's keep_names()). Switching forgets the counter's
    earlier reports: a set's meaning changed (labels alone hold all the
    counts, or those of breakers dropped before the names were kept)."""
    global by_name
    BREAKERS.keep_names(on)
    if on != by_name:
        _events.forget()
        by_name = on


def forget_names() -> None:
    """uninstrument()'s: the dropped breakers' names are no longer kept."""
    BREAKERS.keep_names(False)


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
