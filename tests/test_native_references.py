"""What the native objects hold, the collector sees.

Each raw native type lists its references once (``References`` in
cpp/src/binding.hpp): its tp_traverse visits exactly what its tp_clear drops.
So ``gc.get_referents`` shows every object it holds, and a reference cycle
through any of them is collected rather than leaked.
"""

from __future__ import annotations

import contextvars
import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest

import virtrigaud_resilience as vr
from virtrigaud_resilience import _core
from virtrigaud_resilience.otel import _tracing

NOT_OFF = ((False, False), (False, False))  # TraceGate's `off`: no parent drops a call


def fresh_callable() -> Callable[..., Any]:
    """A callable no other test shares (identity is what the checks compare)."""
    return lambda *args, **kwargs: None


def fresh_str(name: str) -> str:
    return "".join([name, "-", str(id(object()))])  # built at run time: not interned


def referents(obj: object) -> list[object]:
    return gc.get_referents(obj)


def assert_holds(obj: object, held: dict[str, object]) -> None:
    seen = referents(obj)
    missing = [name for name, value in held.items() if not any(r is value for r in seen)]
    assert not missing, f"{type(obj).__name__} hides {missing} from the collector"


def trace_gate(held: dict[str, object]) -> object:
    held.update(native=fresh_callable(), traced=fresh_callable(),
                var=contextvars.ContextVar("virtrigaud-test"), span_key=fresh_str("span"))
    return _core.TraceGate(held["native"], held["traced"], held["var"], held["span_key"],
                           False, NOT_OFF)


def retry_call(held: dict[str, object]) -> object:
    held.update(fn=fresh_callable(), resume=fresh_callable(), stats_key=fresh_str("stats"),
                clock_key=fresh_str("clock"), template=((fresh_str("k"), 0),), local=object())
    return _core.RetryCall(held["fn"], held["resume"], stats_key=held["stats_key"],
                           clock_key=held["clock_key"], template=held["template"],
                           local=held["local"])


def breaker_call(held: dict[str, object]) -> object:
    held.update(breaker=vr.CircuitBreaker(fresh_str("b")), fn=fresh_callable())
    return _core.BreakerCall(held["breaker"], held["fn"])


def traced_attempt(held: dict[str, object]) -> object:
    held.update(start_span=fresh_callable(), name=fresh_str("attempt"), attributes=({},),
                number_key=fresh_str("n"), span_key=fresh_str("s"), attach=fresh_callable(),
                detach=fresh_callable(), clock=fresh_callable(), ended=fresh_callable(),
                raised=fresh_callable())
    return _core.TracedAttempt(**held, execution_type=_tracing.Execution)


def traced_execute(held: dict[str, object]) -> object:
    held.update(native=fresh_callable(), fallback=fresh_callable(), active_in={},
                tracing=object(), attempt=fresh_callable(), start_span=fresh_callable(),
                kind=object(), constants={}, make_constants=fresh_callable(),
                current=fresh_callable(), span_key=fresh_str("s"), current_set=fresh_callable(),
                current_reset=fresh_callable(), clock=fresh_callable(), raised=fresh_callable())
    return _core.TracedExecute(**held, execution_type=_tracing.Execution)


def async_call(held: dict[str, object]) -> object:
    async def fn(*args: Any, **kwargs: Any) -> None:
        return None

    policy = vr.PolicyBuilder(fresh_str("p")).build()
    held.update(policy=policy, fn=fn, arg=object(), keyword=object())
    call = policy.execute_async(fn, held["arg"], key=held["keyword"])
    held["keyword names"] = next(r for r in referents(call)
                                 if isinstance(r, tuple) and r == ("key",))
    return call


MAKERS = [trace_gate, retry_call, breaker_call, traced_attempt, traced_execute, async_call]


@pytest.mark.parametrize("make", MAKERS, ids=lambda make: make.__name__)
def test_the_collector_sees_every_object_a_native_object_holds(make: Any) -> None:
    held: dict[str, object] = {}
    obj = make(held)
    assert_holds(obj, held)
    assert any(r is type(obj) for r in referents(obj))  # a heap type is visited too
    close = getattr(obj, "close", None)
    if close is not None:
        close()  # an AsyncCall never awaited: nothing admitted


class Marker:
    """Something in a cycle whose collection a weak reference tells."""


@pytest.mark.parametrize("make, field", [
    (trace_gate, "native"),
    (retry_call, "fn"),
    (breaker_call, "fn"),
    (traced_execute, "fallback"),
])
def test_a_cycle_through_a_native_object_is_collected(make: Any, field: str) -> None:
    held: dict[str, object] = {}
    obj = make(held)
    marker = Marker()
    gone = weakref.ref(marker)
    # The cycle: obj -> the function in `field` -> its __dict__ -> box -> obj.
    box: list[object] = [marker, obj]
    closure = held[field]
    assert callable(closure)
    closure.__dict__["box"] = box
    del obj, marker, box, closure, held
    gc.collect()
    assert gone() is None


def test_a_cycle_through_an_async_calls_argument_is_collected() -> None:
    async def fn(box: list[object]) -> None:
        return None

    marker = Marker()
    gone = weakref.ref(marker)
    box: list[object] = [marker]
    box.append(vr.PolicyBuilder("cycle").build().execute_async(fn, box))  # box -> call -> box
    del box, marker
    gc.collect()
    assert gone() is None
