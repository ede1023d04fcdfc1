"""What the sync and async retry loops share: configuration, waits, handlers, logs."""

from __future__ import annotations

import asyncio
import datetime
import functools
import inspect
import logging
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Generator, Iterable
from typing import Any

from ... import _testing_switch, _validate
from ._typing import Details

# The 'backoff' logger gets a NullHandler and level INFO, as backoff's: its
# default handlers log backoffs at INFO and give-ups at ERROR there.
_logger = logging.getLogger("backoff")
_logger.addHandler(logging.NullHandler())
_logger.setLevel(logging.INFO)


def _maybe_call(f: Any, *args: Any, **kwargs: Any) -> Any:
    """``f(*args, **kwargs)`` for a callable that accepts that call, else ``f``
    itself (backoff evaluates callable settings at each call this way)."""
    if not callable(f):
        return f
    try:
        return f(*args, **kwargs)
    except TypeError:
        return f


def _init_wait_gen(wait_gen: Callable[..., Generator[float, Any, None]],
                   wait_gen_kwargs: dict[str, Any]) -> Generator[float, Any, None]:
    """A primed wait generator, its callable keyword arguments evaluated now."""
    kwargs = {key: _maybe_call(value) for key, value in wait_gen_kwargs.items()}
    generator = wait_gen(**kwargs)
    generator.send(None)
    return generator


def _next_wait(wait: Generator[float, Any, None], send_value: Any,
               jitter: Callable[..., float] | None, elapsed: float,
               max_time: float | None) -> float:
    """The next sleep: the generator's value for ``send_value``, jittered, and
    never past ``max_time`` seconds from the start (StopIteration when the
    generator is exhausted)."""
    value = wait.send(send_value)
    try:
        seconds = jitter(value) if jitter is not None else value
    except TypeError:
        warnings.warn("Nullary jitter function signature is deprecated. Use unary signature "
                      "accepting a wait value in seconds and returning a jittered version of it.",
                      DeprecationWarning, stacklevel=2)
        seconds = value + jitter()  # type: ignore[misc]  # a TypeError from jitter(value)
    if max_time is not None:
        seconds = min(seconds, max_time - elapsed)
    return seconds


def _prepare_logger(logger: Any) -> Any:
    return logging.getLogger(logger) if isinstance(logger, str) else logger


def _config_handlers(user_handlers: Any, *, default_handler: Callable[..., None] | None = None,
                     logger: Any = None, log_level: int | None = None) -> list[Any]:
    """The handlers to call: the default log handler bound to ``logger`` (unless
    it is None), then the user's (one callable, or an iterable of them)."""
    handlers: list[Any] = []
    if logger is not None:
        assert default_handler is not None and log_level is not None
        handlers.append(functools.partial(default_handler, logger=logger, log_level=log_level))
    if user_handlers is None:
        return handlers
    if hasattr(user_handlers, "__iter__"):
        handlers.extend(user_handlers)
    else:
        handlers.append(user_handlers)
    return handlers


def _describe_outcome(details: Details) -> Any:
    """The exception being handled (``Type: message``), else the rejected value."""
    kind, error, _ = sys.exc_info()
    if error is not None:
        return traceback.format_exception_only(kind, error)[-1].rstrip("\n")
    return details["value"]  # the value itself: the message's %s formats it


def _log_backoff(details: Details, logger: Any, log_level: int) -> None:
    """Logs "Backing off <fn>(...) for <wait>s (<exception or value>)"."""
    logger.log(log_level, "Backing off %s(...) for %.1fs (%s)", details["target"].__name__,
               details["wait"], _describe_outcome(details))


def _log_giveup(details: Details, logger: Any, log_level: int) -> None:
    """Logs "Giving up <fn>(...) after <n> tries (<exception or value>)"."""
    logger.log(log_level, "Giving up %s(...) after %d tries (%s)", details["target"].__name__,
               details["tries"], _describe_outcome(details))


class Settings:
    """One decorator's configuration, validated, handlers assembled."""

    __slots__ = ("target", "wait_gen", "wait_gen_kwargs", "max_tries", "max_time", "jitter",
                 "on_success", "on_backoff", "on_giveup", "giveup", "raise_on_giveup",
                 "exception", "predicate")

    def __init__(self, owner: str, target: Callable[..., Any], wait_gen: Any,
                 wait_gen_kwargs: dict[str, Any], *, max_tries: Any, max_time: Any, jitter: Any,
                 on_success: Any, on_backoff: Any, on_giveup: Any, logger: Any,
                 backoff_log_level: Any, giveup_log_level: Any) -> None:
        check_settings(owner, wait_gen=wait_gen, max_tries=max_tries, max_time=max_time,
                       jitter=jitter, logger=logger, backoff_log_level=backoff_log_level,
                       giveup_log_level=giveup_log_level)
        logger = _prepare_logger(logger)
        self.target = target
        self.wait_gen = wait_gen
        self.wait_gen_kwargs = wait_gen_kwargs
        self.max_tries = max_tries
        self.max_time = max_time
        self.jitter = jitter
        self.on_success = _handlers(owner, "on_success", _config_handlers(on_success))
        self.on_backoff = _handlers(owner, "on_backoff", _config_handlers(
            on_backoff, default_handler=_log_backoff, logger=logger,
            log_level=backoff_log_level))
        self.on_giveup = _handlers(owner, "on_giveup", _config_handlers(
            on_giveup, default_handler=_log_giveup, logger=logger, log_level=giveup_log_level))
        self.giveup: Any = None
        self.raise_on_giveup = True
        self.exception: Any = ()
        self.predicate: Any = None

    def native_first_try(self, builtin_generators: Iterable[object]) -> bool:
        """Whether nothing the user supplied must run before or after a
        successful first try: no on_success handler, no callable evaluated
        per call (max_tries, max_time, wait generator arguments), no max_time
        (it needs the start time before the try), a built-in wait generator
        (made and primed per call: its body runs no user code)."""
        return (not self.on_success and not callable(self.max_tries) and self.max_time is None
                and self.wait_gen in tuple(builtin_generators)
                and not any(callable(value) for value in self.wait_gen_kwargs.values()))

    def start(self, started: float | None) -> tuple[Any, Any, datetime.datetime,
                                                     Generator[float, Any, None]]:
        """What a call evaluates before its first try: (max_tries, max_time,
        start, wait generator). ``started``: the monotonic time a native
        first try began (its wall-clock start is reconstructed from it)."""
        max_tries = _tries_allowed(_maybe_call(self.max_tries))
        max_time = _maybe_call(self.max_time)
        if started is None:
            start = datetime.datetime.now()
        else:
            start = datetime.datetime.now() - datetime.timedelta(
                seconds=time.monotonic() - started)
        return max_tries, max_time, start, _init_wait_gen(self.wait_gen, self.wait_gen_kwargs)


