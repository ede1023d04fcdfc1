"""The adapters composed as docs/controllers.md recommends: one admission per attempt.

A ResilientProvider (or a Policy, or ``breaker.call``) around a provider
client whose transport is guarded too (``aio_channel``, ``aio_interceptors``,
``AsyncResilientTransport``, the sync interceptor and transport), with the
same Config and so the same shared breaker and bucket, against real loopback
servers on a ManualClock with the production settings (breaker 15 / 120 s,
3 half-open probes, 20 qps burst 50, 3 attempts from 1 s): a steady call
takes one token, a failed attempt counts once, and after an outage the
probes reach the server and close the breaker. A breaker or bucket of the
adapter's own still applies.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
import grpc.aio  # noqa: E402

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience.providers import (  # noqa: E402
    Capabilities,
    CreateRequest,
    CreateResponse,
    DescribeResponse,
    ResilientProvider,
    TaskStatus,
    never_sent,
    shared_breaker,
    shared_limiter,
)
from virtrigaud_resilience.providers import grpc as vrg  # noqa: E402
from virtrigaud_resilience.providers import http as vrh  # noqa: E402

from loopback import GrpcServer, HttpServer, identity, serving  # noqa: E402

CONFIG = vr.Config.production()
PROBES = CONFIG.breaker.half_open_max_calls
THRESHOLD = CONFIG.breaker.failure_threshold
ATTEMPTS = CONFIG.retry.max_attempts
_names = itertools.count()


@pytest.fixture(scope="module")
def grpc_server() -> Iterator[GrpcServer]:
    yield from serving(GrpcServer())


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpServer]:
    yield from serving(HttpServer())


class Client:
    """What a provider implementation does per operation: one request to its
    backend, failing while ``down`` (the server answers UNAVAILABLE / 503)."""

    def __init__(self, send: Callable[[bool], Awaitable[None]]) -> None:
        self.send = send
        self.down = False

    async def _call(self) -> None:
        await self.send(self.down)

    async def validate(self) -> None:
        await self._call()

    async def get_capabilities(self) -> Capabilities:
        await self._call()
        return Capabilities()

    async def create(self, request: CreateRequest) -> CreateResponse:
        await self._call()
        return CreateResponse(request.name)

    async def delete(self, vm_id: str) -> str:
        await self._call()
        return ""

    async def power(self, vm_id: str, op: Any) -> str:
        await self._call()
        return ""

    async def reconfigure(self, vm_id: str, desired: CreateRequest) -> str:
        await self._call()
        return ""

    async def describe(self, vm_id: str) -> DescribeResponse:
        await self._call()
        return DescribeResponse(exists=True)

    async def task_status(self, task_ref: str) -> TaskStatus:
        await self._call()
        return TaskStatus(done=True)


Composed = tuple[ResilientProvider, Client, Callable[[], int]]


def provider_over(send: Callable[[bool], Awaitable[None]], clock: vr.ManualClock, name: str,
                  hits: Callable[[], int]) -> Composed:
    """A ResilientProvider over a client whose operations ``send(down)``
    through a guarded transport; ``hits()`` counts the server's requests."""
    client = Client(send)
    return (ResilientProvider(client, "vsphere", name, CONFIG, clock=clock, metrics=False),
            client, hits)


@pytest.fixture
async def over_grpc(grpc_server: GrpcServer) -> AsyncIterator[Callable[..., Composed]]:
    async for make in grpc_composed(grpc_server, interceptors=True):
        yield make


@pytest.fixture
async def over_grpc_channel(grpc_server: GrpcServer) -> AsyncIterator[Callable[..., Composed]]:
    async for make in grpc_composed(grpc_server, interceptors=False):
        yield make


