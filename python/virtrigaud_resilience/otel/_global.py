"""Follows the global tracer provider set after ``instrument()``.

``instrument()`` without a tracer provider takes the global one. Until an
application sets it, that is the API's ProxyTracerProvider, whose tracers
record nothing: the policies keep their native methods. The API has no
notice of a later ``trace.set_tracer_provider()``; its public function
delegates to the module's ``_set_tracer_provider`` (looked up when called,
so every import of ``set_tracer_provider`` goes through it, the SDK's
auto-configuration included). :func:`follow` wraps that function while
``instrument()`` follows the global provider, and :func:`stop` puts the
original back. An API without it (none since 1.0) is not followed: the
provider must then be set before ``instrument()``, as before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

_HOOKED = "_set_tracer_provider"
_lock = threading.Lock()
#: The API's own function while wrapped (None: not wrapped).
_original: Callable[..., None] | None = None
#: Told the global provider once one is set (None: nobody follows).
_listener: Callable[[Any], None] | None = None


def follow(listener: Callable[[Any], None]) -> bool:
    """Calls ``listener(provider)`` once a global tracer provider is set
    (each time one is set, until :func:`stop`). False: the API cannot be
    followed (its function is missing)."""
    global _original, _listener
    with _lock:
        if _original is None:
            original = getattr(trace, _HOOKED, None)
            if not callable(original):
                return False
            _original = original
            setattr(trace, _HOOKED, _set_tracer_provider)
        _listener = listener
        return True


def stop() -> None:
    """Puts the API's function back; nobody is told any more."""
    global _original, _listener
    with _lock:
        _listener = None
        if _original is not None:
            if getattr(trace, _HOOKED, None) is _set_tracer_provider:
                setattr(trace, _HOOKED, _original)
            _original = None


def following() -> bool:
    """Whether a listener waits for a global tracer provider."""
    return _listener is not None


def _set_tracer_provider(tracer_provider: Any, *args: Any, **kwargs: Any) -> None:
    original, listener = _original, _listener
    if original is None:  # stopped while this call looked it up: the API's own
        original = getattr(trace, _HOOKED)
        if original is _set_tracer_provider:  # pragma: no cover - never left in place
            return
    original(tracer_provider, *args, **kwargs)
    if listener is not None:
        # The one set (set-once: a second set keeps the first, and so do we).
        listener(trace.get_tracer_provider())
