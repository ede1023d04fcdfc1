"""backoff's wait generators.

Each is a generator function: the decorator makes one generator per call,
primes it with ``send(None)``, then sends it each failed attempt's value
(the exception or the rejected result) and gets the next wait in seconds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Generator, Iterable
from typing import Any

__all__ = ["expo", "fibo", "constant", "runtime", "decay"]


def _values(values: Iterable[float], past: Callable[[float], bool] | None = None,
            bound: float = 0.0) -> Generator[float, Any, None]:
    """``values`` (whatever is sent in is ignored) until one is ``past`` the
    ``bound``; the ``bound`` forever from then on."""
    for value in values:
        if past is not None and past(value):
            break
        yield value
    while past is not None:
        yield bound


def expo(base: float = 2, factor: float = 1,
         max_value: float | None = None) -> Generator[float, Any, None]:
    """``factor * base ** n`` for n = 0, 1, 2, ...; ``max_value`` forever once
    a value reaches it."""
    yield  # type: ignore[misc]  # primed by send(None)
    values = (factor * base ** n for n in itertools.count())
    if max_value is None:
        yield from _values(values)
    else:
        yield from _values(values, lambda value: value >= max_value, max_value)


def fibo(max_value: int | None = None) -> Generator[int, None, None]:
    """1, 1, 2, 3, 5, ...; ``max_value`` forever once a value reaches it."""
    yield  # type: ignore[misc]

    def sequence() -> Generator[int, None, None]:
        current, following = 1, 1
        while True:
            yield current
            current, following = following, current + following

    if max_value is None:
        yield from _values(sequence())  # type: ignore[misc]
    else:
        yield from _values(sequence(), lambda value: value >= max_value,  # type: ignore[misc]
                           max_value)


def constant(interval: int | float | Iterable[float] = 1) -> Generator[float, None, None]:
    """``interval`` forever, or each value of an iterable ``interval`` once
    (then the decorator gives up)."""
    yield  # type: ignore[misc]
    try:
        values = iter(interval)  # type: ignore[arg-type]
    except TypeError:
        values = itertools.repeat(interval)  # type: ignore[arg-type]
    yield from _values(values)


def runtime(*, value: Callable[[Any], float]) -> Generator[float, None, None]:
    """``value(x)`` for each value ``x`` sent: the failed attempt's exception
    (on_exception) or result (on_predicate), e.g. a Retry-After header."""
    sent = yield  # type: ignore[misc]
    while True:
        sent = yield value(sent)


def decay(initial_value: float = 1, decay_factor: float = 1,
          min_value: float | None = None) -> Generator[float, Any, None]:
    """``initial_value * e ** (-t * decay_factor)`` for t = 0, 1, 2, ...;
    ``min_value`` forever once a value falls to it (waits that shrink)."""
    yield  # type: ignore[misc]
    values = (initial_value * math.e ** (-t * decay_factor) for t in itertools.count())
    if min_value is None:
        yield from _values(values)
    else:
        yield from _values(values, lambda value: value <= min_value, min_value)
