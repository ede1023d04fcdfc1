"""tenacity.after: hooks called after an attempt that will be retried (before
the wait and stop strategies run)."""

from __future__ import annotations

import typing

from . import _utils

if typing.TYPE_CHECKING:
    from . import RetryCallState

__all__ = ["after_nothing", "after_log"]


def after_nothing(retry_state: RetryCallState) -> None:
    """Does nothing (the default)."""


def after_log(logger: _utils.LoggerProtocol, log_level: int,
              sec_format: str = "%.3g") -> typing.Callable[[RetryCallState], None]:
    """Logs "Finished call to '<fn>' after <s>(s), this was the <n>th time
    calling it." at ``log_level`` (``?`` seconds when there is no outcome yet)."""

    def log_it(retry_state: RetryCallState) -> None:
        elapsed = retry_state.seconds_since_start
        shown = "?" if elapsed is None else sec_format % elapsed
        logger.log(log_level,
                   f"Finished call to '{retry_state.get_fn_name()}' after {shown}(s), "
                   f"this was the {_utils.to_ordinal(retry_state.attempt_number)} time "
                   f"calling it.")

    return log_it
