"""compat.pybreaker against the real pybreaker, side by side, and on its own.

Each scenario runs on both modules and compares what a user sees: results,
the exception's type and message, fail_counter / success_counter /
current_state after every step, and the listeners' event log.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from virtrigaud_resilience.compat import pybreaker as ours

real = pytest.importorskip("pybreaker")

BOTH = pytest.mark.parametrize("pb", [real, ours], ids=["pybreaker", "compat"])


class Boom(Exception):
    pass


class Business(LookupError):
    pass


def ok() -> str:
    return "ok"


def boom() -> None:
    raise Boom("boom")


def business() -> None:
    raise Business("no such thing")


class Recorder:
    """A listener (built on each module's own base class) that logs events."""

    @staticmethod
    def make(pb: Any, log: list[str]) -> Any:
        class _Recorder(pb.CircuitBreakerListener):  # type: ignore[name-defined,misc]
            def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
                log.append(f"before:{func.__name__}")

            def failure(self, cb: Any, exc: BaseException) -> None:
                log.append(f"failure:{type(exc).__name__}")

            def success(self, cb: Any) -> None:
                log.append("success")

            def state_change(self, cb: Any, old: Any, new: Any) -> None:
                log.append(f"state:{old.name if old else None}->{new.name}")

        return _Recorder()


def outcome(breaker: Any, fn: Callable[[], Any]) -> tuple[Any, ...]:
    """What a user sees of one call, and the breaker after it."""
    try:
        result: Any = ("returned", fn())
    except Exception as exc:
        result = ("raised", type(exc).__name__, str(exc))
    return result + (breaker.fail_counter, breaker.success_counter, breaker.current_state)


def run_script(pb: Any, steps: list[Any], **config: Any) -> list[Any]:
    log: list[str] = []
    breaker = pb.CircuitBreaker(listeners=[Recorder.make(pb, log)], **config)
    seen: list[Any] = []
    for step in steps:
        if isinstance(step, float):
            time.sleep(step)
            continue
        if isinstance(step, str):  # a manual transition
            getattr(breaker, step)()
            seen.append((step, breaker.fail_counter, breaker.success_counter,
                         breaker.current_state))
            continue
        seen.append(outcome(breaker, lambda: breaker.call(step)))
    return [seen, log]


SCRIPTS = {
    "trip, wait, trial fails, wait, trial succeeds": (
        [ok, boom, boom, boom, ok, 0.06, boom, ok, 0.06, ok, ok, boom],
        dict(fail_max=3, reset_timeout=0.05)),
    "success threshold 3, a failure in between": (
        [boom, boom, 0.06, ok, ok, boom, ok, 0.06, ok, ok, ok, ok],
        dict(fail_max=2, reset_timeout=0.05, success_threshold=3)),
    "excluded types and predicates count as successes": (
        [boom, business, boom, boom, business, ok],
        dict(fail_max=3, exclude=[Business, lambda e: "nothing" in str(e)])),
    "no new error on trip": (
        [boom, boom, ok, 0.06, boom, 0.06, ok],
        dict(fail_max=2, reset_timeout=0.05, throw_new_error_on_trip=False)),
    "manual transitions (each announced, same state too)": (
        ["open", ok, "half_open", boom, "close", "close", boom, "half_open", ok, "open", "open"],
        dict(fail_max=5, reset_timeout=30)),
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_scripts_match_pybreaker(name: str) -> None:
    steps, config = SCRIPTS[name]
    assert run_script(ours, steps, **config) == run_script(real, steps, **config)


def test_listener_order_failure_before_state_change_and_state_change_before_success() -> None:
    steps: list[Any] = [boom, 0.06, ok]
    _, log = run_script(ours, steps, fail_max=1, reset_timeout=0.05)
    assert log == ["before:boom", "failure:Boom", "state:closed->open",
                   "state:open->half-open", "before:ok", "state:half-open->closed", "success"]


@BOTH
def test_a_raising_listener_propagates_to_the_caller(pb: Any) -> None:
    class Veto(pb.CircuitBreakerListener):  # type: ignore[misc]
        def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            raise PermissionError("vetoed")

    calls: list[int] = []
    breaker = pb.CircuitBreaker(fail_max=1, listeners=[Veto()])
    with pytest.raises(PermissionError, match="vetoed"):
        breaker.call(lambda: calls.append(1))
    assert calls == [] and breaker.fail_counter == 0 and breaker.current_state == "closed"

    class LoudSuccess(pb.CircuitBreakerListener):  # type: ignore[misc]
        def success(self, cb: Any) -> None:
            raise RuntimeError("listener")

    breaker = pb.CircuitBreaker(fail_max=1, listeners=[LoudSuccess()])
    breaker.half_open()
    with pytest.raises(RuntimeError, match="listener"):
        breaker.call(ok)
    assert breaker.current_state == "closed"  # recorded before the listener ran


def test_a_raising_failure_listener_does_not_stop_the_trip() -> None:
    # pybreaker skips its threshold check when a failure listener raises; the
    # native breaker has already counted and tripped (docs/migrating.md).
    class Loud(ours.CircuitBreakerListener):
        def failure(self, cb: Any, exc: BaseException) -> None:
            raise RuntimeError("listener")

    breaker = ours.CircuitBreaker(fail_max=1, listeners=[Loud()])
    with pytest.raises(RuntimeError, match="listener") as info:
        breaker.call(boom)
    assert isinstance(info.value.__context__, Boom)
    assert breaker.current_state == "open" and breaker.fail_counter == 1


def test_trip_error_carries_the_original_traceback() -> None:
    breaker = ours.CircuitBreaker(fail_max=1)
    with pytest.raises(ours.CircuitBreakerError) as info:
        breaker.call(boom)
    assert isinstance(info.value.__context__, Boom)
    assert "boom" in "".join(traceback.format_tb(info.value.__traceback__))


@BOTH
def test_generators_decorators_methods_and_calling(pb: Any) -> None:
    breaker = pb.CircuitBreaker(fail_max=3)

    @breaker
    def numbers(n: int) -> Iterator[int]:
        "Docstring"
        yield from range(n)

    @breaker
    def broken() -> Iterator[int]:
        yield 1
        raise Boom("late")

    assert (numbers.__name__, numbers.__doc__) == ("numbers", "Docstring")
    assert list(numbers(3)) == [0, 1, 2] and breaker.fail_counter == 0
    generator = broken()
    assert next(generator) == 1 and breaker.fail_counter == 0  # nothing recorded yet
    with pytest.raises(Boom):
        next(generator)
    assert breaker.fail_counter == 1

    class Client:
        def __init__(self) -> None:
            self.base = 10

        @breaker
        def add(self, x: int) -> int:
            return self.base + x

    assert Client().add(5) == 15 and breaker.fail_counter == 0
    with pytest.raises(Boom), breaker.calling():
        raise Boom("in the block")
    assert breaker.fail_counter == 1
    with breaker.calling():
        pass
    assert breaker.fail_counter == 0


def test_an_async_function_through_call_is_a_value_as_in_pybreaker() -> None:
    async def fails() -> None:
        raise Boom("async")

    for pb in (real, ours):
        breaker = pb.CircuitBreaker(fail_max=1)
        coroutine = breaker.call(fails)
        assert asyncio.iscoroutine(coroutine) and breaker.fail_counter == 0
        with pytest.raises(Boom):
            asyncio.run(coroutine)
        assert breaker.current_state == "closed"  # pybreaker never saw the failure


def test_acall_and_call_async_record_real_outcomes() -> None:
    breaker = ours.CircuitBreaker(fail_max=2, reset_timeout=0.05)

    async def fails() -> None:
        raise Boom("async")

    async def fine(x: int) -> int:
        return x

    async def scenario() -> None:
        assert await breaker.acall(fine, 1) == 1
        with pytest.raises(Boom):
            await breaker.acall(fails)
        with pytest.raises(ours.CircuitBreakerError, match="Failures threshold reached"):
            await breaker.call_async(fails)
        with pytest.raises(ours.CircuitBreakerError, match="Timeout not elapsed"):
            await breaker.acall(fine, 2)
        await asyncio.sleep(0.06)
        assert await breaker.call_async(fine, 3) == 3
        assert breaker.current_state == "closed"

    asyncio.run(scenario())


def test_a_cancelled_trial_gives_its_slot_back() -> None:
    breaker = ours.CircuitBreaker(fail_max=1, reset_timeout=0.01)
    with pytest.raises(ours.CircuitBreakerError):
        breaker.call(boom)
    time.sleep(0.02)

    async def scenario() -> None:
        started = asyncio.Event()

        async def hangs() -> None:
            started.set()
            await asyncio.sleep(10)

        task = asyncio.create_task(breaker.acall(hangs))
        await started.wait()
        assert breaker.current_state == "half-open"
        with pytest.raises(ours.CircuitBreakerError, match="Trial call in progress"):
            await breaker.acall(hangs)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await breaker.acall(asyncio.sleep, 0, "next") == "next"  # the slot is free

    asyncio.run(scenario())
    assert breaker.current_state == "closed" and breaker.fail_counter == 0


def test_a_trial_generator_dropped_unstarted_frees_the_slot() -> None:
    breaker = ours.CircuitBreaker(fail_max=1, reset_timeout=0.01)
    with pytest.raises(ours.CircuitBreakerError):
        breaker.call(boom)
    time.sleep(0.02)
    generator = breaker.call(lambda: (yield 1))
    with pytest.raises(ours.CircuitBreakerError, match="Trial call in progress"):
        breaker.call(ok)
    del generator
    assert breaker.call(ok) == "ok" and breaker.current_state == "closed"


def test_listener_callbacks_of_one_breaker_never_overlap() -> None:
    inside = 0
    overlaps = 0

    class Slow(ours.CircuitBreakerListener):
        def success(self, cb: Any) -> None:
            nonlocal inside, overlaps
            inside += 1
            overlaps += inside > 1
            time.sleep(0.0001)
            inside -= 1

    breaker = ours.CircuitBreaker(listeners=[Slow()])
    threads = [threading.Thread(target=lambda: [breaker.call(ok) for _ in range(100)])
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == 0


def test_configuration_setters_take_effect() -> None:
    breaker = ours.CircuitBreaker(fail_max=5, reset_timeout=60)
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(boom)
    breaker.fail_max = 3
    with pytest.raises(ours.CircuitBreakerError):
        breaker.call(boom)
    breaker.reset_timeout = 0.01
    time.sleep(0.02)
    breaker.success_threshold = 2
    breaker.call(ok)
    assert breaker.current_state == "half-open" and breaker.success_counter == 1
    breaker.call(ok)
    assert breaker.current_state == "closed"
    assert (breaker.fail_max, breaker.reset_timeout, breaker.success_threshold) == (3, 0.01, 2)


@BOTH
def test_exclusions_listeners_and_names_are_managed_as_in_pybreaker(pb: Any) -> None:
    breaker = pb.CircuitBreaker(name="db")
    breaker.add_excluded_exceptions(KeyError, ValueError)
    breaker.remove_excluded_exception(KeyError)
    assert breaker.excluded_exceptions == (ValueError,)
    assert breaker.is_system_error(KeyError()) and not breaker.is_system_error(ValueError())
    first, second = pb.CircuitBreakerListener(), pb.CircuitBreakerListener()
    breaker.add_listeners(first, second)
    breaker.remove_listener(first)
    assert breaker.listeners == (second,)
    breaker.name = "cache"
    assert breaker.name == "cache"
    with pytest.raises(ValueError):
        breaker.remove_listener(first)
    with pytest.raises(ValueError, match="Unknown state 'foo'"):
        breaker._create_new_state("foo")


@BOTH
def test_initial_state_and_counters_come_from_the_storage(pb: Any) -> None:
    for state in (pb.STATE_OPEN, pb.STATE_CLOSED, pb.STATE_HALF_OPEN):
        storage = pb.CircuitMemoryStorage(state)
        storage.increment_counter()
        breaker = pb.CircuitBreaker(state_storage=storage, reset_timeout=30)
        assert (breaker.state.name, breaker.fail_counter) == (state, 1)
    # An open storage that never recorded its opening lets the next call through.
    breaker = pb.CircuitBreaker(state_storage=pb.CircuitMemoryStorage(pb.STATE_OPEN))
    assert breaker.call(ok) == "ok" and breaker.current_state == "closed"


def test_a_memory_storage_is_a_view_of_the_native_state() -> None:
    storage = ours.CircuitMemoryStorage(ours.STATE_CLOSED)
    breaker = ours.CircuitBreaker(fail_max=2, state_storage=storage)
    with pytest.raises(Boom):
        breaker.call(boom)
    assert storage.counter == 1 and storage.state == "closed" and storage.opened_at is None
    with pytest.raises(ours.CircuitBreakerError):
        breaker.call(boom)
    assert storage.state == "open" and storage.opened_at is not None
    assert abs((storage.opened_at - storage.opened_at.now(storage.opened_at.tzinfo))
               .total_seconds()) < 1
    storage.state = "closed"
    assert breaker.current_state == "closed"


@pytest.mark.parametrize("field,value,error", [
    ("fail_max", 0, ValueError), ("fail_max", -1, ValueError), ("fail_max", 2.5, TypeError),
    ("fail_max", True, TypeError), ("fail_max", "5", TypeError), ("fail_max", 2**40, ValueError),
    ("reset_timeout", -1, ValueError), ("reset_timeout", math.nan, ValueError),
    ("reset_timeout", math.inf, ValueError), ("reset_timeout", "60", TypeError),
    ("reset_timeout", 1e12, ValueError), ("success_threshold", 0, ValueError),
    ("success_threshold", None, TypeError), ("success_threshold", 2**30, ValueError),
])
def test_bad_configuration_is_refused_naming_the_field(field: str, value: Any,
                                                       error: type[Exception]) -> None:
    with pytest.raises(error, match=f"CircuitBreaker {field}"):
        ours.CircuitBreaker(**{field: value})
    breaker = ours.CircuitBreaker()
    with pytest.raises(error, match=f"CircuitBreaker {field}"):
        setattr(breaker, field, value)


# -- Redis -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port (retried if the port is
    taken meanwhile), stopped afterwards."""
    pytest.importorskip("redis")
    from virtrigaud_resilience.distributed.testing import RedisServer, redis_server_path

    if redis_server_path() is None:
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail("REQUIRE_REDIS=1 but no redis-server")
        pytest.skip("no redis-server")
    with RedisServer() as server:
        yield server.url


pytestmark_redis = pytest.mark.redis


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=0.2)


@pytest.mark.redis
def test_redis_keys_and_values_match_pybreaker(redis_url: str) -> None:
    client = _client(redis_url)
    steps: list[Any] = [ok, boom, boom, boom, 0.06, ok]
    snapshots = {}
    for pb, namespace in ((real, "real"), (ours, "ours")):
        storage = pb.CircuitRedisStorage(pb.STATE_CLOSED, client, namespace=namespace)
        breaker = pb.CircuitBreaker(fail_max=3, reset_timeout=0.05, success_threshold=2,
                                    state_storage=storage)
        seen = []
        for step in steps:
            if isinstance(step, float):
                time.sleep(step)
            else:
                seen.append(outcome(breaker, lambda: breaker.call(step)))
        keys = {key.decode().split(":", 1)[1]: client.get(key)
                for key in client.keys(f"{namespace}:*")}
        keys.pop("pybreaker:opened_at")  # a Unix time: checked below
        snapshots[namespace] = (seen, keys)
    assert snapshots["ours"] == snapshots["real"]
    assert abs(int(client.get("ours:pybreaker:opened_at")) - time.time()) < 5


@pytest.mark.redis
def test_redis_state_is_shared_with_real_pybreaker_processes(redis_url: str) -> None:
    client = _client(redis_url)
    theirs = real.CircuitBreaker(fail_max=2, reset_timeout=60, state_storage=real.CircuitRedisStorage(
        real.STATE_CLOSED, client, namespace="shared"))
    mine = ours.CircuitBreaker(fail_max=2, reset_timeout=60, state_storage=ours.CircuitRedisStorage(
        ours.STATE_CLOSED, client, namespace="shared"))
    with pytest.raises(Boom):
        theirs.call(boom)
    assert mine.fail_counter == 1  # their failure, our counter
    with pytest.raises(ours.CircuitBreakerError, match="Failures threshold reached"):
        mine.call(boom)  # the second failure trips it, whoever sees it
    with pytest.raises(real.CircuitBreakerError, match="Timeout not elapsed"):
        theirs.call(ok)
    theirs.close()
    assert mine.call(ok) == "ok" and mine.current_state == "closed"


@pytest.mark.redis
def test_redis_down_falls_back_and_keeps_calling(redis_url: str, caplog: Any) -> None:
    storage = ours.CircuitRedisStorage(ours.STATE_CLOSED, _client(redis_url),
                                       fallback_circuit_state="closed")
    breaker = ours.CircuitBreaker(fail_max=2, state_storage=storage)
    with pytest.raises(Boom):
        breaker.call(boom)
    dead = _client(f"redis://127.0.0.1:{_free_port()}/0")  # nothing listens there
    storage._redis = dead
    caplog.set_level(logging.ERROR, logger="pybreaker")
    for _ in range(3):  # the counter reads 0 while Redis is down: it never trips
        with pytest.raises(Boom):
            breaker.call(boom)
    assert breaker.call(ok) == "ok"
    assert breaker.current_state == "closed" and breaker.fail_counter == 0
    assert any("RedisError" in record.getMessage() for record in caplog.records)
    # A fallback of "open" with Redis down: the state reads open, and as its
    # opening time is unknown the next call is a trial (pybreaker recursed here).
    opened = ours.CircuitBreaker(state_storage=ours.CircuitRedisStorage(
        ours.STATE_CLOSED, _client(redis_url), fallback_circuit_state="open"))
    opened._state_storage._redis = dead
    assert opened.state.name == "open"
    assert opened.call(ok) == "ok"


@pytest.mark.redis
def test_redis_missing_state_is_recreated_from_the_fallback(redis_url: str) -> None:
    client = _client(redis_url)
    breaker = ours.CircuitBreaker(state_storage=ours.CircuitRedisStorage(
        ours.STATE_CLOSED, client, namespace="gone", fallback_circuit_state="open"))
    with pytest.raises(Boom):
        breaker.call(boom)
    client.delete("gone:pybreaker:state", "gone:pybreaker:fail_counter")
    assert breaker.state.name == "open" and breaker.fail_counter == 0
    assert client.get("gone:pybreaker:state") == b"open"


def test_a_raising_exclusion_predicate_propagates_and_frees_the_trial() -> None:
    def broken(exc: BaseException) -> bool:
        raise RuntimeError("predicate")

    breaker = ours.CircuitBreaker(exclude=[broken])
    breaker.half_open()
    with pytest.raises(RuntimeError, match="predicate"):
        breaker.call(boom)
    assert breaker.current_state == "half-open"
    breaker.remove_excluded_exception(broken)
    assert breaker.call(ok) == "ok" and breaker.current_state == "closed"  # the slot was free


def test_a_subclass_call_is_used_by_the_decorator() -> None:
    seen: list[str] = []

    class Logged(ours.CircuitBreaker):
        def call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(func.__name__)
            return super().call(func, *args, **kwargs)

    breaker = Logged()

    @breaker
    def work() -> int:
        return 7

    assert work() == 7 and seen == ["work"]


def test_a_finished_trial_generator_collected_later_frees_nothing_more() -> None:
    import gc

    breaker = ours.CircuitBreaker(fail_max=1, reset_timeout=0.01, success_threshold=2)
    with pytest.raises(ours.CircuitBreakerError):
        breaker.call(boom)
    time.sleep(0.02)
    first = breaker.call(lambda: (yield 1))
    assert list(first) == [1] and breaker.success_counter == 1  # its slot is back
    second = breaker.call(lambda: (yield 2))
    assert next(second) == 2  # the trial in progress holds the one slot
    del first
    gc.collect()
    with pytest.raises(ours.CircuitBreakerError, match="Trial call in progress"):
        breaker.call(ok)
    assert list(second) == [] and breaker.current_state == "closed"
