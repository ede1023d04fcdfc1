"""The ``adapters`` bench section: real loopback calls, bare and guarded.

Pairs, each a bare call and the same call through our adapter (breaker,
token bucket, deadline, status mapping, metrics):

- a ``grpc.aio`` unary call through ``aio_channel``;
- a sync ``grpc`` unary call through ``intercept_channel``;
- an ``httpx.AsyncClient`` GET through ``AsyncResilientTransport``;
- an ``httpx.Client`` GET through ``ResilientTransport``.

Every pair runs interleaved against servers in a child process
(:mod:`.loopback`): each round times every pair once, its bare and guarded
calls in alternating blocks (:data:`_BLOCKS` of each; which case leads
alternates too), after a few untimed calls of each, with the garbage
collector paused, so both cases of a pair see the same load to within
milliseconds. The end-to-end figure is the **median over rounds of the
ratio** guarded / bare of the same round, target <= :data:`MAX_END_TO_END`;
its quartiles say how noisy the machine was. Our own work is measured
apart too: the guarded channel or transport around a stub that answers at
once, minus the stub called directly (medians), as a share of the loopback
call (target <= :data:`MAX_OWN_SHARE`).

Reported through ``suite.timings`` (what, milliseconds, bound), since these
cases are calls over a network, timed in rounds of their own, not the
suite's tight loops of no-op calls.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .loopback import METHOD, serve
from .suite import Suite, Target

__all__ = ["MAX_END_TO_END", "MAX_OWN_SHARE", "adapter_cases"]

#: Target: a guarded loopback call takes at most this many times a bare one
#: (the median over interleaved rounds of the per-round ratio).
MAX_END_TO_END = 1.10
#: Target: our own work per call is at most this share of a loopback call.
MAX_OWN_SHARE = 0.10

#: (rounds, loopback calls per round and case, stub calls per round and case)
#: by the suite's ``repeats`` (5 in a full run, 1 with --quick).
_FULL, _QUICK = (15, 200, 2000), (5, 50, 500)
#: Untimed calls of each case before a pair's round.
_WARM_CALLS = 10
#: A pair's calls per round run in this many blocks, the two cases' blocks
#: alternating, so that both see the same load (a shared machine's load moves
#: within a second; blocks of 20 loopback calls last milliseconds).
_BLOCKS = 10

Run = Callable[[int], Any]


@dataclass
class _Pair:
    """A bare case and the guarded one, and their per-call times (ns) per round."""

    label: str
    bare: Run
    guarded: Run
    is_async: bool
    alone: tuple[Run, Run] | None = None  # the stub bare and guarded: our work
    times: dict[str, list[float]] = field(default_factory=dict)


def adapter_cases(suite: Suite) -> list[Target]:
    """Measures the pairs now and appends their figures to ``suite.timings``.

    The calls run in a process of their own (spawned), beside the servers'
    one: grpc.aio's poller thread, started by the first grpc.aio call and
    alive for the rest of the process, takes turns with the interpreter lock
    and slows every asyncio case measured after it (the composed async
    policy measured 5-7x a bare await in a bench process that had run the
    adapters, 3.8x in one that had not).
    """
    import importlib.util

    missing = [name for name in ("grpc", "httpx") if importlib.util.find_spec(name) is None]
    if missing:
        suite.skip("adapters (grpcio, httpx)", ImportError(f"not installed: {missing}"))
        return []
    rounds, calls, stub_calls = _FULL if suite.repeats > 1 else _QUICK
    context = multiprocessing.get_context("spawn")  # grpc does not survive a fork
    ports, stop = context.Queue(), context.Event()
    server = context.Process(target=serve, args=(ports, stop), daemon=True)
    server.start()
    try:
        grpc_port, http_port = ports.get(timeout=60)
        receive, send = context.Pipe(duplex=False)
        measurer = context.Process(target=_measure_in_child,
                                   args=(grpc_port, http_port, rounds, calls, stub_calls, send))
        measurer.start()
        send.close()
        try:
            results: list[tuple[str, dict[str, list[float]]]] = receive.recv()
        except EOFError:
            raise RuntimeError(f"the adapters' measuring process ended without results "
                               f"(exit code {measurer.exitcode})") from None
        finally:
            measurer.join(60)
    finally:
        stop.set()
        server.join(10)
    for label, times in results:
        _report(suite, label, times, rounds, calls)
    return []


def _measure_in_child(grpc_port: int, http_port: int, rounds: int, calls: int, stub_calls: int,
                      send: Any) -> None:
    """The measuring process: every pair's times, sent back as (label, times)."""
    loop = asyncio.new_event_loop()
    closers: list[Callable[[], Any]] = []
    try:
        pairs = _pairs(loop, grpc_port, http_port, closers)
        _measure(pairs, loop, rounds, calls, stub_calls)
    finally:
        for close in closers:
            result = close()
            if asyncio.iscoroutine(result):
                loop.run_until_complete(result)
        loop.close()
    send.send([(pair.label, pair.times) for pair in pairs])
    send.close()


