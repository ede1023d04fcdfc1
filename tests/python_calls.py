"""Which Python functions a call runs: how the tests show that a path stays
native (only the user's function appears)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import FrameType


def python_calls(call: Callable[[], object],
                 files: set[str] | None = None) -> tuple[object, list[str]]:
    """``call()``'s result, and the names of the Python functions it called
    (sys.setprofile; pass a functools.partial: it adds no frame); with
    ``files``, only those defined in files of these base names."""
    called: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and (
                files is None or os.path.basename(frame.f_code.co_filename) in files):
            called.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        result = call()
    finally:
        sys.setprofile(None)
    return result, called
