"""The retry loops of sync functions.

The decorated function is a ``_core.RetryCall``: when the configuration
allows (see ``Settings.native_first_try``), its first try runs natively and
a successful call never enters Python; a failed first try (an exception of
``exception``, or a result ``predicate`` rejects) continues here from try 2,
exactly as backoff's loop would have.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from ... import _core
from ..._native import MODE_NATIVE, MODE_PYTHON, RESUME_NOT_RUN, RetryResume
from . import _wait_gen
from ._common import Settings, _next_wait, details_of, elapsed_since, pause_seconds

_BUILTIN_GENERATORS = (_wait_gen.expo, _wait_gen.fibo, _wait_gen.constant, _wait_gen.runtime,
                       _wait_gen.decay)
_NOTHING = object()


def _call(handlers: list[Any], details: dict[str, Any]) -> None:
    for handler in handlers:
        handler(details)


def retry_exception(settings: Settings) -> Any:
    """``settings.target`` retried on ``settings.exception``."""

    def resume(outcome: int, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
               started: float) -> Any:
        if outcome == RESUME_NOT_RUN:
            return _exception_loop(settings, args, kwargs, None, None)
        return _exception_loop(settings, args, kwargs, value, started)

    return _decorated(settings, resume, settings.exception, None)


def retry_predicate(settings: Settings) -> Any:
    """``settings.target`` retried while ``settings.predicate`` accepts its result."""

    def resume(outcome: int, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
               started: float) -> Any:
        if outcome == RESUME_NOT_RUN:
            return _predicate_loop(settings, args, kwargs, _NOTHING, None)
        return _predicate_loop(settings, args, kwargs, value, started)

    # Exceptions are not backoff's business here: every one propagates.
    return _decorated(settings, resume, (), settings.predicate)


def _decorated(settings: Settings, resume: RetryResume, retry_on: Any, check: Any) -> Any:
    wrapped = _core.RetryCall(settings.target, resume, clock=True)
    functools.update_wrapper(wrapped, settings.target)
    native = settings.native_first_try(_BUILTIN_GENERATORS)
    wrapped._configure(MODE_NATIVE if native else MODE_PYTHON, retry_on, check)
    return wrapped


def _exception_loop(settings: Settings, args: tuple[Any, ...], kwargs: dict[str, Any],
                    first_error: BaseException | None, started: float | None) -> Any:
    max_tries, max_time, start, wait = settings.start(started)
    tries = 0
    while True:
        tries += 1
        elapsed = 0.0 if first_error is not None else elapsed_since(start)
        details = details_of(settings, args, kwargs, tries, elapsed)
        try:
            if first_error is not None:
                error, first_error = first_error, None
                raise error  # the native first try's exception, handled as if caught here
            result = settings.target(*args, **kwargs)
        except settings.exception as e:
            if settings.giveup(e) or tries == max_tries or (
                    max_time is not None and elapsed >= max_time):
                _call(settings.on_giveup, {**details, "exception": e})
                if settings.raise_on_giveup:
                    raise
                return None
            try:
                seconds = _next_wait(wait, e, settings.jitter, elapsed, max_time)
            except StopIteration:
                _call(settings.on_giveup, {**details, "exception": e})
                raise e  # noqa: B904 (backoff's: chained to the StopIteration)
            _call(settings.on_backoff, {**details, "wait": seconds, "exception": e})
            time.sleep(pause_seconds(seconds))
        else:
            _call(settings.on_success, details)
            return result


def _predicate_loop(settings: Settings, args: tuple[Any, ...], kwargs: dict[str, Any],
                    first_result: Any, started: float | None) -> Any:
    max_tries, max_time, start, wait = settings.start(started)
    tries = 0
    while True:
        tries += 1
        if first_result is not _NOTHING:
            result, first_result, elapsed = first_result, _NOTHING, 0.0
            rejected = True  # the native first try's predicate said so
        else:
            elapsed = elapsed_since(start)
            result = settings.target(*args, **kwargs)
            rejected = settings.predicate(result)
        details = details_of(settings, args, kwargs, tries, elapsed)
        if not rejected:
            _call(settings.on_success, {**details, "value": result})
            return result
        if tries == max_tries or (max_time is not None and elapsed >= max_time):
            _call(settings.on_giveup, {**details, "value": result})
            return result
        try:
            seconds = _next_wait(wait, result, settings.jitter, elapsed, max_time)
        except StopIteration:
            _call(settings.on_giveup, details)  # backoff's sync loop: no "value" here
            return result
        _call(settings.on_backoff, {**details, "value": result, "wait": seconds})
        time.sleep(pause_seconds(seconds))
