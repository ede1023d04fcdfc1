"""Old names kept for one minor release: each still works and warns, naming its replacement.

A renamed public name (one exported from the package root or a subpackage's
``__init__``, or documented) is served here until :data:`REMOVED_IN`: a
module's ``__getattr__`` for a module-level name (so a plain ``import``
warns about nothing: only reading the old name does), a descriptor for an
attribute, a check for a keyword. Every warning is a ``DeprecationWarning``
that reads ``"<old> is deprecated: use <new> (the old name goes in 0.3.0)"``.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar, overload

__all__ = ["REMOVED_IN", "warn", "module_getattr", "RenamedAttribute", "renamed_keyword"]

#: The release that removes the old names (they were renamed in 0.2.0).
REMOVED_IN = "0.3.0"

T = TypeVar("T")


def warn(old: str, new: str, *, stacklevel: int = 2) -> None:
    """A DeprecationWarning: ``old`` is now ``new``. ``stacklevel`` counts
    from the caller of this function, as :func:`warnings.warn` does."""
    warnings.warn(f"{old} is deprecated: use {new} (the old name goes in {REMOVED_IN})",
                  DeprecationWarning, stacklevel=stacklevel + 1)


def module_getattr(module: str, renamed: Mapping[str, str],
                   otherwise: Callable[[str], Any] | None = None) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``module`` serving its old names.

    ``renamed`` maps each old name to the dotted path of its replacement
    (``"virtrigaud_resilience.breaker.BreakerScope"``); reading an old name
    warns and returns the replacement, imported on first use. Any other name
    goes to ``otherwise`` (the module's own lazy names), or raises the usual
    AttributeError. (One function, not a wrapper around it, so that the
    warning's stack level lands on the line that read the name.)
    """

    def __getattr__(name: str) -> Any:
        new = renamed.get(name)
        if new is None:
            if otherwise is not None:
                return otherwise(name)
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        where, _, attribute = new.rpartition(".")
        value = getattr(importlib.import_module(where), attribute)
        # `from package import old` reads the name twice: importlib's
        # _handle_fromlist asks hasattr() first, then the statement reads it.
        # Only the statement's read warns (once, at the user's line).
        if sys._getframe(1).f_code.co_name != "_handle_fromlist":
            # 2: the frame reading the name.
            warn(f"{module}.{name}", new, stacklevel=2)
        return value

    return __getattr__


class RenamedAttribute(Generic[T]):
    """A class attribute served under its old name: reading ``obj.<old>``
    warns and returns ``obj.<new>`` (it is read-only under the old name)."""

    def __init__(self, new: str) -> None:
        self.new = new
        self.old = ""
        self.owner = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.old = name
        self.owner = owner.__name__

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> RenamedAttribute[T]: ...

    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> T: ...

    def __get__(self, obj: object | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        warn(f"{self.owner}.{self.old}", f"{self.owner}.{self.new}")
        return getattr(obj, self.new)


def renamed_keyword(owner: str, old: str, old_value: T | None, new: str,
                    new_value: T | None) -> T | None:
    """The value of a keyword argument renamed from ``old`` to ``new``.

    ``old_value`` given (not None) warns and is used; both given raise a
    TypeError naming the two. The warning points at the caller of the
    function whose keyword it is.
    """
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{owner} got both {new}= and its deprecated name {old}=, "
                        f"got {new}={new_value!r}, {old}={old_value!r}")
    warn(f"{owner}({old}=...)", f"{owner}({new}=...)", stacklevel=3)
    return old_value
