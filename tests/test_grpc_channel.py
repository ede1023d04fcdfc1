"""What only the guarded channels do (``aio_channel``, ``intercept_channel``),
against a real ``grpc.aio`` server on loopback. Their shared semantics with
the interceptors (status mapping, deadlines, idempotency, streams) are the
parametrised tests of ``test_grpc_adapter.py``, run both ways."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")
import grpc.aio  # noqa: E402

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience.providers import grpc as vrg  # noqa: E402
from virtrigaud_resilience.providers.grpc_channel import (  # noqa: E402
    GuardedAioChannel,
    GuardedChannel,
)

from loopback import GrpcServer, identity, serving  # noqa: E402

S = grpc.StatusCode
DESCRIBE = "/provider.v1.Provider/Describe"
_labels = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[GrpcServer]:
    yield from serving(GrpcServer())


def breaker(threshold: int = 100) -> vr.CircuitBreaker:
    return vr.CircuitBreaker("grpc-channel", "grpc", f"c{next(_labels)}",
                             vr.BreakerConfig(failure_threshold=threshold, reset_timeout=60))


def unary(channel: Any) -> Any:
    return channel.unary_unary(DESCRIBE, request_serializer=identity,
                               response_deserializer=identity)


async def wait_until(predicate: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        gc.collect()
        await asyncio.sleep(0.01)


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts its turns (``_run_once``)."""

    turns = 0

    def _run_once(self) -> None:  # type: ignore[override]
        self.turns += 1
        super()._run_once()  # type: ignore[misc]


@pytest.fixture(scope="module")
def echo_server() -> Iterator[str]:
    """The bench's echo server in a child process (the turns a call takes
    then depend on neither the server's thread nor its share of our GIL)."""
    import multiprocessing

    from virtrigaud_resilience.bench.loopback import serve

    context = multiprocessing.get_context("spawn")
    ports, stop = context.Queue(), context.Event()
    process = context.Process(target=serve, args=(ports, stop), daemon=True)
    process.start()
    try:
        grpc_port, _ = ports.get(timeout=60)
        yield f"127.0.0.1:{grpc_port}"
    finally:
        stop.set()
        process.join(10)


def turns_per_call(target: str, open_channel: Any, calls: int = 100) -> float:
    """Event-loop turns per unary call on a channel ``open_channel(target)``
    makes, after a few warm-up calls: the fewest of three runs."""
    loop = CountingLoop()

    async def run() -> float:
        channel = open_channel(target)
        try:
            call = unary(channel)
            for _ in range(5):
                await call(b"x")
            fewest = float("inf")
            for _ in range(3):
                before = loop.turns
                for _ in range(calls):
                    assert await call(b"x") == b"x"
                fewest = min(fewest, (loop.turns - before) / calls)
            return fewest
        finally:
            await channel.close()

    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


def test_a_guarded_aio_call_takes_no_event_loop_turn_more_than_a_bare_one(
        echo_server: str) -> None:
    """The guard runs in the caller's task: no task, no turn of its own
    (grpc.aio's interceptors cost a turn per call, the reason aio_channel exists)."""
    bare = turns_per_call(echo_server, grpc.aio.insecure_channel)
    guarded = turns_per_call(echo_server, lambda target: vrg.aio_channel(
        target, "grpc", "turns", breaker=breaker(), limiter=vr.TokenBucket(1e6, 1000)))
    intercepted = turns_per_call(echo_server, lambda target: grpc.aio.insecure_channel(
        target, interceptors=vrg.aio_interceptors("grpc", "turns-i", breaker=breaker(),
                                                  limiter=None)))
    # A task of the guard's own would add a whole turn (the interceptors add one or two).
    assert guarded < bare + 0.5
    assert intercepted >= bare + 0.9


async def test_a_rejected_call_is_never_sent_and_answers_as_a_status(
        server: GrpcServer) -> None:
    """An open breaker refuses the call when it is made; awaiting it raises
    the rejection (a CircuitOpenError that is an AioRpcError, UNAVAILABLE),
    and the call's own methods report that status."""
    cb = breaker(threshold=1)
    cb.force_open()
    hits = server.hits
    async with vrg.aio_channel(server.target, "grpc", "rejected", breaker=cb,
                               limiter=None) as channel:
        assert isinstance(channel, GuardedAioChannel)
        call = unary(channel)(b"x")
        assert call.done() and not call.cancelled() and not call.cancel()
        assert await call.code() is S.UNAVAILABLE
        assert "circuit breaker open" in await call.details()
        seen: list[Any] = []
        call.add_done_callback(seen.append)
        assert seen == [call]
        with pytest.raises(vr.CircuitOpenError) as raised:
            await call
        assert isinstance(raised.value, grpc.aio.AioRpcError)
        assert raised.value.code() is S.UNAVAILABLE
    assert server.hits == hits


async def test_a_dropped_unawaited_call_is_settled_when_grpc_finishes_it(
        server: GrpcServer) -> None:
    """A call started and dropped before its end holds its breaker slot
    only until grpc finishes it: then its outcome is recorded."""
    cb = breaker()
    async with vrg.aio_channel(server.target, "grpc", "dropped", breaker=cb,
                               limiter=None) as channel:
        call = unary(channel)(b"sleep=0.1")
        del call
        gc.collect()
        await wait_until(lambda: cb.successes == 1)
        assert cb.failures == 0


