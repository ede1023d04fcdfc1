"""compat.tenacity: tenacity's behaviour, side by side with the real tenacity,
and the native first attempt.

The scenario tests run one configuration under the real tenacity and under
the drop-in and compare everything observable: every hook and strategy call
(in order, with the attempt number, the outcome and a snapshot of the
statistics), every sleep, and the final value or exception (its type,
message and cause). The peer is only imported here, never by the drop-in.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import pickle
import threading
import time
from typing import Any

import pytest

from virtrigaud_resilience import _core
from virtrigaud_resilience._native import MODE_NATIVE
from virtrigaud_resilience.compat import tenacity as compat

real = pytest.importorskip("tenacity")

LIBS = [pytest.param(real, id="tenacity"), pytest.param(compat, id="compat")]


# ---------------------------------------------------------------------------
# A recorder of everything a retried call makes observable.
# ---------------------------------------------------------------------------

def _outcome(rs: Any) -> Any:
    if rs.outcome is None:
        return None
    if rs.outcome.failed:
        error = rs.outcome.exception()
        return ("raised", type(error).__name__, str(error))
    return ("returned", rs.outcome.result())


class Trace:
    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self.events: list[tuple[Any, ...]] = []
        self.retrying: Any = None

    def stats(self) -> tuple[Any, ...]:
        stats = self.retrying.statistics if self.retrying is not None else {}
        return (stats.get("attempt_number"), stats.get("idle_for"),
                tuple(sorted(stats)))

    def hook(self, name: str, value: Any = None) -> Any:
        def record(rs: Any) -> Any:
            self.retrying = rs.retry_object
            sleep = rs.next_action.sleep if rs.next_action is not None else None
            self.events.append((name, rs.attempt_number, _outcome(rs), rs.upcoming_sleep,
                                sleep, round(rs.idle_for, 6), self.stats()))
            return value
        return record

    def strategy(self, name: str, inner: Any) -> Any:
        def call(rs: Any) -> Any:
            answer = inner(rs)
            self.retrying = rs.retry_object
            self.events.append((name, rs.attempt_number, _outcome(rs), answer, self.stats()))
            return answer
        return call

    def sleep(self, seconds: float) -> None:
        self.events.append(("sleep", seconds, self.stats()))

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def _run(call: Any) -> tuple[Any, ...]:
    try:
        value = call()
    except BaseException as exc:  # noqa: BLE001 (the outcome is what is compared)
        cause = exc.__cause__
        return ("raise", type(exc).__name__, str(exc) if not hasattr(exc, "last_attempt")
                else exc.last_attempt.attempt_number,
                type(cause).__name__ if cause is not None else None)
    if hasattr(value, "attempt_number"):  # a Future from retry_error_callback
        value = ("future", value.attempt_number, _outcome_of_future(value))
    return ("return", value)


def _outcome_of_future(future: Any) -> Any:
    return repr(future.exception()) if future.failed else future.result()


def _flaky(script: list[Any]) -> Any:
    """A function that plays ``script``: exceptions are raised, values returned."""
    calls = iter(list(script))

    def flaky(*args: Any, **kwargs: Any) -> Any:
        step = next(calls)
        if isinstance(step, BaseException):
            raise step
        return step
    return flaky


SCENARIOS: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "success-first": ([42], {}),
    "two-errors-then-success": ([OSError("a"), OSError("b"), "ok"], {}),
    "stop-after-attempts": ([OSError("1"), OSError("2"), OSError("3")], {"stop": 3}),
    "reraise": ([KeyError("1"), KeyError("2")], {"stop": 2, "reraise": True}),
    "not-retried-type": ([KeyError("no")], {"retry_type": OSError}),
    "retry-if-result": ([None, None, 7], {"result": True}),
    "retry-if-result-stops": ([None, None, None], {"result": True, "stop": 3}),
    "error-callback": ([OSError("x"), OSError("y")], {"stop": 2, "callback": True}),
    "try-again": ([compat.TryAgain(), "done"], {"retry_type": KeyError}),
    "before-hook": ([OSError("x"), 5], {"before": True}),
    "delay-stop": ([OSError("x"), OSError("y"), 1], {"delay_stop": True}),
}


def _configure(lib: Any, trace: Trace, options: dict[str, Any]) -> dict[str, Any]:
    retry: Any = lib.retry_if_exception_type(options.get("retry_type", Exception))
    if options.get("result"):
        retry = lib.retry_if_result(lambda value: value is None)
    stop: Any = lib.stop_after_attempt(options.get("stop", 10))
    if options.get("delay_stop"):
        stop = lib.stop_after_delay(60) | lib.stop_after_attempt(10)
    kwargs: dict[str, Any] = dict(
        sleep=trace.sleep,
        stop=trace.strategy("stop", stop),
        wait=trace.strategy("wait", lib.wait_exponential(multiplier=0.5, max=3)),
        retry=trace.strategy("retry", retry),
        after=trace.hook("after"),
        before_sleep=trace.hook("before_sleep"),
        reraise=options.get("reraise", False),
    )
    if options.get("before"):
        kwargs["before"] = trace.hook("before")
    if options.get("callback"):
        kwargs["retry_error_callback"] = lambda rs: rs.outcome
    return kwargs


def _normalise(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """TryAgain is a different class in each library: compare by name."""
    return events


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_decorated_call_matches_tenacity(name: str) -> None:
    script, options = SCENARIOS[name]
    results = []
    for lib in (real, compat):
        trace = Trace(lib)
        steps = [lib.TryAgain() if isinstance(step, compat.TryAgain) else step
                 for step in script]
        decorated = lib.retry(**_configure(lib, trace, options))(_flaky(steps))
        outcome = _run(decorated)
        final = {k: v for k, v in decorated.statistics.items()
                 if k not in ("start_time", "delay_since_first_attempt")}
        results.append((trace.events, outcome, final, sorted(decorated.statistics)))
    assert results[1] == results[0]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_retrying_object_matches_tenacity(name: str) -> None:
    script, options = SCENARIOS[name]
    results = []
    for lib in (real, compat):
        trace = Trace(lib)
        steps = [lib.TryAgain() if isinstance(step, compat.TryAgain) else step
                 for step in script]
        retrying = lib.Retrying(**_configure(lib, trace, options))
        outcome = _run(lambda: retrying(_flaky(steps), 1, key="v"))
        results.append((trace.events, outcome, retrying.statistics["attempt_number"]))
    assert results[1] == results[0]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_async_call_matches_tenacity(name: str) -> None:
    script, options = SCENARIOS[name]
    results = []
    for lib in (real, compat):
        trace = Trace(lib)
        steps = [lib.TryAgain() if isinstance(step, compat.TryAgain) else step
                 for step in script]
        play = _flaky(steps)

        async def target() -> Any:
            await asyncio.sleep(0)
            return play()

        kwargs = _configure(lib, trace, options)
        kwargs["sleep"] = trace.async_sleep
        decorated = lib.retry(**kwargs)(target)
        assert inspect.iscoroutinefunction(decorated)
        outcome = _run(lambda: asyncio.run(decorated()))
        final = {k: v for k, v in decorated.statistics.items()
                 if k not in ("start_time", "delay_since_first_attempt")}
        results.append((trace.events, outcome, final))
    assert results[1] == results[0]


@pytest.mark.parametrize("name", ["two-errors-then-success", "stop-after-attempts",
                                  "retry-if-result", "reraise"])
def test_attempt_iteration_matches_tenacity(name: str) -> None:
    script, options = SCENARIOS[name]
    results = []
    for lib in (real, compat):
        trace = Trace(lib)
        play = _flaky(script)
        retrying = lib.Retrying(**_configure(lib, trace, options))

        def body() -> Any:
            for attempt in retrying:
                with attempt:
                    value = play()
                if not attempt.retry_state.outcome.failed:
                    attempt.retry_state.set_result(value)
            return value

        results.append((_run(body), trace.events))
    assert results[1] == results[0]


def test_async_attempt_iteration_matches_tenacity() -> None:
    results = []
    for lib in (real, compat):
        trace = Trace(lib)
        play = _flaky([OSError("1"), OSError("2"), "ok"])

        async def body(lib: Any = lib, trace: Trace = trace, play: Any = play) -> Any:
            async for attempt in lib.AsyncRetrying(sleep=trace.async_sleep,
                                                   after=trace.hook("after"),
                                                   stop=lib.stop_after_attempt(5)):
                async with attempt:
                    return play()
            return None

        results.append((_run(lambda: asyncio.run(body())), trace.events))
    assert results[1] == results[0]


# ---------------------------------------------------------------------------
# The features a user relies on, on the drop-in alone.
# ---------------------------------------------------------------------------

def test_sleeps_are_injected_through_sleep() -> None:
    sleeps: list[float] = []
    play = _flaky([OSError(), OSError(), OSError(), "ok"])
    decorated = compat.retry(sleep=sleeps.append, stop=compat.stop_after_attempt(5),
                             wait=compat.wait_exponential(multiplier=1, max=3))(play)
    assert decorated() == "ok"
    assert sleeps == [1, 2, 3]
    assert decorated.statistics["idle_for"] == 6
    assert decorated.statistics["attempt_number"] == 4


def test_default_sleep_is_nap_time_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(compat.nap.time, "sleep", slept.append)
    decorated = compat.retry(wait=compat.wait_fixed(0.25), stop=compat.stop_after_attempt(2))(
        _flaky([OSError(), 1]))
    assert decorated() == 1
    assert slept == [0.25]


def test_retry_error_chains_the_last_exception() -> None:
    errors = [OSError("first"), OSError("last")]
    decorated = compat.retry(stop=compat.stop_after_attempt(2), sleep=lambda s: None)(
        _flaky(errors))
    with pytest.raises(compat.RetryError) as caught:
        decorated()
    error = caught.value
    assert error.__cause__ is errors[1]
    assert error.last_attempt.attempt_number == 2
    assert error.last_attempt.failed
    assert str(error).startswith("RetryError[<Future")
    with pytest.raises(OSError, match="last"):
        error.reraise()


def test_reraise_raises_the_last_exception_itself() -> None:
    errors = [ValueError("1"), ValueError("2")]
    decorated = compat.retry(stop=compat.stop_after_attempt(2), reraise=True,
                             sleep=lambda s: None)(_flaky(errors))
    with pytest.raises(ValueError) as caught:
        decorated()
    assert caught.value is errors[1]


def test_reraise_of_try_again_surfaces_its_cause() -> None:
    underlying = KeyError("boom")

    def fails() -> None:
        try:
            raise underlying
        except KeyError:
            raise compat.TryAgain  # noqa: B904 (the implicit context is the point)

    retrying = compat.Retrying(stop=compat.stop_after_attempt(3), reraise=True,
                               retry=compat.retry_never, sleep=lambda s: None)
    with pytest.raises(KeyError) as caught:
        retrying(fails)
    assert caught.value is underlying
    assert retrying.statistics["attempt_number"] == 3


def test_retry_if_result_retries_until_the_predicate_is_false() -> None:
    values = [None, None, 3]
    decorated = compat.retry(retry=compat.retry_if_result(lambda v: v is None),
                             sleep=lambda s: None)(_flaky(values))
    assert decorated._mode == 0  # the predicate must see every result: Python
    assert decorated() == 3
    assert decorated.statistics["attempt_number"] == 3

    gives_up = compat.retry(retry=compat.retry_if_result(lambda v: v is None),
                            stop=compat.stop_after_attempt(2), sleep=lambda s: None)(
        lambda: None)
    with pytest.raises(compat.RetryError) as caught:
        gives_up()
    assert caught.value.last_attempt.result() is None
    assert caught.value.__cause__ is None


def test_retry_error_callback_value_is_returned() -> None:
    decorated = compat.retry(stop=compat.stop_after_attempt(3), sleep=lambda s: None,
                             retry_error_callback=lambda rs: ("gave up", rs.attempt_number))(
        _flaky([OSError()] * 3))
    assert decorated() == ("gave up", 3)


# ---------------------------------------------------------------------------
# The native first attempt.
# ---------------------------------------------------------------------------

def test_default_configuration_runs_the_first_attempt_natively() -> None:
    @compat.retry(stop=compat.stop_after_attempt(3), wait=compat.wait_exponential())
    def add(a: int, b: int = 2) -> int:
        return a + b

    assert isinstance(add, _core.RetryCall)
    assert add._mode == 1
    assert add(1) == 3 and add(1, b=5) == 6


def test_statistics_after_a_native_success() -> None:
    seen: list[dict[str, Any]] = []

    @compat.retry(stop=compat.stop_after_attempt(3))
    def call() -> str:
        seen.append(dict(call.statistics))
        return "ok"

    assert call.statistics == {}
    before = time.monotonic()
    assert call() == "ok"
    after = time.monotonic()
    stats = call.statistics
    assert list(stats) == ["start_time", "attempt_number", "idle_for",
                           "delay_since_first_attempt"]
    assert stats["attempt_number"] == 1
    assert stats["idle_for"] == 0 and stats["delay_since_first_attempt"] == 0
    assert before <= stats["start_time"] <= after  # the same clock as time.monotonic()
    assert seen == [stats]  # visible during the call already
    assert call.retry.statistics is stats  # the controller's view, this thread

    # A second call resets the same dict in place (outer decorators keep it).
    first_start = stats["start_time"]
    call()
    assert call.statistics is stats and stats["start_time"] >= first_start


def test_statistics_stay_visible_through_an_outer_decorator() -> None:
    def outer(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)
        return wrapper

    @outer
    @compat.retry(stop=compat.stop_after_attempt(3))
    def call() -> int:
        return 1

    call()
    assert call.statistics["attempt_number"] == 1
    assert call.statistics is call.__wrapped__.statistics


def test_statistics_after_a_native_failure_continued_in_python() -> None:
    play = _flaky([OSError(), OSError(), "ok"])
    decorated = compat.retry(sleep=lambda s: None, wait=compat.wait_fixed(0.5))(play)
    assert decorated._mode == 1
    assert decorated() == "ok"
    stats = decorated.statistics
    assert stats["attempt_number"] == 3
    assert stats["idle_for"] == 1.0
    assert stats["delay_since_first_attempt"] >= 0
    assert decorated.retry.statistics is stats


def test_an_exception_that_cannot_be_retried_is_raised_natively() -> None:
    calls: list[int] = []

    @compat.retry(retry=compat.retry_if_exception_type(OSError), sleep=lambda s: None)
    def fails() -> None:
        calls.append(1)
        raise KeyError("not retried")

    with pytest.raises(KeyError, match="not retried") as caught:
        fails()
    assert calls == [1]
    assert fails.statistics["attempt_number"] == 1
    # Raised as the function raised it: its own frame is the last one.
    tb = caught.value.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    assert tb is not None and tb.tb_frame.f_code.co_name == "fails"


def test_virtual_subclasses_of_the_retried_types_are_retried() -> None:
    import abc

    class Transient(Exception, metaclass=abc.ABCMeta):
        pass

    Transient.register(KeyError)
    decorated = compat.retry(retry=compat.retry_if_exception_type(Transient),
                             sleep=lambda s: None)(_flaky([KeyError("virtual"), "ok"]))
    assert decorated() == "ok"  # isinstance() says KeyError is a Transient, as for tenacity


def test_try_again_is_retried_even_when_the_type_is_not() -> None:
    play = _flaky([compat.TryAgain(), "after"])
    decorated = compat.retry(retry=compat.retry_if_exception_type(OSError),
                             sleep=lambda s: None)(play)
    assert decorated() == "after"
    assert decorated.statistics["attempt_number"] == 2


@pytest.mark.parametrize("options, mode", [
    ({}, 1),
    ({"retry": compat.retry_if_exception_type(OSError) | compat.retry_if_exception_message(
        message="x")}, 1),
    ({"retry": compat.retry_if_exception_cause_type(OSError)}, 1),
    ({"retry": compat.retry_never}, 1),
    ({"retry": compat.retry_if_exception_type() & compat.retry_if_result(bool)}, 1),
    ({"retry": compat.retry_if_result(bool) & compat.retry_if_exception_type()}, 0),
    ({"retry": compat.retry_if_not_result(bool)}, 0),
    ({"retry": compat.retry_unless_exception_type(KeyError)}, 0),
    ({"retry": compat.retry_always}, 0),
    ({"retry": lambda rs: False}, 0),
    ({"before": lambda rs: None}, 0),
    ({"before": None}, 1),
    ({"after": lambda rs: None, "before_sleep": lambda rs: None,
      "stop": lambda rs: True, "wait": lambda rs: 1}, 1),
    ({"enabled": False}, 2),
])
def test_which_configurations_are_native(options: dict[str, Any], mode: int) -> None:
    options = {"sleep": lambda s: None, "stop": compat.stop_after_attempt(2), **options}
    decorated = compat.retry(**options)(lambda: 1)
    assert decorated._mode == mode
    # Strategies that retry results give up with RetryError; the others return.
    assert _run(decorated) in (("return", 1), ("raise", "RetryError", 2, None),
                               ("raise", "RetryError", 1, None))


def test_changing_the_controller_changes_the_plan() -> None:
    calls: list[int] = []
    decorated = compat.retry(stop=compat.stop_after_attempt(2))(lambda: 1)
    assert decorated._mode == 1
    decorated.retry.before = lambda rs: calls.append(rs.attempt_number)
    assert decorated._mode == 0
    assert decorated() == 1 and calls == [1]
    decorated.retry.before = compat.before_nothing
    assert decorated._mode == 1
    decorated.retry.enabled = False
    assert decorated._mode == 2
    decorated.retry.enabled = True
    assert decorated._mode == 1


def test_disabled_runs_the_function_once_plainly() -> None:
    calls: list[int] = []

    @compat.retry(enabled=False, stop=compat.stop_after_attempt(3))
    def fails() -> None:
        calls.append(1)
        raise ValueError("fail")

    with pytest.raises(ValueError):
        fails()
    assert calls == [1]
    assert hasattr(fails, "retry_with") and fails.statistics == {}


def test_a_subclass_overriding_the_loop_runs_in_python() -> None:
    class Counting(compat.Retrying):
        calls = 0

        def __call__(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
            Counting.calls += 1
            return super().__call__(fn, *args, **kwargs)

    decorated = Counting().wraps(lambda: 5)
    assert decorated._mode == 0
    assert decorated() == 5 and Counting.calls == 1


def test_decorated_function_looks_like_the_original() -> None:
    def original(a: int, b: str = "x", *, c: float = 1.0) -> str:
        """Docs."""
        return f"{a}{b}{c}"

    decorated = compat.retry(original)
    assert decorated.__name__ == "original"
    assert decorated.__doc__ == "Docs."
    assert decorated.__wrapped__ is original
    assert decorated.__defaults__ == ("x",) and decorated.__kwdefaults__ == {"c": 1.0}
    assert inspect.signature(decorated) == inspect.signature(original)
    assert repr(decorated).startswith("<function test_decorated_function_looks_like_the_"
                                      "original.<locals>.original at 0x")
    assert decorated(1) == "1x1.0"


class Doubler:
    factor = 2

    @compat.retry(stop=compat.stop_after_attempt(3))
    def double(self, value: int) -> int:
        return value * self.factor

    @classmethod
    @compat.retry
    def name(cls) -> str:
        return cls.__name__

    @staticmethod
    @compat.retry
    def plain(value: int) -> int:
        return value


def test_decorated_methods_bind_as_functions_do() -> None:
    doubler = Doubler()
    assert doubler.double(21) == 42
    assert doubler.double(value=4) == 8
    assert Doubler.double(doubler, 3) == 6
    assert Doubler.name() == "Doubler" and doubler.name() == "Doubler"
    assert Doubler.plain(5) == 5 and doubler.plain(6) == 6
    assert doubler.double.__self__ is doubler


@compat.retry(stop=compat.stop_after_attempt(2))
def module_level(value: int) -> int:
    return value + 1


def test_decorated_function_pickles_by_reference() -> None:
    restored = pickle.loads(pickle.dumps(module_level))
    assert restored is module_level
    assert restored(1) == 2


def test_retry_with_and_copy() -> None:
    sleeps: list[float] = []
    decorated = compat.retry(stop=compat.stop_after_attempt(2), sleep=sleeps.append)(
        _flaky([OSError()] * 3 + ["x"]))
    faster = decorated.retry_with(stop=compat.stop_after_attempt(4))
    assert faster() == "x"
    assert faster.statistics["attempt_number"] == 4
    copy = decorated.retry.copy(name="block")
    assert str(copy) == "block" and copy.stop is decorated.retry.stop


def test_concurrent_calls_from_threads() -> None:
    @compat.retry(stop=compat.stop_after_attempt(3))
    def square(value: int) -> int:
        return value * value

    results: list[int] = []
    lock = threading.Lock()

    def worker(base: int) -> None:
        for i in range(2000):
            value = square(base + i)
            with lock:
                results.append(value)

    threads = [threading.Thread(target=worker, args=(n * 10_000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8000
    assert sorted(results) == sorted((n * 10_000 + i) ** 2 for n in range(4)
                                     for i in range(2000))


def test_nested_retried_calls_keep_their_own_state() -> None:
    inner_calls: list[int] = []

    @compat.retry(stop=compat.stop_after_attempt(2), sleep=lambda s: None)
    def inner() -> int:
        inner_calls.append(1)
        if len(inner_calls) == 1:
            raise OSError("inner once")
        return 10

    outer_calls: list[int] = []

    @compat.retry(stop=compat.stop_after_attempt(3), sleep=lambda s: None)
    def outer() -> int:
        outer_calls.append(1)
        value = inner()
        if len(outer_calls) < 2:
            raise OSError("outer once")
        return value

    assert outer() == 10
    assert outer.statistics["attempt_number"] == 2


# ---------------------------------------------------------------------------
# asyncio
# ---------------------------------------------------------------------------

async def test_async_native_first_attempt_and_statistics() -> None:
    @compat.retry(stop=compat.stop_after_attempt(3))
    async def fetch(value: int) -> int:
        await asyncio.sleep(0)
        return value

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch(3) == 3
    assert fetch.statistics["attempt_number"] == 1
    assert fetch.retry.statistics is fetch.statistics


async def test_async_cancellation_mid_sleep_stops_the_retries() -> None:
    attempts: list[int] = []
    sleeping = asyncio.Event()

    async def sleep(seconds: float) -> None:
        sleeping.set()
        await asyncio.sleep(seconds)

    @compat.retry(wait=compat.wait_fixed(30), sleep=sleep)
    async def flaky() -> None:
        attempts.append(1)
        raise OSError("down")

    task = asyncio.ensure_future(flaky())
    await asyncio.wait_for(sleeping.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert attempts == [1]  # no attempt after the cancelled sleep
    assert flaky.statistics["attempt_number"] == 2  # counted before the sleep, as tenacity


async def test_async_cancelled_attempt_is_not_retried() -> None:
    attempts: list[int] = []
    started = asyncio.Event()

    @compat.retry(stop=compat.stop_after_attempt(5))
    async def slow() -> None:
        attempts.append(1)
        started.set()
        await asyncio.sleep(30)

    task = asyncio.ensure_future(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert attempts == [1]


async def test_async_with_a_sync_function_and_async_sleep() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    play = _flaky([None, None, True])
    decorated = compat.retry(sleep=sleep, wait=compat.wait_fixed(1),
                             retry=compat.retry_if_result(lambda v: v is None))(play)
    assert inspect.iscoroutinefunction(decorated)
    assert await decorated() is True
    assert slept == [1, 1]


async def test_async_strategies_are_awaited() -> None:
    async def is_none(value: Any) -> bool:
        return value is None

    play = _flaky([None, 2])
    decorated = compat.retry(retry=compat.asyncio.retry_if_result(is_none),
                             sleep=lambda s: asyncio.sleep(0))(_as_async(play))
    assert await decorated() == 2


def _as_async(fn: Any) -> Any:
    async def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)
    return call


def test_async_retrying_is_not_iterable() -> None:
    with pytest.raises(TypeError, match="not iterable"):
        iter(compat.AsyncRetrying())


# ---------------------------------------------------------------------------
# Strategies, hooks and logs against tenacity's values.
# ---------------------------------------------------------------------------

def _state(lib: Any, attempt: int, delay: float, outcome: Any = None,
           upcoming: float = 0) -> Any:
    rs = lib.RetryCallState(lib.Retrying(), None, (), {})
    rs.attempt_number = attempt
    rs.outcome = outcome or lib.Future.construct(attempt, None, False)
    rs.outcome_timestamp = rs.start_time + delay
    rs.upcoming_sleep = upcoming
    return rs


@pytest.mark.parametrize("make", [
    lambda l: l.wait_fixed(2),
    lambda l: l.wait_none(),
    lambda l: l.wait_incrementing(start=1, increment=2, max=6),
    lambda l: l.wait_exponential(multiplier=0.5, max=40, exp_base=3, min=1),
    lambda l: l.wait_exponential(multiplier=1e300, max=1e-100),
    lambda l: l.wait_chain(l.wait_fixed(1), l.wait_fixed(4)),
    lambda l: l.wait_fixed(1) + l.wait_incrementing(1, 1),
    lambda l: sum([l.wait_fixed(1), l.wait_fixed(2)]),
])
def test_wait_values_match_tenacity(make: Any) -> None:
    for attempt in (1, 2, 3, 7, 50, 5000):
        assert make(compat)(_state(compat, attempt, 0)) == make(real)(_state(real, attempt, 0))


@pytest.mark.parametrize("make", [
    lambda l: l.stop_after_attempt(3),
    lambda l: l.stop_after_delay(2),
    lambda l: l.stop_before_delay(2),
    lambda l: l.stop_after_delay(1) | l.stop_after_attempt(4),
    lambda l: l.stop_after_delay(1) & l.stop_after_attempt(4),
    lambda l: l.stop_never,
])
def test_stop_values_match_tenacity(make: Any) -> None:
    for attempt, delay, upcoming in [(1, 0.1, 0), (2, 1.5, 1), (3, 0.9, 0.2), (4, 2.5, 0),
                                     (5, 0.5, 3)]:
        assert (make(compat)(_state(compat, attempt, delay, upcoming=upcoming))
                == make(real)(_state(real, attempt, delay, upcoming=upcoming)))


@pytest.mark.parametrize("make", [
    lambda l: l.retry_if_exception_type(OSError),
    lambda l: l.retry_if_not_exception_type(OSError),
    lambda l: l.retry_unless_exception_type(OSError),
    lambda l: l.retry_if_exception_message(message="boom"),
    lambda l: l.retry_if_exception_message(match="bo+"),
    lambda l: l.retry_if_not_exception_message(match="bo+"),
    lambda l: l.retry_if_result(lambda v: v == 1),
    lambda l: l.retry_if_not_result(lambda v: v == 1),
    lambda l: l.retry_if_exception_type(OSError) | l.retry_if_result(lambda v: v == 1),
    lambda l: l.retry_if_exception_type(OSError) & l.retry_if_exception_message(match="b"),
    lambda l: l.retry_always,
    lambda l: l.retry_never,
])
def test_retry_verdicts_match_tenacity(make: Any) -> None:
    outcomes = [(OSError("boom"), True), (KeyError("boom"), True), (OSError("x"), True),
                (1, False), (2, False)]
    for value, failed in outcomes:
        verdicts = [make(lib)(_state(lib, 1, 0, lib.Future.construct(1, value, failed)))
                    for lib in (real, compat)]
        assert verdicts[1] == verdicts[0]


def test_composition_is_flat_as_tenacity() -> None:
    a, b, c = (compat.retry_if_exception_type(t) for t in (OSError, KeyError, ValueError))
    assert isinstance(a | b | c, compat.retry_any) and len((a | b | c).retries) == 3
    assert isinstance(a & b & c, compat.retry_all) and len((a & b & c).retries) == 3
    with pytest.raises(TypeError):
        5 + compat.wait_fixed(1)  # type: ignore[operator]


class Capture:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def log(self, level: int, msg: str, *args: Any) -> None:
        self.calls.append((level, msg % args if args else msg))


@pytest.mark.parametrize("exc_info", [False, True])
def test_log_hooks_write_tenacity_messages(exc_info: bool) -> None:
    messages = []
    for lib in (real, compat):
        capture = Capture()
        play = _flaky([OSError("Hi there"), None, 3])

        def target() -> Any:
            return play()

        retrying = lib.Retrying(
            sleep=lambda s: None, wait=lib.wait_fixed(0.01), stop=lib.stop_after_attempt(5),
            retry=lib.retry_if_exception_type() | lib.retry_if_result(lambda v: v is None),
            before=lib.before_log(capture, logging.DEBUG),
            after=lib.after_log(capture, logging.INFO, sec_format="%.0f"),
            before_sleep=lib.before_sleep_log(capture, logging.WARNING, exc_info=exc_info))
        assert retrying(target) == 3
        text = [(level, msg.split("\nTraceback")[0]) for level, msg in capture.calls]
        messages.append(text)
    assert messages[1] == messages[0]
    assert any("Traceback" in msg for _, msg in capture.calls) is exc_info


def test_helpers_match_tenacity() -> None:
    for n in (0, 1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111, 112, 1000):
        assert compat._utils.to_ordinal(n) == real._utils.to_ordinal(n)
    for fn in (len, test_helpers_match_tenacity, functools.partial(len), lambda: 1):
        assert compat._utils.get_callback_name(fn) == real._utils.get_callback_name(fn)


def test_callstate_repr_matches_tenacity() -> None:
    reprs = []
    for lib in (real, compat):
        rs = _state(lib, 2, 0, lib.Future.construct(2, ValueError("aaa"), True))
        rs.idle_for = 1.1111111
        reprs.append(repr(rs).split(":", 1)[1])
    assert reprs[1] == reprs[0]


def test_retrying_pickles() -> None:
    retrying = compat.Retrying(stop=compat.stop_after_attempt(3),
                               retry=compat.retry_if_exception_type(ValueError))
    retrying.wraps(lambda: 1)  # decorated functions are not shipped along
    restored = pickle.loads(pickle.dumps(retrying))
    assert restored.statistics == {}
    assert restored(_flaky([ValueError(), "ok"])) == "ok"


def test_tornado_coroutines_are_retried() -> None:
    gen = pytest.importorskip("tornado.gen")
    ioloop = pytest.importorskip("tornado.ioloop")
    play = _flaky([OSError(), OSError(), "ok"])

    @compat.retry(sleep=lambda s: gen.sleep(0))
    @gen.coroutine
    def coroutine() -> Any:
        yield gen.sleep(0)
        return play()

    assert gen.is_coroutine_function(coroutine)
    assert ioloop.IOLoop.current().run_sync(coroutine) == "ok"
    assert coroutine.statistics["attempt_number"] == 3


# ---------------------------------------------------------------------------
# Bad input gets a clear error.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("make, error, words", [
    (lambda: compat.wait_fixed(math.nan), ValueError, "wait_fixed wait must not be NaN"),
    (lambda: compat.wait_fixed(None), TypeError, "wait_fixed wait must be a number"),
    (lambda: compat.wait_fixed("soon"), ValueError, "wait_fixed wait must be a number"),
    (lambda: compat.wait_random(min=math.nan), ValueError, "wait_random min"),
    (lambda: compat.wait_exponential(max=[1]), TypeError, "wait_exponential max"),
    (lambda: compat.wait_exponential(multiplier=math.nan), ValueError, "multiplier"),
    (lambda: compat.wait_exponential_jitter(jitter=object()), TypeError, "jitter"),
    (lambda: compat.wait_incrementing(increment=math.nan), ValueError, "increment"),
    (lambda: compat.stop_after_delay(math.nan), ValueError, "stop_after_delay max_delay"),
    (lambda: compat.stop_after_attempt("3"), TypeError, "stop_after_attempt"),
    (lambda: compat.stop_after_attempt(math.nan), ValueError, "stop_after_attempt"),
    (lambda: compat.stop_after_attempt(None), TypeError, "stop_after_attempt"),
    (lambda: compat.wait_chain(), ValueError, "at least one strategy"),
    (lambda: compat.retry_if_exception_message(), TypeError, "'message' or 'match'"),
])
def test_bad_strategy_arguments_name_the_field(make: Any, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        make()


def test_extreme_values_are_accepted_as_tenacity_does() -> None:
    assert compat.wait_fixed(math.inf)(_state(compat, 1, 0)) == math.inf
    assert compat.wait_exponential(max=1e308)(_state(compat, 10**6, 0)) == 1e308
    assert compat.stop_after_attempt(10**30)(_state(compat, 5, 0)) is False
    assert compat.stop_after_delay(-1)(_state(compat, 1, 0)) is True
    retrying = compat.Retrying(stop="stop_after_attempt")  # type: ignore[arg-type]
    assert retrying.stop == "stop_after_attempt"  # as tenacity: not checked until used


def test_retry_call_refuses_bad_construction() -> None:
    with pytest.raises(TypeError, match="callable"):
        _core.RetryCall(1, lambda *a: None)
    with pytest.raises(TypeError, match="template"):
        _core.RetryCall(len, lambda *a: None, template=(("a",),))
    call = _core.RetryCall(len, lambda *a: None)
    with pytest.raises(ValueError, match="mode"):
        call._configure(7, None, None)
    with pytest.raises(TypeError, match="retry_on"):
        call._configure(MODE_NATIVE, "OSError", None)
    with pytest.raises(TypeError, match="check"):
        call._configure(MODE_NATIVE, None, 3)
    stats = _core.RetryCall(len, lambda *a: None, stats_key="statistics")
    stats._configure(MODE_NATIVE, None, None)
    with pytest.raises(AttributeError, match="statistics"):
        stats("abc")  # no statistics dict: an error, never a crash


def test_the_native_call_leaks_nothing() -> None:
    """Every native path (success, statistics reset, an exception raised as
    is, a resumed exception, a rejected result) gives back what it took."""
    import gc
    import tracemalloc

    def resume(outcome: int, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
               started: float) -> Any:
        return (outcome, args, kwargs)

    local = threading.local()
    stats = _core.RetryCall(lambda x, **k: x, resume, clock=True, stats_key="statistics",
                            clock_key="start_time", template=(("attempt_number", 1),),
                            local=local)
    stats.statistics = {}
    stats._configure(MODE_NATIVE, None, None)
    def raise_(error: type[Exception]) -> Any:
        def fails(*args: Any, **kwargs: Any) -> None:
            raise error("x")  # a new one each time: a re-raised one grows its traceback
        return fails

    raising = _core.RetryCall(raise_(KeyError), resume)
    raising._configure(MODE_NATIVE, (OSError,), None)
    resumed = _core.RetryCall(raise_(OSError), resume, clock=True)
    resumed._configure(MODE_NATIVE, (OSError,), None)
    rejected = _core.RetryCall(lambda x: x, resume)
    rejected._configure(MODE_NATIVE, (), lambda value: value > 0)

    def run(n: int) -> None:
        for i in range(n):
            stats(i, key=i)
            with pytest.raises(KeyError):
                raising()
            resumed(i, k=1)
            rejected(i)
            rejected(-i)

    run(2000)  # warm up caches and free lists
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run(20000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes kept after 20000 rounds"
