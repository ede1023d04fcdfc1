"""backoff's type names."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, TypedDict, TypeVar, Union


class _Details(TypedDict):
    target: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    tries: int
    elapsed: float


class Details(_Details, total=False):
    """What a handler receives: the target and its arguments, ``tries`` so far,
    ``elapsed`` seconds; ``wait`` (on_backoff), ``value`` (on_predicate) and
    ``exception`` (on_exception's on_backoff and on_giveup) when they apply."""

    wait: float
    value: Any
    exception: BaseException


T = TypeVar("T")

_CallableT = TypeVar("_CallableT", bound=Callable[..., Any])
_Handler = Union[Callable[[Details], None], Callable[[Details], Coroutine[Any, Any, None]]]
_Jitterer = Callable[[float], float]
_MaybeCallable = Union[T, Callable[[], T]]
_MaybeLogger = Union[str, logging.Logger, None]
_MaybeSequence = Union[T, Sequence[T]]
_Predicate = Callable[[T], bool]
_WaitGenerator = Callable[..., Generator[float, None, None]]
