"""Coverage instrumentation for the fuzz targets, whatever installed the package.

``atheris.instrument_imports()`` instruments modules as their loader reads
their bytecode, and sees nothing through a loader that wraps another (an
editable install's, for one): libFuzzer then runs blind ("no interesting
inputs were found"). So the targets import normally and then instrument the
functions already loaded from the packages they fuzz: the same coverage for
a wheel and for an editable install.
"""

from __future__ import annotations

import gc
import sys
import types

import atheris


def instrument_packages(*packages: str) -> int:
    """Instrument every loaded Python function of ``packages`` (and their
    submodules); returns how many. Call after importing what the target uses.

    Nested functions and lambdas are instrumented with the function whose
    code holds them (atheris patches code constants recursively).
    """
    count = 0
    for obj in gc.get_objects():
        if not isinstance(obj, types.FunctionType):
            continue
        module = getattr(obj, "__module__", None) or ""
        if module.split(".")[0] in packages and module in sys.modules:
            atheris.instrument_func(obj)
            count += 1
    if count == 0:
        raise RuntimeError(f"no functions of {packages} are loaded: nothing to instrument")
    sys.stderr.write(f"INFO: instrumented {count} functions of {', '.join(packages)}\n")
    return count
