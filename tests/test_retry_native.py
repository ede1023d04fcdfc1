"""vr.retry's native first attempt (_core.RetryEntry) against the Python loop.

``vr.retry`` runs attempt 0 in one native call and continues in Python only
after an Exception; ``retry._retry_in_python`` runs every attempt in Python
(the retry() it replaced, which the entry still hands calls to). Every
scenario here runs through both and must come out the same: result or
error, the attempts seen, the error's chain, notes and ``attempts``, and
the ``virtrigaud_retry_*`` counters of the policy label "retry".
"""

from __future__ import annotations

import gc
import importlib
import inspect
import pickle
import threading
import warnings
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

import virtrigaud_resilience as vr
from virtrigaud_resilience.clock import sleeper_for
from virtrigaud_resilience.timeouts import deadline_scope

from python_calls import python_calls

retry_module = importlib.import_module("virtrigaud_resilience.retry")

#: Millisecond delays on the system clock (vr.retry has no ManualClock).
FAST = vr.RetryConfig(max_attempts=3, base_delay=0.001, max_delay=0.002, jitter=False)

PATHS = {"native": vr.retry, "python": retry_module._retry_in_python}


def ok() -> str:
    return "ok"


async def ok_async() -> str:
    return "never"


# ------------------------------------------------------ no Python on success --


@pytest.mark.parametrize("config", [FAST, None], ids=["config", "default"])
def test_a_first_attempt_that_succeeds_runs_no_python_frame_but_fn(config: vr.RetryConfig | None
                                                                   ) -> None:
    assert vr.retry(config, ok) == "ok"  # the first call fills the cache (in Python)
    assert python_calls(partial(vr.retry, config, ok)) == ("ok", ["ok"])


def test_the_python_path_runs_python_frames() -> None:
    # The check above can fail: the same call through the Python loop.
    result, called = python_calls(partial(retry_module._retry_in_python, FAST, ok))
    assert result == "ok" and "ok" in called and len(called) > 1


# ------------------------------------------------ the same as the Python loop --


class Script:
    """Raises the given errors in turn (an error may be raised inside a
    handler of another, to give it a ``__context__``), then returns "done";
    records the attempt numbers it saw."""

    def __init__(self, *steps: Callable[[], BaseException] | tuple[
            Callable[[], BaseException], Callable[[], BaseException]]) -> None:
        self.steps = list(steps)
        self.seen: list[int] = []
        self.raised: list[BaseException] = []

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.seen.append(vr.current_attempt())
        if not self.steps:
            return ("done", args, kwargs)
        step = self.steps.pop(0)
        if isinstance(step, tuple):
            inner, outer = step
            try:
                raise inner()
            except BaseException:
                error = outer()
                self.raised.append(error)
                raise error
        error = step()
        self.raised.append(error)
        raise error


def retry_counters() -> tuple[int, int]:
    """(retries, exhausted) of the policy label "retry", as the metrics sum them."""
    retriers, dropped = retry_module.RETRIERS.snapshot()
    retries = sum(r.retries for r in retriers if r.name == "retry")
    exhausted = sum(r.exhausted for r in retriers if r.name == "retry")
    retries_gone, exhausted_gone = dropped.get(("retry",), (0, 0))
    return retries + retries_gone, exhausted + exhausted_gone


def chain(error: BaseException | None, raised: list[BaseException]) -> list[object]:
    """An error's chain, each link named by its place in ``raised`` (or its type)."""
    links: list[object] = []
    while error is not None and len(links) < 8:
        links.append(raised.index(error) if error in raised else type(error).__name__)
        error = error.__context__
    return links


def outcome(path: str, script: Script, config: vr.RetryConfig | None = FAST,
            fn: Callable[..., Any] | None = None) -> dict[str, object]:
    """What a call through ``path`` did, in comparable terms."""
    before = retry_counters()
    try:
        result: object = PATHS[path](config, fn or script, 1, k=2)
        error: BaseException | None = None
    except BaseException as exc:  # KeyboardInterrupt included: it is a scenario
        result, error = None, exc
    after = retry_counters()
    return {
        "result": result,
        "error": None if error is None else type(error).__name__,
        "which": None if error is None or error not in script.raised
        else script.raised.index(error),
        "attempts": getattr(error, "attempts", None),
        "notes": getattr(error, "__notes__", None),
        "cause": None if error is None else type(error.__cause__).__name__,
        "chain": chain(error, script.raised),
        "seen": script.seen,
        "counters": (after[0] - before[0], after[1] - before[1]),
    }


