"""tenacity._utils: small helpers the strategies and hooks share."""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import typing
from collections.abc import Awaitable, Callable
from datetime import timedelta

__all__ = ["MAX_WAIT", "LoggerProtocol", "find_ordinal", "to_ordinal", "get_callback_name",
           "time_unit_type", "to_seconds", "is_coroutine_callable", "wrap_to_async_func",
           "override"]

_F = typing.TypeVar("_F", bound=Callable[..., typing.Any])

if sys.version_info >= (3, 12):
    from typing import override
else:
    def override(method: _F) -> _F:
        """Marks an override (PEP 698's ``__override__``); a no-op otherwise."""
        with contextlib.suppress(AttributeError, TypeError):
            method.__override__ = True  # type: ignore[attr-defined]
        return method


#: The longest wait any strategy returns by default (half of ``sys.maxsize`` seconds).
MAX_WAIT: float = sys.maxsize / 2


class LoggerProtocol(typing.Protocol):
    """What the ``*_log`` hooks need of a logger: ``log(level, msg)`` (logging,
    structlog and loguru loggers all fit)."""

    def log(self, level: int, msg: str, /, *args: typing.Any) -> typing.Any: ...


def find_ordinal(pos_num: int) -> str:
    """The English ordinal suffix of ``pos_num``: "st", "nd", "rd" or "th"."""
    if pos_num % 100 in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(pos_num % 10, "th")


def to_ordinal(pos_num: int) -> str:
    """``pos_num`` with its ordinal suffix: 1 -> "1st", 12 -> "12th"."""
    return f"{pos_num}{find_ordinal(pos_num)}"


def get_callback_name(cb: Callable[..., typing.Any]) -> str:
    """``module.qualname`` of ``cb`` (or its ``__name__``), else ``repr(cb)``."""
    name = getattr(cb, "__qualname__", None)
    if name is None:
        name = getattr(cb, "__name__", None)
    if name is None:
        return repr(cb)
    module = getattr(cb, "__module__", None)
    return f"{module}.{name}" if module else str(name)


time_unit_type = typing.Union[int, float, timedelta]


def to_seconds(time_unit: time_unit_type) -> float:
    """Seconds as a float, from a number or a ``timedelta``."""
    if isinstance(time_unit, timedelta):
        return float(time_unit.total_seconds())
    return float(time_unit)


def is_coroutine_callable(call: Callable[..., typing.Any]) -> bool:
    """True iff calling ``call`` returns a coroutine: a coroutine function, a
    ``functools.partial`` of one, or an instance whose ``__call__`` is one (a
    class is not: calling it makes an instance)."""
    if inspect.isclass(call):
        return False
    if inspect.iscoroutinefunction(call):
        return True
    target = call.func if isinstance(call, functools.partial) else getattr(call, "__call__", None)
    return inspect.iscoroutinefunction(target)


def wrap_to_async_func(call: Callable[..., typing.Any]) -> Callable[..., Awaitable[typing.Any]]:
    """``call`` itself if it is async, else an async function calling it."""
    if is_coroutine_callable(call):
        return call

    async def inner(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        return call(*args, **kwargs)

    return inner
