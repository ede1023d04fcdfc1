"""How many TimerHandles a loop is asked for: how the tests show that
deadlines share one handle instead of scheduling one each."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def counted_call_at(loop: asyncio.AbstractEventLoop) -> Iterator[list[int]]:
    """Counts the loop's ``call_at`` calls inside the block, in the one item
    of the list it yields (the loop's own method is put back at the end)."""
    scheduled = [0]
    call_at = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
        scheduled[0] += 1
        return call_at(when, callback, *args, **kwargs)

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    try:
        yield scheduled
    finally:
        del loop.call_at
