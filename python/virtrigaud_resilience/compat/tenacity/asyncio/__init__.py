"""tenacity.asyncio: ``AsyncRetrying`` and the async retry strategies.

A decorated coroutine function stays one (``inspect.iscoroutinefunction``).
Its first attempt is awaited directly, with the statistics reset in place,
when the configuration allows (as the sync path, see ``_plan``); Python's
retry loop takes over from a failed first attempt. Cancelling the awaiting
task during a backoff sleep raises ``CancelledError`` out of the call and
stops the retries.
"""

from __future__ import annotations

import functools
import sys
import time
import typing
from collections.abc import Awaitable, Callable

from ...._native import MODE_NATIVE, MODE_PASSTHROUGH, MODE_PYTHON
from .. import _plan, _utils
from .._retrying import (
    _BEGIN_STATISTICS,
    WRAPPER_ASSIGNMENTS,
    AttemptManager,
    BaseRetrying,
    DoAttempt,
    DoSleep,
    RetryCallState,
    RetryError,
)
from ..after import after_nothing
from ..before import before_nothing
from ..retry import retry_all as _sync_retry_all
from ..retry import retry_any as _sync_retry_any
from ..retry import retry_if_exception_type
from ..stop import StopBaseT, stop_never
from ..wait import WaitBaseT, wait_none
from .retry import RetryBaseT, retry_all, retry_any, retry_if_exception, retry_if_result

__all__ = ["AsyncRetrying", "WrappedFn", "retry_all", "retry_any", "retry_if_exception",
           "retry_if_result"]

WrappedFn = typing.TypeVar("WrappedFn", bound=Callable[..., Awaitable[typing.Any]])
WrappedFnReturnT = typing.TypeVar("WrappedFnReturnT")

#: How an AsyncRetrying evaluates strategies: its async ones are awaited.
_ASYNC_KINDS = _plan.Kinds(_plan.SYNC.blind + (retry_if_exception,), (retry_any,), (retry_all,))
del _sync_retry_all, _sync_retry_any


def _portable_async_sleep(seconds: float) -> Awaitable[None]:
    """``trio.sleep`` under trio, else ``asyncio.sleep`` (looked up at each call)."""
    if "trio" in sys.modules:  # otherwise trio cannot be the running library
        import sniffio
        import trio

        if sniffio.current_async_library() == "trio":
            return typing.cast(Awaitable[None], trio.sleep(seconds))
    import asyncio

    return asyncio.sleep(seconds)


class _Plan:
    """How an async decorated function runs its calls (a RetryCall's plan, in Python)."""

    __slots__ = ("mode", "retry_on", "__weakref__")

    def __init__(self) -> None:
        self.mode = MODE_PYTHON
        self.retry_on: tuple[type[BaseException], ...] | None = None

    def _configure(self, mode: int, retry_on: tuple[type[BaseException], ...] | None,
                   check: object) -> None:
        self.mode, self.retry_on = mode, retry_on


