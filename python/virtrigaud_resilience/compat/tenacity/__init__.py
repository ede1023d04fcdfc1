"""Drop-in ``tenacity`` (9.x) on virtrigaud-resilience's native core.

``from virtrigaud_resilience.compat import tenacity`` and keep every other
line: the same modules (``tenacity.stop``, ``.wait``, ``.retry``,
``.before``, ``.after``, ``.before_sleep``, ``.nap``, ``.asyncio``,
``._utils``, ``.tornadoweb`` where tornado is installed), classes,
strategies, hooks, statistics, and tenacity's order of hooks, sleeps and
statistics updates (see ``_retrying``). A decorated function's first attempt
runs in one native call when the configuration allows it (no ``before``
hook, a retry strategy that does not look at results): a successful call
costs nanoseconds instead of tenacity's microseconds; any failure continues
in Python with tenacity's semantics.

Differences from tenacity (docs/migrating.md has the full list): a
decorated sync function is a native function object (callable, binds as a
method, pickles by name, has ``__wrapped__`` and the rest) rather than a
``types.FunctionType``; a native first attempt reads the monotonic clock
natively (``statistics["start_time"]`` ignores a patched
``time.monotonic``); constructors of strategies reject NaN and values
``float()`` cannot read, when they are made.
"""

from __future__ import annotations

import sys
import types
import typing
import warnings
from collections.abc import Callable

from . import _utils
from ._retrying import (
    NO_RESULT,
    AttemptManager,
    BaseAction,
    BaseRetrying,
    DoAttempt,
    DoSleep,
    Future,
    IterState,
    RetryAction,
    RetryCallState,
    RetryError,
    Retrying,
    TryAgain,
    WrappedFn,
    WrappedFnReturnT,
)
from .after import after_log, after_nothing
from .before import before_log, before_nothing
from .before_sleep import before_sleep_log, before_sleep_nothing
from .nap import sleep, sleep_using_event
from .retry import (
    retry_all,
    retry_always,
    retry_any,
    retry_base,
    retry_if_exception,
    retry_if_exception_cause_type,
    retry_if_exception_message,
    retry_if_exception_type,
    retry_if_not_exception_message,
    retry_if_not_exception_type,
    retry_if_not_result,
    retry_if_result,
    retry_never,
    retry_unless_exception_type,
)
from .stop import (
    stop_after_attempt,
    stop_after_delay,
    stop_all,
    stop_any,
    stop_before_delay,
    stop_never,
    stop_when_event_set,
)
from .wait import (
    wait_chain,
    wait_combine,
    wait_exception,
    wait_exponential,
    wait_exponential_jitter,
    wait_fixed,
    wait_full_jitter,
    wait_incrementing,
    wait_none,
    wait_random,
    wait_random_exponential,
)

if typing.TYPE_CHECKING:
    from .tornadoweb import TornadoRetrying

P = typing.ParamSpec("P")
R = typing.TypeVar("R")

_MISSING: typing.Any = object()


def __getattr__(name: str) -> typing.Any:
    # tornado is optional and slow to import: looked up on first use. Tests
    # force the path without it by setting ``tenacity.tornado = None``.
    if name == "tornado":
        module: types.ModuleType | None
        try:
            import tornado.gen  # tornado.gen is what retry() asks

            module = sys.modules["tornado"]
        except ImportError:
            module = None
        globals()["tornado"] = module
        return module
    if name == "TornadoRetrying" and _has_tornado():
        from .tornadoweb import TornadoRetrying

        return TornadoRetrying
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _has_tornado() -> bool:
    module = globals().get("tornado", _MISSING)
    if module is _MISSING:
        module = __getattr__("tornado")
    return module is not None


def _is_tornado_coroutine(f: object) -> bool:
    if not getattr(f, "__tornado_coroutine__", False) or not _has_tornado():
        return False
    gen = globals()["tornado"].gen
    return hasattr(gen, "is_coroutine_function") and bool(gen.is_coroutine_function(f))


