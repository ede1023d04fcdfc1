"""Backoff delay calculators (native, stateless, thread-safe)."""

from __future__ import annotations

from collections.abc import Iterator

from . import _core, _validate

__all__ = ["Backoff", "STRATEGIES"]

#: Strategy names, in the order of the native enum.
STRATEGIES: tuple[str, ...] = ("exponential", "full_jitter", "equal_jitter", "decorrelated_jitter")

#: One day: the longest delay any calculator may return.
MAX_DELAY_LIMIT = 86_400.0


class Backoff(_core.Backoff):
    """Computes how long to wait before retry ``attempt`` (0-based), in seconds.

    Strategies, with ``d = min(base_delay * multiplier**attempt, max_delay)``:

    ``exponential``
        ``d``, plus with ``jitter`` a uniform ``[0, 0.1*d)`` (the guide's
        formula: 0.5, 1, 2, 4, 8 s for base 0.5 and multiplier 2; a capped
        30 s delay lands in ``[30, 33)``).
    ``full_jitter``
        uniform ``[0, d)`` (AWS "full jitter").
    ``equal_jitter``
        ``d/2`` plus uniform ``[0, d/2)``.
    ``decorrelated_jitter``
        ``min(max_delay, uniform[base_delay, max(base_delay, 3*previous)))``
        where ``previous`` is the delay used before (AWS "decorrelated
        jitter"); pass it to :meth:`delay` or use :meth:`delays`.

    ``jitter`` applies to ``exponential`` only: the other strategies are
    jitter strategies by definition. ``seed`` (an int in ``[0, 2**64)``)
    makes the sequence of draws reproducible; without it each thread draws
    from its own xoshiro256** generator. No attempt yields NaN, infinity or
    overflow: large attempts (``10**9``, or beyond int64) give ``max_delay``.

    Raises ValueError/TypeError naming the field for: negative or non-finite
    delays, ``max_delay < base_delay``, ``multiplier < 1``, unknown strategy,
    non-bool jitter, a bad seed; :meth:`delay` for a negative or non-int attempt.
    """

    __slots__ = ("base_delay", "max_delay", "multiplier", "jitter", "strategy", "seed")

    base_delay: float
    max_delay: float
    multiplier: float
    jitter: bool
    strategy: str
    seed: int | None

    def __init__(
        self,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        multiplier: float = 2.0,
        jitter: bool = True,
        strategy: str = "exponential",
        seed: int | None = None,
    ) -> None:
        owner = "Backoff"
        base = _validate.seconds(owner, "base_delay", base_delay, maximum=MAX_DELAY_LIMIT)
        cap = _validate.seconds(owner, "max_delay", max_delay, maximum=MAX_DELAY_LIMIT)
        if cap < base:
            raise ValueError(f"{owner} max_delay must be >= base_delay ({base:g}), got {max_delay!r}")
        mult = _validate.at_least(owner, "multiplier", multiplier, 1.0)
        jitter = _validate.boolean(owner, "jitter", jitter)
        if not isinstance(strategy, str) or strategy not in STRATEGIES:
            raise ValueError(
                f"{owner} strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
            )
        if seed is not None:
            seed = _validate.integer(owner, "seed", seed, 0, 2**64 - 1)
        super().__init__(
            base, cap, mult, jitter, STRATEGIES.index(strategy), seed is not None, seed or 0
        )
        self.base_delay, self.max_delay, self.multiplier = base, cap, mult
        self.jitter, self.strategy, self.seed = jitter, strategy, seed

    def delays(self, attempts: int) -> Iterator[float]:
        """The delays before retries 0..attempts-1, feeding each one back as
        ``previous`` (what ``decorrelated_jitter`` needs)."""
        attempts = _validate.integer("Backoff", "attempts", attempts, 0)
        previous = 0.0
        for attempt in range(attempts):
            previous = self.delay(attempt, previous)
            yield previous

    def __repr__(self) -> str:
        return (
            f"Backoff(base_delay={self.base_delay!r}, max_delay={self.max_delay!r}, "
            f"multiplier={self.multiplier!r}, jitter={self.jitter!r}, "
            f"strategy={self.strategy!r}, seed={self.seed!r})"
        )
