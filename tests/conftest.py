"""Shared fixtures for the test suite (keep this file small)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import virtrigaud_resilience as vr
from fresh_interpreter import pytest_collection_modifyitems, pytest_configure  # noqa: F401


@pytest.fixture
def clock() -> vr.ManualClock:
    """A fresh ManualClock at t = 0 s: time moves only when a test says so."""
    return vr.ManualClock()


@pytest.fixture
def deadline_with_outside_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes every TimeoutScope deadline coincide with a cancellation from outside:
    right after the deadline cancels its task, something else cancels it too."""
    from virtrigaud_resilience.timeouts import TimeoutScope

    fire = TimeoutScope._fire

    def fire_with_outside_cancel(self: TimeoutScope) -> None:
        fire(self)
        assert self._task is not None
        self._task.cancel()

    monkeypatch.setattr(TimeoutScope, "_fire", fire_with_outside_cancel)


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    """Threads switch every microsecond (the GIL's interval) for the test:
    the hammer tests interleave as often as the interpreter allows."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)
