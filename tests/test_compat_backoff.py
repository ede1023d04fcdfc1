"""compat.backoff: backoff's behaviour, side by side with the real backoff,
and the native first try.

The scenario tests run one configuration under the real backoff and under
the drop-in (the same random seed for the jitter) and compare everything
observable: each handler call with its details dict (``elapsed`` aside),
each sleep, each log record, and the final value or exception. The peer is
only imported here, never by the drop-in.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import random
import threading
import time
from typing import Any

import pytest

from virtrigaud_resilience import _core
from virtrigaud_resilience.compat import backoff as compat

real = pytest.importorskip("backoff")


def _flaky(script: list[Any]) -> Any:
    calls = iter(list(script))

    def flaky(*args: Any, **kwargs: Any) -> Any:
        step = next(calls)
        if isinstance(step, BaseException):
            raise step
        return step
    return flaky


class Recorder:
    """Handlers that log their details (without the timing) and the sleeps."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def handler(self, name: str) -> Any:
        def record(details: dict[str, Any]) -> None:
            shown = {key: value for key, value in details.items() if key != "elapsed"}
            if "exception" in shown:
                error = shown["exception"]
                shown["exception"] = (type(error).__name__, str(error))
            shown["target"] = shown["target"].__name__
            assert isinstance(details["elapsed"], float)
            self.events.append((name, sorted(shown.items())))
        return record

    def handlers(self) -> dict[str, Any]:
        return {"on_success": self.handler("success"), "on_backoff": self.handler("backoff"),
                "on_giveup": self.handler("giveup")}


def _outcome(call: Any) -> tuple[Any, ...]:
    try:
        return ("return", call())
    except Exception as exc:  # noqa: BLE001 (the outcome is what is compared)
        return ("raise", type(exc).__name__, str(exc))


SCENARIOS: dict[str, tuple[str, list[Any], dict[str, Any]]] = {
    "success": ("exception", [7], {"max_tries": 3}),
    "errors-then-success": ("exception", [OSError("a"), OSError("b"), 9], {"max_tries": 5}),
    "gives-up": ("exception", [OSError("1"), OSError("2"), OSError("3")], {"max_tries": 3}),
    "no-raise-on-giveup": ("exception", [OSError("1"), OSError("2")],
                           {"max_tries": 2, "raise_on_giveup": False}),
    "giveup-predicate": ("exception", [OSError("go"), OSError("stop"), 1],
                         {"giveup": lambda e: str(e) == "stop"}),
    "other-exception": ("exception", [KeyError("not ours")], {"max_tries": 3}),
    "interval-exhausted": ("exception", [OSError("x")] * 4,
                           {"wait": "constant", "interval": (1, 2, 3)}),
    "fibo-jitter-none": ("exception", [OSError("x")] * 3 + ["ok"],
                         {"wait": "fibo", "jitter": None}),
    "random-jitter": ("exception", [OSError("x")] * 2 + ["ok"], {"jitter": "random"}),
    "runtime": ("exception", [OSError("2"), OSError("5"), "ok"],
                {"wait": "runtime", "value": lambda e: float(str(e)), "jitter": None}),
    "predicate-success": ("predicate", [0, None, 5], {}),
    "predicate-first": ("predicate", [5], {"max_tries": 2}),
    "predicate-gives-up": ("predicate", [0, 0, 0], {"max_tries": 3}),
    "predicate-custom": ("predicate", [1, 2, 3], {"predicate": lambda v: v < 3}),
    "predicate-exhausted": ("predicate", [0, 0, 0],
                            {"wait": "constant", "interval": [1, 2], "jitter": None}),
    "callable-max-tries": ("exception", [OSError()] * 2, {"max_tries": lambda: 2}),
    "logger-none": ("exception", [OSError()] * 2, {"max_tries": 2, "logger": None}),
    "logger-levels": ("exception", [OSError("x")] * 2,
                      {"max_tries": 2, "backoff_log_level": logging.WARNING,
                       "giveup_log_level": logging.CRITICAL}),
}


