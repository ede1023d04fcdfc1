"""The native awaitable of ``Policy.execute_async`` and ``CircuitBreaker.call_async``.

``_core.AsyncCall`` drives the user's awaitable itself (``PyIter_Send``) and
hands everything but success to the Python continuation. Here: what it
awaits besides a coroutine (a Future, a class with ``__await__``, a
generator-based coroutine, something not awaitable), its coroutine protocol
driven by hand (``send``/``throw``/``close`` mid-flight), what a call never
awaited or dropped while suspended leaves behind (nothing), and that 100,000
calls leave no objects behind.
"""

from __future__ import annotations

import asyncio
import collections.abc
import gc
import sys
import types
import warnings
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience import BreakerState, _core


def half_open_breaker(clock: vr.ManualClock) -> vr.CircuitBreaker:
    """A half-open breaker with one probe slot: a slot not given back refuses the next call."""
    cb = vr.CircuitBreaker("async-call", "fake", "prod",
                           vr.BreakerConfig(failure_threshold=1, reset_timeout=1.0,
                                            half_open_max_calls=1), clock=clock)
    with pytest.raises(vr.UnavailableError):
        cb.call(_raise, vr.UnavailableError("trip"))
    clock.advance(1.0)
    return cb


def _raise(exc: BaseException) -> None:
    raise exc


class Rig:
    """A policy over a half-open breaker (one slot) and a bulkhead of one."""

    def __init__(self, clock: vr.ManualClock, retry: vr.RetryConfig | None = None) -> None:
        self.breaker = half_open_breaker(clock)
        self.bulkhead = vr.Bulkhead(1)
        builder = vr.PolicyBuilder("async-call").with_clock(clock)
        if retry is not None:
            builder = builder.with_retry(retry)
        self.policy = (builder.with_circuit_breaker(self.breaker)
                       .with_bulkhead(self.bulkhead).build())
        self._recorded = (self.breaker.successes, self.breaker.failures_total)

    def held(self) -> tuple[int, int]:
        """(half-open slots taken, bulkhead slots taken)."""
        return self.breaker.half_open_calls, self.bulkhead.in_flight

    def outcomes(self) -> tuple[int, int]:
        """(successes, failures) recorded since the rig was made (the trip excluded)."""
        return (self.breaker.successes - self._recorded[0],
                self.breaker.failures_total - self._recorded[1])


@pytest.fixture
def rig(clock: vr.ManualClock) -> Rig:
    return Rig(clock)


def owners(rig: Rig) -> list[tuple[str, Callable[..., Any]]]:
    return [("policy", rig.policy.execute_async), ("breaker", rig.breaker.call_async)]


OWNERS = ["policy", "breaker"]


def entry(rig: Rig, owner: str) -> Callable[..., Any]:
    return dict(owners(rig))[owner]


# ------------------------------------------------------ what it awaits --


