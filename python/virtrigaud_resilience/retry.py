"""Retries with exponential backoff, as the guide's ``resilience.Retry``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import _validate
from .backoff import STRATEGIES

__all__ = ["RetryConfig"]

#: Far beyond any sane retry budget, small enough that nothing overflows.
MAX_ATTEMPTS_LIMIT = 1_000_000
#: One day: the longest delay any config may ask for.
MAX_DELAY_LIMIT = 86_400.0


@dataclass(frozen=True)
class RetryConfig:
    """How often and how patiently to retry.

    Attributes:
        max_attempts: total calls, the first included (1 = no retry); int in [1, 1_000_000].
        base_delay: seconds before the first retry; >= 0.
        max_delay: cap on any one delay, in seconds; >= base_delay, <= 86400.
        multiplier: growth factor per attempt; >= 1.
        jitter: add randomness (for ``exponential``: up to +10% of the capped delay).
        strategy: one of ``exponential`` (the guide's formula), ``full_jitter``,
            ``equal_jitter``, ``decorrelated_jitter``; see :class:`Backoff`.

    The delay before retry ``n`` (0-based) under ``exponential`` is
    ``min(base_delay * multiplier**n, max_delay)`` plus, with jitter, a uniform
    0-10% of that: with the defaults 0.5, 1, 2, 4, 8 s.

    Durations accept float seconds, ``timedelta`` or Go strings ("500ms").
    Every field is validated; a bad value raises ValueError or TypeError
    naming the field and the value.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: bool = True
    strategy: str = "exponential"

    def __post_init__(self) -> None:
        owner = "RetryConfig"
        set_ = object.__setattr__
        set_(self, "max_attempts",
             _validate.integer(owner, "max_attempts", self.max_attempts, 1, MAX_ATTEMPTS_LIMIT))
        base = _validate.seconds(owner, "base_delay", self.base_delay, maximum=MAX_DELAY_LIMIT)
        cap = _validate.seconds(owner, "max_delay", self.max_delay, maximum=MAX_DELAY_LIMIT)
        if cap < base:
            raise ValueError(
                f"{owner} max_delay must be >= base_delay ({base:g}), got {self.max_delay!r}"
            )
        set_(self, "base_delay", base)
        set_(self, "max_delay", cap)
        set_(self, "multiplier",
             _validate.at_least(owner, "multiplier", self.multiplier, 1.0))
        set_(self, "jitter", _validate.boolean(owner, "jitter", self.jitter))
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"{owner} strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )

    @classmethod
    def default(cls) -> RetryConfig:
        """The guide's DefaultRetryConfig: 5 attempts, 0.5 s base, 30 s cap, x2, jitter."""
        return cls()

    @classmethod
    def aggressive(cls) -> RetryConfig:
        """For frequent, low-latency operations: 10 attempts, 0.1 s base, 10 s cap, x1.5."""
        return cls(max_attempts=10, base_delay=0.1, max_delay=10.0, multiplier=1.5)

    @classmethod
    def conservative(cls) -> RetryConfig:
        """For expensive operations: 3 attempts, 1 s base, 60 s cap, x3."""
        return cls(max_attempts=3, base_delay=1.0, max_delay=60.0, multiplier=3.0)

    @classmethod
    def none(cls) -> RetryConfig:
        """Retries disabled: exactly one attempt."""
        return cls(max_attempts=1)

    def replace(self, **changes: Any) -> RetryConfig:
        """A copy with ``changes`` applied (validated like the constructor)."""
        from dataclasses import replace

        return replace(self, **changes)
