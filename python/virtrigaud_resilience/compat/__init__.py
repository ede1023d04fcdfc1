"""Drop-in replacements for pure-Python resilience libraries, on the native core.

Change one import and nothing else::

    from virtrigaud_resilience.compat import pybreaker        # was: import pybreaker
    from virtrigaud_resilience.compat import circuitbreaker   # was: import circuitbreaker
    from virtrigaud_resilience.compat import aiolimiter       # was: import aiolimiter
    from virtrigaud_resilience.compat import tenacity         # was: import tenacity
    from virtrigaud_resilience.compat import backoff          # was: import backoff

Each module has its peer's public API and observable semantics (counters,
the moment of each transition, error messages, listener and hook order,
statistics) over the native breaker, bucket and retry path; the peer itself
is never imported. What still differs is listed in docs/migrating.md. The
modules are imported on first use, so ``import virtrigaud_resilience.compat``
costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["aiolimiter", "backoff", "circuitbreaker", "pybreaker", "tenacity"]

if TYPE_CHECKING:
    from . import aiolimiter, backoff, circuitbreaker, pybreaker, tenacity  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
