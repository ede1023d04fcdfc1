"""The gRPC interceptors against a real grpc.aio server on 127.0.0.1.

Every status code through every kind of call (aio unary, aio stream, sync
unary, sync stream), the breaker and the limiter in front of the wire,
deadlines, and cancellations that must leave nothing behind.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")
import grpc.aio  # noqa: E402

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience import rpcstats  # noqa: E402
from virtrigaud_resilience.providers import AdapterOptions, never_sent  # noqa: E402
from virtrigaud_resilience.providers import grpc as vrg  # noqa: E402

from loopback import DroppingServer, GrpcServer, closed_port, identity, serving  # noqa: E402

S = grpc.StatusCode
SERVICE = "/provider.v1.Provider"

#: status -> (taxonomy class, counts as a breaker failure); CANCELLED as the
#: server sends it (the caller's own cancellation is no status error).
TABLE: dict[Any, tuple[type[BaseException], bool]] = {
    S.NOT_FOUND: (vr.NotFoundError, False),
    S.INVALID_ARGUMENT: (vr.InvalidSpecError, False),
    S.OUT_OF_RANGE: (vr.InvalidSpecError, False),
    S.UNAUTHENTICATED: (vr.UnauthorizedError, False),
    S.PERMISSION_DENIED: (vr.UnauthorizedError, False),
    S.UNIMPLEMENTED: (vr.NotSupportedError, False),
    S.UNAVAILABLE: (vr.UnavailableError, True),
    S.DEADLINE_EXCEEDED: (vr.OperationTimeoutError, True),
    S.RESOURCE_EXHAUSTED: (vr.RateLimitError, False),
    S.ALREADY_EXISTS: (vr.ConflictError, False),
    S.ABORTED: (vr.ConflictError, False),
    S.FAILED_PRECONDITION: (vr.ConflictError, False),
    S.INTERNAL: (vr.RetryableError, True),
    S.UNKNOWN: (vr.RetryableError, True),
    S.DATA_LOSS: (vr.RetryableError, False),
    S.CANCELLED: (vr.RetryableError, False),
}
GO = {S.NOT_FOUND: "NotFound", S.INVALID_ARGUMENT: "InvalidArgument",
      S.OUT_OF_RANGE: "OutOfRange", S.UNAUTHENTICATED: "Unauthenticated",
      S.PERMISSION_DENIED: "PermissionDenied", S.UNIMPLEMENTED: "Unimplemented",
      S.UNAVAILABLE: "Unavailable", S.DEADLINE_EXCEEDED: "DeadlineExceeded",
      S.RESOURCE_EXHAUSTED: "ResourceExhausted", S.ALREADY_EXISTS: "AlreadyExists",
      S.ABORTED: "Aborted", S.FAILED_PRECONDITION: "FailedPrecondition",
      S.INTERNAL: "Internal", S.UNKNOWN: "Unknown", S.DATA_LOSS: "DataLoss",
      S.CANCELLED: "Canceled"}

_labels = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[GrpcServer]:
    yield from serving(GrpcServer())


@pytest.fixture
def provider() -> str:
    """A provider label of its own, so each test's metrics stand apart."""
    return f"grpc-test-{next(_labels)}"


def breaker(threshold: int = 100, half_open: int = 1) -> vr.CircuitBreaker:
    return vr.CircuitBreaker("grpc-test", "grpc", f"b{next(_labels)}",
                             vr.BreakerConfig(failure_threshold=threshold, reset_timeout=0.05,
                                              half_open_max_calls=half_open))


def half_open(cb: vr.CircuitBreaker) -> None:
    """Opens the breaker and lets its reset timeout pass: the next call probes."""
    cb.force_open()
    cb.reset()
    for _ in range(cb.failure_threshold):
        permit = cb.try_acquire()
        assert permit is not None
        permit.failure()
    time.sleep(0.06)


def unary(channel: Any, method: str = "Describe") -> Any:
    return channel.unary_unary(f"{SERVICE}/{method}", request_serializer=identity,
                               response_deserializer=identity)


def stream(channel: Any, method: str = "WatchTasks") -> Any:
    return channel.unary_stream(f"{SERVICE}/{method}", request_serializer=identity,
                                response_deserializer=identity)


