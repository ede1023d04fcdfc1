"""Which decorated calls may run their first attempt natively.

A first attempt may skip Python when nothing the user supplied has to see it
succeed: no ``before`` hook, and a retry strategy that is "result-blind",
i.e. answers False for any returned value without calling user code (the
exception-type, exception-predicate, exception-message and cause strategies,
``retry_never``, and their ``|`` / ``&`` compositions). The stop and wait
strategies and the ``after`` / ``before_sleep`` hooks only run after a failed
attempt, so any of them is fine.

With ``retry_if_exception_type(types)`` the native part also knows which
exceptions cannot be retried (neither those types nor ``TryAgain``): it
raises those as they are, without entering Python, as tenacity's retry
strategy would have decided.
"""

from __future__ import annotations

import typing

from ..._native import MODE_NATIVE, MODE_PASSTHROUGH, MODE_PYTHON
from .before import before_nothing
from .retry import (
    _retry_never,
    retry_all,
    retry_any,
    retry_if_exception,
    retry_if_exception_cause_type,
    retry_if_exception_message,
    retry_if_exception_type,
    retry_if_not_exception_type,
)

if typing.TYPE_CHECKING:
    from ._retrying import BaseRetrying

#: Strategies that answer False on a result without calling anything
#: (exact types: a subclass may override __call__).
_BLIND: tuple[type, ...] = (
    retry_if_exception,
    retry_if_exception_type,
    retry_if_not_exception_type,
    retry_if_exception_message,
    retry_if_exception_cause_type,
    _retry_never,
)

#: The controller methods a native first attempt stands in for; a subclass
#: that overrides one of them runs in Python.
_STOOD_IN_FOR = ("__call__", "_run", "_continue", "_decide", "iter", "begin", "copy", "_resume")


class Kinds(typing.NamedTuple):
    """The strategy classes a controller evaluates as result-blind and as
    ``any`` / ``all`` compositions (AsyncRetrying awaits its async ones)."""

    blind: tuple[type, ...]
    any_: tuple[type, ...]
    all_: tuple[type, ...]


SYNC = Kinds(_BLIND, (retry_any,), (retry_all,))


def result_blind(strategy: object, kinds: Kinds = SYNC) -> bool:
    """Whether ``strategy`` answers False for any result without running user code."""
    kind = type(strategy)
    if kind in kinds.blind:
        return True
    # A composition evaluates its members its own way: a sync one calls an
    # async member without awaiting it (and a coroutine is truthy).
    for table in (kinds, SYNC):
        members: tuple[object, ...] = tuple(getattr(strategy, "retries", ()))
        if kind in table.any_:
            return all(result_blind(member, table) for member in members)
        if kind in table.all_:
            # all() stops at the first False: a blind first member decides alone.
            return bool(members) and result_blind(members[0], table)
    return False


def exceptions_retried(strategy: object, try_again: type[BaseException]) -> (
        tuple[type[BaseException], ...] | None):
    """The exception types that may be retried under ``strategy`` (None: any)."""
    if type(strategy) is not retry_if_exception_type:
        return None
    types_ = typing.cast(typing.Any, strategy).exception_types
    members = types_ if isinstance(types_, tuple) else (types_,)
    # The native check is a subclass test, as an except clause's; isinstance
    # also asks a metaclass (an ABC's registered classes): those stay in Python.
    if not all(type(member) is type and issubclass(member, BaseException)
               for member in members):
        return None  # and Python's isinstance raises what tenacity's would
    return (*members, try_again)


def stands_in(controller: BaseRetrying, base: type) -> bool:
    """Whether ``controller``'s class keeps ``base``'s behaviour (no override)."""
    kind = type(controller)
    return all(getattr(kind, name, None) is getattr(base, name, None) for name in _STOOD_IN_FOR)


def native_plan(controller: BaseRetrying, base: type | None = None, kinds: Kinds = SYNC) -> (
        tuple[int, tuple[type[BaseException], ...] | None]):
    """(mode, retry_on) for a function that ``controller`` (a ``base``:
    Retrying by default) decorated."""
    from ._retrying import Retrying, TryAgain

    if not controller.enabled:
        return MODE_PASSTHROUGH, None
    if not stands_in(controller, base or Retrying):
        return MODE_PYTHON, None
    if controller.before is not None and controller.before is not before_nothing:
        return MODE_PYTHON, None
    if not result_blind(controller.retry, kinds):
        return MODE_PYTHON, None
    return MODE_NATIVE, exceptions_retried(controller.retry, TryAgain)
