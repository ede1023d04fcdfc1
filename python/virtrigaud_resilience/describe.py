"""What a policy is, as data: its stages in order, their settings and live state.

``policy.describe()`` (Polly.Testing's ``GetPipelineDescriptor()``, tenacity's
``statistics``) returns a plain dict of str, int, float, bool and None, lists
and dicts (JSON-ready)::

    {"name": "create-vm", "kind": "Policy", "stages": [
        {"stage": "retry", "max_attempts": 3, ..., "retries": 0, "exhausted": 0},
        {"stage": "circuit_breaker", "name": "vm-operations", ..., "state": "closed"},
        ...]}

The stages are listed outermost first, as a call passes them: ``fallback``,
``hedging``, ``timeout`` (the overall budget), ``retry``, ``circuit_breaker``,
``rate_limiter``, ``bulkhead``, ``attempt_timeout``; a stage the policy does
not have is absent (``retry`` is always there: one attempt is
``max_attempts`` 1). Live values (breaker state and streak, bucket tokens,
bulkhead occupancy, retry counters) are read once, now, each on its own:
under concurrent calls they are a moment's view, not one atomic snapshot.
:func:`summary` is the same on one line (``repr(policy)``).

The policy is read through its public attributes only, so this module
imports none of the classes it describes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["describe", "summary"]


def describe(policy: Any) -> dict[str, Any]:
    """The policy's name, class and stages (see the module docstring)."""
    stages: list[dict[str, Any]] = []
    fallback = getattr(policy, "fallback", None)
    if fallback is not None:
        stages.append({"stage": "fallback", "answer": _label(fallback.answer),
                       "on": None if fallback.on is None else _label(fallback.on)})
    hedging = getattr(policy, "hedging", None)
    if hedging is not None:
        stages.append({"stage": "hedging", **hedging.describe()})
    if policy.timeout is not None:
        stages.append({"stage": "timeout", "seconds": policy.timeout})
    stages.append(_retry(policy.retrier))
    if policy.breaker is not None:
        stages.append(_breaker(policy.breaker))
    if policy.limiter is not None:
        stages.append(_limiter(policy.limiter, policy.wait, policy.max_wait))
    if policy.bulkhead is not None:
        stages.append(_bulkhead(policy.bulkhead))
    if policy.attempt_timeout is not None:
        stages.append({"stage": "attempt_timeout", "seconds": policy.attempt_timeout})
    return {"name": policy.name, "kind": type(policy).__name__, "stages": stages}


def summary(policy: Any) -> str:
    """One line: ``Kind('name': stage > stage > ...)`` with each stage's key
    settings and state, e.g. ``Policy('create-vm': retry 3x > breaker
    'vm-operations' closed > limiter 10/s 20/20 tokens > bulkhead 0/10)``."""
    described = describe(policy)
    parts = [_SUMMARIES[stage["stage"]](stage) for stage in described["stages"]]
    return f"{described['kind']}({described['name']!r}: {' > '.join(parts)})"


def _retry(retrier: Any) -> dict[str, Any]:
    config = retrier.config
    return {"stage": "retry", "max_attempts": config.max_attempts,
            "base_delay": config.base_delay, "max_delay": config.max_delay,
            "multiplier": config.multiplier, "jitter": config.jitter,
            "strategy": config.strategy,
            "retry_on": None if config.retry_on is None else _label(config.retry_on),
            "retries": retrier.retries, "exhausted": retrier.exhausted}


def _breaker(breaker: Any) -> dict[str, Any]:
    return {"stage": "circuit_breaker", "name": breaker.name,
            "provider_type": breaker.provider_type, "provider": breaker.provider,
            "failure_threshold": breaker.failure_threshold,
            "reset_timeout": breaker.reset_timeout,
            "half_open_max_calls": breaker.half_open_max_calls,
            "state": breaker.state.name.lower(), "failure_streak": breaker.failure_streak,
            "remaining_open": breaker.remaining_open}


def _limiter(bucket: Any, wait: bool, max_wait: float | None) -> dict[str, Any]:
    return {"stage": "rate_limiter", "provider_type": bucket.provider_type,
            "provider": bucket.provider, "qps": bucket.qps, "burst": bucket.burst,
            "tokens": bucket.tokens, "wait": wait, "max_wait": max_wait}


def _bulkhead(bulkhead: Any) -> dict[str, Any]:
    return {"stage": "bulkhead", "provider_type": bulkhead.provider_type,
            "provider": bulkhead.provider, "max_concurrent": bulkhead.max_concurrent,
            "max_queue": bulkhead.max_queue, "in_flight": bulkhead.in_flight,
            "waiting": bulkhead.waiting}


def _label(value: Any) -> str:
    """A setting that is code or an object (a function, a type, a tuple of
    types), named rather than held, so that the dict stays plain data."""
    if isinstance(value, tuple):
        return f"({', '.join(_label(item) for item in value)})"
    name = getattr(value, "__qualname__", None)
    if isinstance(name, str) and callable(value):
        return name
    return repr(value)


def _seconds(value: float) -> str:
    return f"{value:g}s"


_SUMMARIES = {
    "fallback": lambda s: f"fallback {s['answer']}",
    "hedging": lambda s: f"hedging {s['max_hedges']}x after {s['delay']}",
    "timeout": lambda s: f"timeout {_seconds(s['seconds'])}",
    "retry": lambda s: f"retry {s['max_attempts']}x",
    "circuit_breaker": lambda s: f"breaker {s['name']!r} {s['state']}",
    "rate_limiter": lambda s: (f"limiter {s['qps']:g}/s {s['tokens']:g}/{s['burst']} tokens"
                               f"{' wait' if s['wait'] else ''}"),
    "bulkhead": lambda s: f"bulkhead {s['in_flight']}/{s['max_concurrent']}",
    "attempt_timeout": lambda s: f"attempt_timeout {_seconds(s['seconds'])}",
}
