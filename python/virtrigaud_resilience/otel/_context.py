"""The OpenTelemetry context operations of the traced path, without the
API's Python layers.

A sampled call spends most of its time in the SDK's span objects, and the
rest (ours) mostly in Python calls: in CPython each costs about as much as
the native policy call itself. ``context.attach`` is two Python calls over
``ContextVar.set``, ``get_current`` two over ``ContextVar.get``, and
``trace.set_span_in_context`` four over a dict copy (two copies in
Python; :data:`with_value` makes one, natively). With the API's default
runtime context (``contextvars``; ``OTEL_PYTHON_CONTEXT`` may name another)
these are its very ContextVar's methods, C calls; with any other, the API's
functions. Either way the contexts are the API's, seen by every other user.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context

from .. import _core
from opentelemetry.context import Context
from opentelemetry.trace.propagation import _SPAN_KEY

#: The key under which a Context holds its current span (the API's).
SPAN_KEY: str = _SPAN_KEY


def _runtime_var() -> ContextVar[Context] | None:
    """The API's runtime ContextVar, if its runtime context is the default."""
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(var, ContextVar):
        return var
    return None


#: The API's runtime ContextVar (None: another runtime context is in use).
VAR = _runtime_var()
#: Whether the operations below are the ContextVar's own (C calls).
DIRECT = VAR is not None

#: The current Context.
current: Callable[[], Context] = VAR.get if VAR is not None else otel_context.get_current
#: Makes a Context current; returns the token for :data:`detach`.
attach: Callable[[Context], Any] = VAR.set if VAR is not None else otel_context.attach
#: Makes current again what was before the attach of ``token`` (in the same
#: thread or task, last attached first).
detach: Callable[[Any], Any] = VAR.reset if VAR is not None else otel_context.detach
#: ``with_value(context, key, value)``: a copy of the Context that also maps
#: key to value (native: ``Context({**context, key: value})`` copies twice).
with_value: Callable[[Context, str, object], Context] = _core._context_with

