"""tenacity.nap: sleep strategies (``time.sleep`` looked up at each call, so
tests may patch ``nap.time.sleep``)."""

from __future__ import annotations

import threading
import time

__all__ = ["sleep", "sleep_using_event"]


def sleep(seconds: float) -> None:
    """The default sleep: ``time.sleep(seconds)``."""
    time.sleep(seconds)


class sleep_using_event:  # noqa: N801 (tenacity's name)
    """Sleeps by waiting on ``event``: returns early once it is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, timeout: float | None) -> None:
        self.event.wait(timeout=timeout)
