"""tenacity.before: hooks called before each attempt."""

from __future__ import annotations

import typing

from . import _utils

if typing.TYPE_CHECKING:
    from . import RetryCallState

__all__ = ["before_nothing", "before_log"]


def before_nothing(retry_state: RetryCallState) -> None:
    """Does nothing (the default)."""


def before_log(logger: _utils.LoggerProtocol,
               log_level: int) -> typing.Callable[[RetryCallState], None]:
    """Logs "Starting call to '<fn>', this is the <n>th time calling it." at ``log_level``."""

    def log_it(retry_state: RetryCallState) -> None:
        logger.log(log_level,
                   f"Starting call to '{retry_state.get_fn_name()}', this is the "
                   f"{_utils.to_ordinal(retry_state.attempt_number)} time calling it.")

    return log_it