class AwaitMe:
    """A class with __await__ (a generator): yields once, then returns its value."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __await__(self) -> Generator[None, None, object]:
        yield None
        return self.value


@types.coroutine
def generator_based(value: object) -> Generator[None, None, object]:
    yield None
    return value


@pytest.mark.parametrize("owner", OWNERS)
async def test_a_future_as_the_result_of_fn(rig: Rig, owner: str) -> None:
    future = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.set_result, "from a future")
    assert await entry(rig, owner)(lambda: future) == "from a future"
    assert rig.outcomes() == (1, 0)
    assert rig.held() == (0, 0)


@pytest.mark.parametrize("owner", OWNERS)
async def test_a_failed_future_is_recorded_as_the_attempt_failing(rig: Rig, owner: str) -> None:
    future = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.set_exception, vr.UnavailableError("down"))
    with pytest.raises(vr.UnavailableError, match="down"):
        await entry(rig, owner)(lambda: future)
    assert rig.outcomes() == (0, 1)
    assert rig.held() == (0, 0)


@pytest.mark.parametrize("owner", OWNERS)
@pytest.mark.parametrize("make", [AwaitMe, generator_based], ids=["__await__", "types.coroutine"])
async def test_an_awaitable_that_is_no_coroutine(rig: Rig, owner: str,
                                                  make: Callable[[object], Any]) -> None:
    assert await entry(rig, owner)(make, ("a", "tuple")) == ("a", "tuple")
    assert rig.outcomes() == (1, 0)
    assert rig.held() == (0, 0)


@pytest.mark.parametrize("owner", OWNERS)
async def test_a_plain_function_keeps_pythons_own_error(rig: Rig, owner: str) -> None:
    with pytest.raises(TypeError) as expected:
        await _await(42)
    with pytest.raises(TypeError) as raised:
        await entry(rig, owner)(lambda: 42)
    assert str(raised.value) == str(expected.value)
    assert rig.held() == (0, 0)


async def _await(value: Any) -> Any:
    return await value


class BadAwait:
    def __init__(self, returns: object) -> None:
        self.returns = returns

    def __await__(self) -> Any:
        return self.returns


async def _coroutine() -> None:
    pass


@pytest.mark.parametrize("returns", [42, "coroutine"])
async def test_an_await_that_returns_no_iterator_is_refused_as_python_does(
        rig: Rig, returns: object) -> None:
    if returns == "coroutine":
        returns = _coroutine()
    with pytest.raises(TypeError, match=r"__await__\(\) returned"):
        await rig.policy.execute_async(BadAwait, returns)
    if isinstance(returns, types.CoroutineType):
        returns.close()
    assert rig.outcomes() == (0, 1)
    assert rig.held() == (0, 0)


# ------------------------------------------------- the coroutine protocol --


class Gate:
    """A bare awaitable the test resumes by hand: yields `token` until opened."""

    def __init__(self) -> None:
        self.open = False

    def __await__(self) -> Generator[str, None, str]:
        while not self.open:
            yield "waiting"
        return "opened"


def suspended(rig: Rig, owner: str, body: Callable[[], Awaitable[Any]]) -> Any:
    """An AsyncCall of ``body`` sent to once: suspended inside its attempt."""
    call = entry(rig, owner)(body)
    assert type(call) is _core.AsyncCall
    assert call.send(None) == "waiting"
    assert rig.held() == (1, 1 if owner == "policy" else 0)
    return call


@pytest.mark.parametrize("owner", OWNERS)
def test_driven_by_hand_it_returns_through_stop_iteration(rig: Rig, owner: str) -> None:
    gate = Gate()

    async def body() -> str:
        return await gate

    call = suspended(rig, owner, body)
    assert call.send(None) == "waiting"
    gate.open = True
    with pytest.raises(StopIteration) as stop:
        call.send(None)
    assert stop.value.value == "opened"
    assert rig.outcomes() == (1, 0)
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        call.send(None)


@pytest.mark.parametrize("owner", OWNERS)
@pytest.mark.parametrize("form", ["instance", "type", "type-value-traceback"])
def test_throw_mid_flight_goes_to_the_attempt(rig: Rig, owner: str, form: str) -> None:
    seen: list[BaseException] = []

    async def body() -> str:
        try:
            return await Gate()
        except KeyError as exc:
            seen.append(exc)
            return "handled"

    call = suspended(rig, owner, body)
    try:
        raise KeyError("here")
    except KeyError as exc:
        error, tb = exc, exc.__traceback__
    args = {"instance": (error,), "type": (KeyError,),
            "type-value-traceback": (KeyError, "here", tb)}[form]
    with warnings.catch_warnings(), pytest.raises(StopIteration) as stop:
        # 3.12+ deprecates the three-argument form (the coroutine thrown into says so)
        warnings.simplefilter("ignore", DeprecationWarning)
        call.throw(*args)
    assert stop.value.value == "handled"
    assert len(seen) == 1 and isinstance(seen[0], KeyError)
    assert rig.outcomes() == (1, 0)
    assert rig.held() == (0, 0)


@pytest.mark.parametrize("owner", OWNERS)
def test_an_exception_thrown_and_not_handled_is_the_attempts_failure(rig: Rig,
                                                                     owner: str) -> None:
    async def body() -> str:
        return await Gate()

    call = suspended(rig, owner, body)
    with pytest.raises(vr.UnavailableError, match="thrown"):
        call.throw(vr.UnavailableError("thrown"))
    assert rig.outcomes() == (0, 1)
    assert rig.held() == (0, 0)
    assert rig.breaker.state is BreakerState.OPEN


@pytest.mark.parametrize("owner", OWNERS)
def test_a_cancellation_thrown_mid_flight_records_nothing_and_gives_back(rig: Rig,
                                                                       owner: str) -> None:
    async def body() -> str:
        return await Gate()

    call = suspended(rig, owner, body)
    with pytest.raises(asyncio.CancelledError):
        call.throw(asyncio.CancelledError())
    assert rig.outcomes() == (0, 0)
    assert rig.held() == (0, 0)
    assert rig.breaker.state is BreakerState.HALF_OPEN


@pytest.mark.parametrize("owner", OWNERS)
def test_close_mid_flight_closes_the_attempt_and_gives_back(rig: Rig, owner: str) -> None:
    closed: list[str] = []

    async def body() -> str:
        try:
            return await Gate()
        finally:
            closed.append("finally")

    call = suspended(rig, owner, body)
    assert call.close() is None
    assert closed == ["finally"]
    assert rig.outcomes() == (0, 0)
    assert rig.held() == (0, 0)
    assert call.close() is None  # again: nothing to do
    with pytest.raises(RuntimeError, match="cannot reuse"):
        call.send(None)


@pytest.mark.parametrize("owner", OWNERS)
def test_close_of_an_attempt_that_ignores_generator_exit_raises(rig: Rig, owner: str) -> None:
    ignored: list[int] = []

    async def body() -> str:
        while True:
            try:
                return await Gate()
            except GeneratorExit:
                if ignored:
                    raise  # the second time (when collected): closes
                ignored.append(1)

    call = suspended(rig, owner, body)
    with pytest.raises(RuntimeError, match="ignored GeneratorExit"):
        call.close()
    assert ignored == [1]
    assert rig.held() == (0, 0)  # the attempt counts as having raised that RuntimeError


def test_throw_during_a_retry_goes_to_the_continuation(clock: vr.ManualClock) -> None:
    rig = Rig(clock, retry=vr.RetryConfig(max_attempts=3, base_delay=1.0, jitter=False))
    rig.breaker.reset()
    attempts: list[int] = []

    async def body() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise vr.UnavailableError("first")
        return await Gate()

    call = rig.policy.execute_async(body)
    while call.send(None) != "waiting":  # attempt 1 failed, the backoff sleeps ...
        pass  # ... then attempt 2 waits at the gate
    assert attempts == [1, 1]
    assert rig.outcomes() == (0, 1)
    with pytest.raises(asyncio.CancelledError):
        call.throw(asyncio.CancelledError())
    assert rig.outcomes() == (0, 1)
    assert rig.held() == (0, 0)


def test_send_of_a_value_before_it_started_is_refused_and_admits_nothing(rig: Rig) -> None:
    call = rig.policy.execute_async(_coroutine)
    with pytest.raises(TypeError, match="non-None value to a just-started"):
        call.send("value")
    assert rig.held() == (0, 0)
    call.close()


@pytest.mark.parametrize("owner", OWNERS)
def test_throw_before_it_started_raises_there_and_admits_nothing(rig: Rig, owner: str) -> None:
    ran: list[int] = []

    async def body() -> None:
        ran.append(1)

    call = entry(rig, owner)(body)
    with pytest.raises(ValueError, match="thrown early"):
        call.throw(ValueError("thrown early"))
    assert (ran, rig.held(), rig.outcomes()) == ([], (0, 0), (0, 0))


def test_it_is_a_coroutine_to_asyncio(rig: Rig) -> None:
    call = rig.policy.execute_async(_coroutine)
    assert asyncio.iscoroutine(call)
    assert isinstance(call, collections.abc.Coroutine)
    call.close()


async def test_a_reentrant_send_is_refused(rig: Rig) -> None:
    calls: list[Any] = []

    async def body() -> None:
        with pytest.raises(ValueError, match="already executing"):
            calls[0].send(None)

    calls.append(rig.policy.execute_async(body))
    await calls[0]
    assert rig.outcomes() == (1, 0)


# -------------------------------------------- never awaited, or dropped --


@pytest.mark.parametrize("owner", OWNERS)
@pytest.mark.parametrize("how", ["dropped", "closed", "collected in a cycle"])
def test_a_call_never_awaited_took_nothing_and_warns_nothing(rig: Rig, owner: str,
                                                             how: str) -> None:
    ran: list[int] = []

    async def body() -> None:
        ran.append(1)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine ... was never awaited"
        call = entry(rig, owner)(body)
        assert rig.held() == (0, 0)  # admission waits for the first send
        if how == "closed":
            call.close()
        elif how == "collected in a cycle":
            body.cycle = call  # type: ignore[attr-defined]
        del call
        gc.collect()
    assert (ran, rig.held(), rig.outcomes()) == ([], (0, 0), (0, 0))


@pytest.mark.parametrize("owner", OWNERS)
@pytest.mark.parametrize("how", ["dropped", "collected in a cycle"])
def test_a_call_dropped_while_suspended_gives_back_what_it_held(rig: Rig, owner: str,
                                                                how: str) -> None:
    closed: list[str] = []
    box: list[Any] = []  # an argument of the call: holding the call in it makes a cycle

    async def body(box: list[Any]) -> str:
        try:
            return await Gate()
        finally:
            closed.append("finally")

    call = entry(rig, owner)(body, box)
    assert call.send(None) == "waiting"
    assert rig.held() == (1, 1 if owner == "policy" else 0)
    if how == "collected in a cycle":
        box.append(call)
    del call, box
    gc.collect()
    assert closed == ["finally"]
    assert rig.outcomes() == (0, 0)
    assert rig.held() == (0, 0)
    # the slot is back: the next call is admitted
    assert rig.breaker.call(lambda: "probe") == "probe"


# ------------------------------------------------------------ no leaks --


def objects_by_type() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(type(o).__name__ for o in gc.get_objects())


@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_100k_calls_leave_no_objects_behind(clock: vr.ManualClock, outcome: str) -> None:
    breaker = vr.CircuitBreaker("leak", config=vr.BreakerConfig(
        failure_threshold=_core.BREAKER_MAX_FAILURE_THRESHOLD), clock=clock)
    policy = (vr.PolicyBuilder("leak").with_clock(clock).with_circuit_breaker(breaker)
              .with_rate_limiter(vr.TokenBucket(qps=1e9, burst=10**6, clock=clock))
              .with_bulkhead(3).build())
    argument, keyword = object(), object()
    async def work(arg: object, *, kw: object) -> object:
        if outcome == "failure":
            raise vr.InvalidSpecError("bad")  # not retried: one attempt per call
        return arg

    async def run(n: int) -> None:
        for _ in range(n):
            try:
                await policy.execute_async(work, argument, kw=keyword)
                await breaker.call_async(work, argument, kw=keyword)
            except vr.InvalidSpecError:
                pass

    calls = 50_000
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(run(1_000))  # warm: caches, interned names
        before = objects_by_type()
        refs = (sys.getrefcount(argument), sys.getrefcount(keyword), sys.getrefcount(work))
        loop.run_until_complete(run(calls))
        after = objects_by_type()
    finally:
        loop.close()
    assert (sys.getrefcount(argument), sys.getrefcount(keyword), sys.getrefcount(work)) == refs
    # A leak per call grows by `calls` (twice that: two calls per round); the
    # interpreter's own caches by a few dozen at most.
    grown = {name: after[name] - before[name] for name in after
             if after[name] - before[name] > calls // 100}
    assert grown == {}
    assert policy.bulkhead is not None and policy.bulkhead.in_flight == 0


# ------------------------------------------------------- the contract --


def test_the_breakers_have_what_the_awaitable_calls() -> None:
    from test_native_contract import check_conforms, package_subclasses

    from virtrigaud_resilience import _native

    for cls in [vr.CircuitBreaker, *package_subclasses(vr.CircuitBreaker)]:
        check_conforms(cls, _native.AsyncAttemptRaised)


# ------------------------------------------------------------- threads --


@pytest.mark.threads
def test_threads_awaiting_one_policy_count_every_call_once(clock: vr.ManualClock) -> None:
    """Each thread runs its own event loop over one shared policy (free-threaded
    builds: truly at once): every call is admitted, recorded and given back once."""
    import threading

    breaker = vr.CircuitBreaker("threads", clock=clock)
    bulkhead = vr.Bulkhead(1_000)
    policy = (vr.PolicyBuilder("threads").with_clock(clock).with_circuit_breaker(breaker)
              .with_rate_limiter(vr.TokenBucket(qps=1e9, burst=10**6, clock=clock))
              .with_bulkhead(bulkhead).build())
    threads_n, calls = 4, 2_000
    start = threading.Barrier(threads_n)
    results: list[int] = []

    async def work(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async def run() -> int:
        total = 0
        for i in range(calls):
            total += await policy.execute_async(work, i)
            total += await breaker.call_async(work, i)
        return total

    def thread() -> None:
        start.wait()
        results.append(asyncio.run(run()))

    workers = [threading.Thread(target=thread) for _ in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert results == [2 * sum(range(calls))] * threads_n
    assert breaker.successes == 2 * threads_n * calls
    assert (breaker.failures_total, bulkhead.in_flight) == (0, 0)


@pytest.mark.parametrize("method", ["Policy.execute", "Policy.execute_async",
                                    "CircuitBreaker.call", "CircuitBreaker.call_async"])
def test_a_call_without_fn_is_a_type_error_naming_the_method(method: str) -> None:
    # The four raw entry points share their prologue (binding.hpp's
    # fn_method_target): an initialised instance, then fn.
    owner = {"Policy": vr.PolicyBuilder("no-fn").with_circuit_breaker(vr.CircuitBreaker("no-fn")).build(),
             "CircuitBreaker": vr.CircuitBreaker("no-fn")}[method.split(".")[0]]
    with pytest.raises(TypeError, match=rf"^{method}\(\) missing required argument 'fn'$"):
        getattr(owner, method.split(".")[1])()
