"""compat.circuitbreaker against the real circuitbreaker, side by side, and on its own."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from virtrigaud_resilience import _core
from virtrigaud_resilience.compat import circuitbreaker as ours

real = pytest.importorskip("circuitbreaker")

BOTH = pytest.mark.parametrize("cb", [real, ours], ids=["circuitbreaker", "compat"])


class Boom(IOError):
    pass


@pytest.fixture(autouse=True)
def empty_monitors() -> Iterator[None]:
    for module in (real, ours):
        module.CircuitBreakerMonitor.circuit_breakers = {}
    yield


def make_functions(cb: Any, behaviour: list[str], **config: Any) -> dict[str, Any]:
    """The four kinds of function circuitbreaker guards, driven by ``behaviour[0]``."""

    def step() -> str:
        if behaviour[0] == "fail":
            raise Boom("down")
        if behaviour[0] == "other":
            raise KeyError("business")
        return "ok"

    @cb.circuit(**config)
    def plain() -> str:
        return step()

    @cb.circuit(**config)
    def generator() -> Iterator[str]:
        yield step()

    @cb.circuit(**config)
    async def coroutine() -> str:
        return step()

    @cb.circuit(**config)
    async def async_generator() -> AsyncIterator[str]:
        yield step()

    return {"plain": plain, "generator": generator, "coroutine": coroutine,
            "async_generator": async_generator}


async def invoke(kind: str, fn: Any) -> Any:
    if kind == "plain":
        return fn()
    if kind == "generator":
        return list(fn())
    if kind == "coroutine":
        return await fn()
    return [x async for x in fn()]


def observe(breaker: Any) -> tuple[Any, ...]:
    return (breaker.state, breaker.failure_count, breaker.opened, breaker.closed,
            breaker.open_remaining, repr(breaker.last_failure))


def normalised(message: str) -> str:
    return re.sub(r"OPEN until \S+ \S+", "OPEN until <time>", message)


async def run_script(cb: Any, kind: str, script: list[Any]) -> list[Any]:
    behaviour = ["ok"]
    functions = make_functions(cb, behaviour, failure_threshold=2, recovery_timeout=0.1,
                               expected_exception=(Boom,), name=f"{kind}-breaker")
    breaker = cb.CircuitBreakerMonitor.get(f"{kind}-breaker")
    seen = []
    for step in script:
        if isinstance(step, float):
            await asyncio.sleep(step)
            continue
        behaviour[0] = step
        try:
            result: Any = ("returned", await invoke(kind, functions[kind]))
        except Exception as exc:
            result = ("raised", type(exc).__name__, normalised(str(exc)))
        seen.append(result + observe(breaker))
    return seen


SCRIPT = ["ok", "fail", "other", "fail", "fail", "ok", "fail", 0.11, "fail", "ok", 0.11,
          "ok", "ok"]


@pytest.mark.parametrize("kind", ["plain", "generator", "coroutine", "async_generator"])
async def test_every_kind_of_function_behaves_as_in_circuitbreaker(kind: str) -> None:
    mine, theirs = await asyncio.gather(run_script(ours, kind, SCRIPT),
                                        run_script(real, kind, SCRIPT))
    assert mine == theirs


@BOTH
def test_a_decorated_plain_function_is_native_and_binds_as_a_method(cb: Any) -> None:
    breaker = cb.CircuitBreaker(name="svc")

    class Client:
        base = 1

        @breaker
        def add(self, x: int) -> int:
            "Adds."
            return self.base + x

    assert Client().add(2) == 3 and Client.add(Client(), 3) == 4
    assert (Client.add.__name__, Client.add.__doc__) == ("add", "Adds.")
    if cb is ours:
        assert isinstance(Client.__dict__["add"], _core.BreakerCall)


def test_the_native_bound_call_keeps_its_former_name_as_an_alias() -> None:
    # _core.Guarded was renamed BreakerCall ("guard" now means one thing);
    # code written against the old name keeps working for one minor release.
    assert _core.Guarded is _core.BreakerCall
    assert _core.BreakerCall.__name__ == "BreakerCall"
    bound = _core.Guarded(ours.CircuitBreaker(name="alias"), lambda x: x + 1)
    assert type(bound) is _core.BreakerCall and bound(1) == 2


@BOTH
def test_fallback_function_runs_with_the_call_arguments_while_open(cb: Any) -> None:
    seen: list[Any] = []

    def fallback(*args: Any, **kwargs: Any) -> str:
        seen.append((args, kwargs))
        return "fallback"

    @cb.circuit(failure_threshold=1, recovery_timeout=30, fallback_function=fallback)
    def call(x: int, y: int = 0) -> int:
        raise Boom("down")

    with pytest.raises(Boom):
        call(1)
    assert call(2, y=3) == "fallback" and seen == [((2,), {"y": 3})]


@BOTH
def test_subclass_attributes(cb: Any) -> None:
    class Nervous(cb.CircuitBreaker):  # type: ignore[misc]
        FAILURE_THRESHOLD = 1
        RECOVERY_TIMEOUT = 7
        EXPECTED_EXCEPTION = (Boom, KeyError)

    class Inherits(Nervous):  # EXPECTED_EXCEPTION is read from the class's own __dict__ only
        pass

    breaker = cb.circuit(cls=Nervous)
    assert (breaker._failure_threshold, breaker._recovery_timeout) == (1, 7)
    assert breaker.is_failure(KeyError, KeyError()) and not breaker.is_failure(ValueError, None)
    assert cb.circuit(cls=Inherits).is_failure(ValueError, ValueError())

    def is_four(thrown_type: type, value: Any) -> bool:
        return getattr(value, "args", ()) == (4,)

    class Predicate(cb.CircuitBreaker):  # type: ignore[misc]
        EXPECTED_EXCEPTION = is_four  # a function here is a predicate, not a method

    breaker = cb.circuit(cls=Predicate)
    assert breaker.is_failure(Boom, Boom(4)) and not breaker.is_failure(Boom, Boom(2))


@BOTH
def test_expected_exception_forms_and_mistakes(cb: Any) -> None:
    assert cb.circuit(expected_exception=Boom).is_failure(Boom, Boom())
    assert not cb.circuit(expected_exception=[Boom]).is_failure(KeyError, KeyError())
    with pytest.raises(ValueError, match="cannot be a string"):
        cb.circuit(10, 20, "Boom")
    with pytest.raises(ValueError, match="does not look like a predicate"):
        cb.circuit(10, 20, object())


@BOTH
def test_monitor(cb: Any) -> None:
    @cb.circuit(failure_threshold=1, name="a")
    def a() -> None:
        raise Boom()

    @cb.circuit(name="b")
    def b() -> None:
        pass

    assert cb.CircuitBreakerMonitor.all_closed()
    with pytest.raises(Boom):
        a()
    assert not cb.CircuitBreakerMonitor.all_closed()
    assert [x.name for x in cb.CircuitBreakerMonitor.get_open()] == ["a"]
    assert [x.name for x in cb.CircuitBreakerMonitor.get_closed()] == ["b"]
    assert cb.CircuitBreakerMonitor.get("b").name == "b"
    assert len(list(cb.CircuitBreakerMonitor.get_circuits())) == 2


@BOTH
def test_error_message_and_names(cb: Any) -> None:
    breaker = cb.CircuitBreaker(failure_threshold=1, recovery_timeout=30)

    @breaker
    def fetch() -> None:
        raise Boom("down")

    assert str(breaker) == "test_error_message_and_names.<locals>.fetch"
    with pytest.raises(Boom):
        fetch()
    with pytest.raises(cb.CircuitBreakerError) as info:
        fetch()
    message = str(info.value)
    assert message.startswith('Circuit "test_error_message_and_names.<locals>.fetch" OPEN until ')
    assert message.endswith("(1 failures, 30 sec remaining) (last_failure: Boom('down'))")
    assert str(cb.CircuitBreaker()) == "unnamed_CircuitBreaker"


def test_an_overridden_opened_is_honoured() -> None:
    class Never(ours.CircuitBreaker):
        @property
        def opened(self) -> bool:
            return False

    calls = []

    @Never(failure_threshold=1)
    def always() -> None:
        calls.append(1)
        raise Boom()

    for _ in range(3):
        with pytest.raises(Boom):
            always()  # runs while open: the subclass says it never is
    assert len(calls) == 3 and not isinstance(always, _core.BreakerCall)


@BOTH
def test_with_block_runs_even_while_open(cb: Any) -> None:
    breaker = cb.CircuitBreaker(failure_threshold=1, recovery_timeout=30)
    with pytest.raises(Boom), breaker:
        raise Boom()
    assert breaker.opened
    with breaker:  # runs (the context manager never refuses); a success closes it
        pass
    assert breaker.closed and breaker.failure_count == 0
    with pytest.raises(Boom), breaker:
        raise Boom()
    with pytest.raises(Boom), breaker:
        raise Boom()
    assert breaker.opened and breaker.failure_count == 2


async def test_cancellation_records_nothing() -> None:
    # circuitbreaker counts a CancelledError as a success (it is no Exception)
    # and closes; here a cancelled call has no outcome (docs/migrating.md).
    breaker = ours.CircuitBreaker(failure_threshold=1, recovery_timeout=0.05)

    @breaker
    async def slow(fail: bool) -> None:
        if fail:
            raise Boom()
        await asyncio.sleep(10)

    with pytest.raises(Boom):
        await slow(True)
    await asyncio.sleep(0.06)
    task = asyncio.create_task(slow(False))
    await asyncio.sleep(0.01)
    assert breaker.state == "half_open"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.failure_count == 1 and breaker.state == "half_open"


@pytest.mark.parametrize("field,value,error", [
    ("failure_threshold", -1, ValueError), ("failure_threshold", 2.5, TypeError),
    ("failure_threshold", "3", TypeError), ("failure_threshold", 2**40, ValueError),
    ("recovery_timeout", -1, ValueError), ("recovery_timeout", math.nan, ValueError),
    ("recovery_timeout", math.inf, ValueError), ("recovery_timeout", "30", TypeError),
])
def test_bad_configuration_is_refused_naming_the_field(field: str, value: Any,
                                                       error: type[Exception]) -> None:
    with pytest.raises(error, match=f"CircuitBreaker {field}"):
        ours.CircuitBreaker(**{field: value})


def test_open_remaining_counts_from_creation_then_from_the_last_opening() -> None:
    for cb in (real, ours):
        breaker = cb.CircuitBreaker(failure_threshold=1, recovery_timeout=2)
        assert breaker.open_remaining == 2 and breaker.state == "closed"
        time.sleep(0.01)
        breaker.reset()
        assert breaker.open_remaining == 2


def test_a_raising_predicate_propagates_and_frees_the_probe() -> None:
    broken = [False]

    def is_failure(thrown_type: type, value: BaseException) -> bool:
        if broken[0]:
            raise RuntimeError("predicate")
        return True

    breaker = ours.CircuitBreaker(failure_threshold=1, recovery_timeout=0.01,
                                  expected_exception=is_failure)

    @breaker
    def fails() -> None:
        raise Boom()

    with pytest.raises(Boom):
        fails()
    time.sleep(0.02)
    broken[0] = True
    with pytest.raises(RuntimeError, match="predicate"):
        fails()
    assert breaker.state == "half_open" and breaker.half_open_calls == 0


@ours.circuit(name="module-level")
def module_level(x: int) -> int:
    return x * 2


def test_a_decorated_module_function_pickles_by_name_as_a_function_does() -> None:
    import pickle

    assert pickle.loads(pickle.dumps(module_level)) is module_level
    assert module_level(21) == 42
