"""pytest-benchmark cases for every hot path: `pytest benchmarks/ --benchmark-enable`.

Absolute timings only; the ratios against a bare call and the peers come
from benchmarks/compare.py, which measures them in one interleaved run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import virtrigaud_resilience as vr


def noop() -> None:
    """The guarded function: does nothing."""


async def noop_async() -> None:
    """The guarded coroutine function: returns at once."""


def composed() -> vr.Policy:
    return (vr.PolicyBuilder("bench").with_retry(vr.RetryConfig.default())
            .with_circuit_breaker(vr.CircuitBreaker("bench"))
            .with_rate_limiter(vr.TokenBucket(qps=1e9, burst=1_000_000)).build())


@pytest.mark.benchmark(group="call")
def test_bare_call(benchmark: Any) -> None:
    benchmark(noop)


@pytest.mark.benchmark(group="rate limiter")
def test_token_bucket_try_acquire(benchmark: Any) -> None:
    bucket = vr.TokenBucket(qps=1e9, burst=1_000_000)
    assert benchmark(bucket.try_acquire) is True


@pytest.mark.benchmark(group="circuit breaker")
def test_breaker_call(benchmark: Any) -> None:
    breaker = vr.CircuitBreaker("bench")
    benchmark(breaker.call, noop)
    assert breaker.state is vr.BreakerState.CLOSED


@pytest.mark.benchmark(group="backoff")
def test_backoff_delay(benchmark: Any) -> None:
    backoff = vr.Backoff()
    assert 4.0 <= benchmark(backoff.delay, 3) <= 4.4


@pytest.mark.benchmark(group="policy")
def test_policy_execute(benchmark: Any) -> None:
    policy = composed()
    benchmark(policy.execute, noop)


@pytest.mark.benchmark(group="retry")
def test_retry_function(benchmark: Any) -> None:
    # vr.retry(config, fn): one cached Retrier per config, not one built per call.
    config = vr.RetryConfig.default()
    benchmark(vr.retry, config, noop)


@pytest.mark.benchmark(group="bulkhead")
def test_bulkhead_enter_exit(benchmark: Any) -> None:
    bulkhead = vr.Bulkhead(8)

    def enter_exit() -> None:
        with bulkhead:
            pass

    benchmark(enter_exit)


@pytest.mark.benchmark(group="policy")
def test_policy_execute_async(benchmark: Any) -> None:
    policy = composed()
    loop = asyncio.new_event_loop()

    async def hundred() -> None:
        for _ in range(100):
            await policy.execute_async(noop_async)

    try:
        benchmark(lambda: loop.run_until_complete(hundred()))
    finally:
        loop.close()


@pytest.fixture
def registry() -> Any:
    prometheus_client = pytest.importorskip("prometheus_client")
    from virtrigaud_resilience import metrics

    registry = prometheus_client.CollectorRegistry()
    metrics.register(registry)
    yield registry
    metrics.unregister(registry)


@pytest.mark.benchmark(group="metrics")
def test_policy_execute_with_metrics_registered(benchmark: Any, registry: Any) -> None:
    import prometheus_client

    policy = composed()
    prometheus_client.generate_latest(registry)
    benchmark(policy.execute, noop)


@pytest.mark.benchmark(group="metrics")
@pytest.mark.parametrize("providers", [100, 10_000])
def test_scrape_of_10000_breakers(benchmark: Any, registry: Any, providers: int) -> None:
    import prometheus_client

    breakers = [vr.CircuitBreaker(f"vm-{i}", "bench-scrape", f"p{i % providers}")
                for i in range(10_000)]
    text = benchmark(prometheus_client.generate_latest, registry).decode()
    assert f'provider="p{providers - 1}",provider_type="bench-scrape"' in text
    del breakers
