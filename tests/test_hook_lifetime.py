"""Native hooks replaced while other threads call them.

A caller takes its own reference to the hook before calling it, and a
replaced hook is released only once no caller is between reading the
pointer and taking that reference: a hook swapped out (or removed) mid-call
finishes its call. (Under the GIL nobody can be in between, so these tests
cannot fail there; scripts/test-freethreaded.sh runs them on 3.13t.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience import _core, events


pytestmark = pytest.mark.usefixtures("frequent_switches")


@pytest.fixture
def restore_rate_limited_hook() -> Iterator[None]:
    try:
        yield
    finally:
        with events._rate_limit_lock:
            _core._set_rate_limited_hook(
                events._emit_rate_limited if events._rate_limit_listeners else None)


def test_a_rate_limited_hook_replaced_while_threads_call_it(
        restore_rate_limited_hook: None) -> None:
    bucket = vr.TokenBucket(1.0, burst=1, clock=vr.ManualClock())
    assert bucket.try_acquire()  # empty from now on: every call is refused
    calls = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def fresh_hook() -> Callable[[object, int], None]:
        state = {"hits": 0}  # owned by this closure alone: freed with it

        def hook(b: object, n: int) -> None:
            assert b is bucket and n == 1
            state["hits"] += 1
            with lock:
                calls[0] += 1
        return hook

    def refuse() -> None:
        while not stop.is_set():
            assert bucket.try_acquire() is False

    threads = [threading.Thread(target=refuse) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(4000):
            # The old one's last reference; every other time none at all (a
            # caller that saw a hook installed must not then read a null).
            _core._set_rate_limited_hook(fresh_hook() if i % 2 == 0 else None)
    finally:
        stop.set()
        for t in threads:
            t.join()
    before = calls[0]
    assert not bucket.try_acquire()
    assert calls[0] == before  # uninstalled: nothing called
    assert bucket.rejected >= before


def test_transition_and_reject_hooks_survive_concurrent_reinstalls() -> None:
    # The package's own hooks, installed again and again while breakers open,
    # reject and close in other threads: every rejection still gets its error.
    from virtrigaud_resilience import breaker as breaker_module

    clock = vr.ManualClock()
    breakers = [vr.CircuitBreaker(f"hooks-{i}", config=vr.BreakerConfig(
        failure_threshold=1, reset_timeout=1.0), clock=clock) for i in range(3)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn(cb: vr.CircuitBreaker) -> None:
        try:
            while not stop.is_set():
                cb.reset()
                with pytest.raises(ZeroDivisionError):
                    cb.call(lambda: 1 / 0)
                with pytest.raises(vr.CircuitOpenError):
                    cb.call(lambda: None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(cb,)) for cb in breakers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    installs = 0
    try:
        # at least 2000 installs, and until every thread has been rejected once
        while (installs < 2000 or not all(cb.rejected for cb in breakers)) and not errors:
            assert time.monotonic() < deadline
            _core._install_hooks(breaker_module._reject, breaker_module._on_transition)
            installs += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert all(cb.rejected > 0 for cb in breakers)