@pytest.fixture(params=["channel", "interceptors"])
async def aio_channel(server: GrpcServer, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Opens guarded grpc.aio channels both ways users do: ``aio_channel``
    (unary calls guarded without grpc's interceptors) and ``aio_interceptors``."""
    channels: list[Any] = []

    def make(provider_label: str, **options: Any) -> Any:
        options.setdefault("limiter", None)
        if request.param == "channel":
            channel = vrg.aio_channel(server.target, "grpc", provider_label, **options)
        else:
            channel = grpc.aio.insecure_channel(
                server.target, interceptors=vrg.aio_interceptors("grpc", provider_label,
                                                                 **options))
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        await channel.close()


@pytest.fixture(params=["channel", "interceptor"])
def sync_channel(server: GrpcServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Guarded sync channels both ways: ``intercept_channel`` (calls guarded
    without grpc's interceptors) and ``grpc.intercept_channel`` with our
    ``SyncInterceptor``."""
    channels: list[Any] = []

    def make(provider_label: str, **options: Any) -> Any:
        options.setdefault("limiter", None)
        raw = grpc.insecure_channel(server.target)
        channels.append(raw)
        if request.param == "channel":
            return vrg.intercept_channel(raw, "grpc", provider_label, **options)
        return grpc.intercept_channel(raw, vrg.SyncInterceptor(vrg.RpcCallStep(
            "grpc", provider_label, **options)))

    yield make
    for channel in channels:
        channel.close()


def check_status_error(exc: BaseException, code: Any, cb: vr.CircuitBreaker) -> None:
    """The error of a failed call: the taxonomy's, a gRPC error of the same code."""
    expected, infra = TABLE[code]
    assert isinstance(exc, expected), (code, type(exc))
    assert isinstance(exc, vr.ProviderError)
    assert isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.aio.AioRpcError)
    assert exc.code() is code
    assert exc.details() == f"injected {code.name}"
    assert cb.failures == (1 if infra else 0), code
    if code is S.RESOURCE_EXHAUSTED:
        assert exc.retry_after == 7.0
    else:
        assert exc.retry_after is None


# -- the table: every status code, every kind of call ---------------------------


@pytest.mark.parametrize("code", list(TABLE), ids=lambda c: c.name)
async def test_aio_unary_maps_every_status(aio_channel: Any, provider: str, code: Any) -> None:
    cb = breaker()
    call = unary(aio_channel(provider, breaker=cb))
    with pytest.raises(vr.ProviderError) as info:
        await call(f"code={code.name};retry-after=7".encode())
    check_status_error(info.value, code, cb)
    assert rpcstats.rpc_stats("grpc", "Describe").requests(GO[code]) >= 1


@pytest.mark.parametrize("code", list(TABLE), ids=lambda c: c.name)
def test_sync_unary_maps_every_status(sync_channel: Any, provider: str, code: Any) -> None:
    cb = breaker()
    call = unary(sync_channel(provider, breaker=cb))
    with pytest.raises(vr.ProviderError) as info:
        call(f"code={code.name};retry-after=7".encode())
    check_status_error(info.value, code, cb)


@pytest.mark.parametrize("code", list(TABLE), ids=lambda c: c.name)
async def test_aio_stream_maps_every_status(aio_channel: Any, provider: str, code: Any) -> None:
    cb = breaker()
    call = stream(aio_channel(provider, breaker=cb))
    received = []
    with pytest.raises(vr.ProviderError) as info:
        async for item in call(f"n=2;code={code.name};retry-after=7".encode()):
            received.append(item)
    assert received == [b"item0", b"item1"]
    check_status_error(info.value, code, cb)


@pytest.mark.parametrize("code", list(TABLE), ids=lambda c: c.name)
def test_sync_stream_maps_every_status(sync_channel: Any, provider: str, code: Any) -> None:
    cb = breaker()
    call = stream(sync_channel(provider, breaker=cb))
    received = []
    with pytest.raises(vr.ProviderError) as info:
        for item in call(f"n=2;code={code.name};retry-after=7".encode()):
            received.append(item)
    assert received == [b"item0", b"item1"]
    check_status_error(info.value, code, cb)


async def test_a_cancelled_status_from_the_server_is_a_retryable_error(
        aio_channel: Any, sync_channel: Any) -> None:
    """A CANCELLED the server (or a proxy) sent is no cancellation of the
    caller: the awaiting task goes on, and the error is retryable."""
    cb = breaker()
    half_open(cb)
    calls = [lambda: unary(aio_channel("srv-cancel", breaker=cb))(b"code=CANCELLED"),
             lambda: collect(stream(aio_channel("srv-cancel", breaker=cb))(
                 b"n=1;code=CANCELLED"))]
    for call in calls:
        with pytest.raises(vr.RetryableError) as info:
            await call()
        check_cancelled_status(info.value, cb)
        task = asyncio.current_task()
        assert task is not None and not task.cancelling()  # nobody cancelled this task
    for sync_call in (lambda: unary(sync_channel("srv-cancel", breaker=cb))(b"code=CANCELLED"),
                      lambda: list(stream(sync_channel("srv-cancel", breaker=cb))(
                          b"n=1;code=CANCELLED"))):
        with pytest.raises(vr.RetryableError) as info:
            sync_call()
        check_cancelled_status(info.value, cb)
    assert rpcstats.rpc_stats("grpc", "Describe").requests("Canceled") >= 2


async def collect(responses: Any) -> list[Any]:
    return [item async for item in responses]


def check_cancelled_status(exc: BaseException, cb: vr.CircuitBreaker) -> None:
    assert isinstance(exc, grpc.aio.AioRpcError) and exc.code() is S.CANCELLED
    assert exc.details() == "injected CANCELLED" and vr.is_retryable(exc)
    assert not never_sent(exc)
    # no breaker outcome: the half-open slot is free again, nothing counted
    assert cb.state is vr.BreakerState.HALF_OPEN and cb.half_open_calls == 0
    assert cb.failures_total == cb.failure_threshold


async def test_the_callers_own_cancellation_stays_a_cancellation(server: GrpcServer,
                                                                 aio_channel: Any,
                                                                 sync_channel: Any) -> None:
    cb = breaker()
    half_open(cb)
    hits = server.hits
    call = unary(aio_channel("own-cancel", breaker=cb))(b"sleep=5")
    while server.hits == hits:
        await asyncio.sleep(0.01)
    assert call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert cb.half_open_calls == 0 and cb.state is vr.BreakerState.HALF_OPEN
    future = unary(sync_channel("own-cancel", breaker=cb)).future(b"sleep=5")
    assert future.cancel()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    assert cb.half_open_calls == 0 and cb.failures_total == cb.failure_threshold


async def test_success_passes_through_and_counts(aio_channel: Any, sync_channel: Any,
                                                 provider: str) -> None:
    cb = breaker()
    assert await unary(aio_channel(provider, breaker=cb), "Validate")(b"hello") == b"ok:hello"
    assert [i async for i in stream(aio_channel(provider, breaker=cb))(b"n=3")] == [
        b"item0", b"item1", b"item2"]
    assert unary(sync_channel(provider, breaker=cb), "Validate")(b"x") == b"ok:x"
    assert list(stream(sync_channel(provider, breaker=cb))(b"n=2")) == [b"item0", b"item1"]
    assert cb.successes == 4
    validate = rpcstats.rpc_stats("grpc", "Validate")
    assert validate.requests("OK") >= 2
    _, buckets, total = validate.snapshot()
    assert sum(buckets) == validate.requests() and total > 0


async def test_future_api_keeps_its_semantics(sync_channel: Any) -> None:
    cb = breaker()
    call = unary(sync_channel("future", breaker=cb))
    future = call.future(b"code=UNAVAILABLE")
    seen: list[Any] = []
    future.add_done_callback(seen.append)
    error = future.exception()
    assert isinstance(error, vr.UnavailableError) and error.code() is S.UNAVAILABLE
    with pytest.raises(vr.UnavailableError):
        future.result()
    assert future.done() and not future.cancelled() and future.code() is S.UNAVAILABLE
    assert seen == [future] and cb.failures == 1
    assert call.future(b"fine").result() == b"ok:fine"


# -- the breaker and the limiter in front of the wire ------------------------------------


async def test_open_breaker_fails_the_call_unsent_with_unavailable(
        server: GrpcServer, aio_channel: Any, sync_channel: Any) -> None:
    cb = breaker()
    cb.force_open()
    hits = server.hits
    for call in (unary(aio_channel("open", breaker=cb)),):
        with pytest.raises(vr.CircuitOpenError) as info:
            await call(b"x")
        exc = info.value
        assert isinstance(exc, grpc.RpcError) and exc.code() is S.UNAVAILABLE
        assert "circuit breaker open" in exc.details() and never_sent(exc)
    with pytest.raises(grpc.RpcError) as sync_info:  # caught by code, as Go callers do
        unary(sync_channel("open", breaker=cb))(b"x")
    assert sync_info.value.code() is S.UNAVAILABLE
    assert server.hits == hits  # nothing was sent
    assert rpcstats.rpc_stats("grpc", "Describe").requests("Unavailable") >= 2


async def test_open_breaker_error_carries_the_time_to_the_probe(aio_channel: Any) -> None:
    cb = vr.CircuitBreaker("grpc-test", "grpc", "probe",
                           vr.BreakerConfig(failure_threshold=1, reset_timeout=30))
    call = unary(aio_channel("probe", breaker=cb))
    with pytest.raises(vr.UnavailableError):
        await call(b"code=UNAVAILABLE")
    with pytest.raises(vr.CircuitOpenError) as info:
        await call(b"x")
    assert 29 < info.value.retry_after <= 30


async def test_limiter_refuses_before_sending_and_frees_the_probe(
        server: GrpcServer, aio_channel: Any, sync_channel: Any) -> None:
    cb = breaker()
    bucket = vr.TokenBucket(qps=0.5, burst=1)
    call = unary(aio_channel("limited", breaker=cb, limiter=bucket))
    assert await call(b"first") == b"ok:first"
    half_open(cb)
    hits = server.hits
    with pytest.raises(vr.RateLimitError) as info:
        await call(b"second")
    exc = info.value
    assert exc.code() is S.RESOURCE_EXHAUSTED and never_sent(exc)
    assert 0 < exc.retry_after <= 2.0
    with pytest.raises(vr.RateLimitError):
        unary(sync_channel("limited", breaker=cb, limiter=bucket))(b"third")
    assert server.hits == hits
    assert cb.half_open_calls == 0  # the probe slot was given back each time


async def test_wait_for_a_token_then_send(aio_channel: Any, sync_channel: Any) -> None:
    bucket = vr.TokenBucket(qps=20, burst=1)
    call = unary(aio_channel("waits", breaker=None, limiter=bucket, wait=True))
    start = time.monotonic()
    assert [await call(b"a"), await call(b"b")] == [b"ok:a", b"ok:b"]
    assert time.monotonic() - start >= 0.04  # the second waited ~50 ms for its token
    assert unary(sync_channel("waits", breaker=None, limiter=bucket, wait=True))(b"c") == b"ok:c"


async def test_cancelled_token_wait_gives_the_token_back(aio_channel: Any) -> None:
    bucket = vr.TokenBucket(qps=1, burst=1)
    call = unary(aio_channel("wait-cancel", breaker=None, limiter=bucket, wait=True))
    spent = time.monotonic()  # the token is taken after this
    await call(b"spend")
    task = asyncio.ensure_future(call(b"waits"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # No debt left behind: the bucket refilled from empty since the spend
    # (a waiter's token not given back would leave it about -0.95).
    assert 0 <= bucket.tokens <= time.monotonic() - spent


# -- deadlines ------------------------------------------------------------------------------


async def test_method_timeout_cuts_a_hung_call_and_counts(server: GrpcServer,
                                                          aio_channel: Any) -> None:
    cb = breaker()
    call = unary(aio_channel("hung", breaker=cb, timeouts={"Describe": 0.05}))
    start = time.monotonic()
    with pytest.raises(vr.OperationTimeoutError) as info:
        await call(b"sleep=2")
    assert time.monotonic() - start < 1.0
    assert info.value.code() is S.DEADLINE_EXCEEDED and cb.failures == 1
    assert not never_sent(info.value)


@pytest.mark.parametrize(("method_timeout", "caller"), [(30.0, 0.05), (0.05, 5.0)])
def test_the_shorter_of_method_and_caller_deadlines_wins(sync_channel: Any,
                                                         method_timeout: float,
                                                         caller: float) -> None:
    call = unary(sync_channel("sync-hung", breaker=None,
                              timeouts={"Describe": method_timeout}))
    start = time.monotonic()
    with pytest.raises(vr.OperationTimeoutError):
        call(b"sleep=2", timeout=caller)
    assert time.monotonic() - start < 1.0


async def test_an_enclosing_policy_deadline_becomes_the_grpc_deadline(aio_channel: Any) -> None:
    call = unary(aio_channel("policy", breaker=None))
    policy = vr.PolicyBuilder("grpc-deadline").with_timeout(0.1).build()
    start = time.monotonic()
    with pytest.raises(vr.OperationTimeoutError):
        await policy.execute_async(call, b"sleep=2")
    assert time.monotonic() - start < 1.0


def test_a_sync_policy_deadline_becomes_the_grpc_deadline(sync_channel: Any) -> None:
    call = unary(sync_channel("sync-policy", breaker=None))
    policy = vr.PolicyBuilder("grpc-sync-deadline").with_timeout(0.1).build()
    start = time.monotonic()
    with pytest.raises(vr.OperationTimeoutError) as info:
        policy.execute(call, b"sleep=2")  # blocking: only gRPC's deadline can stop it
    assert time.monotonic() - start < 1.0 and info.value.code() is S.DEADLINE_EXCEEDED


def test_method_timeouts_follow_the_rpc_config(caplog: pytest.LogCaptureFixture) -> None:
    step = vrg.RpcCallStep("grpc", "timeouts", breaker=None, limiter=None)
    assert step.timeout_for(f"{SERVICE}/Describe") == 30.0
    assert step.timeout_for(f"{SERVICE}/Create") == 240.0
    assert step.timeout_for(f"{SERVICE}/Validate") == 10.0
    assert step.timeout_for(f"{SERVICE}/TaskStatus") == 10.0
    assert step.timeout_for(f"{SERVICE}/Describe", 2.0) == 2.0
    with caplog.at_level(logging.WARNING, "virtrigaud_resilience"):
        assert step.timeout_for(f"{SERVICE}/ListHosts") == 240.0
        assert step.timeout_for(f"{SERVICE}/ListHosts") == 240.0
    warnings = [r for r in caplog.records if "ListHosts" in r.getMessage()]
    assert len(warnings) == 1 and "mutating timeout" in warnings[0].getMessage()
    dev = vrg.RpcCallStep("grpc", "dev", vr.Config.development(), breaker=None, limiter=None,
                          timeouts={"WatchTasks": None})
    assert dev.timeout_for(f"{SERVICE}/Create") == 600.0
    assert dev.timeout_for(f"{SERVICE}/WatchTasks") is None


# -- cancellation leaks nothing ------------------------------------------------------------


def settled_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_cancelled_unary_frees_the_probe_and_leaves_no_task(server: GrpcServer,
                                                                  aio_channel: Any) -> None:
    cb = breaker()
    half_open(cb)
    call = unary(aio_channel("cancel", breaker=cb))
    before = settled_tasks()
    cancelled = server.cancelled
    task = asyncio.ensure_future(call(b"sleep=5"))
    await asyncio.sleep(0.1)
    assert cb.half_open_calls == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert cb.half_open_calls == 0 and cb.failures_total == cb.failure_threshold
    assert cb.state is vr.BreakerState.HALF_OPEN
    assert settled_tasks() <= before
    deadline = time.monotonic() + 2
    while server.cancelled == cancelled and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert server.cancelled > cancelled  # the server saw the call go away


async def test_stream_closed_early_or_cancelled_frees_the_probe(server: GrpcServer,
                                                                aio_channel: Any) -> None:
    cb = breaker()
    half_open(cb)
    responses = stream(aio_channel("early", breaker=cb))(b"n=100;sleep=0.01")
    async for item in responses:
        assert item == b"item0"
        break
    assert cb.half_open_calls == 1
    responses.cancel()  # grpc.aio's way to stop a stream early
    await asyncio.sleep(0.05)
    assert cb.half_open_calls == 0 and cb.state is vr.BreakerState.HALF_OPEN


    async def consume() -> None:
        async for _ in stream(aio_channel("early", breaker=cb))(b"n=100;sleep=0.05"):
            pass

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cb.half_open_calls == 0 and cb.failures_total == cb.failure_threshold


def test_sync_stream_cancelled_or_dropped_frees_the_probe(sync_channel: Any) -> None:
    cb = breaker()
    half_open(cb)
    responses = stream(sync_channel("sync-early", breaker=cb))(b"n=100;sleep=0.01")
    assert next(responses) == b"item0"
    responses.cancel()
    assert cb.half_open_calls == 0
    with pytest.raises(grpc.FutureCancelledError):
        next(responses)
    dropped = stream(sync_channel("sync-early", breaker=cb))(b"n=100;sleep=0.01")
    assert next(dropped) == b"item0"
    del dropped
    assert cb.half_open_calls == 0 and cb.state is vr.BreakerState.HALF_OPEN


# -- failures that are not a server's answer ------------------------------------------------


async def test_refused_connection_is_unavailable_and_never_sent() -> None:
    cb = breaker()
    async with grpc.aio.insecure_channel(
            f"127.0.0.1:{closed_port()}",
            interceptors=vrg.aio_interceptors("grpc", "refused", breaker=cb,
                                              limiter=None)) as channel:
        with pytest.raises(vr.UnavailableError) as info:
            await unary(channel)(b"x", timeout=5)
    assert never_sent(info.value) and cb.failures == 1


class Raising(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """An inner interceptor with a bug (or a transport raising plain exceptions)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        raise self.exc


@pytest.mark.parametrize(("raised", "expected", "code", "infra"), [
    (ValueError("bug"), vr.RetryableError, S.UNKNOWN, True),
    (ConnectionResetError("reset"), vr.UnavailableError, None, True),
    (vr.NotFoundError("another layer's"), vr.NotFoundError, None, False),
])
async def test_an_exception_that_is_no_status_is_classified(
        server: GrpcServer, raised: BaseException, expected: type[Exception], code: Any,
        infra: bool) -> None:
    cb = breaker()
    interceptors = [*vrg.aio_interceptors("grpc", "raising", breaker=cb, limiter=None),
                    Raising(raised)]
    async with grpc.aio.insecure_channel(server.target, interceptors=interceptors) as channel:
        with pytest.raises(expected) as info:
            await unary(channel)(b"x")
    if code is not None:
        assert isinstance(info.value, grpc.RpcError) and info.value.code() is code
    assert info.value.__cause__ is raised or info.value is raised
    assert cb.failures == (1 if infra else 0)


def test_error_from_rpc_without_a_table_code() -> None:
    class Odd(grpc.RpcError):  # type: ignore[misc]
        def code(self) -> Any:
            return S.OK

        def details(self) -> str:
            return "odd"

    error = vrg.error_from_rpc(Odd(), "Describe")
    assert isinstance(error, vr.RetryableError) and error.code() is S.UNKNOWN
    assert str(error).startswith("Retryable: Describe: odd")


@pytest.mark.parametrize(("value", "expected"), [("7", 7.0), ("1.5", 1.5), ("soon", None),
                                                 ("-3", None), ("", None)])
async def test_retry_after_metadata_is_read_or_ignored(aio_channel: Any, value: str,
                                                       expected: float | None) -> None:
    call = unary(aio_channel("retry-after", breaker=None))
    with pytest.raises(vr.RateLimitError) as info:
        await call(f"code=RESOURCE_EXHAUSTED;retry-after={value}".encode())
    assert info.value.retry_after == expected


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "error", "text"), [
    ({"provider_type": 5}, TypeError, "provider_type"),
    ({"config": "prod"}, TypeError, "config"),
    ({"breaker": "open"}, TypeError, "breaker"),
    ({"limiter": 3}, TypeError, "limiter"),
    ({"wait": 1}, TypeError, "wait"),
    ({"metrics": "yes"}, TypeError, "metrics"),
    ({"timeouts": {"Describe": float("nan")}}, ValueError, "Describe"),
    ({"timeouts": {"Describe": 0}}, ValueError, "Describe"),
    ({"timeouts": {"Describe": -1}}, ValueError, "Describe"),
    ({"timeouts": {"Describe": float("inf")}}, ValueError, "Describe"),
    ({"timeouts": [("Describe", 1)]}, TypeError, "timeouts"),
    ({"timeouts": {5: 1}}, TypeError, "timeouts key"),
    ({"idempotent": "Create"}, TypeError, "idempotent"),
    ({"idempotent": 3}, TypeError, "idempotent"),
    ({"idempotent": ["Create", 5]}, TypeError, "idempotent item"),
])
def test_bad_arguments_are_named(kwargs: dict[str, Any], error: type[Exception],
                                 text: str) -> None:
    args = {"provider_type": "grpc", "provider": "bad", **kwargs}
    with pytest.raises(error, match=text):
        vrg.aio_interceptors(**args)


# -- the call is grpc's call ----------------------------------------------------------------


class AioObserver(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """An interceptor outside ours: sees the call ours returns."""

    def __init__(self) -> None:
        self.time_remaining: list[float | None] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = await continuation(details, request)
        self.time_remaining.append(call.time_remaining())
        return call


async def test_aio_unary_returns_the_call(server: GrpcServer, sync_channel: Any) -> None:
    observer = AioObserver()
    cb = breaker()
    interceptors = [observer, *vrg.aio_interceptors("grpc", "call", breaker=cb, limiter=None)]
    async with grpc.aio.insecure_channel(server.target, interceptors=interceptors) as channel:
        call = unary(channel)(b"meta=m1", timeout=20)
        assert await call == b"ok:meta=m1"
        assert await call.code() is S.OK and await call.details() == ""
        assert ("initial", "m1") in list(await call.initial_metadata())
        assert ("trailing", "m1") in list(await call.trailing_metadata())
        assert call.done() and not call.cancelled()
        assert observer.time_remaining and 0 < observer.time_remaining[0] <= 20

        failed = unary(channel)(b"meta=m2;code=NOT_FOUND")
        with pytest.raises(vr.NotFoundError):
            await failed
        assert await failed.code() is S.NOT_FOUND
        assert ("initial", "m2") in list(await failed.initial_metadata())
        assert ("trailing", "m2") in list(await failed.trailing_metadata())
    assert cb.successes == 2  # NOT_FOUND is the provider's answer
    response, sync_call = unary(sync_channel("call", breaker=cb)).with_call(b"meta=m3")
    assert response == b"ok:meta=m3" and sync_call.code() is S.OK
    assert ("trailing", "m3") in sync_call.trailing_metadata()


async def test_an_unawaited_call_is_still_settled(server: GrpcServer, aio_channel: Any) -> None:
    cb = breaker()
    half_open(cb)
    call = unary(aio_channel("unawaited", breaker=cb))(b"code=UNAVAILABLE")
    assert await call.code() is S.UNAVAILABLE  # the status alone, the response never awaited
    assert cb.half_open_calls == 0 and cb.state is vr.BreakerState.OPEN


class AioSeen(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """An interceptor outside ours: the type of the call it gets, and whether
    that call had finished, per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[type, bool]] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = await continuation(details, request)
        self.calls.append((type(call), call.done()))
        return call


async def test_aio_unary_hands_back_grpcs_own_call_finished(server: GrpcServer) -> None:
    """The outcome is recorded inline, the call awaited before it is returned
    (no done callback, no wrapper on the way out of a call that succeeded):
    an interceptor outside ours gets the call grpc makes without ours, done;
    a failed call is still a call, whose await raises the taxonomy error."""
    bare, guarded = AioSeen(), AioSeen()
    cb = breaker()
    async with grpc.aio.insecure_channel(server.target, interceptors=[bare]) as plain, \
            grpc.aio.insecure_channel(server.target, interceptors=[
                guarded, *vrg.aio_interceptors("grpc", "own-call", breaker=cb,
                                               limiter=None)]) as channel:
        assert await unary(plain)(b"x") == b"ok:x"
        call = unary(channel)(b"meta=m4")
        assert await call == b"ok:meta=m4" and await call == b"ok:meta=m4"
        assert guarded.calls == [(bare.calls[0][0], True)]
        assert cb.successes == 1 and rpcstats.rpc_stats("grpc", "Describe").requests("OK") >= 1

        failed = unary(channel)(b"meta=m5;code=ALREADY_EXISTS")
        for _ in range(2):  # each await raises the mapped error, recorded once
            with pytest.raises(vr.ConflictError) as info:
                await failed
            assert info.value.code() is S.ALREADY_EXISTS
            assert isinstance(info.value.__cause__, grpc.aio.AioRpcError)
        kind, done = guarded.calls[1]
        assert done and issubclass(kind, grpc.aio.UnaryUnaryCall)
        assert await failed.code() is S.ALREADY_EXISTS and failed.done()
        assert ("trailing", "m5") in list(await failed.trailing_metadata())
        assert not failed.cancel() and not failed.cancelled()
    assert cb.successes == 2 and cb.failures == 0  # ALREADY_EXISTS is the provider's answer


class SyncSeen(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """:class:`AioSeen` for sync channels: each call's outcome, as it comes."""

    def __init__(self) -> None:
        self.outcomes: list[Any] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        outcome = continuation(details, request)
        self.outcomes.append(outcome)
        return outcome


@pytest.mark.parametrize("guarded", ["channel", "interceptor"])
def test_sync_blocking_unary_hands_back_grpcs_own_outcome(server: GrpcServer,
                                                          guarded: str) -> None:
    """A blocking call's outcome is settled when it has finished and goes
    out as grpc made it: through the guarded channel, the call ``with_call``
    returns is the bare channel's own; through the interceptor, the one an
    interceptor that adds nothing returns. A ``.future()`` call keeps its
    guarded wrapper."""
    cb = breaker()
    raw = grpc.insecure_channel(server.target)
    try:
        if guarded == "channel":
            _, plain_call = unary(raw).with_call(b"x")
            channel = vrg.intercept_channel(raw, "grpc", "own-outcome", breaker=cb, limiter=None)
        else:
            _, plain_call = unary(grpc.intercept_channel(raw, SyncSeen())).with_call(b"x")
            channel = grpc.intercept_channel(raw, vrg.SyncInterceptor(vrg.RpcCallStep(
                "grpc", "own-outcome", breaker=cb, limiter=None)))
        response, call = unary(channel).with_call(b"meta=m6")
        assert response == b"ok:meta=m6" and call.code() is S.OK
        assert ("trailing", "m6") in call.trailing_metadata()
        assert type(call) is type(plain_call) and cb.successes == 1
        future = unary(channel).future(b"sleep=0.05")
        assert future.result(timeout=10) == b"ok:sleep=0.05" and future.code() is S.OK
        assert cb.successes == 2
    finally:
        raw.close()


def test_a_sync_interceptor_outside_ours_gets_a_failed_calls_outcome(server: GrpcServer) -> None:
    """grpc.intercept_channel hands an interceptor outside ours the error
    raised inside as the call's outcome, and asks it for ``result()``: the
    taxonomy error is such an outcome, as grpc's own errors are (it had no
    ``result()``: the caller got an AttributeError)."""
    seen = SyncSeen()
    cb = breaker()
    raw = grpc.insecure_channel(server.target)
    try:
        channel = grpc.intercept_channel(
            vrg.intercept_channel(raw, "grpc", "outer-failed", breaker=cb, limiter=None), seen)
        with pytest.raises(vr.NotFoundError) as info:
            unary(channel)(b"meta=m7;code=NOT_FOUND")
        assert info.value.code() is S.NOT_FOUND and cb.failures == 0 and cb.successes == 1
        outcome = seen.outcomes[0]
        assert outcome is info.value and outcome.done() and not outcome.running()
        assert outcome.exception() is outcome and not outcome.cancel()
        assert not outcome.cancelled() and not outcome.is_active()
        assert ("trailing", "m7") in outcome.trailing_metadata()
        called: list[Any] = []
        outcome.add_done_callback(called.append)
        assert called == [outcome]
        with pytest.raises(vr.NotFoundError):
            outcome.result()
        future = unary(channel).future(b"code=UNAVAILABLE")
        with pytest.raises(vr.UnavailableError):
            future.result(timeout=10)
        assert cb.failures == 1
    finally:
        raw.close()


# -- deadlines of waits and streams --------------------------------------------------------------


class AioRecorder(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """An interceptor inside ours: records the deadline that goes on the wire
    (``stream`` is its unary-stream twin: grpc.aio files an interceptor under
    one kind only)."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []
        self.stream = AioStreamRecorder(self.timeouts)

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.timeouts.append(details.timeout)
        return await continuation(details, request)


class AioStreamRecorder(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, timeouts: list[float | None]) -> None:
        self.timeouts = timeouts

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self.timeouts.append(details.timeout)
        return await continuation(details, request)


class SyncRecorder(grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
                   grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """:class:`AioRecorder` for sync channels."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.timeouts.append(details.timeout)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self.timeouts.append(details.timeout)
        return continuation(details, request)


def recorded_aio(server: GrpcServer, recorder: AioRecorder, provider_label: str,
                 **options: Any) -> Any:
    options.setdefault("limiter", None)
    return grpc.aio.insecure_channel(
        server.target,
        interceptors=[*vrg.aio_interceptors("grpc", provider_label, **options), recorder,
                      recorder.stream])


def recorded_sync(server: GrpcServer, recorder: SyncRecorder, provider_label: str,
                  **options: Any) -> tuple[Any, Any]:
    options.setdefault("limiter", None)
    raw = grpc.insecure_channel(server.target)
    return raw, vrg.intercept_channel(grpc.intercept_channel(raw, recorder), "grpc",
                                      provider_label, **options)


async def test_a_token_wait_ends_by_the_callers_deadline(server: GrpcServer) -> None:
    """wait=True: the wait is part of the call's budget, not added to it."""
    recorder = AioRecorder()
    bucket = vr.TokenBucket(qps=2, burst=1)
    async with recorded_aio(server, recorder, "wait-deadline", breaker=None, limiter=bucket,
                            wait=True) as channel:
        call = unary(channel)
        assert await call(b"spend") == b"ok:spend"
        hits = server.hits
        with pytest.raises(vr.RateLimitError) as info:  # needs ~0.5 s, has 0.05 s
            await call(b"late", timeout=0.05)
        assert info.value.retry_after > 0.05
        assert server.hits == hits  # refused at once, not sent after waiting
        assert never_sent(info.value)
        await asyncio.sleep(0.6)  # a token again
        assert await call(b"spend") == b"ok:spend"
        start = time.monotonic()
        assert await call(b"waits", timeout=5) == b"ok:waits"
        waited = time.monotonic() - start
        policy = vr.PolicyBuilder("grpc-wait").with_timeout(0.1).build()
        hits = server.hits
        with pytest.raises(vr.RateLimitError):  # an enclosing policy's time left bounds it too
            await policy.execute_async(call, b"late")
        assert server.hits == hits  # refused at once, not sent after waiting
    sent = recorder.timeouts[-1]
    assert sent is not None and waited >= 0.3
    assert sent <= 5 - 0.3  # what was left after the wait, not the whole 5 s


def test_a_sync_token_wait_ends_by_the_callers_deadline(server: GrpcServer) -> None:
    recorder = SyncRecorder()
    bucket = vr.TokenBucket(qps=2, burst=1)
    raw, channel = recorded_sync(server, recorder, "sync-wait-deadline", breaker=None,
                                 limiter=bucket, wait=True)
    try:
        call = unary(channel)
        assert call(b"spend") == b"ok:spend"
        hits = server.hits
        with pytest.raises(vr.RateLimitError):
            call(b"late", timeout=0.05)
        assert server.hits == hits  # refused at once, not sent after waiting
        time.sleep(0.6)
        assert call(b"spend") == b"ok:spend"
        start = time.monotonic()
        assert call(b"waits", timeout=5) == b"ok:waits"
        waited = time.monotonic() - start
    finally:
        raw.close()
    sent = recorder.timeouts[-1]
    assert sent is not None and waited >= 0.3 and sent <= 5 - 0.3


async def test_a_watch_gets_no_deadline_unless_named(server: GrpcServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    recorder = AioRecorder()
    with caplog.at_level(logging.WARNING, "virtrigaud_resilience"):
        async with recorded_aio(server, recorder, "watch", breaker=None) as channel:
            assert await collect(stream(channel, "WatchTasks")(b"n=1")) == [b"item0"]
        async with recorded_aio(server, recorder, "watch", breaker=None,
                                timeouts={"WatchTasks": 60}) as channel:
            await collect(stream(channel, "WatchTasks")(b"n=1"))
            await collect(stream(channel, "WatchTasks")(b"n=1", timeout=5))
        sync_recorder = SyncRecorder()
        raw, sync = recorded_sync(server, sync_recorder, "watch", breaker=None)
        try:
            assert list(stream(sync, "WatchTasks")(b"n=1")) == [b"item0"]
        finally:
            raw.close()
    assert recorder.timeouts[0] is None and recorder.timeouts[1] == 60
    assert recorder.timeouts[2] == 5 and sync_recorder.timeouts == [None]
    assert not [r for r in caplog.records if "WatchTasks" in r.getMessage()]


async def test_a_stream_cut_by_our_own_deadline_is_no_breaker_failure(
        aio_channel: Any, sync_channel: Any) -> None:
    cb = breaker()
    half_open(cb)
    own = {"timeouts": {"WatchTasks": 0.2}, "breaker": cb}
    with pytest.raises(vr.OperationTimeoutError):
        await collect(stream(aio_channel("own-deadline", **own))(b"n=100;sleep=0.05"))
    assert cb.state is vr.BreakerState.HALF_OPEN and cb.half_open_calls == 0
    with pytest.raises(vr.OperationTimeoutError):
        list(stream(sync_channel("own-deadline", **own))(b"n=100;sleep=0.05"))
    assert cb.state is vr.BreakerState.HALF_OPEN and cb.failures_total == cb.failure_threshold
    # the caller's deadline is the caller's verdict: a failure, as for any call
    with pytest.raises(vr.OperationTimeoutError):
        await collect(stream(aio_channel("own-deadline", breaker=cb))(b"n=100;sleep=0.05",
                                                                       timeout=0.2))
    assert cb.state is vr.BreakerState.OPEN


async def test_a_stream_left_with_break_frees_its_slot_when_closed_or_collected(
        server: GrpcServer, aio_channel: Any, sync_channel: Any) -> None:
    cb = breaker()
    half_open(cb)
    cancelled = server.cancelled
    responses = stream(aio_channel("break", breaker=cb))(b"n=100;sleep=0.01")
    async for _ in responses:
        break
    assert cb.half_open_calls == 1
    await responses.__aiter__().aclose()  # the loop's iterator, closed (contextlib.aclosing)
    assert cb.half_open_calls == 0 and cb.state is vr.BreakerState.HALF_OPEN
    await wait_for(lambda: server.cancelled > cancelled)  # the call was cancelled too
    # (grpc.aio holds a running call, and so its iterator, until the call ends:
    # closing the iterator or cancelling the call is how an aio reader leaves.)
    for item in stream(sync_channel("break", breaker=cb))(b"n=100;sleep=0.01"):
        break
    del item
    gc.collect()
    assert cb.half_open_calls == 0 and cb.failures_total == cb.failure_threshold
    assert cb.state is vr.BreakerState.HALF_OPEN


async def wait_for(condition: Any, seconds: float = 5.0) -> None:
    """Waits (on the loop) until ``condition()`` holds; fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


# -- idempotency: a mutating call is retried only while it was never sent ------------------------


def retrying(attempts: int = 3) -> vr.Policy:
    return vr.PolicyBuilder(f"grpc-idempotency-{next(_labels)}").with_retry(
        vr.RetryConfig(max_attempts=attempts, base_delay=0.001, max_delay=0.002,
                       jitter=False)).build()


class AioCounter(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """An interceptor outside ours: counts the attempts a policy makes."""

    def __init__(self) -> None:
        self.calls = 0

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls += 1
        return await continuation(details, request)


async def test_a_mutating_call_is_retried_only_while_it_was_never_sent(
        server: GrpcServer, aio_channel: Any) -> None:
    cb = breaker()
    policy = retrying(3)
    channel = aio_channel("idempotency", breaker=cb)
    hits = server.hits
    with pytest.raises(vr.UnavailableError) as info:
        await policy.execute_async(unary(channel, "Create"), b"code=UNAVAILABLE")
    assert server.hits == hits + 1  # sent once: the provider may have acted
    error = info.value
    assert not vr.is_retryable(error) and not never_sent(error)
    assert isinstance(error, grpc.aio.AioRpcError) and error.code() is S.UNAVAILABLE
    assert cb.failures == 1  # the breaker counts it as before
    with pytest.raises(vr.RateLimitError) as limited:  # the provider's own RESOURCE_EXHAUSTED
        await policy.execute_async(unary(channel, "Reconfigure"), b"code=RESOURCE_EXHAUSTED")
    assert server.hits == hits + 2 and not never_sent(limited.value)
    assert not vr.is_retryable(limited.value)
    with pytest.raises(vr.RetryableError):  # an unknown unary method may mutate too
        await policy.execute_async(unary(channel, "Migrate"), b"code=INTERNAL")
    assert server.hits == hits + 3
    with pytest.raises(vr.UnavailableError) as read:  # a read is retried
        await policy.execute_async(unary(channel, "Describe"), b"code=UNAVAILABLE")
    assert server.hits == hits + 6 and vr.is_retryable(read.value)
    with pytest.raises(vr.UnavailableError) as watch:  # so is a watch (a stream of reads)
        await collect(stream(channel, "WatchTasks")(b"n=0;code=UNAVAILABLE"))
    assert vr.is_retryable(watch.value)

    counter = AioCounter()
    interceptors = [counter, *vrg.aio_interceptors("grpc", "idempotency", breaker=breaker(),
                                                   limiter=None)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{closed_port()}",
                                         interceptors=interceptors) as refused:
        with pytest.raises(vr.UnavailableError) as unsent:
            await policy.execute_async(unary(refused, "Create"), b"x", timeout=5)
    assert counter.calls == 3  # never sent: retried
    assert never_sent(unsent.value) and vr.is_retryable(unsent.value)


async def test_methods_marked_idempotent_are_retried_after_sending(
        server: GrpcServer, aio_channel: Any, sync_channel: Any) -> None:
    policy = retrying(3)
    marked = aio_channel("marked", breaker=None,
                         idempotent={"Create", "/provider.v1.Provider/Power"})
    hits = server.hits
    for method in ("Create", "Power"):
        with pytest.raises(vr.UnavailableError) as info:
            await policy.execute_async(unary(marked, method), b"code=UNAVAILABLE")
        assert vr.is_retryable(info.value)
    assert server.hits == hits + 6
    with pytest.raises(vr.UnavailableError):  # not marked
        await policy.execute_async(unary(marked, "Delete"), b"code=UNAVAILABLE")
    assert server.hits == hits + 7

    def only_power(name: str) -> bool:
        return name.endswith("/Power")

    sync = sync_channel("marked", breaker=None, idempotent=only_power)
    with pytest.raises(vr.UnavailableError):
        policy.execute(unary(sync, "Power"), b"code=UNAVAILABLE")
    assert server.hits == hits + 10
    with pytest.raises(vr.UnavailableError) as info:
        policy.execute(unary(sync, "Create"), b"code=UNAVAILABLE")
    assert server.hits == hits + 11 and not vr.is_retryable(info.value)
    everything = sync_channel("marked", breaker=None, idempotent=True)
    with pytest.raises(vr.ConflictError):
        policy.execute(unary(everything, "Delete"), b"code=ABORTED")  # not retryable anyway
    with pytest.raises(vr.UnavailableError):
        policy.execute(unary(everything, "Delete"), b"code=UNAVAILABLE")
    assert server.hits == hits + 15
    # a mapping sets each named method either way: a read made unsafe, a write made safe
    mapped = aio_channel("marked", breaker=None, options=AdapterOptions(
        idempotent={"Describe": False, "/provider.v1.Provider/Delete": True}))
    with pytest.raises(vr.UnavailableError) as info:
        await policy.execute_async(unary(mapped, "Describe"), b"code=UNAVAILABLE")
    assert server.hits == hits + 16 and not vr.is_retryable(info.value)
    with pytest.raises(vr.UnavailableError):
        await policy.execute_async(unary(mapped, "Delete"), b"code=UNAVAILABLE")
    assert server.hits == hits + 19


async def test_an_idempotent_predicate_must_answer_a_bool(aio_channel: Any) -> None:
    channel = aio_channel("predicate", breaker=None, idempotent=lambda name: "yes")
    with pytest.raises(TypeError, match=r"idempotent\('/provider.v1.Provider/Create'\)"):
        await unary(channel, "Create")(b"x")


# -- dropped connections: classified, never raw ------------------------------------------------

KINDS = ["aio unary", "aio stream", "sync unary", "sync stream"]


class Cut:
    """How a test breaks a call once it reached the server: ``reached()``
    tells when, ``cut()`` breaks it (stops the server, drops the connection)."""

    def __init__(self, server: GrpcServer, cut: Callable[[], None]) -> None:
        self.hits = server.hits
        self.server = server
        self.cut = cut

    def reached(self) -> bool:
        return self.server.hits > self.hits


async def failure_of(kind: str, target: str, cb: vr.CircuitBreaker, method: str,
                     cut: Cut | None = None) -> BaseException:
    """The error one call of ``kind`` raises; with ``cut``, broken once it
    reached the server."""
    options: dict[str, Any] = {"breaker": cb, "limiter": None}
    if kind.startswith("aio"):
        async with grpc.aio.insecure_channel(
                target, interceptors=vrg.aio_interceptors("grpc", "drops", **options)) as channel:
            try:
                if kind == "aio unary":
                    call = unary(channel, method)(b"sleep=5", timeout=10)
                    if cut is not None:
                        await wait_for(cut.reached)
                        cut.cut()
                    await call
                else:
                    async for _ in stream(channel, method)(b"n=100;sleep=0.05", timeout=10):
                        if cut is not None:
                            cut.cut()
            except Exception as exc:
                return exc
    else:
        raw = grpc.insecure_channel(target)
        channel = vrg.intercept_channel(raw, "grpc", "drops", **options)
        try:
            if kind == "sync unary":
                future = unary(channel, method).future(b"sleep=5", timeout=10)
                if cut is not None:
                    while not cut.reached():
                        time.sleep(0.01)
                    cut.cut()
                future.result()
            else:
                for _ in stream(channel, method)(b"n=100;sleep=0.05", timeout=10):
                    if cut is not None:
                        cut.cut()
        except Exception as exc:
            return exc
        finally:
            raw.close()
    raise AssertionError(f"{kind}: the call did not fail")


def method_for(kind: str, mutating: bool) -> str:
    if kind.endswith("stream"):
        return "WatchTasks"
    return "Create" if mutating else "Describe"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mutating", [False, True], ids=["read", "mutating"])
async def test_a_server_stopped_mid_call_is_unavailable(kind: str, mutating: bool) -> None:
    cb = breaker()
    srv = GrpcServer().start()
    try:
        error = await failure_of(kind, srv.target, cb, method_for(kind, mutating),
                                 Cut(srv, srv.stop))
    finally:
        srv.stop()
    check_reached_and_dropped(error, cb, kind, mutating)


def check_reached_and_dropped(error: BaseException, cb: vr.CircuitBreaker, kind: str,
                              mutating: bool) -> None:
    assert isinstance(error, vr.UnavailableError), repr(error)
    assert isinstance(error, grpc.RpcError) and error.code() is S.UNAVAILABLE
    assert not never_sent(error) and cb.failures == 1
    # the call reached the provider: only an idempotent one may be retried
    assert vr.is_retryable(error) is (not mutating or kind.endswith("stream"))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mutating", [False, True], ids=["read", "mutating"])
async def test_a_connection_dropped_mid_call_is_unavailable(server: GrpcServer, kind: str,
                                                            mutating: bool) -> None:
    cb = breaker()
    proxy = DropProxy(server.port).start()
    try:
        error = await failure_of(kind, f"127.0.0.1:{proxy.port}", cb,
                                 method_for(kind, mutating), Cut(server, proxy.drop))
    finally:
        proxy.stop()
    check_reached_and_dropped(error, cb, kind, mutating)


class DropProxy:
    """A TCP proxy on 127.0.0.1 to ``port``, in a thread of its own;
    :meth:`drop` aborts every connection through it (a connection lost
    mid-call, as a crashed host or a cut cable leaves it)."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.port = 0
        self._transports: list[asyncio.BaseTransport] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()),
                                        name="drop-proxy", daemon=True)

    def start(self) -> DropProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._done.wait()
        self._abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._transports += [writer.transport, up_writer.transport]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
            except OSError:
                return  # aborted: the other direction ends too

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def _abort(self) -> None:
        for transport in self._transports:
            transport.abort()

    def drop(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._abort)

    def stop(self) -> None:
        if self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join(10)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_peer_that_accepts_and_closes_is_unavailable_and_never_sent(kind: str) -> None:
    cb = breaker()
    peer = DroppingServer().start()
    try:
        error = await failure_of(kind, f"127.0.0.1:{peer.port}", cb, method_for(kind, True))
    finally:
        peer.stop()
    assert peer.accepted >= 1
    assert isinstance(error, vr.UnavailableError), repr(error)
    assert isinstance(error, grpc.RpcError) and error.code() is S.UNAVAILABLE
    assert never_sent(error) and vr.is_retryable(error) and cb.failures == 1


class ReadingInterceptor(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """An interceptor outside ours that reads the stream with ``read()``."""

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        call = await continuation(details, request)

        async def responses() -> AsyncIterator[Any]:
            while (item := await call.read()) is not grpc.aio.EOF:
                yield item

        return responses()


async def test_a_stream_read_with_read_is_guarded_too(server: GrpcServer) -> None:
    cb = breaker()
    interceptors = [ReadingInterceptor(),
                    *vrg.aio_interceptors("grpc", "read", breaker=cb, limiter=None)]
    async with grpc.aio.insecure_channel(server.target, interceptors=interceptors) as channel:
        assert await collect(stream(channel)(b"n=2")) == [b"item0", b"item1"]
        received = []
        with pytest.raises(vr.UnavailableError):
            async for item in stream(channel)(b"n=1;code=UNAVAILABLE"):
                received.append(item)
    assert received == [b"item0"] and cb.successes == 1 and cb.failures == 1
