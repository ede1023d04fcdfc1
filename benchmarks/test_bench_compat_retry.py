"""pytest-benchmark cases for the retry drop-ins' success path:
`pytest benchmarks/ --benchmark-enable`. The ratios against the real
tenacity and backoff come from `compare.py --sections retry-dropins`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from virtrigaud_resilience.compat import backoff, tenacity


def noop() -> None:
    """The decorated function: returns at once."""


async def noop_async() -> None:
    """The decorated coroutine function: returns at once."""


def _decorated_tenacity(fn: Any) -> Any:
    return tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential())(fn)


@pytest.mark.benchmark(group="retry drop-ins")
def test_compat_tenacity_retry(benchmark: Any) -> None:
    decorated = _decorated_tenacity(noop)
    benchmark(decorated)
    assert decorated.statistics["attempt_number"] == 1


@pytest.mark.benchmark(group="retry drop-ins")
def test_compat_backoff_on_exception(benchmark: Any) -> None:
    benchmark(backoff.on_exception(backoff.expo, Exception, max_tries=3)(noop))


@pytest.mark.benchmark(group="retry drop-ins")
def test_compat_tenacity_async_retry(benchmark: Any) -> None:
    decorated = _decorated_tenacity(noop_async)

    async def many() -> None:
        for _ in range(1000):
            await decorated()

    loop = asyncio.new_event_loop()
    try:
        benchmark(lambda: loop.run_until_complete(many()))
    finally:
        loop.close()