def _decorator(lib: Any, kind: str, recorder: Recorder, options: dict[str, Any]) -> Any:
    options = dict(options)
    wait = getattr(lib, options.pop("wait", "expo"))
    jitter = options.pop("jitter", "full")
    if jitter == "full":
        options["jitter"] = lib.full_jitter
    elif jitter == "random":
        options["jitter"] = lib.random_jitter
    else:
        options["jitter"] = None
    options.update(recorder.handlers())
    if kind == "exception":
        return lib.on_exception(wait, OSError, **options)
    return lib.on_predicate(wait, **options)


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Records the test's sleeps instead of sleeping. Only the test's own
    thread: a background thread of another fixture (a Redis cluster being
    started, say) sleeps for real and is not recorded."""
    slept: list[float] = []
    test_thread = threading.current_thread()
    real_sleep, real_async_sleep = time.sleep, asyncio.sleep

    def sleep(seconds: float) -> None:
        if threading.current_thread() is test_thread:
            slept.append(seconds)
        else:
            real_sleep(seconds)

    async def async_sleep(seconds: float) -> None:
        if threading.current_thread() is test_thread:
            slept.append(seconds)
        else:
            await real_async_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(asyncio, "sleep", async_sleep)
    return slept


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_sync_matches_backoff(name: str, no_sleep: list[float],
                              caplog: pytest.LogCaptureFixture) -> None:
    kind, script, options = SCENARIOS[name]
    results = []
    for lib in (real, compat):
        recorder = Recorder()
        decorated = _decorator(lib, kind, recorder, options)(_flaky(script))
        random.seed(7)
        no_sleep.clear()
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            outcome = _outcome(lambda: decorated(1, key="v"))
        logs = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
        results.append((outcome, recorder.events, list(no_sleep), logs))
    assert results[1] == results[0]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_async_matches_backoff(name: str, no_sleep: list[float],
                               caplog: pytest.LogCaptureFixture) -> None:
    kind, script, options = SCENARIOS[name]
    results = []
    for lib in (real, compat):
        recorder = Recorder()
        play = _flaky(script)

        async def target(*args: Any, **kwargs: Any) -> Any:
            return play(*args, **kwargs)

        decorated = _decorator(lib, kind, recorder, options)(target)
        assert asyncio.iscoroutinefunction(decorated)
        random.seed(7)
        no_sleep.clear()
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            outcome = _outcome(lambda: asyncio.run(decorated(1, key="v")))
        logs = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
        results.append((outcome, recorder.events, list(no_sleep), logs))
    assert results[1] == results[0]


@pytest.mark.parametrize("make", [
    lambda l: l.expo(), lambda l: l.expo(base=3, factor=0.5, max_value=20),
    lambda l: l.fibo(), lambda l: l.fibo(max_value=8),
    lambda l: l.constant(), lambda l: l.constant(interval=[1, 2]),
    lambda l: l.constant(interval=2.5),
])
def test_wait_generators_match_backoff(make: Any) -> None:
    sequences = []
    for lib in (real, compat):
        generator = make(lib)
        generator.send(None)
        sequences.append([value for _, value in zip(range(12), generator)])
    assert sequences[1] == sequences[0]


def test_decay_is_exponential_decay() -> None:
    generator = compat.decay(initial_value=100, decay_factor=3, min_value=5)
    generator.send(None)
    assert [next(generator) for _ in range(4)] == [100, 5, 5, 5]  # 100 e**-3 < 5
    generator = compat.decay(initial_value=10, decay_factor=0.5)
    generator.send(None)
    assert [next(generator) for _ in range(3)] == [10, 10 * math.e ** -0.5, 10 * math.e ** -1]


def test_runtime_waits_what_the_sent_value_says() -> None:
    generator = compat.runtime(value=lambda retry_after: retry_after * 2)
    generator.send(None)
    assert [generator.send(v) for v in (1, 5, 0.5)] == [2, 10, 1.0]


def test_jitters_stay_in_their_ranges() -> None:
    random.seed(1)
    assert all(0 <= compat.full_jitter(4) <= 4 for _ in range(1000))
    assert all(4 <= compat.random_jitter(4) < 5 for _ in range(1000))


# ---------------------------------------------------------------------------
# The native first try.
# ---------------------------------------------------------------------------

def test_default_configuration_runs_the_first_try_natively() -> None:
    @compat.on_exception(compat.expo, Exception, max_tries=3)
    def add(a: int, b: int = 2) -> int:
        return a + b

    assert isinstance(add, _core.RetryCall) and add._mode == 1
    assert add(1) == 3 and add(1, b=4) == 5
    assert add.__name__ == "add" and add.__wrapped__(1) == 3


def _own_wait_gen() -> Any:
    yield
    while True:
        yield 0


@pytest.mark.parametrize("options, mode", [
    ({}, 1),
    ({"max_tries": 3, "jitter": None, "on_backoff": print, "on_giveup": print}, 1),
    ({"on_success": print}, 0),
    ({"max_time": 10}, 0),
    ({"max_tries": lambda: 3}, 0),
    ({"wait_gen": "own"}, 0),
    ({"wait_gen": "constant", "interval": lambda: 2}, 0),
    ({"wait_gen": "constant", "interval": 2}, 1),
])
def test_which_configurations_are_native(options: dict[str, Any], mode: int) -> None:
    options = dict(options)
    wait_gen = options.pop("wait_gen", compat.expo)
    if wait_gen == "own":
        wait_gen = _own_wait_gen
    elif isinstance(wait_gen, str):
        wait_gen = getattr(compat, wait_gen)
    decorated = compat.on_exception(wait_gen, OSError, **options)(lambda: 1)
    assert decorated._mode == mode
    assert decorated() == 1


def test_a_foreign_exception_is_raised_natively(no_sleep: list[float]) -> None:
    backoffs: list[Any] = []
    calls: list[int] = []

    @compat.on_exception(compat.expo, OSError, on_backoff=backoffs.append)
    def fails() -> None:
        calls.append(1)
        raise KeyError("not ours")

    with pytest.raises(KeyError) as caught:
        fails()
    assert calls == [1] and backoffs == [] and no_sleep == []
    tb = caught.value.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    assert tb is not None and tb.tb_frame.f_code.co_name == "fails"


def test_predicate_runs_natively_and_checks_the_result(no_sleep: list[float]) -> None:
    seen: list[Any] = []

    def wanted(value: Any) -> bool:
        seen.append(value)
        return value < 2

    decorated = compat.on_predicate(compat.constant, wanted, interval=0, jitter=None)(
        _flaky([0, 1, 2]))
    assert decorated._mode == 1
    assert decorated() == 2
    assert seen == [0, 1, 2]  # each result seen once, the first one natively

    falsy = compat.on_predicate(compat.constant, interval=0, jitter=None, max_tries=2)(
        lambda: 0)
    assert falsy() == 0


def test_exceptions_propagate_from_on_predicate(no_sleep: list[float]) -> None:
    decorated = compat.on_predicate(compat.expo)(_flaky([ValueError("boom")]))
    with pytest.raises(ValueError, match="boom"):
        decorated()
    assert no_sleep == []


def test_elapsed_after_a_native_first_try_counts_that_try(no_sleep: list[float]) -> None:
    """The native first try reads the clock before it runs: the elapsed time
    handlers see later includes that try, as backoff's (which reads it first)."""
    details: list[dict[str, Any]] = []

    def slow_first_try() -> str:
        if not details:
            began = time.monotonic()
            while time.monotonic() - began < 0.05:  # a 50 ms first try
                pass
            raise OSError("slow")
        if len(details) == 1:
            raise OSError("again")
        return "ok"

    decorated = compat.on_exception(compat.constant, OSError, interval=0, jitter=None,
                                    on_backoff=details.append)(slow_first_try)
    assert decorated._mode == 1
    assert decorated() == "ok"
    # As backoff's, each try's details carry the time elapsed before it began:
    # about 0 for the first; for the second, at least the first try's 50 ms
    # (a clock read after the first try, as a bug would, would give about 0).
    assert [d["tries"] for d in details] == [1, 2]
    assert details[0]["elapsed"] < 0.05 and details[1]["elapsed"] >= 0.05


