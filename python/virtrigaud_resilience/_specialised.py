"""The native hot methods of a class and of its Python subclasses, kept in step.

CPython specialises a call of a native method only when ``self``'s type is
exactly the method's class, so ``_core._specialise`` installs a copy of each
hot method (``CircuitBreaker.call``, ``Policy.execute``, ...) on the class and
on every Python subclass that does not override it. A copy on a subclass hides
the base's attribute, so a monkeypatch of the base method would not be seen by
the subclass: :meth:`HotMethods.follow`, run by the base's constructor for a
subclass instance, removes the subclass's copies of a method patched on the
base (the patch then applies, to that subclass's existing instances too) and
reinstalls them once the base's method is the native one again. Nothing here
runs on a call's path; the check costs a subclass's constructor a few dict
look-ups.

(A patch is noticed when a subclass instance is next constructed, or a
subclass defined: no Python-level hook sees a class attribute set on a
native-backed class.)
"""

from __future__ import annotations

import types
import weakref

from . import _core

__all__ = ["HotMethods"]


def _is_copy(attr: object, cls: type, name: str) -> bool:
    """Whether ``attr`` is a native hot method installed on ``cls`` itself."""
    return (type(attr) is types.MethodDescriptorType
            and attr.__objclass__ is cls and attr.__name__ == name)


class HotMethods:
    """The hot methods ``_core._specialise`` installed on ``base`` (it runs it)."""

    __slots__ = ("_base", "_natives", "_stripped", "_seen_patch")

    def __init__(self, base: type) -> None:
        _core._specialise(base)
        self._base = base
        self._natives = {name: attr for name, attr in vars(base).items()
                         if _is_copy(attr, base, name)}
        # Subclasses whose copies were removed while the base was patched.
        self._stripped: weakref.WeakSet[type] = weakref.WeakSet()
        self._seen_patch = False

    def follow(self, cls: type) -> None:
        """Brings the copies on ``cls`` and the classes between it and the base
        in step with the base: none of a method patched on the base, all of
        one that is native there."""
        base_methods = self._base.__dict__
        if not self._seen_patch:
            for name, native in self._natives.items():
                if base_methods.get(name) is not native:
                    break
            else:
                return  # never patched: the usual case
        natives = self._natives
        self._seen_patch = True  # from now on, check every time (patching is rare: tests)
        mro = cls.__mro__
        for klass in reversed(mro[:mro.index(self._base)]):
            own = klass.__dict__
            for name, native in natives.items():
                attr = own.get(name)
                if base_methods.get(name) is not native:  # patched on the base
                    if _is_copy(attr, klass, name):
                        delattr(klass, name)
                        self._stripped.add(klass)
                elif attr is None and klass in self._stripped:
                    _core._specialise(klass)  # skips what a class between overrides
