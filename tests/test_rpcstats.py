"""Per-call statistics: the histogram's buckets, the code labels, threads, the scrape."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

import virtrigaud_resilience as vr
from virtrigaud_resilience import rpcstats


def test_buckets_are_1ms_doubling_to_32s() -> None:
    assert len(rpcstats.LATENCY_BUCKETS) == 16
    assert rpcstats.LATENCY_BUCKETS[0] == 0.001
    assert rpcstats.LATENCY_BUCKETS[-1] == pytest.approx(32.768)


@pytest.mark.parametrize(("seconds", "bucket"), [
    (0.0, 0), (0.001, 0), (0.0011, 1), (0.002, 1), (0.5, 9), (32.768, 15), (33.0, 16),
    (float("inf"), 16), (-1.0, 0), (float("nan"), 0),
])
def test_each_duration_lands_in_its_le_bucket(seconds: float, bucket: int) -> None:
    stats = rpcstats.RPCStats("t", "m")
    stats.record("OK", seconds)
    codes, buckets, _ = stats.snapshot()
    assert buckets.index(1) == bucket and sum(buckets) == 1 and codes == {"OK": 1}


def test_records_from_threads_are_all_counted() -> None:
    stats = rpcstats.RPCStats("t", "threads")

    def work() -> None:
        for _ in range(20_000):
            stats.record("OK", 0.003)

    threads = [threading.Thread(target=work) for _ in range(4)]
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can: a race would show
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    codes, buckets, total = stats.snapshot()
    assert codes == {"OK": 80_000} and buckets[2] == 80_000
    assert total == pytest.approx(240.0)


def test_stats_are_shared_per_labels() -> None:
    assert rpcstats.rpc_stats("a", "Describe") is rpcstats.rpc_stats("a", "Describe")
    assert rpcstats.rpc_stats("a", "Describe") is not rpcstats.rpc_stats("b", "Describe")
    ops = rpcstats.operation_stats("Create", "a", "p")
    ops.record(True)
    ops.record(False)
    assert (ops.success, ops.error) == (1, 1)
    assert ops in rpcstats.all_operation_stats()
    with pytest.raises(TypeError, match="method"):
        rpcstats.rpc_stats("a", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="provider"):
        rpcstats.operation_stats("Create", "a", 5)  # type: ignore[arg-type]


class _Coded(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._name = name

    def code(self) -> object:
        return type("Code", (), {"name": self._name})()


@pytest.mark.parametrize(("exc", "label"), [
    (None, "OK"),
    (asyncio.CancelledError(), "Canceled"),
    (_Coded("DEADLINE_EXCEEDED"), "DeadlineExceeded"),
    (_Coded("CANCELLED"), "Canceled"),
    (vr.NotFoundError("x"), "NotFound"),
    (vr.InvalidSpecError("x"), "InvalidArgument"),
    (vr.UnauthorizedError("x"), "Unauthenticated"),
    (vr.NotSupportedError("x"), "Unimplemented"),
    (vr.RetryableError("x"), "Unknown"),
    (vr.UnavailableError("x"), "Unavailable"),
    (vr.CircuitOpenError("b"), "Unavailable"),
    (vr.RateLimitError("x"), "ResourceExhausted"),
    (vr.OperationTimeoutError("x"), "DeadlineExceeded"),
    (vr.QuotaExceededError("x"), "ResourceExhausted"),
    (vr.ConflictError("x"), "AlreadyExists"),
    (ValueError("x"), "Unknown"),
])
def test_code_labels_use_gos_spelling(exc: BaseException | None, label: str) -> None:
    assert rpcstats.code_for_error(exc) == label


def test_the_collector_exposes_the_three_series() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from virtrigaud_resilience import metrics

    stats = rpcstats.rpc_stats("scrape", "Describe")
    stats.record("OK", 0.0015)
    stats.record("Unavailable", 100.0)
    rpcstats.operation_stats("Describe", "scrape", "prod").record(False)
    registry = prometheus_client.CollectorRegistry()
    metrics.register(registry)
    get = registry.get_sample_value
    labels = {"provider_type": "scrape", "method": "Describe"}
    assert get("virtrigaud_provider_rpc_requests_total", {**labels, "code": "OK"}) == 1
    assert get("virtrigaud_provider_rpc_requests_total", {**labels, "code": "Unavailable"}) == 1
    assert get("virtrigaud_provider_rpc_latency_seconds_bucket", {**labels, "le": "0.001"}) == 0
    assert get("virtrigaud_provider_rpc_latency_seconds_bucket", {**labels, "le": "0.002"}) == 1
    assert get("virtrigaud_provider_rpc_latency_seconds_bucket", {**labels, "le": "+Inf"}) == 2
    assert get("virtrigaud_provider_rpc_latency_seconds_count", labels) == 2
    assert get("virtrigaud_provider_rpc_latency_seconds_sum", labels) == pytest.approx(100.0015)
    assert get("virtrigaud_vm_operations_total", {"operation": "Describe", "provider_type": "scrape",
                                                  "provider": "prod", "outcome": "error"}) == 1
    text = prometheus_client.generate_latest(registry).decode()
    assert "# TYPE virtrigaud_provider_rpc_latency_seconds histogram" in text