class AsyncRetrying(BaseRetrying):
    """Retries coroutine functions (and sync ones, with an async ``sleep``):
    ``await retrying(fn, *args)``, ``async for attempt in retrying: with attempt:``."""

    def __init__(
        self,
        sleep: Callable[[int | float], Awaitable[None] | None] = _portable_async_sleep,
        stop: StopBaseT = stop_never,
        wait: WaitBaseT = wait_none(),
        retry: typing.Any = retry_if_exception_type(),
        before: Callable[[RetryCallState], Awaitable[None] | None] | None = before_nothing,
        after: Callable[[RetryCallState], Awaitable[None] | None] | None = after_nothing,
        before_sleep: Callable[[RetryCallState], Awaitable[None] | None] | None = None,
        reraise: bool = False,
        retry_error_cls: type[RetryError] = RetryError,
        retry_error_callback: Callable[[RetryCallState], typing.Any] | None = None,
        name: str | None = None,
        enabled: bool = True,
    ) -> None:
        super().__init__(sleep=sleep, stop=stop, wait=wait, retry=retry,  # type: ignore[arg-type]
                         before=before, after=after, before_sleep=before_sleep, reraise=reraise,
                         retry_error_cls=retry_error_cls,
                         retry_error_callback=retry_error_callback, name=name, enabled=enabled)

    async def __call__(  # type: ignore[override]
        self, fn: Callable[..., typing.Any], *args: typing.Any, **kwargs: typing.Any
    ) -> typing.Any:
        is_async = _utils.is_coroutine_callable(fn)
        if not self.enabled:
            return await fn(*args, **kwargs) if is_async else fn(*args, **kwargs)
        self.begin()
        retry_state = RetryCallState(retry_object=self, fn=fn, args=args, kwargs=kwargs)
        return await self._run_async(retry_state, is_async)

    async def _continue_async(self, fn: Callable[..., typing.Any], is_async: bool,
                              args: tuple[typing.Any, ...], kwargs: dict[str, typing.Any],
                              error: BaseException, started: float) -> typing.Any:
        """Goes on from a first attempt that raised ``error`` (statistics begun at ``started``)."""
        retry_state = RetryCallState(retry_object=self, fn=fn, args=args, kwargs=kwargs)
        retry_state.start_time = started
        retry_state.set_exception((type(error), error, error.__traceback__))
        return await self._run_async(retry_state, is_async)

    async def _run_async(self, retry_state: RetryCallState, is_async: bool) -> typing.Any:
        fn = typing.cast(Callable[..., typing.Any], retry_state.fn)
        while True:
            step = await self.iter(retry_state=retry_state)
            if isinstance(step, DoAttempt):
                try:
                    if is_async:
                        result = await fn(*retry_state.args, **retry_state.kwargs)
                    else:
                        result = fn(*retry_state.args, **retry_state.kwargs)
                except BaseException:
                    retry_state.set_exception(sys.exc_info())  # type: ignore[arg-type]
                else:
                    retry_state.set_result(result)
            elif isinstance(step, DoSleep):
                retry_state.prepare_for_next_attempt()
                await self.sleep(step)  # type: ignore[misc]  # an async sleep here
            else:
                return step

    async def iter(self, retry_state: RetryCallState) -> typing.Any:
        """Decides the next step, awaiting async strategies and hooks."""
        steps = self._decide(retry_state)
        answer: typing.Any = None
        while True:
            try:
                hook = steps.send(answer)
            except StopIteration as decided:
                return decided.value
            answer = await _utils.wrap_to_async_func(hook)(retry_state)

    def __iter__(self) -> typing.NoReturn:
        raise TypeError("AsyncRetrying object is not iterable")

    def __aiter__(self) -> AsyncRetrying:
        if self.enabled:
            self.begin()
        else:
            self._disabled_iter_done = False
        self._retry_state = RetryCallState(self, fn=None, args=(), kwargs={})
        return self

    async def __anext__(self) -> AttemptManager:
        if not self.enabled:
            if self._disabled_iter_done:
                outcome = self._retry_state.outcome
                if outcome is not None and outcome.failed:
                    raise typing.cast(BaseException, outcome.exception())
                raise StopAsyncIteration
            self._disabled_iter_done = True
            return AttemptManager(retry_state=self._retry_state)
        while True:
            step = await self.iter(retry_state=self._retry_state)
            if isinstance(step, DoAttempt):
                return AttemptManager(retry_state=self._retry_state)
            if isinstance(step, DoSleep):
                self._retry_state.prepare_for_next_attempt()
                await self.sleep(step)  # type: ignore[misc]  # an async sleep here
            else:
                raise StopAsyncIteration

    def _native_plan(self) -> tuple[int, tuple[type[BaseException], ...] | None]:
        return _plan.native_plan(self, AsyncRetrying, _ASYNC_KINDS)

    def _begin_in_place(self, stats: dict[str, typing.Any]) -> float:
        """begin() on a decorated function's statistics, without a copy."""
        stats.clear()
        started = time.monotonic()
        stats["start_time"] = started
        for key, value in _BEGIN_STATISTICS:
            stats[key] = value
        self._local.statistics = stats
        return started

    def wraps(self, fn: Callable[..., typing.Any]) -> typing.Any:
        """``fn`` retried under this controller, as a coroutine function."""
        is_async = _utils.is_coroutine_callable(fn)
        plan = _Plan()

        @functools.wraps(fn, WRAPPER_ASSIGNMENTS)
        async def async_wrapped(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            mode = plan.mode
            if mode == MODE_PASSTHROUGH:
                return await fn(*args, **kwargs)
            stats = async_wrapped.statistics  # type: ignore[attr-defined]
            if mode == MODE_NATIVE:
                started = self._begin_in_place(stats)
                try:
                    if is_async:
                        return await fn(*args, **kwargs)
                    return fn(*args, **kwargs)
                except BaseException as exc:
                    if plan.retry_on is not None and not isinstance(exc, plan.retry_on):
                        raise  # not retryable: as the strategy would decide
                    error = exc
                # Retry outside the except block: later errors keep their own context.
                copy = self.copy()
                copy._local.statistics = stats
                return await copy._continue_async(fn, is_async, args, kwargs, error, started)
            copy = self.copy()
            stats.clear()
            copy._local.statistics = stats
            self._local.statistics = stats
            return await copy(fn, *args, **kwargs)

        self._decorate(async_wrapped, fn)
        self._decorated_by(plan)
        return async_wrapped
