"""A parent-based sampler's decision, made natively: the methods that route
the policies' calls while it may drop some (see _sampling.py).

``_core.TraceGate`` (cpp/src/bind_otel_gate.cpp) is what ``Policy.execute``
and ``execute_async`` become: it reads the current span's context from the
API's runtime ContextVar and calls the native method when the sampler drops
the call (a parent whose delegate is ``ALWAYS_OFF``, or a root whose is),
else the traced method of _tracing.py, where the SDK's sampler decides.
A call dropped so runs no Python frame of ours: what the Python decision
cost (a frame to read the parent's flags, about 0.5 us a call) is gone.

It needs what it reads to be what it expects: the API's default runtime
context (a ContextVar; ``OTEL_PYTHON_CONTEXT`` may name another) and its
SpanContext the tuple ``_sampling`` checks at import. Where either is not
so, :func:`gates` says so and the traced methods decide in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import _core
from . import _context, _sampling
from ._sampling import SamplingRule

#: The native methods a dropped call runs, by name.
NATIVE: dict[str, Callable[..., Any]] = {
    "execute": _core.Policy.execute, "execute_async": _core.Policy.execute_async}


def available() -> bool:
    """Whether the sampling decision can be made natively here (else the
    traced methods make it)."""
    return _context.VAR is not None and _sampling.TUPLE_LAYOUT


def gates(rule: SamplingRule, traced: dict[str, Callable[..., Any]]
          ) -> dict[str, Callable[..., Any]]:
    """The gates to route the calls through for ``rule``, by method name,
    each calling ``traced[name]`` for a call it does not drop (needs
    :func:`available`)."""
    return {name: _core.TraceGate(native, traced[name], _context.VAR, _context.SPAN_KEY,
                                  rule.root_off, rule.off)
            for name, native in NATIVE.items()}
