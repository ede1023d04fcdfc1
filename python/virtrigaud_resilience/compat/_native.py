"""What the drop-ins share: the native breaker's hook flags and state codes,
cancellation, and time conversions between a breaker's clock and the wall clock."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from .. import _core

# _core.CircuitBreaker._set_hooks() flags (Hooks in cpp/src/module.cpp).
HOOK_TRANSITION = 1
HOOK_REJECT = 2
HOOK_ERROR = 4
HOOK_GENERATOR = 8
ACCEPT_COROUTINE = 16
DELEGATE = 32

# Native state codes (as _core reports them) and _record_undispatched outcomes.
CLOSED, HALF_OPEN, OPEN = 0, 1, 2
SUCCESS, FAILURE, RELEASE = 0, 1, 2
#: _core's move kinds.
MOVE_CLOSE, MOVE_HALF_OPEN, MOVE_OPEN, MOVE_OPEN_COUNTED = 0, 1, 2, 3

#: Exceptions that end a call without an outcome: the call gave up its slot,
#: it did not fail (the pure-Python peers count some of them; see docs/migrating.md).
CANCELLED = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)

#: Largest success threshold the native breaker takes.
MAX_SUCCESS_THRESHOLD: int = _core.BREAKER_MAX_SUCCESS_THRESHOLD
MAX_FAILURE_THRESHOLD: int = _core.BREAKER_MAX_FAILURE_THRESHOLD
#: Longest reset / recovery timeout in seconds (about 31 years).
MAX_TIMEOUT = 1e9


def is_half_open_probe(ticket: int) -> bool:
    """Whether a ticket holds a half-open slot (Ticket::encode's low bit)."""
    return ticket >= 0 and ticket & 1 == 1


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