def _report(suite: Suite, label: str, times: dict[str, list[float]], rounds: int,
            calls: int) -> None:
    bare_times = times["bare"]
    ratios = [guarded / bare for guarded, bare in zip(times["guarded"], bare_times)]
    low, ratio, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    bare = statistics.median(bare_times)
    suite.timings.append((
        f"{label}: end to end {ratio:.3f}x bare (median of {rounds} interleaved rounds "
        f"of {calls} calls, quartiles {low:.3f}-{high:.3f}; bare {bare / 1e3:.0f} us)",
        ratio * bare / 1e6, bare * MAX_END_TO_END / 1e6))
    if "alone guarded" in times:
        work = statistics.median(times["alone guarded"]) - statistics.median(
            times["alone bare"])
        suite.timings.append((
            f"{label}: our own work {work / 1e3:.1f} us per call = "
            f"{work / bare * 100:.2f}% of the loopback call",
            work / 1e6, bare * MAX_OWN_SHARE / 1e6))


def _time_pair(cases: tuple[tuple[str, Run, int], tuple[str, Run, int]], is_async: bool,
               first: int, loop: asyncio.AbstractEventLoop) -> dict[str, float]:
    """Per-call nanoseconds of each of a pair's two cases: their calls in
    :data:`_BLOCKS` alternating blocks (case ``first`` leads, then they take
    turns leading), after a few untimed calls of each."""
    for _, run, _ in cases:
        _call(run, is_async, _WARM_CALLS, loop)
    calls = cases[0][2]  # both cases of a pair make as many calls
    blocks = min(_BLOCKS, calls)
    per_block = calls // blocks
    spent = [0, 0]
    order = (first, 1 - first)
    gc.disable()
    try:
        for block in range(blocks):
            for index in (order if block % 2 == 0 else order[::-1]):
                run = cases[index][1]
                start = time.perf_counter_ns()
                _call(run, is_async, per_block, loop)
                spent[index] += time.perf_counter_ns() - start
    finally:
        gc.enable()
    return {case[0]: spent[index] / (per_block * blocks) for index, case in enumerate(cases)}


def _call(run: Run, is_async: bool, n: int, loop: asyncio.AbstractEventLoop) -> None:
    if is_async:
        loop.run_until_complete(run(n))
    else:
        run(n)


