"""tenacity.asyncio.retry: retry strategies whose predicates are awaited."""

from __future__ import annotations

import abc
import typing

from .. import _utils
from ..retry import retry_base

if typing.TYPE_CHECKING:
    from .. import RetryCallState

__all__ = ["async_retry_base", "RetryBaseT", "retry_if_exception", "retry_if_result",
           "retry_any", "retry_all"]


class async_retry_base(retry_base):  # noqa: N801 (tenacity's names)
    """An async retry strategy: ``await strategy(retry_state)`` is True to retry.
    ``&`` and ``|`` make async compositions (which await async members and
    call sync ones)."""

    @abc.abstractmethod
    async def __call__(self, retry_state: RetryCallState) -> bool:  # type: ignore[override]
        ...

    def __and__(self, other: typing.Any) -> retry_all:  # type: ignore[override]
        return retry_all(self, other)

    def __rand__(self, other: typing.Any) -> retry_all:  # type: ignore[override]
        return retry_all(other, self)

    def __or__(self, other: typing.Any) -> retry_any:  # type: ignore[override]
        return retry_any(self, other)

    def __ror__(self, other: typing.Any) -> retry_any:  # type: ignore[override]
        return retry_any(other, self)


RetryBaseT = typing.Union[async_retry_base,
                          typing.Callable[["RetryCallState"], typing.Awaitable[bool]]]


def _outcome(retry_state: RetryCallState) -> typing.Any:
    if retry_state.outcome is None:
        raise RuntimeError("__call__() called before outcome was set")
    return retry_state.outcome


class retry_if_exception(async_retry_base):  # noqa: N801
    """Retries when the attempt raised and ``await predicate(exception)`` is true."""

    def __init__(self, predicate: typing.Callable[[BaseException],
                                                  typing.Awaitable[bool]]) -> None:
        self.predicate = predicate

    async def __call__(self, retry_state: RetryCallState) -> bool:  # type: ignore[override]
        outcome = _outcome(retry_state)
        if not outcome.failed:
            return False
        exception = outcome.exception()
        if exception is None:
            raise RuntimeError("outcome failed but the exception is None")
        return await self.predicate(exception)


class retry_if_result(async_retry_base):  # noqa: N801
    """Retries when the attempt returned and ``await predicate(result)`` is true."""

    def __init__(self, predicate: typing.Callable[[typing.Any], typing.Awaitable[bool]]) -> None:
        self.predicate = predicate

    async def __call__(self, retry_state: RetryCallState) -> bool:  # type: ignore[override]
        outcome = _outcome(retry_state)
        if outcome.failed:
            return False
        return await self.predicate(outcome.result())


class retry_any(async_retry_base):  # noqa: N801
    """Retries when any of ``retries`` says so (in order, short-circuit)."""

    def __init__(self, *retries: typing.Any) -> None:
        self.retries = retries

    async def __call__(self, retry_state: RetryCallState) -> bool:  # type: ignore[override]
        verdict: typing.Any = False
        for strategy in self.retries:
            verdict = await _utils.wrap_to_async_func(strategy)(retry_state)
            if verdict:
                break
        return typing.cast(bool, verdict)

    def __ror__(self, other: typing.Any) -> retry_any:  # type: ignore[override]
        if isinstance(other, retry_any):
            return retry_any(*other.retries, *self.retries)
        return retry_any(other, *self.retries)


class retry_all(async_retry_base):  # noqa: N801
    """Retries when all of ``retries`` say so (in order, short-circuit)."""

    def __init__(self, *retries: typing.Any) -> None:
        self.retries = retries

    async def __call__(self, retry_state: RetryCallState) -> bool:  # type: ignore[override]
        verdict: typing.Any = True
        for strategy in self.retries:
            verdict = await _utils.wrap_to_async_func(strategy)(retry_state)
            if not verdict:
                break
        return typing.cast(bool, verdict)

    def __rand__(self, other: typing.Any) -> retry_all:  # type: ignore[override]
        if isinstance(other, retry_all):
            return retry_all(*other.retries, *self.retries)
        return retry_all(other, *self.retries)
