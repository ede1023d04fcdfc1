"""The httpx transports against a real HTTP server (uvicorn) on 127.0.0.1.

Every status of the table, sync and async, Retry-After in both forms, the
breaker and the limiter in front of the wire, deadlines, connection
failures, and cancellations that leave nothing behind.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience import rpcstats  # noqa: E402
from virtrigaud_resilience.providers import never_sent  # noqa: E402
from virtrigaud_resilience.providers import http as vrh  # noqa: E402

from loopback import DroppingServer, HttpServer, closed_port, serving  # noqa: E402

#: status -> (taxonomy class, retryable, counts as a breaker failure)
TABLE: dict[int, tuple[type[vr.ProviderError], bool, bool]] = {
    400: (vr.InvalidSpecError, False, False),
    401: (vr.UnauthorizedError, False, False),
    403: (vr.UnauthorizedError, False, False),
    404: (vr.NotFoundError, False, False),
    405: (vr.InvalidSpecError, False, False),   # other 4xx: a non-retryable ProviderError
    408: (vr.OperationTimeoutError, True, True),
    409: (vr.ConflictError, False, False),
    410: (vr.InvalidSpecError, False, False),
    412: (vr.ConflictError, False, False),
    418: (vr.InvalidSpecError, False, False),
    422: (vr.InvalidSpecError, False, False),
    429: (vr.RateLimitError, True, False),
    500: (vr.RetryableError, True, True),
    501: (vr.NotSupportedError, False, False),  # like gRPC UNIMPLEMENTED: an answer
    502: (vr.UnavailableError, True, True),
    503: (vr.UnavailableError, True, True),
    504: (vr.UnavailableError, True, True),
    505: (vr.RetryableError, True, True),
    599: (vr.RetryableError, True, True),
}

_labels = itertools.count()

#: A short read timeout only (a loaded machine may take longer to connect).
READ_ONLY = httpx.Timeout(5.0, read=0.05)


@pytest.fixture(scope="module")
def server() -> Iterator[HttpServer]:
    yield from serving(HttpServer())


@pytest.fixture(scope="module")
def dropping() -> Iterator[DroppingServer]:
    yield from serving(DroppingServer())


def breaker(threshold: int = 100) -> vr.CircuitBreaker:
    return vr.CircuitBreaker("http-test", "http", f"b{next(_labels)}",
                             vr.BreakerConfig(failure_threshold=threshold, reset_timeout=0.05,
                                              half_open_max_calls=1))


def half_open(cb: vr.CircuitBreaker) -> None:
    for _ in range(cb.failure_threshold):
        permit = cb.try_acquire()
        assert permit is not None
        permit.failure()
    time.sleep(0.06)


def async_client(base: str, **options: Any) -> Any:
    options.setdefault("limiter", None)
    options.setdefault("breaker", breaker())
    transport = vrh.AsyncResilientTransport("http", f"p{next(_labels)}", **options)
    return httpx.AsyncClient(base_url=base, transport=transport)


def sync_client(base: str, **options: Any) -> Any:
    options.setdefault("limiter", None)
    options.setdefault("breaker", breaker())
    transport = vrh.ResilientTransport("http", f"p{next(_labels)}", **options)
    return httpx.Client(base_url=base, transport=transport)


def check_status_error(exc: vr.ProviderError, status: int, cb: vr.CircuitBreaker) -> None:
    expected, retryable, failure = TABLE[status]
    assert isinstance(exc, expected), (status, type(exc))
    assert exc.retryable is retryable
    assert isinstance(exc, httpx.HTTPStatusError)  # code catching httpx's error still works
    assert exc.response.status_code == status and exc.request.url.path == f"/status/{status}"
    assert f"answer to /status/{status}" in str(exc)  # the body is quoted
    assert cb.failures == (1 if failure else 0), status
    assert exc.retry_after == (5.0 if status in (429, 503) else None)


# -- the table ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(TABLE))
async def test_async_maps_every_status(server: HttpServer, status: int) -> None:
    cb = breaker()
    async with async_client(server.url, breaker=cb) as client:
        with pytest.raises(vr.ProviderError) as info:
            await client.get(f"/status/{status}", params={"retry_after": "5"})
    check_status_error(info.value, status, cb)


@pytest.mark.parametrize("status", list(TABLE))
def test_sync_maps_every_status(server: HttpServer, status: int) -> None:
    cb = breaker()
    with sync_client(server.url, breaker=cb) as client:
        with pytest.raises(vr.ProviderError) as info:
            client.get(f"/status/{status}", params={"retry_after": "5"})
    check_status_error(info.value, status, cb)


@pytest.mark.parametrize("status", [200, 201, 204, 302])
async def test_other_statuses_pass_through(server: HttpServer, status: int) -> None:
    cb = breaker()
    async with async_client(server.url, breaker=cb) as client:
        response = await client.get(f"/status/{status}")
    assert response.status_code == status and cb.successes == 1


def test_success_is_counted_with_its_status(server: HttpServer) -> None:
    with sync_client(server.url, breaker=None) as client:
        assert client.get("/vms/1").text == "answer to /vms/1"
        client.post("/vms", extensions={vrh.OPERATION_EXTENSION: "Create"})
    assert rpcstats.rpc_stats("http", "GET").requests("200") >= 1
    assert rpcstats.rpc_stats("http", "Create").requests("200") >= 1


# -- Retry-After ----------------------------------------------------------------------------


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(("status", "header", "low", "high"), [
    (429, "7", 7, 7), (503, "7", 7, 7), (429, "0", 0, 0),
    (503, "__date+120", 115, 121), (429, "__date-60", 0, 0),
])
def test_retry_after_in_both_forms(server: HttpServer, status: int, header: str, low: float,
                                   high: float) -> None:
    value = http_date(float(header[6:])) if header.startswith("__date") else header
    with sync_client(server.url) as client:
        with pytest.raises(vr.ProviderError) as info:
            client.get(f"/status/{status}", params={"retry_after": value})
    assert low <= info.value.retry_after <= high


@pytest.mark.parametrize("header", ["soon", "-5", "1e3", "Mon, 99 Foo 2020", ""])
def test_malformed_retry_after_is_ignored(server: HttpServer, header: str) -> None:
    with sync_client(server.url) as client:
        with pytest.raises(vr.RateLimitError) as info:
            client.get("/status/429", params={"retry_after": header})
    assert info.value.retry_after is None


def test_retry_after_only_on_429_and_503(server: HttpServer) -> None:
    with sync_client(server.url) as client:
        with pytest.raises(vr.UnavailableError) as info:
            client.get("/status/502", params={"retry_after": "9"})
    assert info.value.retry_after is None


def test_a_retrying_policy_waits_at_least_retry_after(server: HttpServer) -> None:
    clock = vr.ManualClock()
    delays: list[float] = []
    policy = (vr.PolicyBuilder("http-retry-after")
              .with_retry(vr.RetryConfig(max_attempts=3, base_delay=0.1, max_delay=30),
                          on_retry=lambda attempt, exc, delay: delays.append(delay))
              .with_clock(clock).build())
    with sync_client(server.url) as client:
        response = policy.execute(client.get, "/flaky/wait", params={
            "fail": "2", "status": "429", "retry_after": "3"})
    assert response.status_code == 200
    assert len(delays) == 2 and all(delay >= 3.0 for delay in delays)
    assert clock.now() >= 6.0


def test_a_malformed_retry_after_falls_back_to_the_backoff(server: HttpServer) -> None:
    delays: list[float] = []
    policy = (vr.PolicyBuilder("http-bad-retry-after")
              .with_retry(vr.RetryConfig(max_attempts=2, base_delay=0.25, jitter=False),
                          on_retry=lambda attempt, exc, delay: delays.append(delay))
              .with_clock(vr.ManualClock()).build())
    with sync_client(server.url) as client:
        policy.execute(client.get, "/flaky/bad", params={"fail": "1", "status": "503",
                                                         "retry_after": "later"})
    assert delays == [0.25]


# -- raise_for_status=False -----------------------------------------------------------------


@pytest.mark.parametrize(("status", "failure"), [(503, True), (500, True), (404, False),
                                                 (429, False), (408, True)])
async def test_pass_through_keeps_breaker_semantics(server: HttpServer, status: int,
                                                    failure: bool) -> None:
    cb = breaker()
    async with async_client(server.url, breaker=cb, raise_for_status=False) as client:
        response = await client.get(f"/status/{status}")
    assert response.status_code == status and response.text == f"answer to /status/{status}"
    assert (cb.failures, cb.successes) == ((1, 0) if failure else (0, 1))


# -- the breaker and the limiter -------------------------------------------------------------


async def test_open_breaker_refuses_unsent(server: HttpServer) -> None:
    cb = breaker()
    cb.force_open()
    hits = server.hits
    async with async_client(server.url, breaker=cb) as client:
        with pytest.raises(vr.CircuitOpenError) as info:
            await client.get("/vms/1")
    assert never_sent(info.value) and server.hits == hits
    with sync_client(server.url, breaker=cb, raise_for_status=False) as client:
        with pytest.raises(vr.CircuitOpenError):  # no response to pass through
            client.get("/vms/1")
    assert server.hits == hits


def test_limiter_refuses_unsent_and_frees_the_probe(server: HttpServer) -> None:
    cb = breaker(threshold=1)
    bucket = vr.TokenBucket(qps=0.5, burst=1)
    with sync_client(server.url, breaker=cb, limiter=bucket) as client:
        client.get("/first")
        half_open(cb)
        hits = server.hits
        with pytest.raises(vr.RateLimitError) as info:
            client.get("/second")
    assert never_sent(info.value) and 0 < info.value.retry_after <= 2
    assert server.hits == hits and cb.half_open_calls == 0


async def test_wait_for_a_token(server: HttpServer) -> None:
    bucket = vr.TokenBucket(qps=20, burst=1)
    async with async_client(server.url, limiter=bucket, wait=True) as client:
        start = time.monotonic()
        await client.get("/a")
        await client.get("/b")
    assert time.monotonic() - start >= 0.04


# -- no response ----------------------------------------------------------------------------


async def test_refused_connection_is_unavailable_and_never_sent() -> None:
    cb = breaker()
    async with async_client(f"http://127.0.0.1:{closed_port()}", breaker=cb) as client:
        with pytest.raises(vr.UnavailableError) as info:
            await client.get("/x")
    assert never_sent(info.value) and isinstance(info.value.__cause__, httpx.ConnectError)
    assert cb.failures == 1
    assert rpcstats.rpc_stats("http", "GET").requests("Unavailable") >= 1


def test_dropped_connection_is_unavailable_but_maybe_sent(dropping: DroppingServer) -> None:
    cb = breaker()
    with sync_client(dropping.url, breaker=cb) as client:
        with pytest.raises(vr.UnavailableError) as info:
            client.post("/vms", content=b"{}")
    assert not never_sent(info.value) and cb.failures == 1
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_httpx_timeout_is_a_timeout(server: HttpServer, mode: str) -> None:
    cb = breaker()
    if mode == "async":
        async with async_client(server.url, breaker=cb) as client:
            with pytest.raises(vr.OperationTimeoutError) as info:
                await client.get("/sleep/2", timeout=READ_ONLY)
    else:
        with sync_client(server.url, breaker=cb) as client:
            with pytest.raises(vr.OperationTimeoutError) as info:
                client.get("/sleep/2", timeout=READ_ONLY)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout) and cb.failures == 1


async def test_unsupported_scheme_is_not_a_breaker_outcome() -> None:
    cb = breaker()
    async with async_client("http://127.0.0.1:1", breaker=cb) as client:
        with pytest.raises(vr.NotSupportedError):
            await client.get("ftp://127.0.0.1/file")
    assert (cb.failures, cb.successes, cb.released) == (0, 0, 1)


# -- deadlines ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_the_operations_timeout_bounds_the_request(server: HttpServer, mode: str) -> None:
    cb = breaker()
    start = time.monotonic()
    options = {"breaker": cb, "timeouts": {"Describe": 0.05}}
    if mode == "async":
        async with async_client(server.url, **options) as client:
            with pytest.raises(vr.OperationTimeoutError):
                await client.get("/sleep/2", timeout=10)
    else:
        with sync_client(server.url, **options) as client:
            with pytest.raises(vr.OperationTimeoutError):
                client.get("/sleep/2", timeout=10)
    assert time.monotonic() - start < 1.0 and cb.failures == 1


async def test_the_deadline_bounds_the_whole_exchange_not_each_read() -> None:
    trickling = DroppingServer(trickle=True).start()
    try:
        cb = breaker()
        async with async_client(trickling.url, breaker=cb, timeouts={"Describe": 0.2}) as client:
            start = time.monotonic()
            with pytest.raises(vr.OperationTimeoutError, match="deadline of 0.2s"):
                # bounded: without the deadline this would trickle on for minutes
                await asyncio.wait_for(client.get("/slow-headers"), 5)
        assert time.monotonic() - start < 1.0 and cb.failures == 1
    finally:
        trickling.stop()


def test_a_sync_policy_deadline_caps_the_request(server: HttpServer) -> None:
    policy = vr.PolicyBuilder("http-sync-deadline").with_timeout(0.1).build()
    with sync_client(server.url) as client:
        start = time.monotonic()
        with pytest.raises(vr.OperationTimeoutError):
            policy.execute(client.get, "/sleep/2")
    assert time.monotonic() - start < 1.0  # a blocking call the policy could not interrupt


async def test_an_enclosing_policy_deadline_bounds_the_request(server: HttpServer) -> None:
    policy = vr.PolicyBuilder("http-deadline").with_timeout(0.1).build()
    async with async_client(server.url) as client:
        start = time.monotonic()
        with pytest.raises(vr.OperationTimeoutError):
            await policy.execute_async(client.get, "/sleep/2")
    assert time.monotonic() - start < 1.0


def test_operation_timeouts(caplog: pytest.LogCaptureFixture) -> None:
    step = vrh.ResilientTransport("http", "timeouts", breaker=None, limiter=None).step
    get = httpx.Request("GET", "http://x/vms/1")
    post = httpx.Request("POST", "http://x/vms")
    validate = httpx.Request("GET", "http://x/", extensions={vrh.OPERATION_EXTENSION: "Validate"})
    odd = httpx.Request("GET", "http://x/", extensions={vrh.OPERATION_EXTENSION: "Rebalance"})
    assert step.method_of(get).timeout == 30.0 and step.method_of(get).name == "GET"
    assert step.method_of(post).timeout == 240.0
    assert step.method_of(validate).timeout == 10.0
    with caplog.at_level(logging.WARNING, "virtrigaud_resilience"):
        assert step.method_of(odd).timeout == 240.0
        step.method_of(odd)
    assert sum("Rebalance" in r.getMessage() for r in caplog.records) == 1
    prepared = httpx.Request("GET", "http://x/", extensions={
        vrh.OPERATION_EXTENSION: "Validate",
        "timeout": {"connect": 5.0, "read": 60.0, "write": None, "pool": 1.0}})
    assert step.prepare(prepared, step.method_of(prepared)) == 10.0
    assert prepared.extensions["timeout"] == {"connect": 5.0, "read": 10.0, "write": 10.0,
                                              "pool": 1.0}
    bad = httpx.Request("GET", "http://x/", extensions={vrh.OPERATION_EXTENSION: 5})
    with pytest.raises(TypeError, match="virtrigaud.operation"):
        step.method_of(bad)


# -- cancellation ------------------------------------------------------------------------------


async def test_cancelled_request_frees_the_probe_and_leaves_no_task(server: HttpServer) -> None:
    cb = breaker(threshold=1)
    half_open(cb)
    async with async_client(server.url, breaker=cb) as client:
        before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        task = asyncio.ensure_future(client.get("/sleep/5"))
        await asyncio.sleep(0.1)
        assert cb.half_open_calls == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.01)
        after = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert cb.half_open_calls == 0 and cb.state is vr.BreakerState.HALF_OPEN
    assert cb.failures_total == 1  # the cancellation recorded nothing
    assert after <= before
    assert rpcstats.rpc_stats("http", "GET").requests("Canceled") >= 1


async def test_cancelled_token_wait_gives_the_token_back(server: HttpServer) -> None:
    bucket = vr.TokenBucket(qps=1, burst=1)
    async with async_client(server.url, limiter=bucket, wait=True) as client:
        spent = time.monotonic()  # the token is taken after this
        await client.get("/spend")
        task = asyncio.ensure_future(client.get("/waits"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # No debt left behind: the bucket refilled from empty since the spend
    # (a waiter's token not given back would leave it about -0.95).
    assert 0 <= bucket.tokens <= time.monotonic() - spent


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "error", "text"), [
    ({"provider": None}, TypeError, "provider"),
    ({"config": {}}, TypeError, "config"),
    ({"transport": object()}, TypeError, "transport"),
    ({"transport": httpx.AsyncHTTPTransport()}, TypeError, "transport"),
    ({"raise_for_status": "no"}, TypeError, "raise_for_status"),
    ({"wait": None}, TypeError, "wait"),
    ({"breaker": 1}, TypeError, "breaker"),
    ({"timeouts": {"Describe": float("nan")}}, ValueError, "Describe"),
    ({"timeouts": {"Describe": -0.5}}, ValueError, "Describe"),
    ({"timeouts": {"Describe": "fast"}}, ValueError, "Describe"),
])
def test_bad_arguments_are_named(kwargs: dict[str, Any], error: type[Exception],
                                 text: str) -> None:
    args = {"provider_type": "http", "provider": "bad", **kwargs}
    with pytest.raises(error, match=text):
        vrh.ResilientTransport(**args)


def test_the_async_transport_names_itself() -> None:
    with pytest.raises(ValueError, match="AsyncResilientTransport timeouts"):
        vrh.AsyncResilientTransport("http", "bad", timeouts={"Describe": 0})


def test_error_from_response_needs_an_error_status() -> None:
    response = httpx.Response(200, request=httpx.Request("GET", "http://x/"))
    with pytest.raises(ValueError, match="status >= 400"):
        vrh.error_from_response(response)
