"""A monkeypatched base method is seen by subclasses.

Subclasses of CircuitBreaker, TokenBucket and Policy carry their own copy of
the native hot method (for CPython's call specialisation); a patch of the
base's method must still win over that copy, and the copy come back (fast
again) once the patch is undone.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest
import virtrigaud_resilience as vr

CASES: dict[str, tuple[type, str, Callable[[Any], Any], Any]] = {
    "breaker": (vr.CircuitBreaker, "call", lambda obj: obj.call(int, "3"), 3),
    "bucket": (vr.TokenBucket, "try_acquire", lambda obj: obj.try_acquire(), True),
    "policy": (vr.Policy, "execute", lambda obj: obj.execute(int, "3"), 3),
}


def make(cls: type) -> Any:
    if issubclass(cls, vr.CircuitBreaker):
        return cls("sub")
    if issubclass(cls, vr.TokenBucket):
        return cls(qps=10, burst=100)
    return cls("sub")


@pytest.mark.parametrize("kind", list(CASES))
def test_a_patched_base_method_reaches_subclasses_and_comes_back(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    base, name, use, native_result = CASES[kind]
    sub_class = type("Sub", (base,), {})
    deeper = type("Deeper", (sub_class,), {})
    early = make(sub_class)  # built before the patch
    assert use(early) == native_result
    assert type(vars(sub_class)[name]) is types.MethodDescriptorType  # the fast copy

    monkeypatch.setattr(base, name, lambda self, *args, **kwargs: "patched")
    assert use(make(sub_class)) == "patched"
    assert use(early) == "patched"  # an instance built before the patch too
    assert use(make(deeper)) == "patched"
    assert use(make(base)) == "patched"

    monkeypatch.undo()
    assert use(make(sub_class)) == native_result
    assert use(early) == native_result
    assert use(make(deeper)) == native_result
    for cls in (sub_class, deeper):
        assert type(vars(cls)[name]) is types.MethodDescriptorType  # fast again


@pytest.mark.parametrize("kind", list(CASES))
def test_a_subclass_override_survives_base_patches(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    base, name, use, _ = CASES[kind]
    sub_class = type("Sub", (base,), {name: lambda self, *args, **kwargs: "override"})
    deeper = type("Deeper", (sub_class,), {})
    assert use(make(deeper)) == "override"
    monkeypatch.setattr(base, name, lambda self, *args, **kwargs: "patched")
    assert use(make(deeper)) == "override"
    monkeypatch.undo()
    assert use(make(deeper)) == "override"
    assert name not in vars(deeper)  # no copy hides the override


def test_a_subclass_defined_after_the_patch_sees_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vr.CircuitBreaker, "call", lambda self, *args, **kwargs: "patched")

    class Late(vr.CircuitBreaker):
        pass

    assert Late("late").call(int, "3") == "patched"
