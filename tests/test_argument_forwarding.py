"""The native call paths forward the caller's arguments without touching the caller's array.

``breaker.call(*t)`` and ``policy.execute(*t)`` receive the items of the
tuple ``t`` themselves. Forwarding them with PY_VECTORCALL_ARGUMENTS_OFFSET
told the callee that the slot before its arguments (``t[0]``, the function)
was scratch: a bound method wrote its ``self`` there for the length of the
call, and anyone reading ``t`` meanwhile (this call, or another thread
unpacking the same tuple) saw the wrong object.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import virtrigaud_resilience as vr


class Target:
    """A bound method whose call looks at the shared tuple."""

    shared: tuple[Any, ...] = ()

    def first_item_seen(self, *args: Any, **kwargs: Any) -> Any:
        return self.shared[0]


def _entry_points() -> list[tuple[str, Callable[..., Any]]]:
    breaker = vr.CircuitBreaker("forwarding", clock=vr.ManualClock())
    policy = vr.PolicyBuilder("forwarding").with_circuit_breaker(breaker).build()
    guarded = breaker(Target.first_item_seen)  # plain function: a native BreakerCall
    return [("breaker.call", breaker.call), ("policy.execute", policy.execute),
            ("guarded", lambda fn, *a, **k: guarded(fn.__self__, *a, **k))]


@pytest.mark.parametrize("nargs", [0, 1, 3, 12])  # 12: beyond the inline copy
@pytest.mark.parametrize(("name", "entry"), _entry_points())
def test_the_callers_tuple_is_unchanged_during_the_call(
        name: str, entry: Callable[..., Any], nargs: int) -> None:
    target = Target()
    shared = (target.first_item_seen, *range(nargs))
    target.shared = shared
    assert entry(*shared) is shared[0], name
    assert entry(*shared, key="word") is shared[0], name


def test_threads_unpacking_one_tuple_call_the_right_object() -> None:
    breaker = vr.CircuitBreaker("forwarding-threads", clock=vr.ManualClock())
    calls = 20_000
    wrong = [0]
    lock = threading.Lock()
    target = Target()
    shared = (target.first_item_seen, 1)
    target.shared = shared
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait()
        bad = sum(breaker.call(*shared) is not shared[0] for _ in range(calls))
        with lock:
            wrong[0] += bad

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong[0] == 0
    assert breaker.successes == 4 * calls
