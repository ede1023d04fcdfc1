"""vr.otel with the adapters, against real loopback servers: the attempt
span carries ``http.request.resend_count`` (httpx) or ``rpc.system`` /
``rpc.method`` (gRPC), and the HTTP / gRPC client spans of
opentelemetry-instrumentation-httpx / -grpc nest under it (issue 26)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
httpx = pytest.importorskip("httpx")
grpc = pytest.importorskip("grpc")
pytest.importorskip("uvicorn")
pytest.importorskip("opentelemetry.instrumentation.httpx")
pytest.importorskip("opentelemetry.instrumentation.grpc")

import grpc.aio  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient  # noqa: E402
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience import otel  # noqa: E402
from virtrigaud_resilience.providers import grpc as vrg  # noqa: E402
from virtrigaud_resilience.providers import http as vrh  # noqa: E402

from loopback import GrpcServer, HttpServer, serving  # noqa: E402

RETRY3 = vr.RetryConfig(max_attempts=3, base_delay=1.0, max_delay=10.0, jitter=False)
_keys = itertools.count()


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpServer]:
    yield from serving(HttpServer())


@pytest.fixture(scope="module")
def grpc_server() -> Iterator[GrpcServer]:
    yield from serving(GrpcServer())


class Traced:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))


@pytest.fixture
def traced() -> Iterator[Traced]:
    tracing = Traced()
    otel.instrument(tracer_provider=tracing.provider)
    try:
        yield tracing
    finally:
        otel.uninstrument()
        tracing.provider.shutdown()


@pytest.fixture
def exporter(traced: Traced) -> InMemorySpanExporter:
    return traced.exporter


@pytest.fixture
def instrumented_httpx(traced: Traced) -> Iterator[None]:
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=traced.provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


@pytest.fixture
def instrumented_grpc(traced: Traced) -> Iterator[None]:
    instrumentor = GrpcAioInstrumentorClient()
    instrumentor.instrument(tracer_provider=traced.provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def policy() -> vr.Policy:
    return vr.PolicyBuilder("vm").with_retry(RETRY3).with_clock(vr.ManualClock()).build()


def attempts(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == "virtrigaud.attempt"]


def clients(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is trace.SpanKind.CLIENT]


def check_nested(exporter: InMemorySpanExporter, codes_attributes: tuple[str, ...],
                 codes: list[Any]) -> None:
    """One client span per attempt, each the child of its attempt's span."""
    spans = attempts(exporter)
    client_spans = clients(exporter)
    assert [span.parent.span_id for span in client_spans] == [  # type: ignore[union-attr]
        span.context.span_id for span in spans]
    assert [next(span.attributes[name] for name in codes_attributes if name in span.attributes)
            for span in client_spans] == codes


def flaky_url(server: HttpServer) -> str:
    return f"{server.url}/flaky/otel-{next(_keys)}?fail=2&status=503"


# -------------------------------------------------------------------- httpx --

def test_an_http_attempt_span_counts_the_resends(http_server: HttpServer,
                                                 exporter: InMemorySpanExporter) -> None:
    with vrh.ResilientClient("http", f"otel-{next(_keys)}", breaker=None, limiter=None) as client:
        response = policy().execute(client.get, flaky_url(http_server))
    assert response.status_code == 200
    assert [(s.attributes["virtrigaud.attempt.number"],
             s.attributes.get("http.request.resend_count"),
             s.attributes.get("error.type")) for s in attempts(exporter)] == [
        (0, None, "Unavailable"), (1, 1, "Unavailable"), (2, 2, None)]


async def test_the_httpx_instrumentations_spans_nest_under_the_attempts(
        http_server: HttpServer, exporter: InMemorySpanExporter,
        instrumented_httpx: None) -> None:
    async with vrh.AsyncResilientClient("http", f"otel-{next(_keys)}", breaker=None,
                                        limiter=None) as client:
        response = await policy().execute_async(client.get, flaky_url(http_server))
    assert response.status_code == 200
    assert [s.attributes.get("http.request.resend_count") for s in attempts(exporter)] == [
        None, 1, 2]
    check_nested(exporter, ("http.response.status_code", "http.status_code"), [503, 503, 200])


# --------------------------------------------------------------------- gRPC --

async def call_twice_failing(channel: Any) -> bytes:
    """A unary call whose first attempt the server fails UNAVAILABLE."""
    sent: list[int] = []
    method = channel.unary_unary("/provider.v1.Provider/Describe")

    async def describe() -> bytes:
        sent.append(1)
        result: bytes = await method(b"code=UNAVAILABLE" if len(sent) == 1 else b"vm-1")
        return result

    return await policy().execute_async(describe)  # type: ignore[no-any-return]


def check_rpc_attempts(exporter: InMemorySpanExporter) -> None:
    assert [(s.attributes["virtrigaud.attempt.number"], s.attributes.get("rpc.system"),
             s.attributes.get("rpc.method"), s.attributes.get("error.type"))
            for s in attempts(exporter)] == [
        (0, "grpc", "Describe", "Unavailable"), (1, "grpc", "Describe", None)]


@pytest.mark.parametrize("make", ["aio_channel", "aio_interceptors"])
async def test_a_grpc_attempt_span_names_the_rpc(grpc_server: GrpcServer,
                                                 exporter: InMemorySpanExporter,
                                                 make: str) -> None:
    channel = open_channel(make, grpc_server)
    try:
        assert await call_twice_failing(channel) == b"ok:vm-1"
    finally:
        await channel.close()
    check_rpc_attempts(exporter)


@pytest.mark.parametrize("make", ["aio_channel", "aio_interceptors"])
async def test_the_grpc_instrumentations_spans_nest_under_the_attempts(
        grpc_server: GrpcServer, exporter: InMemorySpanExporter, instrumented_grpc: None,
        make: str) -> None:
    channel = open_channel(make, grpc_server)
    try:
        assert await call_twice_failing(channel) == b"ok:vm-1"
    finally:
        await channel.close()
    check_rpc_attempts(exporter)
    check_nested(exporter, ("rpc.grpc.status_code",), [14, 0])  # UNAVAILABLE, OK


def open_channel(make: str, server: GrpcServer) -> Any:
    label = f"otel-{next(_keys)}"
    if make == "aio_channel":
        return vrg.aio_channel(server.target, "grpc", label, breaker=None, limiter=None)
    return grpc.aio.insecure_channel(server.target, interceptors=vrg.aio_interceptors(
        "grpc", label, breaker=None, limiter=None))


# --------------------------------------------------- the bus the adapters tell --

def test_the_adapters_tell_the_request_listeners_their_protocol(
        http_server: HttpServer) -> None:
    from virtrigaud_resilience import events

    heard: list[tuple[str, str]] = []

    def listener(system: str, method: str) -> None:
        heard.append((system, method))

    events.on_request(listener)
    try:
        with vrh.ResilientClient("http", f"otel-{next(_keys)}", breaker=None,
                                 limiter=None) as client:
            assert client.get(f"{http_server.url}/ok").status_code == 200
    finally:
        assert events.remove_listener(listener)
    assert heard == [("http", "GET")]
    assert events.request_listeners == []