def _slow_first_try(first: list[float]) -> str:
    """Raises OSError, the first call after 50 ms of its own (busy: no sleep)."""
    if not first:
        first.append(time.monotonic())
        while time.monotonic() - first[0] < 0.05:
            pass
    raise OSError("slow")


def test_second_try_elapsed_includes_the_native_first_try(no_sleep: list[float]) -> None:
    # The 50 ms run from the first try's own start, which is after the
    # decorator's (a start taken before the call made the bound race it).
    first: list[float] = []
    giveups: list[dict[str, Any]] = []
    decorated = compat.on_exception(compat.constant, OSError, interval=0, jitter=None,
                                    max_tries=2, on_giveup=giveups.append)(
        lambda: _slow_first_try(first))
    assert decorated._mode == 1
    with pytest.raises(OSError):
        decorated()
    assert giveups[0]["tries"] == 2
    assert giveups[0]["elapsed"] >= 0.05  # the first try's 50 ms are counted


def test_max_time_reads_the_clock_as_backoff(monkeypatch: pytest.MonkeyPatch,
                                             no_sleep: list[float]) -> None:
    nows = [datetime.datetime(2018, 1, 1, 12, 0, 10, 5), datetime.datetime(2018, 1, 1, 12, 0, 9),
            datetime.datetime(2018, 1, 1, 12, 0, 1), datetime.datetime(2018, 1, 1, 12, 0, 0)]

    class Datetime:
        @staticmethod
        def now() -> datetime.datetime:
            return nows.pop()

    monkeypatch.setattr(datetime, "datetime", Datetime)
    giveups: list[dict[str, Any]] = []
    decorated = compat.on_predicate(compat.expo, jitter=None, max_time=10,
                                    on_giveup=giveups.append)(lambda: False)
    assert decorated() is False
    assert giveups[0]["tries"] == 3 and giveups[0]["elapsed"] == 10.000005
    assert no_sleep == [1, 1.0]  # the second capped by the time left: min(2, 10 - 9)


