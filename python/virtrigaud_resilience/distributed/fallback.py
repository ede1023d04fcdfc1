"""What decides while Redis cannot: the ``fallback=`` of the distributed buckets.

=========  =================================================================
fallback   a decision while Redis is unreachable
=========  =================================================================
"local"    a local native TokenBucket at ``local_share`` of the fleet's rate
           and burst (the default): the process keeps limiting itself.
"allow"    every token is granted (fail open).
"deny"     no token is granted (fail closed): every method of the bucket
           raises ``UnavailableError``.
=========  =================================================================

A local share of ``1 / replicas`` keeps the fleet near its limit during an
outage; the default share of both buckets is that, learnt: 1 / the fleet's
last known membership (documented where each learns it).
"""

from __future__ import annotations

import math
from typing import Literal

from .. import _validate
from ..ratelimit import MAX_BURST, MIN_QPS, validate_rate

__all__ = ["Fallback", "FALLBACKS", "check_fallback", "check_share", "local_rate"]

Fallback = Literal["local", "allow", "deny"]
FALLBACKS: tuple[Fallback, ...] = ("local", "allow", "deny")


def check_fallback(owner: str, fallback: object) -> Fallback:
    """``fallback`` itself if it is one of FALLBACKS, else a ValueError/TypeError naming it."""
    fallback = _validate.string(owner, "fallback", fallback)
    for choice in FALLBACKS:
        if fallback == choice:
            return choice
    raise ValueError(f"{owner} fallback must be 'local', 'allow' or 'deny', got {fallback!r}")


def check_share(owner: str, share: object) -> float:
    """A fraction of the fleet's rate: finite, in (0, 1]."""
    value = _validate.positive(owner, "local_share", share, maximum=1.0)
    return value


def local_rate(owner: str, qps: float, burst: int, share: float) -> tuple[float, int]:
    """(qps, burst) of a local bucket holding ``share`` of (qps, burst):
    at least the slowest rate a bucket has and a burst of 1."""
    local_qps = max(qps * share, MIN_QPS)
    local_burst = min(max(1, math.floor(burst * share)), MAX_BURST)
    return validate_rate(owner, local_qps, local_burst)

