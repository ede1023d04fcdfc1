"""The state behind :func:`virtrigaud_resilience.testing.set`, read at the seams.

Module globals, rebound (never mutated) by ``testing.set``, and read only on
a retry's path (after a failed attempt, before a backoff sleep or a token
wait), never on a first attempt: while testing is off a call pays nothing.
This module imports nothing, so the lowest layers may read it.
"""

from __future__ import annotations

#: The most attempts any retry makes (the first included), or None: as configured.
attempts: int | None = None
#: False: backoff sleeps and token waits on the system clock return at once.
sleep: bool = True


def capped(configured: int) -> int:
    """``configured`` attempts, capped while testing caps them."""
    cap = attempts
    return configured if cap is None or cap >= configured else cap


def stops(attempts_made: int) -> bool:
    """Whether a loop that made ``attempts_made`` attempts must stop for the cap."""
    cap = attempts
    return cap is not None and attempts_made >= cap


def waited(seconds: float) -> float:
    """The seconds a real (system clock) backoff sleep lasts: 0 while testing skips them."""
    return seconds if sleep else 0.0