def _measure(pairs: list[_Pair], loop: asyncio.AbstractEventLoop, rounds: int, calls: int,
             stub_calls: int) -> None:
    """Times every pair once per round (see the module)."""
    pairings: list[tuple[_Pair, tuple[tuple[str, Run, int], tuple[str, Run, int]]]] = []
    for pair in pairs:
        pairings.append((pair, (("bare", pair.bare, calls), ("guarded", pair.guarded, calls))))
        if pair.alone is not None:
            pairings.append((pair, (("alone bare", pair.alone[0], stub_calls),
                                    ("alone guarded", pair.alone[1], stub_calls))))
    for pair, cases in pairings:  # warm up: connections, caches, specialised bytecode
        for _, run, n in cases:
            _call(run, pair.is_async, max(n // 4, 10), loop)
    for round_ in range(rounds):
        for pair, cases in pairings:
            for name, per_call in _time_pair(cases, pair.is_async, round_ % 2, loop).items():
                pair.times.setdefault(name, []).append(per_call)


def _never_refusing(label: str) -> dict[str, Any]:
    """An adapter's primitives: a breaker and a bucket that never refuse."""
    import virtrigaud_resilience as vr

    return {"breaker": vr.CircuitBreaker(f"bench-{label}", "bench", label),
            "limiter": vr.TokenBucket(qps=1e9, burst=1_000_000)}


def _loop_async(call: Callable[[], Awaitable[Any]]) -> Run:
    async def run(n: int) -> None:
        for _ in range(n):
            await call()
    return run


def _loop_sync(call: Callable[[], Any]) -> Run:
    def run(n: int) -> None:
        for _ in range(n):
            call()
    return run


def _pairs(loop: asyncio.AbstractEventLoop, grpc_port: int, http_port: int,
           closers: list[Callable[[], Any]]) -> list[_Pair]:
    import grpc
    import grpc.aio
    import httpx

    from ..providers import grpc as vrg
    from ..providers import http as vrh

    target, base = f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}"

    async def open_async() -> tuple[Any, Any, Any, Any]:
        return (grpc.aio.insecure_channel(target),
                vrg.aio_channel(target, "bench", "aio", **_never_refusing("aio")),
                httpx.AsyncClient(base_url=base),
                httpx.AsyncClient(base_url=base, transport=vrh.AsyncResilientTransport(
                    "bench", "async-http", **_never_refusing("async-http"))))

    bare_aio, guarded_aio, bare_ahttp, guarded_ahttp = loop.run_until_complete(open_async())
    bare_sync = grpc.insecure_channel(target)
    guarded_sync = vrg.intercept_channel(grpc.insecure_channel(target), "bench", "sync",
                                         **_never_refusing("sync"))
    bare_http = httpx.Client(base_url=base)
    guarded_http = httpx.Client(base_url=base, transport=vrh.ResilientTransport(
        "bench", "sync-http", **_never_refusing("sync-http")))
    closers += [bare_aio.close, guarded_aio.close, bare_ahttp.aclose, guarded_ahttp.aclose,
                bare_sync.close, guarded_sync.close, bare_http.close, guarded_http.close]

    def unary(channel: Any) -> Any:
        return channel.unary_unary(METHOD, request_serializer=_same,
                                   response_deserializer=_same)

    aio_bare, aio_guarded = unary(bare_aio), unary(guarded_aio)
    sync_bare, sync_guarded = unary(bare_sync), unary(guarded_sync)
    return [
        _Pair("grpc.aio unary via aio_channel", _loop_async(lambda: aio_bare(b"x")),
              _loop_async(lambda: aio_guarded(b"x")), True, _aio_channel_alone()),
        _Pair("sync grpc unary via intercept_channel", _loop_sync(lambda: sync_bare(b"x")),
              _loop_sync(lambda: sync_guarded(b"x")), False, _sync_channel_alone()),
        _Pair("httpx.AsyncClient GET via AsyncResilientTransport",
              _loop_async(lambda: bare_ahttp.get("/vms/1")),
              _loop_async(lambda: guarded_ahttp.get("/vms/1")), True, _async_transport_alone()),
        _Pair("httpx.Client GET via ResilientTransport", _loop_sync(lambda: bare_http.get("/vms/1")),
              _loop_sync(lambda: guarded_http.get("/vms/1")), False, _sync_transport_alone()),
    ]


def _same(data: bytes) -> bytes:
    return data


# -- our work alone: each adapter around a stub that answers at once ----------------------


class _StubChannel:
    """A channel whose unary-unary multi-callable is ``answer``: what the
    guarded channels wrap, minus the network."""

    def __init__(self, answer: Callable[..., Any]) -> None:
        self._answer = answer

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        return self._answer


def _aio_channel_alone() -> tuple[Run, Run]:
    from ..providers import grpc as vrg
    from ..providers.grpc_channel import GuardedAioChannel

    class Done:
        """A grpc.aio call whose await gives the response at once."""

        __slots__ = ()

        def __await__(self) -> Any:
            return b"ok"
            yield  # pragma: no cover - makes this a generator

    def answer(request: Any, **_: Any) -> Done:
        return Done()

    step = vrg.RpcCallStep("bench", "alone-aio", **_never_refusing("alone-aio"))
    guarded = GuardedAioChannel(_StubChannel(answer), step).unary_unary(METHOD)

    async def stub() -> Any:
        return await answer(b"x")

    async def through_guard() -> Any:
        return await guarded(b"x")

    return _loop_async(stub), _loop_async(through_guard)


def _sync_channel_alone() -> tuple[Run, Run]:
    from ..providers import grpc as vrg
    from ..providers.grpc_channel import GuardedChannel

    def answer(request: Any, *_: Any) -> bytes:
        return b"ok"

    step = vrg.RpcCallStep("bench", "alone-sync", **_never_refusing("alone-sync"))
    guarded = GuardedChannel(_StubChannel(answer), step).unary_unary(METHOD)
    return _loop_sync(lambda: answer(b"x")), _loop_sync(lambda: guarded(b"x"))


def _async_transport_alone() -> tuple[Run, Run]:
    import httpx

    from ..providers import http as vrh

    class Stub(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=b"ok")

    stub = Stub()
    transport = vrh.AsyncResilientTransport("bench", "alone-async-http", transport=stub,
                                            **_never_refusing("alone-async-http"))
    request = httpx.Request("GET", "http://127.0.0.1/vms/1")
    return (_loop_async(lambda: stub.handle_async_request(request)),
            _loop_async(lambda: transport.handle_async_request(request)))


def _sync_transport_alone() -> tuple[Run, Run]:
    import httpx

    from ..providers import http as vrh

    class Stub(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=b"ok")

    stub = Stub()
    transport = vrh.ResilientTransport("bench", "alone-sync-http", transport=stub,
                                       **_never_refusing("alone-sync-http"))
    request = httpx.Request("GET", "http://127.0.0.1/vms/1")
    return (_loop_sync(lambda: stub.handle_request(request)),
            _loop_sync(lambda: transport.handle_request(request)))
