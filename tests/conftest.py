"""Shared fixtures for the test suite (keep this file small)."""

from __future__ import annotations

import pytest
import virtrigaud_resilience as vr


@pytest.fixture
def clock() -> vr.ManualClock:
    """A fresh ManualClock at t = 0 s: time moves only when a test says so."""
    return vr.ManualClock()