async def grpc_composed(grpc_server: GrpcServer,
                        interceptors: bool) -> AsyncIterator[Callable[..., Composed]]:
    """ResilientProvider over a client of a guarded grpc.aio channel:
    ``aio_interceptors``, or ``aio_channel``."""
    channels: list[Any] = []

    def make(clock: vr.ManualClock, name: str, **options: Any) -> Composed:
        if interceptors:
            channel = grpc.aio.insecure_channel(
                grpc_server.target,
                interceptors=vrg.aio_interceptors("vsphere", name, CONFIG, clock=clock,
                                                  **options))
        else:
            channel = vrg.aio_channel(grpc_server.target, "vsphere", name, CONFIG, clock=clock,
                                      **options)
        channels.append(channel)
        describe = channel.unary_unary("/provider.v1.Provider/Describe",
                                       request_serializer=identity,
                                       response_deserializer=identity)

        async def send(down: bool) -> None:
            await describe(b"code=UNAVAILABLE" if down else b"vm-1")

        return provider_over(send, clock, name, lambda: grpc_server.hits)

    yield make
    for channel in channels:
        await channel.close()


@pytest.fixture
async def over_http(http_server: HttpServer) -> AsyncIterator[Callable[..., Composed]]:
    clients: list[Any] = []

    def make(clock: vr.ManualClock, name: str, **options: Any) -> Composed:
        http = httpx.AsyncClient(
            base_url=http_server.url,
            transport=vrh.AsyncResilientTransport("vsphere", name, CONFIG, clock=clock,
                                                  **options))
        clients.append(http)

        async def send(down: bool) -> None:
            await http.get("/status/503" if down else "/vms/vm-1")

        return provider_over(send, clock, name, lambda: http_server.hits)

    yield make
    for http in clients:
        await http.aclose()


@pytest.fixture(params=["grpc.aio channel", "grpc.aio interceptors", "httpx"])
def composed(request: Any) -> Callable[..., Composed]:
    fixture = {"grpc.aio channel": "over_grpc_channel", "grpc.aio interceptors": "over_grpc",
               "httpx": "over_http"}[request.param]
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


async def test_a_steady_call_takes_one_token(composed: Callable[..., Composed]) -> None:
    clock = vr.ManualClock()
    rp, _, hits = composed(clock, f"steady-{next(_names)}")
    before, seen = rp.limiter.tokens, hits()
    for n in range(1, 4):
        assert (await rp.describe("vm-1")).exists
        assert rp.limiter.tokens == pytest.approx(before - n)  # one token per call, not two
    assert hits() - seen == 3 and rp.breaker.successes == 3


async def test_a_failed_attempt_counts_once(composed: Callable[..., Composed]) -> None:
    clock = vr.ManualClock()
    rp, client, hits = composed(clock, f"fail-{next(_names)}")
    client.down = True
    seen = hits()
    with pytest.raises(vr.UnavailableError) as info:
        await rp.describe("vm-1")
    assert getattr(info.value, "attempts", None) == ATTEMPTS
    assert hits() - seen == ATTEMPTS
    assert rp.breaker.failures == ATTEMPTS  # not 2 per attempt
    assert not never_sent(info.value)


async def test_outage_then_recovery_the_probes_reach_the_server(
        composed: Callable[..., Composed]) -> None:
    clock = vr.ManualClock()
    rp, client, hits = composed(clock, f"outage-{next(_names)}")
    client.down = True
    seen = hits()
    while rp.breaker.state is vr.BreakerState.CLOSED:
        with pytest.raises(vr.UnavailableError):
            await rp.describe("vm-1")
    assert hits() - seen == THRESHOLD  # every failed attempt reached the server once
    with pytest.raises(vr.CircuitOpenError) as info:
        await rp.describe("vm-1")
    assert never_sent(info.value) and hits() - seen == THRESHOLD

    client.down = False
    clock.advance(CONFIG.breaker.reset_timeout)
    seen = hits()
    for probe in range(PROBES):
        assert (await rp.describe("vm-1")).exists, probe
    assert hits() - seen == PROBES  # every probe reached the provider
    assert rp.breaker.state is vr.BreakerState.CLOSED
    assert (await rp.describe("vm-1")).exists and hits() - seen == PROBES + 1


