"""pytest-benchmark cases for the drop-ins' hot paths (`pytest benchmarks/ --benchmark-enable`).

Each is timed beside the peer it replaces when that is installed (the
``bench`` extra); the ratios measured in one interleaved run come from
``python benchmarks/compare.py --sections compat``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from virtrigaud_resilience.compat import aiolimiter as c_aiolimiter
from virtrigaud_resilience.compat import circuitbreaker as c_circuitbreaker
from virtrigaud_resilience.compat import pybreaker as c_pybreaker


def noop() -> None:
    """The guarded function: does nothing."""


def _module(name: str, ours: Any) -> Any:
    if name == "compat":
        return ours
    return pytest.importorskip(name)


@pytest.mark.benchmark(group="drop-in pybreaker")
@pytest.mark.parametrize("which", ["compat", "pybreaker"])
def test_pybreaker_call(benchmark: Any, which: str) -> None:
    module = _module(which, c_pybreaker)
    breaker = module.CircuitBreaker(fail_max=10, reset_timeout=60)
    benchmark(breaker.call, noop)
    assert breaker.current_state == "closed"


@pytest.mark.benchmark(group="drop-in circuitbreaker")
@pytest.mark.parametrize("which", ["compat", "circuitbreaker"])
def test_circuitbreaker_decorated_call(benchmark: Any, which: str) -> None:
    module = _module(which, c_circuitbreaker)
    guarded = module.CircuitBreaker(failure_threshold=10, recovery_timeout=60)(noop)
    benchmark(guarded)


@pytest.mark.benchmark(group="drop-in aiolimiter")
@pytest.mark.parametrize("which", ["compat", "aiolimiter"])
def test_aiolimiter_async_with(benchmark: Any, which: str) -> None:
    module = _module(which, c_aiolimiter)
    limiter = module.AsyncLimiter(1e9, 1)
    loop = asyncio.new_event_loop()

    async def thousand() -> None:
        for _ in range(1000):
            async with limiter:
                pass

    try:
        benchmark(lambda: loop.run_until_complete(thousand()))
    finally:
        loop.close()
