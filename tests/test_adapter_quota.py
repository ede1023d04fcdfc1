"""The adapters tell the adaptive rate what the provider says of its quota
(issue 24): HTTP quota headers on any response, a 429's Retry-After, a gRPC
RESOURCE_EXHAUSTED with its trailing metadata. Against a real HTTP server
(uvicorn) and a real grpc.aio server on 127.0.0.1."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
grpc = pytest.importorskip("grpc")

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience.providers import grpc as vrg  # noqa: E402
from virtrigaud_resilience.providers import http as vrh  # noqa: E402

from loopback import GrpcServer, HttpServer, HttpState, identity, serving  # noqa: E402

ADAPTIVE = vr.Config.from_env({"RATE_LIMIT_ADAPTIVE": "true"})
_labels = itertools.count()


def quota_app(state: HttpState) -> Any:
    """Answers ``?status=429&h_retry-after=3&h_ratelimit-remaining=0``: that
    status, each ``h_`` parameter a header."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        state.hits += 1
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        headers = [(k[2:].encode("latin-1"), v.encode("latin-1"))
                   for k, v in query.items() if k.startswith("h_")]
        await send({"type": "http.response.start", "status": int(query.get("status", "200")),
                    "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpServer]:
    yield from serving(HttpServer(quota_app))


@pytest.fixture(scope="module")
def grpc_server() -> Iterator[GrpcServer]:
    yield from serving(GrpcServer())


def bucket(qps: float = 100, burst: int = 100) -> vr.TokenBucket:
    return vr.TokenBucket(qps, burst, provider_type="http", provider=f"q{next(_labels)}")


def http_client(server: HttpServer, limiter: vr.TokenBucket,
                config: vr.Config = ADAPTIVE) -> Any:
    transport = vrh.ResilientTransport("http", limiter.provider, config=config,
                                       limiter=limiter, breaker=None)
    return httpx.Client(base_url=server.url, transport=transport)


def get(client: Any, **params: str) -> Any:
    """GET with the headers given (``retry_after="3"`` -> ``Retry-After: 3``)."""
    query = {("status" if k == "status" else "h_" + k.replace("_", "-")): v
             for k, v in params.items()}
    return client.get("/", params=query)


# -- HTTP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["ratelimit", "x-ratelimit"])
def test_a_spent_quota_header_pauses_the_bucket_until_the_reset(http_server: HttpServer,
                                                                prefix: str) -> None:
    limiter = bucket()
    with http_client(http_server, limiter) as client:
        rate = client._transport.step.adaptive_rate
        assert rate is vr.AdaptiveRate.for_bucket(limiter)  # the provider's policies' one
        get(client, **{f"{prefix}_remaining": "5", f"{prefix}_reset": "30"})
        assert rate.pauses == 0 and limiter.try_acquire()  # quota left: nothing changes
        spent = get(client, **{f"{prefix}_remaining": "0", f"{prefix}_reset": "30"})
        assert spent.status_code == 200
    assert rate.pauses == 1 and rate.throttles == 0
    assert not limiter.try_acquire()  # spends nothing until the reset, 30 s away
    assert limiter.retry_after() > 25


def test_a_429_is_a_throttle_with_its_retry_after(http_server: HttpServer) -> None:
    limiter = bucket()
    with http_client(http_server, limiter) as client:
        rate = client._transport.step.adaptive_rate
        with pytest.raises(vr.RateLimitError) as info:
            get(client, status="429", retry_after="20")
    assert info.value.retry_after == 20
    assert rate.throttles == 1 and rate.pauses == 1
    assert limiter.retry_after() > 15


@pytest.mark.parametrize(("headers", "status"), [
    ({"ratelimit_remaining": "0", "ratelimit_reset": "soon"}, "200"),
    ({"x-ratelimit_remaining": "none", "x-ratelimit_reset": "3"}, "200"),
    ({"retry_after": "later"}, "429"),
])
def test_a_malformed_header_is_ignored_and_counted(http_server: HttpServer,
                                                  headers: dict[str, str], status: str) -> None:
    limiter = bucket()
    with http_client(http_server, limiter) as client:
        rate = client._transport.step.adaptive_rate
        try:
            get(client, status=status, **headers)
        except vr.RateLimitError:
            assert status == "429"
    assert rate.malformed_headers == 1 and rate.pauses == 0


def test_our_own_limiters_refusal_is_never_a_throttle(http_server: HttpServer) -> None:
    limiter = bucket(qps=1, burst=1)
    with http_client(http_server, limiter) as client:
        rate = client._transport.step.adaptive_rate
        get(client)
        with pytest.raises(vr.RateLimitError, match="rate limit exceeded"):
            get(client)  # the bucket refused: nothing was sent
    assert http_server.hits >= 1 and rate.throttles == 0 and not rate.enabled


def test_inside_a_policy_on_the_same_bucket_a_429_counts_once(http_server: HttpServer) -> None:
    limiter = bucket()
    rate = vr.AdaptiveRate.for_bucket(limiter)
    policy = vr.PolicyBuilder("quota").with_rate_limiter(limiter).with_adaptive_rate(rate).build()
    with http_client(http_server, limiter) as client:
        assert client._transport.step.adaptive_rate is rate
        with pytest.raises(vr.RateLimitError):
            policy.execute(get, client, status="429", retry_after="20")
    assert rate.throttles == 1 and rate.pauses == 1  # the policy's observation, not the adapter's


def test_a_throttle_after_the_quota_headers_keeps_their_pause(http_server: HttpServer) -> None:
    """The adapter reads the 429's headers (a pause until the reset), then
    the policy observes its error (a throttle): the decrease must not end
    the pause; the learned rate applies once it is over."""
    limiter = bucket()
    rate = vr.AdaptiveRate.for_bucket(limiter)
    policy = vr.PolicyBuilder("quota").with_rate_limiter(limiter).with_adaptive_rate(rate).build()
    with http_client(http_server, limiter) as client:
        with pytest.raises(vr.RateLimitError):
            policy.execute(get, client, status="429", ratelimit_remaining="0",
                           ratelimit_reset="30")
    assert rate.throttles == 1 and rate.pauses == 1
    assert limiter.retry_after() > 25


def test_the_adapters_own_refusals_bring_the_growth_up_to_date(http_server: HttpServer) -> None:
    """Standalone (no policy around it), the adapter's bucket refusing is
    when the learned rate grows back along CUBIC's curve (the bucket on a
    ManualClock: 20 calls/s for 2 s, a throttle, then 5 s of calls)."""
    clock = vr.ManualClock()
    limiter = vr.TokenBucket(20, 20, clock=clock, provider_type="http",
                             provider=f"q{next(_labels)}")
    with http_client(http_server, limiter) as client:
        rate = client._transport.step.adaptive_rate
        for _ in range(40):
            clock.advance(0.05)
            get(client)
        with pytest.raises(vr.RateLimitError):
            get(client, status="429")
        lowered = rate.rate
        refused = 0
        for _ in range(100):
            clock.advance(0.05)
            try:
                get(client)
            except vr.RateLimitError:
                refused += 1
    assert lowered < 20 and refused > 0 and rate.rate > lowered


def test_without_rate_limit_adaptive_nothing_is_read(http_server: HttpServer) -> None:
    limiter = bucket()
    with http_client(http_server, limiter, config=vr.Config()) as client:
        assert client._transport.step.adaptive_rate is None
        get(client, ratelimit_remaining="0", ratelimit_reset="30")
    assert limiter.try_acquire()


# -- gRPC ---------------------------------------------------------------------------------------


def grpc_call(server: GrpcServer, limiter: vr.TokenBucket) -> tuple[Any, Any]:
    channel = grpc.insecure_channel(server.target)
    guarded = vrg.intercept_channel(channel, "grpc", limiter.provider, config=ADAPTIVE,
                                    limiter=limiter, breaker=None)
    return channel, guarded.unary_unary("/test.Svc/Describe", request_serializer=identity,
                                        response_deserializer=identity)


@pytest.mark.parametrize(("trailing", "pauses"), [
    ("x-ratelimit-remaining=0;x-ratelimit-reset=30", 1),
    ("ratelimit-remaining=0;ratelimit-reset=30", 1),
    ("retry-after=30", 1),
    ("", 0),
])
def test_resource_exhausted_is_a_throttle_and_its_metadata_read(grpc_server: GrpcServer,
                                                                trailing: str,
                                                                pauses: int) -> None:
    limiter = bucket()
    channel, call = grpc_call(grpc_server, limiter)
    with channel:
        rate = vr.AdaptiveRate.for_bucket(limiter)
        with pytest.raises(vr.RateLimitError):
            call(f"code=RESOURCE_EXHAUSTED;{trailing}".encode())
    assert rate.throttles == 1 and rate.pauses == pauses
    assert (limiter.retry_after() > 25) is bool(pauses)


def test_a_grpc_limiters_refusal_is_never_a_throttle(grpc_server: GrpcServer) -> None:
    limiter = bucket(qps=1, burst=1)
    channel, call = grpc_call(grpc_server, limiter)
    with channel:
        rate = vr.AdaptiveRate.for_bucket(limiter)
        with pytest.raises(vr.UnavailableError):  # the provider's other errors say nothing
            call(b"code=UNAVAILABLE")
        with pytest.raises(vr.RateLimitError, match="rate limit exceeded"):
            call(b"hello")  # our bucket refused: never sent
    assert rate.throttles == 0 and rate.malformed_headers == 0 and not rate.enabled
