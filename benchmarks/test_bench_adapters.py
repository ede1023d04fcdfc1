"""pytest-benchmark cases for the adapters: `pytest benchmarks/ --benchmark-enable`.

Absolute timings of a loopback call, bare and through our adapter, and of the
per-call metrics record. The ratios, measured in one interleaved run with the
servers in another process, come from benchmarks/adapters.py.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

grpc = pytest.importorskip("grpc")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

import virtrigaud_resilience as vr  # noqa: E402
from loopback import GrpcServer, HttpServer, identity  # noqa: E402
from virtrigaud_resilience import rpcstats  # noqa: E402
from virtrigaud_resilience.providers import grpc as vrg  # noqa: E402
from virtrigaud_resilience.providers import http as vrh  # noqa: E402

METHOD = "/provider.v1.Provider/Describe"


def never_refusing(label: str) -> dict[str, Any]:
    return {"breaker": vr.CircuitBreaker(f"bench-{label}", "bench", label),
            "limiter": vr.TokenBucket(qps=1e9, burst=1_000_000)}


@pytest.fixture(scope="module")
def grpc_target() -> Iterator[str]:
    server = GrpcServer().start()
    yield server.target
    server.stop()


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    server = HttpServer().start()
    yield server.url
    server.stop()


def unary(channel: Any) -> Any:
    return channel.unary_unary(METHOD, request_serializer=identity,
                               response_deserializer=identity)


@pytest.mark.benchmark(group="grpc sync unary")
def test_grpc_bare(benchmark: Any, grpc_target: str) -> None:
    with grpc.insecure_channel(grpc_target) as channel:
        assert benchmark(unary(channel), b"x") == b"ok:x"


@pytest.mark.benchmark(group="grpc sync unary")
def test_grpc_intercepted(benchmark: Any, grpc_target: str) -> None:
    with grpc.insecure_channel(grpc_target) as raw:
        channel = vrg.intercept_channel(raw, "bench", "pytest-sync", **never_refusing("grpc"))
        assert benchmark(unary(channel), b"x") == b"ok:x"


@pytest.mark.benchmark(group="httpx sync GET")
def test_httpx_bare(benchmark: Any, http_url: str) -> None:
    with httpx.Client(base_url=http_url) as client:
        assert benchmark(client.get, "/vms/1").status_code == 200


@pytest.mark.benchmark(group="httpx sync GET")
def test_httpx_transport(benchmark: Any, http_url: str) -> None:
    transport = vrh.ResilientTransport("bench", "pytest-http", **never_refusing("http"))
    with httpx.Client(base_url=http_url, transport=transport) as client:
        assert benchmark(client.get, "/vms/1").status_code == 200


@pytest.mark.benchmark(group="metrics record")
def test_rpcstats_record(benchmark: Any) -> None:
    stats = rpcstats.RPCStats("bench", "record")
    benchmark(stats.record, "OK", 0.0042)
    assert stats.requests("OK") > 0
