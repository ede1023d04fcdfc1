"""backoff's jitter functions: a wait in, the jittered wait out."""

from __future__ import annotations

import random

__all__ = ["random_jitter", "full_jitter"]


def random_jitter(value: float) -> float:
    """``value`` plus up to one second (``random.random()``)."""
    return value + random.random()


def full_jitter(value: float) -> float:
    """A uniform draw in ``[0, value]`` (AWS "full jitter"; the default)."""
    return random.uniform(0, value)
