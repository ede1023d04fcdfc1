"""Raw transport errors classified, and never_sent() for the whole call.

- ``vr.classify()`` maps raw httpx and grpc errors (from plain clients
  against real loopback servers) as the adapters do, so a raw one reaching
  the kopf integration is a retryable TemporaryError, not a PermanentError;
- ``never_sent(exc)`` is False once any attempt of the call reached the
  provider, and for the provider's own 429 / RESOURCE_EXHAUSTED;
- an error of a retryable type marked ``retryable=False`` (a sent
  non-idempotent request) is retried by no policy, ``retry_on`` included.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
import pytest

grpc = pytest.importorskip("grpc")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience.providers import (  # noqa: E402
    CreateRequest,
    ResilientProvider,
    mark_never_sent,
    never_sent,
)
from virtrigaud_resilience.providers import grpc as vrg  # noqa: E402
from virtrigaud_resilience.providers import http as vrh  # noqa: E402

from loopback import GrpcServer, HttpServer, closed_port, identity, serving  # noqa: E402


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpServer]:
    yield from serving(HttpServer())


@pytest.fixture(scope="module")
def grpc_server() -> Iterator[GrpcServer]:
    yield from serving(GrpcServer())


def raw_http_error(url: str, timeout: float = 5.0) -> BaseException:
    with httpx.Client(timeout=timeout) as client:
        try:
            client.get(url).raise_for_status()
        except httpx.HTTPError as exc:
            return exc
    raise AssertionError(f"{url} did not fail")


def raw_rpc_error(target: str, request: bytes) -> BaseException:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/provider.v1.Provider/Describe",
                                   request_serializer=identity, response_deserializer=identity)
        try:
            call(request, timeout=5)
        except grpc.RpcError as exc:
            return exc
    raise AssertionError(f"{request!r} did not fail")


# -- classify(): raw httpx and grpc errors ----------------------------------------------------


def test_classify_maps_raw_httpx_errors(http_server: HttpServer) -> None:
    refused = raw_http_error(f"http://127.0.0.1:{closed_port()}/")
    assert isinstance(refused, httpx.ConnectError)
    error = vr.classify(refused)
    assert isinstance(error, vr.UnavailableError) and never_sent(error)
    assert error.__cause__ is refused

    slow = raw_http_error(f"{http_server.url}/sleep/2", timeout=0.05)
    assert isinstance(slow, httpx.TimeoutException)
    assert isinstance(vr.classify(slow), vr.OperationTimeoutError)

    for status, kind in ((404, vr.NotFoundError), (503, vr.UnavailableError),
                         (429, vr.RateLimitError), (500, vr.RetryableError),
                         (409, vr.ConflictError)):
        raw = raw_http_error(f"{http_server.url}/status/{status}?retry_after=3")
        assert isinstance(raw, httpx.HTTPStatusError)
        mapped = vr.classify(raw)
        assert isinstance(mapped, kind), (status, mapped)
        assert not never_sent(mapped)  # the provider answered
    assert vr.classify(raw_http_error(f"{http_server.url}/status/429?retry_after=3")
                       ).retry_after == 3.0


def test_classify_maps_raw_grpc_errors(grpc_server: GrpcServer) -> None:
    for code, kind in (("UNAVAILABLE", vr.UnavailableError), ("NOT_FOUND", vr.NotFoundError),
                       ("DEADLINE_EXCEEDED", vr.OperationTimeoutError),
                       ("RESOURCE_EXHAUSTED", vr.RateLimitError),
                       ("CANCELLED", vr.RetryableError)):  # sent by the server: nobody here cancelled
        raw = raw_rpc_error(grpc_server.target, f"code={code}".encode())
        mapped = vr.classify(raw)
        assert isinstance(mapped, kind), (code, mapped)
        assert vr.is_retryable(mapped) == (kind is not vr.NotFoundError)
    refused = vr.classify(raw_rpc_error(f"127.0.0.1:{closed_port()}", b"x"))
    assert isinstance(refused, vr.UnavailableError) and never_sent(refused)


def test_raw_transport_errors_become_kopf_temporary_errors(http_server: HttpServer,
                                                          grpc_server: GrpcServer) -> None:
    kopf = pytest.importorskip("kopf")
    from virtrigaud_resilience.integrations.kopf import to_kopf_error

    for raw in (raw_http_error(f"http://127.0.0.1:{closed_port()}/"),
                raw_http_error(f"{http_server.url}/status/503"),
                raw_rpc_error(grpc_server.target, b"code=UNAVAILABLE")):
        assert isinstance(to_kopf_error(raw), kopf.TemporaryError), raw
    assert isinstance(to_kopf_error(raw_http_error(f"{http_server.url}/status/404")),
                      kopf.PermanentError)


def test_classify_imports_neither_httpx_nor_grpc() -> None:
    code = ("import sys, virtrigaud_resilience as vr\n"
            "vr.classify(ValueError('x')); vr.classify(ConnectionResetError())\n"
            "print(sorted(m for m in ('httpx', 'grpc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": ":".join(sys.path)})
    assert out.stdout.strip() == "[]"


# -- never_sent(): the whole call -------------------------------------------------------------


def test_never_sent_answers_for_the_whole_call() -> None:
    clock = vr.ManualClock()
    retrier = vr.Retrier(vr.RetryConfig(max_attempts=3, base_delay=1, max_delay=5),
                         clock=clock)
    errors = iter([vr.UnavailableError("reached, then dropped"),  # attempt 1 reached it
                   vr.CircuitOpenError("b", retry_after=60)])  # attempt 2: ours, beyond max_delay

    def attempt() -> None:
        raise next(errors)

    with pytest.raises(vr.CircuitOpenError) as info:
        retrier.call(attempt)
    assert not never_sent(info.value)  # attempt 1 may have acted

    # Every attempt refused before sending: never sent, for the whole call too.
    refusals = vr.Retrier(vr.RetryConfig(max_attempts=2, base_delay=1), clock=clock)
    with pytest.raises(vr.RateLimitError) as ours:
        refusals.call(lambda: (_ for _ in ()).throw(vr.RateLimitError("ours", retry_after=1)))
    assert never_sent(ours.value)


async def test_never_sent_answers_for_the_whole_async_call() -> None:
    clock = vr.ManualClock()
    cb = vr.CircuitBreaker("whole", config=vr.BreakerConfig(failure_threshold=1,
                                                             reset_timeout=600), clock=clock)
    policy = (vr.PolicyBuilder("whole").with_retry(vr.RetryConfig(max_attempts=3, base_delay=1))
              .with_circuit_breaker(cb).with_clock(clock).build())

    async def dropped() -> None:
        raise vr.UnavailableError("connection dropped mid-call")

    with pytest.raises(vr.CircuitOpenError) as info:  # attempt 2 met the open breaker
        await policy.execute_async(dropped)
    assert not never_sent(info.value)


async def test_the_providers_own_rate_limit_was_sent(http_server: HttpServer,
                                                      grpc_server: GrpcServer) -> None:
    async with httpx.AsyncClient(base_url=http_server.url, transport=vrh.AsyncResilientTransport(
            "http", "own429", breaker=None, limiter=None)) as client:
        with pytest.raises(vr.RateLimitError) as http_429:
            await client.get("/status/429")
    assert not never_sent(http_429.value)
    import grpc.aio

    async with grpc.aio.insecure_channel(grpc_server.target, interceptors=vrg.aio_interceptors(
            "grpc", "own-exhausted", breaker=None, limiter=None)) as channel:
        call = channel.unary_unary("/provider.v1.Provider/Describe",
                                   request_serializer=identity, response_deserializer=identity)
        with pytest.raises(vr.RateLimitError) as exhausted:
            await call(b"code=RESOURCE_EXHAUSTED")
    assert not never_sent(exhausted.value)
    assert never_sent(vr.RateLimitError("our own limiter"))
    assert never_sent(mark_never_sent(vr.RateLimitError("our adapter's limiter")))


# -- a sent non-idempotent request is never retried ------------------------------------------


def test_an_error_marked_not_retryable_is_retried_by_no_policy() -> None:
    clock = vr.ManualClock()
    calls = []

    def sent_post() -> None:
        calls.append(1)
        raise vr.UnavailableError("POST sent, then dropped", retryable=False)

    policy = (vr.PolicyBuilder("post")
              .with_retry(vr.RetryConfig(max_attempts=5, base_delay=1),
                          retry_on=vr.UnavailableError)
              .with_clock(clock).build())
    with pytest.raises(vr.UnavailableError):
        policy.execute(sent_post)
    assert len(calls) == 1
    retry_on_all = vr.RetryConfig(retry_on=lambda exc: True)
    assert not retry_on_all.should_retry(vr.UnavailableError("x", retryable=False))
    assert retry_on_all.should_retry(vr.NotFoundError("business answer, retried on request"))
    assert retry_on_all.should_retry(ValueError("anything"))


async def test_resilient_provider_create_not_retried_once_sent(grpc_server: GrpcServer) -> None:
    """idempotent={"create": False}: the first attempt reached the server, so
    the call stops there, and never_sent says so."""
    import grpc.aio

    from test_composed import Client

    clock = vr.ManualClock()
    async with grpc.aio.insecure_channel(grpc_server.target) as channel:
        create = channel.unary_unary("/provider.v1.Provider/Create",
                                     request_serializer=identity, response_deserializer=identity)

        async def send(down: bool) -> None:
            await create(b"code=UNAVAILABLE")

        rp = ResilientProvider(Client(send), "grpc", "create-once", clock=clock,
                               idempotent={"create": False})
        seen = grpc_server.hits
        with pytest.raises(vr.UnavailableError) as info:
            await rp.create(CreateRequest("web-1"))
    assert grpc_server.hits - seen == 1 and not never_sent(info.value)
