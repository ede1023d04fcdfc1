"""The pytest plugin the package ships: the ``vr_testing`` fixture.

Registered through the ``pytest11`` entry point, so pytest loads it in every
project that installs the package; it only defines a fixture, which does
nothing unless a test asks for it::

    def test_reconcile_gives_up(vr_testing):
        # every retry makes one attempt, no backoff sleeps (vr.testing.set())
        ...

    def test_reconcile_retries_twice(vr_testing):
        vr_testing.set(attempts=2)   # any vr.testing call: undone after the test
        ...
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from .. import testing


@pytest.fixture
def vr_testing() -> Iterator[ModuleType]:
    """``vr.testing.set(attempts=1, sleep=False)`` for the test; yields the
    ``vr.testing`` module to adjust it, and restores the state it found."""
    with testing.set(attempts=1, sleep=False):
        yield testing