async def test_cancelling_an_unawaited_call_frees_its_half_open_slot(
        server: GrpcServer) -> None:
    cb = vr.CircuitBreaker("grpc-channel", "grpc", f"c{next(_labels)}",
                           vr.BreakerConfig(failure_threshold=1, reset_timeout=0.05,
                                            half_open_max_calls=1))
    permit = cb.try_acquire()
    assert permit is not None
    permit.failure()
    time.sleep(0.06)
    async with vrg.aio_channel(server.target, "grpc", "cancel", breaker=cb,
                               limiter=None) as channel:
        call = unary(channel)(b"sleep=5")
        assert cb.half_open_calls == 1
        assert call.cancel()
        assert cb.half_open_calls == 0 and cb.state is vr.BreakerState.HALF_OPEN
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await unary(channel)(b"x") == b"ok:x"  # the slot serves the next probe
    assert cb.state is vr.BreakerState.CLOSED


async def test_wait_or_own_interceptors_route_every_call_through_the_interceptors(
        server: GrpcServer) -> None:
    """With wait=True (a token wait needs a task) or the caller's
    interceptors (they must see our errors), aio_channel is a plain grpc.aio
    channel with our interceptors after the caller's."""
    seen: list[Any] = []

    class Outer(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_unary(self, continuation: Any, details: Any,
                                        request: Any) -> Any:
            call = await continuation(details, request)
            seen.append(await call.code())
            return call

    bucket = vr.TokenBucket(1000, 1)
    async with vrg.aio_channel(server.target, "grpc", "waits", breaker=None, limiter=bucket,
                               wait=True) as waiting:
        assert not isinstance(waiting, GuardedAioChannel)
        started = time.monotonic()
        for _ in range(3):
            assert await unary(waiting)(b"x") == b"ok:x"
        assert time.monotonic() - started >= 0.001  # the second and third waited
    async with vrg.aio_channel(server.target, "grpc", "outer", breaker=breaker(),
                               limiter=None, interceptors=[Outer()]) as intercepted:
        assert not isinstance(intercepted, GuardedAioChannel)
        with pytest.raises(vr.NotFoundError):
            await unary(intercepted)(b"code=NOT_FOUND")
    assert seen == [S.NOT_FOUND]


async def test_the_guarded_aio_channel_is_the_channel_otherwise(server: GrpcServer) -> None:
    channel = vrg.aio_channel(server.target, "grpc", "delegates", breaker=breaker(),
                              limiter=None)
    await asyncio.wait_for(channel.channel_ready(), 10)
    assert channel.get_state() is grpc.ChannelConnectivity.READY
    watch = channel.unary_stream("/provider.v1.Provider/WatchTasks",
                                 request_serializer=identity, response_deserializer=identity)
    assert [item async for item in watch(b"n=2")] == [b"item0", b"item1"]
    await channel.close()
    with pytest.raises(Exception):
        await unary(channel)(b"x")


def test_the_guarded_sync_channel_is_the_channel_otherwise(server: GrpcServer) -> None:
    states: list[Any] = []
    cb = breaker()
    with vrg.intercept_channel(grpc.insecure_channel(server.target), "grpc", "sync",
                               breaker=cb, limiter=None) as channel:
        assert isinstance(channel, GuardedChannel)
        channel.subscribe(states.append, try_to_connect=True)
        assert unary(channel)(b"x") == b"ok:x"
        assert unary(channel).future(b"x").result(timeout=10) == b"ok:x"
        # grpc's own threads deliver the state and settle the future: wait for them
        deadline = time.monotonic() + 10
        while (grpc.ChannelConnectivity.READY not in states or cb.successes < 2) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        channel.unsubscribe(states.append)
    assert grpc.ChannelConnectivity.READY in states
    assert cb.successes == 2


@pytest.mark.parametrize(("argument", "value", "message"), [
    ("breaker", "cb", "breaker must be"),
    ("limiter", 3, "limiter must be"),
    ("timeouts", [1], "timeouts must be a mapping"),
    ("idempotent", 7, "idempotent must be"),
    ("wait", "yes", "wait must be"),
])
async def test_bad_arguments_name_themselves(argument: str, value: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        vrg.aio_channel("127.0.0.1:1", "grpc", "bad", **{argument: value})


async def test_options_and_keywords_as_every_adapter_takes_them() -> None:
    cb = breaker()
    options = vrg.AdapterOptions(metrics=False, timeouts={"Describe": 3})
    channel = vrg.aio_channel("127.0.0.1:1", "grpc", "options", options=options, breaker=cb,
                              limiter=None)
    try:
        assert isinstance(channel, GuardedAioChannel)
        step = channel.step
        assert (step.breaker, step.limiter, step.metrics) == (cb, None, False)
        assert step.timeout_for(DESCRIBE) == 3
    finally:
        await channel.close()
    with pytest.raises(TypeError, match="colour"):
        vrg.aio_channel("127.0.0.1:1", "grpc", "options", colour="red")


def test_a_guarded_aio_channel_refuses_a_step_that_waits() -> None:
    """Its admission runs in the caller's task without awaiting: a token
    wait there would block the event loop."""
    step = vrg.RpcCallStep("grpc", "waits", breaker=None, limiter=vr.TokenBucket(1, 1),
                           wait=True)
    with pytest.raises(ValueError, match="wait=True"):
        GuardedAioChannel(object(), step)
