"""Deprecated: this module is now :mod:`.call_step` (``CallGuard`` is ``CallStep``).

Kept for one minor release: reading a name from here warns and returns the
new one (importing the module itself warns about nothing).
"""

from __future__ import annotations

from .._deprecated import module_getattr

__getattr__ = module_getattr(__name__, {
    "CallGuard": "virtrigaud_resilience.providers.call_step.CallStep",
    "Method": "virtrigaud_resilience.providers.call_step.Method",
    "SHARED": "virtrigaud_resilience.providers.options.SHARED",
    "Shared": "virtrigaud_resilience.providers.options.Shared",
})