def test_log_format_is_backoffs(no_sleep: list[float], caplog: pytest.LogCaptureFixture) -> None:
    @compat.on_exception(compat.constant, ValueError, interval=0.25, jitter=None, max_tries=2)
    def broken() -> None:
        raise ValueError("bad input")

    with caplog.at_level(logging.INFO), pytest.raises(ValueError):
        broken()
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("backoff", logging.INFO, "Backing off broken(...) for 0.2s (ValueError: bad input)"),
        ("backoff", logging.ERROR, "Giving up broken(...) after 2 tries (ValueError: bad input)"),
    ]


def test_nullary_jitter_is_deprecated_but_works(no_sleep: list[float]) -> None:
    decorated = compat.on_exception(compat.constant, OSError, interval=1,
                                    jitter=lambda: 0.5)(_flaky([OSError(), 1]))
    with pytest.deprecated_call():
        assert decorated() == 1
    assert no_sleep == [1.5]


# ---------------------------------------------------------------------------
# asyncio
# ---------------------------------------------------------------------------

async def test_async_handlers_may_be_coroutines(no_sleep: list[float]) -> None:
    seen: list[int] = []

    async def on_backoff(details: dict[str, Any]) -> None:
        seen.append(details["tries"])

    async def giveup(error: Exception) -> bool:
        return str(error) == "stop"

    play = _flaky([OSError("go"), OSError("go"), OSError("stop")])

    @compat.on_exception(compat.constant, OSError, interval=0, on_backoff=on_backoff,
                         giveup=giveup)
    async def target() -> None:
        play()

    with pytest.raises(OSError, match="stop"):
        await target()
    assert seen == [1, 2]


