"""The retry loops of coroutine functions (handlers and ``giveup`` may be
async: sync ones are called, async ones awaited).

The decorated coroutine function awaits its first try directly when the
configuration allows (as the sync path); a failed first try continues in
the loop from try 2. Cancelling the awaiting task during a backoff sleep
raises ``CancelledError`` out of the call and stops the retries.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._common import (
    Settings,
    _next_wait,
    details_of,
    elapsed_since,
    is_coroutine_function,
    pause_seconds,
)
from ._sync import _BUILTIN_GENERATORS

_NOTHING = object()


def _ensure_coroutine(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``fn`` if it is a coroutine function, else an async function calling it."""
    if is_coroutine_function(fn):
        return fn

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return call


async def _call(handlers: list[Callable[..., Awaitable[Any]]], details: dict[str, Any]) -> None:
    for handler in handlers:
        await handler(details)


def _prepare(settings: Settings) -> bool:
    """Makes the handlers awaitable; returns whether the first try may skip the loop."""
    settings.on_success = [_ensure_coroutine(h) for h in settings.on_success]
    settings.on_backoff = [_ensure_coroutine(h) for h in settings.on_backoff]
    settings.on_giveup = [_ensure_coroutine(h) for h in settings.on_giveup]
    return settings.native_first_try(_BUILTIN_GENERATORS)


def retry_exception(settings: Settings) -> Any:
    """The coroutine function ``settings.target`` retried on ``settings.exception``."""
    target = settings.target
    settings.giveup = _ensure_coroutine(settings.giveup)
    fast = _prepare(settings)

    @functools.wraps(target)
    async def retry(*args: Any, **kwargs: Any) -> Any:
        if not fast:
            return await _exception_loop(settings, args, kwargs, None, None)
        started = time.monotonic()
        try:
            return await target(*args, **kwargs)
        except settings.exception as e:
            error = e
        # The loop runs outside the except block: later errors keep their own context.
        return await _exception_loop(settings, args, kwargs, error, started)

    return retry


def retry_predicate(settings: Settings) -> Any:
    """The coroutine function ``settings.target`` retried while ``settings.predicate``
    accepts its result."""
    target = settings.target
    fast = _prepare(settings)

    @functools.wraps(target)
    async def retry(*args: Any, **kwargs: Any) -> Any:
        if not fast:
            return await _predicate_loop(settings, args, kwargs, _NOTHING, None)
        started = time.monotonic()
        result = await target(*args, **kwargs)
        if not settings.predicate(result):
            return result
        return await _predicate_loop(settings, args, kwargs, result, started)

    return retry


async def _exception_loop(settings: Settings, args: tuple[Any, ...], kwargs: dict[str, Any],
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
                raise error  # the first try's exception, handled as if caught here
            result = await settings.target(*args, **kwargs)
        except settings.exception as e:
            gives_up = await settings.giveup(e)
            if gives_up or tries == max_tries or (max_time is not None and elapsed >= max_time):
                await _call(settings.on_giveup, {**details, "exception": e})
                if settings.raise_on_giveup:
                    raise
                return None
            try:
                seconds = _next_wait(wait, e, settings.jitter, elapsed, max_time)
            except StopIteration:
                await _call(settings.on_giveup, {**details, "exception": e})
                raise e  # noqa: B904 (backoff's: chained to the StopIteration)
            await _call(settings.on_backoff, {**details, "wait": seconds, "exception": e})
            await asyncio.sleep(pause_seconds(seconds))
        else:
            await _call(settings.on_success, details)
            return result


async def _predicate_loop(settings: Settings, args: tuple[Any, ...], kwargs: dict[str, Any],
                          first_result: Any, started: float | None) -> Any:
    max_tries, max_time, start, wait = settings.start(started)
    tries = 0
    while True:
        tries += 1
        if first_result is not _NOTHING:
            result, first_result, elapsed = first_result, _NOTHING, 0.0
            rejected = True
        else:
            elapsed = elapsed_since(start)
            result = await settings.target(*args, **kwargs)
            rejected = settings.predicate(result)
        details = details_of(settings, args, kwargs, tries, elapsed)
        if not rejected:
            await _call(settings.on_success, {**details, "value": result})
            return result
        if tries == max_tries or (max_time is not None and elapsed >= max_time):
            await _call(settings.on_giveup, {**details, "value": result})
            return result
        try:
            seconds = _next_wait(wait, result, settings.jitter, elapsed, max_time)
        except StopIteration:
            await _call(settings.on_giveup, {**details, "value": result})
            return result
        await _call(settings.on_backoff, {**details, "value": result, "wait": seconds})
        await asyncio.sleep(pause_seconds(seconds))
