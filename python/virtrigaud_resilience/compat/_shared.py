"""What the drop-ins share besides the native contract (which is
virtrigaud_resilience._native): cancellation, the native breaker's limits,
and time conversions between a breaker's clock and the wall clock."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from .. import _core

#: Exceptions that end a call without an outcome: the call gave up its slot,
#: it did not fail (the pure-Python peers count some of them; see docs/migrating.md).
CANCELLED = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)

#: Largest success threshold the native breaker takes.
MAX_SUCCESS_THRESHOLD: int = _core.BREAKER_MAX_SUCCESS_THRESHOLD
MAX_FAILURE_THRESHOLD: int = _core.BREAKER_MAX_FAILURE_THRESHOLD
#: Longest reset / recovery timeout in seconds (about 31 years).
MAX_TIMEOUT = 1e9


def wall_of(breaker: _core.CircuitBreaker, stamp_ns: int) -> datetime:
    """The UTC wall-clock time of a stamp on ``breaker``'s clock."""
    age_ns = breaker._now_ns() - stamp_ns
    return datetime.now(timezone.utc) - timedelta(microseconds=age_ns / 1000)


def stamp_of(breaker: _core.CircuitBreaker, when: datetime) -> int:
    """The stamp on ``breaker``'s clock of a wall-clock time (a naive one is local time)."""
    if when.tzinfo is None:
        when = when.astimezone()
    age = datetime.now(timezone.utc) - when
    return breaker._now_ns() - round(age.total_seconds() * 1e9)