def _tries_allowed(max_tries: Any) -> Any:
    """``max_tries``, capped while ``vr.testing`` caps attempts (None or 0:
    backoff's "no limit", which the cap replaces)."""
    if _testing_switch.attempts is None:
        return max_tries
    return _testing_switch.capped(max_tries) if max_tries else _testing_switch.attempts


def pause_seconds(seconds: float) -> float:
    """A backoff sleep's real length: 0 while ``vr.testing.set(sleep=False)`` holds."""
    return _testing_switch.waited(seconds)


def elapsed_since(start: datetime.datetime) -> float:
    return (datetime.datetime.now() - start).total_seconds()


def details_of(settings: Settings, args: tuple[Any, ...], kwargs: dict[str, Any], tries: int,
               elapsed: float) -> dict[str, Any]:
    return {"target": settings.target, "args": args, "kwargs": kwargs, "tries": tries,
            "elapsed": elapsed}


def check_settings(owner: str, *, wait_gen: Any, max_tries: Any, max_time: Any, jitter: Any,
                   logger: Any, backoff_log_level: Any, giveup_log_level: Any) -> None:
    """Refuses, when decorating, settings that could never work (the error
    would otherwise come at the first failure, in the middle of an outage)."""
    if not callable(wait_gen):
        raise TypeError(f"{owner} wait_gen must be a generator function such as backoff.expo, "
                        f"got {type(wait_gen).__name__} {wait_gen!r}")
    if max_tries is not None and not callable(max_tries):
        if isinstance(max_tries, bool) or not isinstance(max_tries, int):
            raise TypeError(f"{owner} max_tries must be an int, a callable or None, "
                            f"got {type(max_tries).__name__} {max_tries!r}")
        if max_tries < 0:
            raise ValueError(f"{owner} max_tries must be >= 0, got {max_tries!r}")
    if max_time is not None and not callable(max_time):
        if isinstance(max_time, bool):
            raise TypeError(f"{owner} max_time must be a number of seconds, a callable or "
                            f"None, got bool {max_time!r}")
        _validate.float_like(owner, "max_time", max_time)
    if jitter is not None and not callable(jitter):
        raise TypeError(f"{owner} jitter must be callable or None, "
                        f"got {type(jitter).__name__} {jitter!r}")
    if logger is not None and not isinstance(logger, str) and not callable(
            getattr(logger, "log", None)):
        raise TypeError(f"{owner} logger must be a logger name, a logger or None, "
                        f"got {type(logger).__name__} {logger!r}")
    for field, level in (("backoff_log_level", backoff_log_level),
                         ("giveup_log_level", giveup_log_level)):
        if isinstance(level, bool) or not isinstance(level, int):
            raise TypeError(f"{owner} {field} must be an int logging level, "
                            f"got {type(level).__name__} {level!r}")


def is_coroutine_function(fn: Any) -> bool:
    """``asyncio.iscoroutinefunction`` (what backoff asks), without its
    deprecation warning on Python 3.14: a coroutine function, or an object
    marked as one (``AsyncMock``)."""
    marker = getattr(asyncio.coroutines, "_is_coroutine", None)
    return inspect.iscoroutinefunction(fn) or (
        marker is not None and getattr(fn, "_is_coroutine", None) is marker)


def check_exception(owner: str, exception: Any) -> None:
    members = exception if isinstance(exception, tuple) else (exception,)
    for member in members:
        if not (isinstance(member, type) and issubclass(member, BaseException)):
            raise TypeError(f"{owner} exception must be an exception type or a tuple of them, "
                            f"got {exception!r}")


def check_callable(owner: str, field: str, value: Any) -> None:
    if not callable(value):
        raise TypeError(f"{owner} {field} must be callable, "
                        f"got {type(value).__name__} {value!r}")


def _handlers(owner: str, field: str, handlers: list[Any]) -> list[Any]:
    for handler in handlers:
        check_callable(owner, field, handler)
    return handlers