async def test_a_breaker_of_the_adapters_own_still_applies(
        composed: Callable[..., Composed]) -> None:
    """Per endpoint inside per provider: the endpoint's breaker admits and
    counts each attempt, the provider's the same attempt once."""
    clock = vr.ManualClock()
    endpoint = vr.CircuitBreaker("endpoint", "vsphere", "ep", vr.BreakerConfig(
        failure_threshold=2, reset_timeout=600), clock=clock)
    bucket = vr.TokenBucket(1, 5, clock=clock)
    rp, client, hits = composed(clock, f"own-{next(_names)}", breaker=endpoint, limiter=bucket)
    assert (await rp.describe("vm-1")).exists
    assert endpoint.successes == 1 and bucket.tokens == pytest.approx(4)
    client.down = True
    with pytest.raises(vr.UnavailableError):
        await rp.describe("vm-1")
    assert endpoint.state is vr.BreakerState.OPEN  # its own threshold of 2
    assert rp.breaker.failures == ATTEMPTS  # the third attempt: our endpoint breaker refused


async def test_a_task_outliving_its_attempt_admits_its_own_calls(
        over_grpc: Callable[..., Composed]) -> None:
    clock = vr.ManualClock()
    rp, client, _ = over_grpc(clock, f"task-{next(_names)}")
    started: list[asyncio.Task[None]] = []
    release = asyncio.Event()

    async def later() -> None:
        await release.wait()
        await client.send(False)  # after the attempt that started it ended

    async def spawn() -> None:
        started.append(asyncio.ensure_future(later()))

    client.send, send = (lambda down: spawn()), client.send  # type: ignore[assignment,method-assign]
    await rp.describe("vm-1")
    client.send = send
    tokens, successes = rp.limiter.tokens, rp.breaker.successes
    release.set()
    await started[0]
    # Admitted on its own: its own token and its own outcome.
    assert rp.limiter.tokens == pytest.approx(tokens - 1)
    assert rp.breaker.successes == successes + 1


# -- sync: the native attempt (thread-local) and the Python path (ContextVar) ---------------


@pytest.fixture
def sync_http(http_server: HttpServer) -> Iterator[Callable[..., Any]]:
    clients: list[Any] = []

    def make(name: str, clock: vr.ManualClock, **options: Any) -> Any:
        client = httpx.Client(base_url=http_server.url, transport=vrh.ResilientTransport(
            "vsphere", name, CONFIG, clock=clock, **options))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def sync_grpc(grpc_server: GrpcServer) -> Iterator[Callable[..., Any]]:
    channels: list[Any] = []

    def make(name: str, clock: vr.ManualClock, **options: Any) -> Any:
        raw = grpc.insecure_channel(grpc_server.target)
        channels.append(raw)
        channel = vrg.intercept_channel(raw, "vsphere", name, CONFIG, clock=clock, **options)
        return channel.unary_unary("/provider.v1.Provider/Describe",
                                   request_serializer=identity, response_deserializer=identity)

    yield make
    for raw in channels:
        raw.close()


def policy_for(name: str, clock: vr.ManualClock, **timeout: float) -> vr.Policy:
    builder = (vr.PolicyBuilder(name).with_retry(CONFIG.retry)
               .with_circuit_breaker(shared_breaker(CONFIG, "vsphere", name, clock))
               .with_rate_limiter(shared_limiter(CONFIG, "vsphere", name, clock))
               .with_clock(clock))
    if timeout:
        builder = builder.with_timeout(per_attempt=timeout["per_attempt"])
    return builder.build()


@pytest.mark.parametrize("python_path", [False, True], ids=["native", "python"])
def test_policy_execute_over_the_sync_transport(sync_http: Callable[..., Any],
                                                http_server: HttpServer,
                                                python_path: bool) -> None:
    clock = vr.ManualClock()
    name = f"sync-http-{next(_names)}"
    # A per-attempt timeout sends every attempt through Python (the ContextVar).
    policy = policy_for(name, clock, **({"per_attempt": 30.0} if python_path else {}))
    client = sync_http(name, clock)
    limiter, cb = policy.limiter, policy.breaker
    assert limiter is not None and cb is not None
    tokens = limiter.tokens
    assert policy.execute(client.get, "/vms/vm-1").status_code == 200
    assert limiter.tokens == pytest.approx(tokens - 1) and cb.successes == 1
    seen = http_server.hits
    with pytest.raises(vr.UnavailableError):
        policy.execute(client.get, "/status/503")
    assert http_server.hits - seen == ATTEMPTS and cb.failures == ATTEMPTS


