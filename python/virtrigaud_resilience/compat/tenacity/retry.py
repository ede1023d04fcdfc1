"""tenacity.retry: whether an attempt's outcome calls for another attempt.

A retry strategy sees every outcome (a result or an exception) and answers
True to retry. ``&`` and ``|`` combine strategies (and plain callables) into
flat :class:`retry_all` / :class:`retry_any`, evaluated in order with
short-circuit.
"""

from __future__ import annotations

import abc
import re
import typing

if typing.TYPE_CHECKING:
    from . import RetryCallState

__all__ = ["retry_base", "RetryBaseT", "retry_never", "retry_always", "retry_if_exception",
           "retry_if_exception_type", "retry_if_not_exception_type",
           "retry_unless_exception_type", "retry_if_exception_cause_type", "retry_if_result",
           "retry_if_not_result", "retry_if_exception_message",
           "retry_if_not_exception_message", "retry_any", "retry_all"]

ExceptionTypes = typing.Union[type[BaseException], tuple[type[BaseException], ...]]


def _outcome(retry_state: RetryCallState) -> typing.Any:
    outcome = retry_state.outcome
    if outcome is None:
        raise RuntimeError("__call__() called before outcome was set")
    return outcome


def _raised(outcome: typing.Any) -> BaseException:
    exception: BaseException | None = outcome.exception()
    if exception is None:
        raise RuntimeError("outcome failed but the exception is None")
    return exception


class retry_base(abc.ABC):  # noqa: N801 (tenacity's names)
    """A retry strategy: ``strategy(retry_state)`` is True to retry."""

    @abc.abstractmethod
    def __call__(self, retry_state: RetryCallState) -> bool: ...

    # The composed strategy is flat: (a & b) & c is retry_all(a, b, c). The
    # right operand decides how to join (its __rand__/__ror__), so a
    # retry_all on the right keeps its members in order too.
    def __and__(self, other: RetryBaseT) -> retry_all:
        if isinstance(other, retry_base):
            return other.__rand__(self)
        return retry_all(*_members(self, retry_all), other)

    def __rand__(self, other: RetryBaseT) -> retry_all:
        return retry_all(*_members(other, retry_all), self)

    def __or__(self, other: RetryBaseT) -> retry_any:
        if isinstance(other, retry_base):
            return other.__ror__(self)
        return retry_any(*_members(self, retry_any), other)

    def __ror__(self, other: RetryBaseT) -> retry_any:
        return retry_any(*_members(other, retry_any), self)


RetryBaseT = typing.Union[retry_base, typing.Callable[["RetryCallState"], bool]]


def _members(strategy: typing.Any, kind: type) -> tuple[typing.Any, ...]:
    """The members of ``strategy`` when it is a ``kind`` (to flatten), else itself."""
    if isinstance(strategy, kind):
        return tuple(typing.cast(typing.Any, strategy).retries)
    return (strategy,)


class _retry_never(retry_base):  # noqa: N801
    """Never retries (an explicit ``TryAgain`` still does)."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        return False


retry_never = _retry_never()


class _retry_always(retry_base):  # noqa: N801
    """Always retries, results included."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        return True


retry_always = _retry_always()


