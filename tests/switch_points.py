"""A race between two calls, tried at every point where a thread switch can come.

Under the GIL another thread can only run between two bytecodes, so a race
of two calls on one object is described completely by where, inside the
first call, the second one runs. :func:`each_switch_point` runs the first
call once per bytecode (and line) it executes in the package's Python
code and, at the k-th, runs the whole second call there (as a thread
switched in at that point would), then checks the outcome; a last run puts
the second call after the first. Native code (the C++ core) runs without a switch under the GIL,
so one native call is one step here: what it makes atomic, this sees as
atomic. A check-then-set written in Python is caught deterministically, at
the bytecode between the check and the set, on any interpreter, where a
hammer of real threads under the GIL hits that window only by luck.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import virtrigaud_resilience

__all__ = ["each_switch_point"]

S = TypeVar("S")
R1 = TypeVar("R1")
R2 = TypeVar("R2")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(virtrigaud_resilience.__file__)) + os.sep
_NOT_RUN = object()


def each_switch_point(prepare: Callable[[], S], first: Callable[[S], R1],
                      second: Callable[[S], R2], check: Callable[[S, R1, R2], None]) -> int:
    """Runs ``first(subject)`` on a fresh ``subject = prepare()`` once per
    switch point, with ``second(subject)`` run whole at that point, and calls
    ``check(subject, first's result, second's result)`` after each. Returns
    how many orders were tried (switch points + 1: ``second`` after ``first``).
    ``first`` and ``second`` return what they observed (catch what they expect
    to raise); anything else they raise fails the test.
    """
    point = 0
    while True:
        subject = prepare()
        second_result: Any = _NOT_RUN
        executed = 0

        def on_opcode(frame: FrameType, event: str, arg: object) -> Any:
            nonlocal executed, second_result
            # 3.13 reports opcodes only if asked again from here, not from
            # the call event alone; each line is a switch point as well.
            frame.f_trace_opcodes = True
            if event in ("opcode", "line"):
                if executed == point:
                    second_result = second(subject)
                executed += 1
            return on_opcode

        def on_call(frame: FrameType, event: str, arg: object) -> Any:
            if not frame.f_code.co_filename.startswith(_PACKAGE_DIR):
                return None
            frame.f_trace_opcodes = True
            return on_opcode

        previous = sys.gettrace()
        sys.settrace(on_call)  # tracing is off inside the tracer: second() runs untraced
        try:
            first_result = first(subject)
        finally:
            sys.settrace(previous)
        if second_result is _NOT_RUN:  # first ran out of switch points: second after it
            check(subject, first_result, second(subject))
            return point + 1
        check(subject, first_result, second_result)
        point += 1