def test_breaker_call_over_the_sync_interceptor_probes_once(sync_grpc: Callable[..., Any],
                                                           grpc_server: GrpcServer) -> None:
    clock = vr.ManualClock()
    name = f"sync-grpc-{next(_names)}"
    cb = shared_breaker(CONFIG, "vsphere", name, clock)
    describe = sync_grpc(name, clock, limiter=None)
    for _ in range(THRESHOLD):
        with pytest.raises(vr.UnavailableError):
            cb.call(describe, b"code=UNAVAILABLE")
    assert cb.state is vr.BreakerState.OPEN and cb.failures_total == THRESHOLD
    clock.advance(CONFIG.breaker.reset_timeout)
    seen = grpc_server.hits
    for _ in range(PROBES):
        assert cb.call(describe, b"vm-1") == b"ok:vm-1"  # the probe itself reached the server
    assert grpc_server.hits - seen == PROBES and cb.state is vr.BreakerState.CLOSED


def test_policy_execute_over_the_sync_interceptor(sync_grpc: Callable[..., Any]) -> None:
    clock = vr.ManualClock()
    name = f"sync-grpc-{next(_names)}"
    policy = policy_for(name, clock)
    describe = sync_grpc(name, clock)
    limiter = policy.limiter
    assert limiter is not None
    tokens = limiter.tokens
    assert policy.execute(describe, b"vm-1") == b"ok:vm-1"
    assert limiter.tokens == pytest.approx(tokens - 1)
    # Outside any attempt the interceptor admits on its own again.
    assert describe(b"vm-1") == b"ok:vm-1"
    assert limiter.tokens == pytest.approx(tokens - 2)


def test_breaker_guard_around_the_sync_interceptor_counts_once(
        sync_grpc: Callable[..., Any]) -> None:
    clock = vr.ManualClock()
    name = f"guard-{next(_names)}"
    cb = shared_breaker(CONFIG, "vsphere", name, clock)
    describe = sync_grpc(name, clock, limiter=None)
    with pytest.raises(vr.UnavailableError), cb.guard():
        describe(b"code=UNAVAILABLE")
    assert cb.failures == 1  # the guard's; the interceptor inside did not count it again
    with cb.guard():
        assert describe(b"vm-1") == b"ok:vm-1"
    assert cb.successes == 1


async def test_breaker_guard_around_the_aio_interceptor_counts_once(
        grpc_server: GrpcServer) -> None:
    clock = vr.ManualClock()
    name = f"aguard-{next(_names)}"
    cb = shared_breaker(CONFIG, "vsphere", name, clock)
    async with grpc.aio.insecure_channel(grpc_server.target, interceptors=vrg.aio_interceptors(
            "vsphere", name, CONFIG, clock=clock, limiter=None)) as channel:
        describe = channel.unary_unary("/provider.v1.Provider/Describe",
                                       request_serializer=identity, response_deserializer=identity)
        with pytest.raises(vr.UnavailableError):
            async with cb.guard():
                await describe(b"code=UNAVAILABLE")
        assert cb.failures == 1
        async with cb.guard():
            await describe(b"vm-1")
        # After the guard, the interceptor admits on its own again.
        await describe(b"vm-1")
    assert cb.successes == 2


async def test_execute_async_and_call_async_over_the_aio_interceptor(
        grpc_server: GrpcServer) -> None:
    """The native first attempt of execute_async (no timeout) and call_async."""
    clock = vr.ManualClock()
    name = f"fast-{next(_names)}"
    policy = policy_for(name, clock)
    cb, limiter = policy.breaker, policy.limiter
    assert cb is not None and limiter is not None
    async with grpc.aio.insecure_channel(grpc_server.target, interceptors=vrg.aio_interceptors(
            "vsphere", name, CONFIG, clock=clock)) as channel:
        describe = channel.unary_unary("/provider.v1.Provider/Describe",
                                       request_serializer=identity, response_deserializer=identity)
        tokens = limiter.tokens
        assert await policy.execute_async(describe, b"vm-1") == b"ok:vm-1"
        assert limiter.tokens == pytest.approx(tokens - 1) and cb.successes == 1
        with pytest.raises(vr.UnavailableError):
            await cb.call_async(describe, b"code=UNAVAILABLE")
        assert cb.failures == 1  # counted by call_async alone
