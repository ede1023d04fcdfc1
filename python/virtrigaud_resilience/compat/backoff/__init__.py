"""Drop-in ``backoff`` (2.x) on virtrigaud-resilience's native core.

``from virtrigaud_resilience.compat import backoff`` and keep every other
line: ``on_exception``, ``on_predicate``, the wait generators (``expo``,
``fibo``, ``constant``, ``runtime``, ``decay``), ``full_jitter`` and
``random_jitter``, the handlers' details dicts, ``backoff.types.Details``,
and backoff's logging (the 'backoff' logger, its messages and levels).

A decorated sync function's successful first try runs in one native call
when the configuration allows it (see ``on_exception``); every failure
continues in Python with backoff's semantics. The differences from backoff
are listed in docs/migrating.md.
"""

from ._decorator import on_exception, on_predicate
from ._jitter import full_jitter, random_jitter
from ._wait_gen import constant, decay, expo, fibo, runtime

__all__ = [
    "on_predicate",
    "on_exception",
    "constant",
    "expo",
    "decay",
    "fibo",
    "runtime",
    "full_jitter",
    "random_jitter",
]

#: The backoff release whose API this mirrors (plus ``decay``, from backoff's main line).
__version__ = "2.2.1"