class _RetryDecorated(typing.Protocol[P, R]):
    """A function decorated with ``@retry``: callable as the original, with
    ``.retry``, ``.retry_with(...)`` and ``.statistics``."""

    retry: BaseRetrying
    statistics: dict[str, typing.Any]
    __wrapped__: _RetryDecorated[P, R]

    def retry_with(self, *args: typing.Any, **kwargs: typing.Any) -> _RetryDecorated[P, R]: ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @typing.overload
    def __get__(self, instance: None, owner: type | None = None) -> _RetryDecorated[P, R]: ...

    @typing.overload
    def __get__(self, instance: object,
                owner: type | None = None) -> _RetryDecorated[..., R]: ...


@typing.overload
def retry(func: Callable[P, R]) -> _RetryDecorated[P, R]: ...


@typing.overload
def retry(
    *dargs: typing.Any, **dkw: typing.Any
) -> Callable[[Callable[P, R]], _RetryDecorated[P, R]]: ...


def retry(*dargs: typing.Any, **dkw: typing.Any) -> typing.Any:
    """Decorates a function with retries: ``@retry`` or ``@retry(stop=..., ...)``
    (the arguments of :class:`Retrying`). Coroutine functions (or any function
    with an async ``sleep=``) get an ``AsyncRetrying``, tornado coroutines a
    ``TornadoRetrying``, everything else a :class:`Retrying`."""
    if len(dargs) == 1 and callable(dargs[0]):
        return retry()(dargs[0])

    def wrap(f: Callable[P, R]) -> _RetryDecorated[P, R]:
        if isinstance(f, retry_base):
            warnings.warn(
                f"Got retry_base instance ({f.__class__.__name__}) as callable argument, "
                f"this will probably hang indefinitely (did you mean "
                f"retry={f.__class__.__name__}(...)?)", stacklevel=2)
        sleep_ = dkw.get("sleep")
        controller: BaseRetrying
        if _utils.is_coroutine_callable(f) or (
                sleep_ is not None and _utils.is_coroutine_callable(sleep_)):
            controller = AsyncRetrying(*dargs, **dkw)
        elif _is_tornado_coroutine(f):
            from .tornadoweb import TornadoRetrying

            controller = TornadoRetrying(*dargs, **dkw)
        else:
            controller = Retrying(*dargs, **dkw)
        return typing.cast(_RetryDecorated[P, R], controller.wraps(f))

    return wrap


from . import asyncio  # noqa: E402 (needs the names above)
from .asyncio import AsyncRetrying  # noqa: E402

__all__ = [
    "NO_RESULT", "AsyncRetrying", "AttemptManager", "BaseAction", "BaseRetrying", "DoAttempt",
    "DoSleep", "Future", "IterState", "RetryAction", "RetryCallState", "RetryError", "Retrying",
    "TryAgain", "WrappedFn", "WrappedFnReturnT", "after_log", "after_nothing", "before_log",
    "before_nothing", "before_sleep_log", "before_sleep_nothing", "retry", "retry_all",
    "retry_always", "retry_any", "retry_base", "retry_if_exception",
    "retry_if_exception_cause_type", "retry_if_exception_message", "retry_if_exception_type",
    "retry_if_not_exception_message", "retry_if_not_exception_type", "retry_if_not_result",
    "retry_if_result", "retry_never", "retry_unless_exception_type", "sleep",
    "sleep_using_event", "stop_after_attempt", "stop_after_delay", "stop_all", "stop_any",
    "stop_before_delay", "stop_never", "stop_when_event_set", "wait_chain", "wait_combine",
    "wait_exception", "wait_exponential", "wait_exponential_jitter", "wait_fixed",
    "wait_full_jitter", "wait_incrementing", "wait_none", "wait_random",
    "wait_random_exponential",
]