class retry_if_exception(retry_base):  # noqa: N801
    """Retries when the attempt raised and ``predicate(exception)`` is true;
    never on a result."""

    def __init__(self, predicate: typing.Callable[[BaseException], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = _outcome(retry_state)
        if outcome.failed:
            return self.predicate(_raised(outcome))
        return False


class _typed(retry_if_exception):
    """An exception-type strategy; its ``exception_types`` are checked with isinstance."""

    def __init__(self, exception_types: ExceptionTypes = Exception) -> None:
        self.exception_types = exception_types
        super().__init__(self._check)

    def _check(self, exception: BaseException) -> bool:
        raise NotImplementedError


class retry_if_exception_type(_typed):  # noqa: N801
    """Retries exceptions of ``exception_types`` (default: any ``Exception``)."""

    def _check(self, exception: BaseException) -> bool:
        return isinstance(exception, self.exception_types)


class retry_if_not_exception_type(_typed):  # noqa: N801
    """Retries exceptions that are not of ``exception_types``."""

    def _check(self, exception: BaseException) -> bool:
        return not isinstance(exception, self.exception_types)


class retry_unless_exception_type(_typed):  # noqa: N801
    """Retries every result, and exceptions not of ``exception_types``: keeps
    going until one of those is raised."""

    def _check(self, exception: BaseException) -> bool:
        return not isinstance(exception, self.exception_types)

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = _outcome(retry_state)
        if not outcome.failed:
            return True
        return self.predicate(_raised(outcome))


class retry_if_exception_cause_type(retry_base):  # noqa: N801
    """Retries when some ``__cause__`` down the raised exception's chain is of
    ``exception_types`` (a cyclic chain is walked once)."""

    def __init__(self, exception_types: ExceptionTypes = Exception) -> None:
        self.exception_cause_types = exception_types

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None:
            raise RuntimeError("__call__ called before outcome was set")
        if not outcome.failed:
            return False
        exception: BaseException | None = outcome.exception()
        visited: set[int] = set()
        while exception is not None and id(exception) not in visited:
            visited.add(id(exception))
            if isinstance(exception.__cause__, self.exception_cause_types):
                return True
            exception = exception.__cause__
        return False


class retry_if_result(retry_base):  # noqa: N801
    """Retries when the attempt returned and ``predicate(result)`` is true."""

    def __init__(self, predicate: typing.Callable[[typing.Any], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = _outcome(retry_state)
        if outcome.failed:
            return False
        return self.predicate(outcome.result())


class retry_if_not_result(retry_base):  # noqa: N801
    """Retries when the attempt returned and ``predicate(result)`` is false."""

    def __init__(self, predicate: typing.Callable[[typing.Any], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = _outcome(retry_state)
        if outcome.failed:
            return False
        return not self.predicate(outcome.result())


class retry_if_exception_message(retry_if_exception):  # noqa: N801
    """Retries exceptions whose ``str()`` equals ``message``, or matches the
    regular expression ``match`` from its start (exactly one of the two)."""

    def __init__(self, message: str | None = None,
                 match: str | re.Pattern[str] | None = None) -> None:
        name = type(self).__name__
        if message is not None and match is not None:
            raise TypeError(f"{name}() takes either 'message' or 'match', not both")
        if message is None and match is None:
            raise TypeError(f"{name}() missing 1 required argument 'message' or 'match'")
        self.message = message
        self.match: re.Pattern[str] | None = re.compile(match) if match is not None else None
        super().__init__(self._check)

    def _check(self, exception: BaseException) -> bool:
        text = str(exception)
        if self.message is not None:
            return text == self.message
        assert self.match is not None
        return self.match.match(text) is not None


class retry_if_not_exception_message(retry_if_exception_message):  # noqa: N801
    """Retries every result, and exceptions whose message does not match: keeps
    going until the message appears."""

    def _check(self, exception: BaseException) -> bool:
        return not super()._check(exception)

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = _outcome(retry_state)
        if not outcome.failed:
            return True
        return self.predicate(_raised(outcome))


class retry_any(retry_base):  # noqa: N801
    """Retries when any of ``retries`` says so (in order, short-circuit)."""

    def __init__(self, *retries: RetryBaseT) -> None:
        self.retries = retries

    def __call__(self, retry_state: RetryCallState) -> bool:
        return any(strategy(retry_state) for strategy in self.retries)

    def __ror__(self, other: RetryBaseT) -> retry_any:
        return retry_any(*_members(other, retry_any), *self.retries)


class retry_all(retry_base):  # noqa: N801
    """Retries when all of ``retries`` say so (in order, short-circuit)."""

    def __init__(self, *retries: RetryBaseT) -> None:
        self.retries = retries

    def __call__(self, retry_state: RetryCallState) -> bool:
        return all(strategy(retry_state) for strategy in self.retries)

    def __rand__(self, other: RetryBaseT) -> retry_all:
        return retry_all(*_members(other, retry_all), *self.retries)
