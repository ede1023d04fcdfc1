"""Command-line argument checks the CLI's commands share (``demo``, ``bench``).

Types for argparse that reject a bad value with a message naming it, and
checks run before any work starts (an output file that cannot be written,
an optional dependency that is missing), so a mistake costs one line on
stderr and exit status 2, not a traceback after a long run.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
from collections.abc import Callable

__all__ = ["bounded_int", "check_writable", "positive_seconds", "require_module"]


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an int in ``[low, high]``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be between {low:,} and {high:,}, got {text}")
        return value
    return parse


def positive_seconds(maximum: float) -> Callable[[str], float]:
    """An argparse type: finite seconds in ``(0, maximum]``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
        if not (math.isfinite(value) and 0 < value <= maximum):
            raise argparse.ArgumentTypeError(f"must be > 0 and <= {maximum:g} seconds, got {text}")
        return value
    return parse


def check_writable(path: str, option: str, parser: argparse.ArgumentParser) -> None:
    """``parser.error`` unless the file ``path`` can be written (its folder
    exists, it is no folder, and the permissions allow it)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        parser.error(f"{option} {path}: is a directory")
    if not os.path.isdir(folder):
        parser.error(f"{option} {path}: no such directory {folder}")
    target = path if os.path.exists(path) else folder
    if not os.access(target, os.W_OK):
        parser.error(f"{option} {path}: permission denied")


def require_module(module: str, option: str, install: str,
                   parser: argparse.ArgumentParser) -> None:
    """``parser.error`` naming ``install`` unless ``module`` can be imported."""
    if importlib.util.find_spec(module) is None:
        parser.error(f"{option} needs {module}: {install}")
