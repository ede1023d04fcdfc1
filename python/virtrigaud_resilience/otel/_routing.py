"""Routes policy calls through Python while instrumented, and back.

``Policy.execute`` and ``Policy.execute_async`` are native, and
``_core._specialise`` installs a copy of each on ``Policy`` and on every
Python subclass that does not override them (see _specialised.py). To trace
a call, :func:`route` replaces each such copy with the traced method (or
with the native gate that calls it, see _gate.py);
:func:`restore` puts the very same native objects back, so an uninstrumented
call runs exactly the native path it ran before: nothing on the hot path
ever asks whether tracing is on.

Functions decorated with ``@policy`` call the native methods they bound at
decoration; ``_decorate.policy_calls_routed`` tells them to look the
methods up instead while routed.

A subclass defined while routed inherits the traced method (its
``__init_subclass__`` copies only a base method that is native), and
:meth:`HotMethods.follow` gives it its native copies back at its next
construction after :func:`restore`.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

from .. import _decorate
from ..policy import Policy

#: The native methods that route a policy's calls, by name.
HOT_NAMES = ("execute", "execute_async")

_lock = threading.Lock()
#: (class, name, native method) for each copy replaced: what restore() puts back.
_replaced: list[tuple[type, str, Any]] = []


def _policy_classes() -> Iterator[type]:
    """Policy and every subclass of it, each once."""
    seen: set[type] = set()
    pending: list[type] = [Policy]
    while pending:
        cls = pending.pop()
        if cls not in seen:
            seen.add(cls)
            yield cls
            pending.extend(cls.__subclasses__())


def _is_native(attr: object) -> bool:
    return type(attr) is types.MethodDescriptorType


def route(traced: dict[str, Callable[..., Any]]) -> None:
    """Puts ``traced[name]`` where each class has a native copy of ``name``
    (idempotent: a class already routed is routed again to the new method)."""
    with _lock:
        for cls in _policy_classes():
            own = cls.__dict__
            for name in HOT_NAMES:
                attr = own.get(name)
                if _is_native(attr):
                    _replaced.append((cls, name, attr))
                    setattr(cls, name, traced[name])
                elif attr is not None and _is_traced(cls, name):
                    setattr(cls, name, traced[name])
        _decorate.policy_calls_routed = True  # functions decorated before follow


def _is_traced(cls: type, name: str) -> bool:
    return any(klass is cls and method == name for klass, method, _ in _replaced)


def restore() -> None:
    """Puts back every native method :func:`route` replaced."""
    with _lock:
        _decorate.policy_calls_routed = False
        while _replaced:
            cls, name, native = _replaced.pop()
            setattr(cls, name, native)


def routed() -> bool:
    """Whether policy calls run through the traced methods now."""
    return bool(_replaced)
