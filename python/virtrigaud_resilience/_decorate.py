"""The one decorator behind ``@breaker`` and ``@policy``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def route_calls(fn: Callable[P, T], call: Callable[..., Any],
            call_async: Callable[..., Awaitable[Any]]) -> Callable[P, T]:
    """``fn`` wrapped so each call runs as ``call(fn, *args, **kwargs)``, or, for a
    coroutine function (or a callable object whose ``__call__`` is one), as
    ``await call_async(fn, *args, **kwargs)``; its name, docstring and
    signature are kept."""
    if is_async_callable(fn):
        afn: Any = fn

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await call_async(afn, *args, **kwargs)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        result: T = call(fn, *args, **kwargs)
        return result

    return wrapper


#: Set by ``vr.otel`` while it routes the policies' calls through Python
#: (otel/_routing.py): decorated functions then look the policy's methods up
#: at each call instead of calling the native ones bound at decoration.
policy_calls_routed = False


def route_policy_calls(fn: Callable[P, T], policy: Any) -> Callable[P, T]:
    """:func:`route_calls` for ``@policy``: ``vr.otel.instrument()`` swaps
    the policies' ``execute`` methods on their classes, and a function
    decorated before must follow. The bound methods are called while it does
    not (one global test per call); ``policy.execute`` is looked up while it does."""
    execute, execute_async = policy.execute, policy.execute_async
    if is_async_callable(fn):
        afn: Any = fn

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            if policy_calls_routed:
                return await policy.execute_async(afn, *args, **kwargs)
            return await execute_async(afn, *args, **kwargs)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        if policy_calls_routed:
            routed: T = policy.execute(fn, *args, **kwargs)
            return routed
        result: T = execute(fn, *args, **kwargs)
        return result

    return wrapper


def is_async_callable(fn: object) -> bool:
    """True iff calling ``fn`` returns a coroutine: a coroutine function, a
    ``functools.partial`` of one, or an object whose ``__call__`` is one."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or (
        not inspect.isroutine(fn) and inspect.iscoroutinefunction(getattr(fn, "__call__", None))
    )
