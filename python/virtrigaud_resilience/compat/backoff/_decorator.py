"""backoff's decorators: ``on_exception`` and ``on_predicate``."""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterable
from typing import Any

from . import _async, _sync
from ._common import Settings, check_callable, check_exception, is_coroutine_function
from ._jitter import full_jitter
from ._typing import (
    _CallableT,
    _Handler,
    _Jitterer,
    _MaybeCallable,
    _MaybeLogger,
    _MaybeSequence,
    _Predicate,
    _WaitGenerator,
)

__all__ = ["on_exception", "on_predicate"]


def on_predicate(wait_gen: _WaitGenerator,
                 predicate: _Predicate[Any] = operator.not_,
                 *,
                 max_tries: _MaybeCallable[int] | None = None,
                 max_time: _MaybeCallable[float] | None = None,
                 jitter: _Jitterer | None = full_jitter,
                 on_success: _Handler | Iterable[_Handler] | None = None,
                 on_backoff: _Handler | Iterable[_Handler] | None = None,
                 on_giveup: _Handler | Iterable[_Handler] | None = None,
                 logger: _MaybeLogger = "backoff",
                 backoff_log_level: int = logging.INFO,
                 giveup_log_level: int = logging.ERROR,
                 **wait_gen_kwargs: Any) -> Callable[[_CallableT], _CallableT]:
    """Retries while ``predicate(result)`` is true (default: while the result is falsy).

    Args:
        wait_gen: a wait generator (``expo``, ``fibo``, ``constant``,
            ``runtime``, ``decay`` or your own), made per call with
            ``**wait_gen_kwargs`` (callable values are called first).
        predicate: the result is retried while this is true.
        max_tries: tries before giving up (None: no limit; a callable is
            called at each decorated call). On giving up the last result is
            returned.
        max_time: seconds before giving up (a callable is called per call);
            no sleep runs past it.
        jitter: ``jitter(wait)`` is the sleep (default ``full_jitter``; None
            for none).
        on_success, on_backoff, on_giveup: a handler or an iterable of
            handlers, each called with the details dict.
        logger: a logger or its name ('backoff' by default; None for none):
            backoffs are logged at ``backoff_log_level``, give-ups at
            ``giveup_log_level``.

    A successful first try (the predicate false) of a sync function runs in
    one native call when nothing the user supplied needs to run around it
    (no on_success handler, max_tries not a callable, no max_time, a
    built-in wait generator without callable arguments).
    """
    check_callable("on_predicate", "predicate", predicate)

    def decorate(target: _CallableT) -> _CallableT:
        settings = Settings("on_predicate", target, wait_gen, wait_gen_kwargs, max_tries=max_tries,
                            max_time=max_time, jitter=jitter, on_success=on_success,
                            on_backoff=on_backoff, on_giveup=on_giveup, logger=logger,
                            backoff_log_level=backoff_log_level,
                            giveup_log_level=giveup_log_level)
        settings.predicate = predicate
        if is_coroutine_function(target):
            _check_async("on_predicate", max_tries, jitter)
            decorated = _async.retry_predicate(settings)
        else:
            decorated = _sync.retry_predicate(settings)
        return decorated  # type: ignore[no-any-return]

    return decorate


def on_exception(wait_gen: _WaitGenerator,
                 exception: _MaybeSequence[type[Exception]],
                 *,
                 max_tries: _MaybeCallable[int] | None = None,
                 max_time: _MaybeCallable[float] | None = None,
                 jitter: _Jitterer | None = full_jitter,
                 giveup: _Predicate[Exception] = lambda e: False,
                 on_success: _Handler | Iterable[_Handler] | None = None,
                 on_backoff: _Handler | Iterable[_Handler] | None = None,
                 on_giveup: _Handler | Iterable[_Handler] | None = None,
                 raise_on_giveup: bool = True,
                 logger: _MaybeLogger = "backoff",
                 backoff_log_level: int = logging.INFO,
                 giveup_log_level: int = logging.ERROR,
                 **wait_gen_kwargs: Any) -> Callable[[_CallableT], _CallableT]:
    """Retries when the function raises ``exception`` (a type or a tuple of types).

    Args as :func:`on_predicate`, and:
        giveup: ``giveup(exception)`` true gives up at once.
        raise_on_giveup: on giving up, re-raise the exception (default) or
            return None.

    Other exceptions propagate at once. A successful first try of a sync
    function runs in one native call when the configuration allows (as
    :func:`on_predicate`); an exception that is not ``exception`` is raised
    from it directly.
    """
    check_exception("on_exception", exception)
    check_callable("on_exception", "giveup", giveup)

    def decorate(target: _CallableT) -> _CallableT:
        settings = Settings("on_exception", target, wait_gen, wait_gen_kwargs,
                            max_tries=max_tries, max_time=max_time, jitter=jitter,
                            on_success=on_success, on_backoff=on_backoff, on_giveup=on_giveup,
                            logger=logger, backoff_log_level=backoff_log_level,
                            giveup_log_level=giveup_log_level)
        settings.exception = exception
        settings.giveup = giveup
        settings.raise_on_giveup = raise_on_giveup
        if is_coroutine_function(target):
            _check_async("on_exception", max_tries, jitter)
            decorated = _async.retry_exception(settings)
        else:
            decorated = _sync.retry_exception(settings)
        return decorated  # type: ignore[no-any-return]

    return decorate


def _check_async(owner: str, max_tries: Any, jitter: Any) -> None:
    # backoff asserts these: both are called without await.
    for field, value in (("max_tries", max_tries), ("jitter", jitter)):
        if is_coroutine_function(value):
            raise TypeError(f"{owner} {field} must not be a coroutine function "
                            f"(it is called without await), got {value!r}")