async def test_async_cancellation_mid_sleep_stops_the_retries() -> None:
    attempts: list[int] = []
    backoffs = asyncio.Event()

    @compat.on_exception(compat.constant, OSError, interval=30, jitter=None,
                         on_backoff=lambda details: backoffs.set())
    async def flaky() -> None:
        attempts.append(1)
        raise OSError("down")

    task = asyncio.ensure_future(flaky())
    await asyncio.wait_for(backoffs.wait(), 5)
    await asyncio.sleep(0)  # into the 30 s sleep
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert attempts == [1]


async def test_async_foreign_exception_propagates_at_once(no_sleep: list[float]) -> None:
    @compat.on_exception(compat.expo, OSError)
    async def fails() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await fails()
    assert no_sleep == []


# ---------------------------------------------------------------------------
# Bad input gets a clear error, when decorating.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("make, error, words", [
    (lambda: compat.on_exception(compat.expo, "OSError"), TypeError, "exception must be"),
    (lambda: compat.on_exception(compat.expo, (OSError, 3)), TypeError, "exception must be"),
    (lambda: compat.on_exception(compat.expo, OSError, giveup=1), TypeError, "giveup"),
    (lambda: compat.on_predicate(compat.expo, predicate=None), TypeError, "predicate"),
    (lambda: compat.on_exception(3, OSError)(len), TypeError, "wait_gen"),
    (lambda: compat.on_exception(compat.expo, OSError, max_tries=-1)(len), ValueError,
     "max_tries must be >= 0"),
    (lambda: compat.on_exception(compat.expo, OSError, max_tries="3")(len), TypeError,
     "max_tries"),
    (lambda: compat.on_exception(compat.expo, OSError, max_tries=True)(len), TypeError,
     "max_tries"),
    (lambda: compat.on_exception(compat.expo, OSError, max_time=math.nan)(len), ValueError,
     "max_time must not be NaN"),
    (lambda: compat.on_exception(compat.expo, OSError, max_time=True)(len), TypeError,
     "max_time"),
    (lambda: compat.on_exception(compat.expo, OSError, jitter=0.5)(len), TypeError, "jitter"),
    (lambda: compat.on_exception(compat.expo, OSError, logger=3)(len), TypeError, "logger"),
    (lambda: compat.on_exception(compat.expo, OSError, backoff_log_level="INFO")(len),
     TypeError, "backoff_log_level"),
    (lambda: compat.on_exception(compat.expo, OSError, on_backoff=[print, 3])(len), TypeError,
     "on_backoff"),
])
def test_bad_settings_name_the_field(make: Any, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        make()


def test_extreme_settings_are_accepted(no_sleep: list[float]) -> None:
    huge = compat.on_exception(compat.expo, OSError, max_tries=10**9, max_time=math.inf,
                               jitter=None)(_flaky([OSError(), 1]))
    assert huge() == 1 and no_sleep == [1]
    zero = compat.on_exception(compat.expo, OSError, max_time=0)(_flaky([OSError("x")]))
    with pytest.raises(OSError):
        zero()  # no time at all: gives up after the first try


async def test_async_refuses_coroutine_max_tries_and_jitter() -> None:
    async def three() -> int:
        return 3

    async def target() -> None:
        pass

    with pytest.raises(TypeError, match="max_tries must not be a coroutine function"):
        compat.on_exception(compat.expo, OSError, max_tries=three)(target)
    with pytest.raises(TypeError, match="jitter must not be a coroutine function"):
        compat.on_predicate(compat.expo, jitter=three)(target)
