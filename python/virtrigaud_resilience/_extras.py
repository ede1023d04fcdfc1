"""The optional dependencies behind the extras, imported where they are needed.

Each subpackage that needs one (``providers.grpc`` grpcio, ``providers.http``
httpx, ``integrations.kopf`` kopf, ``distributed`` redis-py) asks for it
first with :func:`require`, so that a program without the extra gets one
clear ImportError naming the extra to install instead of a bare
``ModuleNotFoundError`` from somewhere inside.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, package: str, extra: str, needed_by: str) -> ModuleType:
    """Imports ``module`` (of the distribution ``package``) for the module
    ``needed_by``; raises ImportError naming ``pip install
    'virtrigaud-resilience[extra]'`` when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{needed_by} needs {package}: "
                          f"pip install 'virtrigaud-resilience[{extra}]'") from exc