SCENARIOS: dict[str, Callable[[], Script]] = {
    "success": lambda: Script(),
    "retried once": lambda: Script(lambda: vr.UnavailableError("a")),
    "succeeds on the last attempt": lambda: Script(lambda: vr.UnavailableError("a"),
                                                   lambda: vr.RetryableError("b")),
    "not retryable at once": lambda: Script(lambda: vr.NotFoundError("x")),
    "not retryable on the 2nd attempt": lambda: Script(lambda: vr.UnavailableError("a"),
                                                       lambda: ValueError("b")),
    "exhausted": lambda: Script(*[lambda: vr.UnavailableError("down")] * 3),
    "raised in handlers (their own context)": lambda: Script(
        (lambda: KeyError("k0"), lambda: vr.RetryableError("r0")),
        (lambda: KeyError("k1"), lambda: ConnectionError("c1"))),
    "keyboard interrupt at once": lambda: Script(KeyboardInterrupt),
    "keyboard interrupt on the 2nd attempt": lambda: Script(lambda: vr.RetryableError("r"),
                                                            KeyboardInterrupt),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_native_path_does_what_the_python_loop_does(name: str) -> None:
    native, python = (outcome(path, SCENARIOS[name]()) for path in ("native", "python"))
    assert native == python


@pytest.mark.parametrize("name", ["not retryable on the 2nd attempt", "exhausted"])
def test_inside_a_handler_the_chain_is_the_python_loops(name: str) -> None:
    # Called while the caller handles an error: the final error's context is
    # that error (as a raise there makes it), never attempt 0's error.
    results = []
    for path in ("native", "python"):
        try:
            raise LookupError("the caller's")
        except LookupError:
            results.append(outcome(path, SCENARIOS[name]()))
    assert results[0] == results[1]
    assert results[0]["chain"][1] == "LookupError"


def test_the_metrics_count_as_the_python_loop_does() -> None:
    config = FAST.replace(max_attempts=2)
    counted = {}
    for path in ("native", "python"):
        before = retry_counters()
        for _ in range(5):
            PATHS[path](config, Script(lambda: vr.RetryableError("r")))      # 1 retry
            with pytest.raises(vr.RetryableError):
                PATHS[path](config, Script(*[lambda: vr.RetryableError("r")] * 2))  # exhausted
            PATHS[path](config, ok)                                          # nothing
        after = retry_counters()
        counted[path] = (after[0] - before[0], after[1] - before[1])
    assert counted["native"] == counted["python"] == (10, 5)


def test_the_refusal_of_an_async_function_is_never_retried() -> None:
    # Not even when retry_on names TypeError: the Python loop raises it at once.
    config = FAST.replace(retry_on=TypeError)
    for path in ("native", "python"):
        made: list[object] = []

        def returns_a_coroutine() -> object:
            made.append(ok_async())
            return made[-1]

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a coroutine left unclosed would warn
            with pytest.raises(TypeError, match="retry_async") as info:
                PATHS[path](config, returns_a_coroutine)
            gc.collect()
        assert len(made) == 1, path
        assert not hasattr(info.value, "attempts")


def test_the_refusal_closes_the_coroutine() -> None:
    made = []

    def returns_a_coroutine() -> object:
        made.append(ok_async())
        return made[-1]

    with pytest.raises(TypeError, match=r"retry\(\) cannot run async function 'ok_async'.*"
                                        r"retry_async"):
        vr.retry(FAST, returns_a_coroutine)
    assert made[0].cr_frame is None  # closed: its body never runs


# -------------------------------------------------- when the call needs Python --


def test_an_enclosing_deadline_is_checked_before_attempt_0() -> None:
    calls = []
    clock = sleeper_for(None)  # the system clock retry() sleeps on
    with deadline_scope(clock, clock.now() - 1.0):
        with pytest.raises(vr.OperationTimeoutError):
            vr.retry(FAST, lambda: calls.append(1))
        assert vr.remaining() == 0.0
    assert calls == []


def test_an_enclosing_deadline_is_visible_to_attempt_0() -> None:
    clock = sleeper_for(None)
    with deadline_scope(clock, clock.now() + 60.0):
        left = vr.retry(FAST, vr.remaining)
    assert left is not None and 0.0 < left <= 60.0


def test_attempt_0_inside_an_outer_loops_retry_reads_attempt_0() -> None:
    seen: list[tuple[int, int]] = []
    failures = [vr.RetryableError("outer")]

    def outer() -> str:
        outer_attempt = vr.current_attempt()
        seen.append((outer_attempt, vr.retry(FAST, vr.current_attempt)))
        if failures:
            raise failures.pop()
        return "ok"

    assert vr.retry(FAST, outer) == "ok"
    assert seen == [(0, 0), (1, 0)]


def test_a_call_without_its_arguments_raises_pythons_type_error() -> None:
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'fn'"):
        vr.retry(FAST)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing 2 required positional arguments"):
        vr.retry()  # type: ignore[call-arg]


@pytest.mark.parametrize("bad", [{"max_attempts": 3}, 3, "FAST"])
def test_a_config_that_is_no_retry_config_names_the_value(bad: object) -> None:
    called = []
    with pytest.raises(TypeError, match=rf"Retrier config must be .*{type(bad).__name__}"):
        vr.retry(bad, lambda: called.append(1))  # type: ignore[arg-type]
    assert called == []
    with pytest.raises(TypeError, match="config"):  # and again: a bad config is not cached
        vr.retry(bad, lambda: called.append(1))  # type: ignore[arg-type]


def test_a_config_resolved_to_none_runs_every_call_in_python(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The seam for a config that needs Python on every attempt.
    config = FAST.replace(max_attempts=4)
    monkeypatch.setattr(retry_module, "_native_retrier", lambda config: None)
    entry = vr._core.RetryEntry(retry_module._native_retrier, retry_module._retry_in_python,
                                retry_module._after_first_attempt, retry_module._ATTEMPT,
                                retry_module._DEADLINE)
    assert entry(config, ok) == "ok"
    result, called = python_calls(partial(entry, config, ok))
    assert result == "ok" and "call" in called  # Retrier.call: the Python loop


# ------------------------------------------------------------------ the cache --


def test_the_cache_lets_configs_made_per_call_go() -> None:
    configs = [FAST.replace(max_attempts=1 + i % 7, base_delay=i * 1e-6, max_delay=1.0)
               for i in range(retry_module._RETRIERS_CACHE_SIZE + vr.retry._SLOTS + 8)]
    first = weakref.ref(configs[0])
    for config in configs:
        assert vr.retry(config, ok) == "ok"
        assert vr.retry._cached <= vr.retry._SLOTS
    del configs, config
    gc.collect()
    assert first() is None


def test_one_retrier_per_config_serves_the_native_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    config = FAST.replace(max_attempts=5)
    resolved = []
    resolve = retry_module._retrier_for
    monkeypatch.setattr(retry_module, "_retrier_for",
                        lambda config: (resolved.append(config), resolve(config))[1])
    for _ in range(50):
        assert vr.retry(config, ok) == "ok"
    assert resolved == [config]  # a hit compares pointers: nothing is resolved again


@pytest.mark.threads
def test_threads_share_the_cache_safely() -> None:
    configs = [FAST.replace(max_attempts=2 + i) for i in range(vr.retry._SLOTS * 2)]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def hammer(seed: int) -> None:
        try:
            start.wait()
            for i in range(2_000):
                config = configs[(seed * 7 + i) % len(configs)]
                assert vr.retry(config, int, str(i)) == i
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert vr.retry._cached == vr.retry._SLOTS


# ----------------------------------------------------------- a function still --


def test_it_keeps_the_python_functions_name_signature_and_doc() -> None:
    python = retry_module._retry_in_python
    assert vr.retry.__name__ == "retry" and vr.retry.__qualname__ == "retry"
    assert vr.retry.__module__ == "virtrigaud_resilience.retry"
    assert vr.retry.__doc__ == python.__doc__ and "Retry(ctx, config, fn)" in python.__doc__
    assert inspect.signature(vr.retry) == inspect.signature(python)
    assert repr(vr.retry).startswith("<function retry at ")
    assert pickle.loads(pickle.dumps(vr.retry)) is vr.retry


def test_as_a_class_attribute_it_binds_as_a_function_does() -> None:
    class Holder:
        run = vr.retry

    # Holder().run(fn) is retry(holder, fn): the holder is no RetryConfig.
    with pytest.raises(TypeError, match="Retrier config must be"):
        Holder().run(ok)
    assert Holder.run(FAST, ok) == "ok"
