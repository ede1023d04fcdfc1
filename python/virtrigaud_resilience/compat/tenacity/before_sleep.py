"""tenacity.before_sleep: hooks called before each sleep between attempts
(after the statistics count the coming attempt)."""

from __future__ import annotations

import traceback
import typing

from . import _utils

if typing.TYPE_CHECKING:
    from . import RetryCallState

__all__ = ["before_sleep_nothing", "before_sleep_log"]


def before_sleep_nothing(retry_state: RetryCallState) -> None:
    """Does nothing."""


def before_sleep_log(logger: _utils.LoggerProtocol, log_level: int, exc_info: bool = False,
                     sec_format: str = "%.3g") -> typing.Callable[[RetryCallState], None]:
    """Logs "Retrying <fn> in <s> seconds as it raised <Type>: <msg>." (or "as
    it returned <value>.") at ``log_level``; with ``exc_info`` the raised
    exception's traceback follows on the next lines."""

    def log_it(retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        if outcome is None:
            raise RuntimeError("log_it() called before outcome was set")
        action = retry_state.next_action
        if action is None:
            raise RuntimeError("log_it() called before next_action was set")
        error = outcome.exception() if outcome.failed else None
        if error is not None:
            why = f"raised {error.__class__.__name__}: {error}"
        else:
            why = f"returned {outcome.result()}"
        message = (f"Retrying {retry_state.get_fn_name()} in {sec_format % action.sleep} "
                   f"seconds as it {why}.")
        if exc_info and error is not None:
            lines = traceback.format_exception(type(error), error, error.__traceback__)
            message = f"{message}\n{''.join(lines).rstrip()}"
        logger.log(log_level, message)

    return log_it
