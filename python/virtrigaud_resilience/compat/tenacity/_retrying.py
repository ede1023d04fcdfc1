"""The retry controller (``Retrying``) and the state of one retried call.

What happens after an attempt, in order (tenacity's order):

1. the retry strategy decides (skipped for an explicit ``TryAgain``); no
   retry: the result is returned, or the exception raised;
2. ``after(retry_state)``;
3. the wait strategy: ``retry_state.upcoming_sleep``;
4. ``statistics["delay_since_first_attempt"]``, then the stop strategy;
   stop: ``retry_error_callback(retry_state)``'s value is returned, or a
   ``RetryError`` is raised from the last exception (with ``reraise``: the
   last exception itself);
5. ``retry_state.next_action``, ``idle_for`` and ``statistics["idle_for"]``
   grow by the sleep, ``statistics["attempt_number"]`` by one;
6. ``before_sleep(retry_state)``, then the sleep; ``before(retry_state)``
   precedes every attempt.

The decision procedure is written once, as a generator that yields each
strategy or hook it needs called (:meth:`BaseRetrying._decide`); the sync
:meth:`BaseRetrying.iter` calls them, ``AsyncRetrying.iter`` awaits the async
ones.

The decorated function's first attempt is native (``_core.RetryCall``):
tenacity's ``begin()`` statistics and the call happen in one native
crossing, and Python takes over only when the attempt raised an exception
the retry strategy may retry, or when a user callable must see the attempt
(a ``before`` hook, a strategy that looks at results). See :mod:`._plan`.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import threading
import time
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from concurrent import futures

from ... import _core, _testing_switch
from ..._native import RESUME_NOT_RUN
from . import _plan, _utils
from .after import after_nothing
from .before import before_nothing
from .nap import sleep as _default_sleep
from .retry import retry_if_exception_type
from .stop import StopBaseT, stop_never
from .wait import WaitBaseT, wait_none

if typing.TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["IterState", "TryAgain", "NO_RESULT", "DoAttempt", "DoSleep", "BaseAction",
           "RetryAction", "RetryError", "AttemptManager", "BaseRetrying", "Retrying", "Future",
           "RetryCallState", "WrappedFn", "WrappedFnReturnT"]

WrappedFnReturnT = typing.TypeVar("WrappedFnReturnT")
WrappedFn = typing.TypeVar("WrappedFn", bound=Callable[..., typing.Any])
Hook = Callable[["RetryCallState"], typing.Any]

#: What functools.wraps copies onto a decorated function (defaults too, as tenacity).
WRAPPER_ASSIGNMENTS = functools.WRAPPER_ASSIGNMENTS + ("__defaults__", "__kwdefaults__")

#: tenacity's statistics after begin(), besides "start_time" (the monotonic clock).
_BEGIN_STATISTICS = (("attempt_number", 1), ("idle_for", 0), ("delay_since_first_attempt", 0))


@dataclasses.dataclass(slots=True)
class IterState:
    """What the last ``iter()`` decided: the strategies and hooks it ran
    (``actions``, in order) and their verdicts."""

    actions: list[Callable[[RetryCallState], typing.Any]] = dataclasses.field(
        default_factory=list)
    retry_run_result: bool = False
    stop_run_result: bool = False
    is_explicit_retry: bool = False

    def reset(self) -> None:
        self.actions = []
        self.retry_run_result = False
        self.stop_run_result = False
        self.is_explicit_retry = False


class TryAgain(Exception):
    """Raise it from the retried code to retry whatever the retry strategy says."""


#: A placeholder for "no result".
NO_RESULT = object()


class DoAttempt:
    """``iter()``'s answer: make an attempt now."""


class DoSleep(float):
    """``iter()``'s answer: sleep this many seconds, then attempt again."""


class BaseAction:
    """A decision about the next step; ``REPR_FIELDS`` are shown by repr()."""

    REPR_FIELDS: typing.ClassVar[typing.Sequence[str]] = ()
    NAME: typing.ClassVar[str | None] = None

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.REPR_FIELDS)
        return f"{self.__class__.__name__}({fields})"

    def __str__(self) -> str:
        return repr(self)


class RetryAction(BaseAction):
    """The next step is a retry after ``sleep`` seconds (``retry_state.next_action``)."""

    REPR_FIELDS: typing.ClassVar[typing.Sequence[str]] = ("sleep",)
    NAME: typing.ClassVar[str | None] = "retry"

    def __init__(self, sleep: typing.SupportsFloat) -> None:
        self.sleep = float(sleep)


_unset: typing.Any = object()


def _first_set(first: typing.Any, second: typing.Any) -> typing.Any:
    return second if first is _unset else first


def _means_no_wait(wait: object) -> bool:
    # None and 0 (sum() of no strategies) mean "no wait"; a falsy strategy is
    # still a strategy, so this is not a truth test.
    return wait is None or (isinstance(wait, (int, float)) and wait == 0)


class Future(futures.Future[typing.Any]):
    """One attempt's outcome (a ``concurrent.futures.Future``, already done)."""

    def __init__(self, attempt_number: int) -> None:
        super().__init__()
        self.attempt_number = attempt_number

    @property
    def failed(self) -> bool:
        """Whether the attempt raised."""
        return self.exception() is not None

    @classmethod
    def construct(cls, attempt_number: int, value: typing.Any, has_exception: bool) -> Future:
        """A done future holding ``value`` as its exception or its result."""
        future = cls(attempt_number)
        if has_exception:
            future.set_exception(value)
        else:
            future.set_result(value)
        return future


class RetryError(Exception):
    """Retrying stopped; ``last_attempt`` is the last attempt's :class:`Future`.

    Raised ``from`` the last attempt's exception, if it raised.
    """

    def __init__(self, last_attempt: Future) -> None:
        self.last_attempt = last_attempt
        super().__init__(last_attempt)

    def reraise(self) -> typing.NoReturn:
        """Raises the last attempt's exception (for a ``TryAgain`` raised while
        handling another exception: that one), or this error if it returned."""
        if self.last_attempt.failed:
            error = self.last_attempt.exception()
            if isinstance(error, TryAgain):
                underlying = error.__cause__ or error.__context__
                if underlying is not None:
                    raise underlying.with_traceback(underlying.__traceback__) from None
            raise self.last_attempt.result()
        raise self

    def __str__(self) -> str:
        return f"{self.__class__.__name__}[{self.last_attempt}]"


class RetryCallState:
    """The state of one retried call, handed to every strategy and hook."""

    def __init__(self, retry_object: BaseRetrying, fn: Callable[..., typing.Any] | None,
                 args: typing.Any, kwargs: typing.Any) -> None:
        #: When the call began (``time.monotonic()``).
        self.start_time = time.monotonic()
        #: The controller running the call.
        self.retry_object = retry_object
        #: The function retried (None in ``for attempt in Retrying(...)``).
        self.fn = fn
        #: Its positional and keyword arguments.
        self.args = args
        self.kwargs = kwargs
        #: The number of the current attempt (1-based).
        self.attempt_number: int = 1
        #: The last attempt's outcome, and when it came (monotonic seconds).
        self.outcome: Future | None = None
        self.outcome_timestamp: float | None = None
        #: Seconds slept so far.
        self.idle_for: float = 0.0
        #: The decision about the next step, once made.
        self.next_action: RetryAction | None = None
        #: The sleep the wait strategy chose before the next attempt.
        self.upcoming_sleep: float = 0.0

    def get_fn_name(self) -> str:
        """The retried function's qualified name, else the controller's name
        (``"<unknown>"`` without one)."""
        if self.fn is not None:
            return _utils.get_callback_name(self.fn)
        return str(self.retry_object)

    @property
    def seconds_since_start(self) -> float | None:
        """Seconds from the start to the last outcome; None before an outcome."""
        if self.outcome_timestamp is None:
            return None
        return self.outcome_timestamp - self.start_time

    def prepare_for_next_attempt(self) -> None:
        self.outcome = None
        self.outcome_timestamp = None
        self.attempt_number += 1
        self.next_action = None

    def set_result(self, val: typing.Any) -> None:
        """The attempt returned ``val``."""
        now = time.monotonic()
        future = Future(self.attempt_number)
        future.set_result(val)
        self.outcome, self.outcome_timestamp = future, now

    def set_exception(self, exc_info: tuple[type[BaseException], BaseException,
                                            types.TracebackType | None]) -> None:
        """The attempt raised ``exc_info[1]``."""
        now = time.monotonic()
        future = Future(self.attempt_number)
        future.set_exception(exc_info[1])
        self.outcome, self.outcome_timestamp = future, now

    def __repr__(self) -> str:
        if self.outcome is None:
            last = "none yet"
        elif self.outcome.failed:
            error = self.outcome.exception()
            last = f"failed ({error.__class__.__name__} {error})"
        else:
            last = f"returned {self.outcome.result()}"
        slept = float(round(self.idle_for, 2))
        return (f"<{self.__class__.__name__} {id(self)}: attempt #{self.attempt_number}; "
                f"slept for {slept}; last result: {last}>")


class AttemptManager:
    """The context of one attempt in ``for attempt in Retrying(...): with attempt:``:
    it records the body's outcome and swallows its exception."""

    def __init__(self, retry_state: RetryCallState) -> None:
        self.retry_state = retry_state

    def __enter__(self) -> None:
        pass

    def __exit__(self, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                 traceback: types.TracebackType | None) -> bool | None:
        if exc_type is not None and exc_value is not None:
            self.retry_state.set_exception((exc_type, exc_value, traceback))
            return True
        self.retry_state.set_result(None)  # the body's value is not known here
        return None

    async def __aenter__(self) -> None:
        pass

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc_value: BaseException | None,
                        traceback: types.TracebackType | None) -> bool | None:
        return self.__exit__(exc_type, exc_value, traceback)


#: The attributes whose change can change a decorated function's native plan.
_PLAN_ATTRIBUTES = frozenset({"enabled", "before", "retry"})


class BaseRetrying(ABC):
    """The configuration and decision procedure shared by every controller.

    Args:
        sleep: ``sleep(seconds)`` between attempts (awaited by AsyncRetrying).
        stop, wait, retry: the strategies (see :mod:`.stop`, :mod:`.wait`,
            :mod:`.retry`); ``wait`` None or 0 means no wait.
        before, after, before_sleep: hooks taking the :class:`RetryCallState`.
        reraise: on giving up, raise the last exception instead of RetryError.
        retry_error_cls: the error raised on giving up.
        retry_error_callback: on giving up, return its value instead of raising.
        name: the name logs use when there is no function (``for attempt in ...``).
        enabled: False runs the function once, plainly.
    """

    def __init__(
        self,
        sleep: Callable[[int | float], None] = _default_sleep,
        stop: StopBaseT = stop_never,
        wait: WaitBaseT = wait_none(),
        retry: typing.Any = retry_if_exception_type(),
        before: Hook | None = before_nothing,
        after: Hook | None = after_nothing,
        before_sleep: Hook | None = None,
        reraise: bool = False,
        retry_error_cls: type[RetryError] = RetryError,
        retry_error_callback: Hook | None = None,
        name: str | None = None,
        enabled: bool = True,
    ) -> None:
        self.sleep = sleep
        self.stop = stop
        self.wait = wait_none() if _means_no_wait(wait) else wait
        self.retry = retry
        self.before = before
        self.after = after
        self.before_sleep = before_sleep
        self.reraise = reraise
        self._local = threading.local()
        self.retry_error_cls = retry_error_cls
        self.retry_error_callback = retry_error_callback
        self._name = name
        self.enabled = enabled

    # -- the decorated functions follow their controller's configuration ------

    def __setattr__(self, name: str, value: typing.Any) -> None:
        object.__setattr__(self, name, value)
        if name in _PLAN_ATTRIBUTES:
            for wrapped in tuple(self.__dict__.get("_decorated", ())):
                self._configure(wrapped)

    def _configure(self, wrapped: typing.Any) -> None:
        """Tells a decorated function's fast part how to run its calls."""
        mode, retry_on = self._native_plan()
        wrapped._configure(mode, retry_on, None)

    def _native_plan(self) -> tuple[int, tuple[type[BaseException], ...] | None]:
        return _plan.native_plan(self)

    def copy(
        self,
        sleep: typing.Any = _unset,
        stop: typing.Any = _unset,
        wait: typing.Any = _unset,
        retry: typing.Any = _unset,
        before: typing.Any = _unset,
        after: typing.Any = _unset,
        before_sleep: typing.Any = _unset,
        reraise: typing.Any = _unset,
        retry_error_cls: typing.Any = _unset,
        retry_error_callback: typing.Any = _unset,
        name: typing.Any = _unset,
        enabled: typing.Any = _unset,
    ) -> Self:
        """A controller of the same class, with the given settings changed."""
        return self.__class__(
            sleep=_first_set(sleep, self.sleep),
            stop=_first_set(stop, self.stop),
            wait=_first_set(wait, self.wait),
            retry=_first_set(retry, self.retry),
            before=_first_set(before, self.before),
            after=_first_set(after, self.after),
            before_sleep=_first_set(before_sleep, self.before_sleep),
            reraise=_first_set(reraise, self.reraise),
            retry_error_cls=_first_set(retry_error_cls, self.retry_error_cls),
            retry_error_callback=_first_set(retry_error_callback, self.retry_error_callback),
            name=_first_set(name, self._name),
            enabled=_first_set(enabled, self.enabled),
        )

    def __getstate__(self) -> dict[str, typing.Any]:
        # Thread-locals cannot be pickled; decorated functions are not ours to ship.
        return {key: value for key, value in self.__dict__.items()
                if key not in ("_local", "_decorated")}

    def __setstate__(self, state: dict[str, typing.Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def __str__(self) -> str:
        return self._name if self._name is not None else "<unknown>"

    def __repr__(self) -> str:
        return (f"<{self.__class__.__name__} object at 0x{id(self):x} (stop={self.stop}, "
                f"wait={self.wait}, sleep={self.sleep}, retry={self.retry}, "
                f"before={self.before}, after={self.after}, name={self._name!r})>")

    @property
    def statistics(self) -> dict[str, typing.Any]:
        """This thread's statistics of the last call: ``start_time``
        (monotonic seconds), ``attempt_number``, ``idle_for`` (seconds slept),
        ``delay_since_first_attempt`` (seconds to the last retried outcome).
        Empty before the first call."""
        local = self._local
        try:
            stats: dict[str, typing.Any] = local.statistics
        except AttributeError:
            stats = local.statistics = {}
        return stats

    @property
    def iter_state(self) -> IterState:
        """This thread's :class:`IterState` (what the last ``iter()`` decided)."""
        local = self._local
        try:
            state: IterState = local.iter_state
        except AttributeError:
            state = local.iter_state = IterState()
        return state

    def wraps(self, f: Callable[..., typing.Any]) -> typing.Any:
        """``f`` retried under this controller (a fresh copy of it per call).

        The result keeps ``f``'s name, docstring, signature and defaults, and
        has ``.retry`` (this controller), ``.retry_with(**changes)`` and
        ``.statistics`` (the last call's). Its first attempt runs natively
        when the configuration allows (see the module docstring).
        """
        def resume(outcome: int, value: typing.Any, args: tuple[typing.Any, ...],
                   kwargs: dict[str, typing.Any], started: float) -> typing.Any:
            return self._resume(wrapped, f, outcome, value, args, kwargs, started)

        wrapped = _core.RetryCall(f, resume, clock=True, stats_key="statistics",
                                  clock_key="start_time", template=_BEGIN_STATISTICS,
                                  local=self._local)
        functools.update_wrapper(wrapped, f, WRAPPER_ASSIGNMENTS)
        self._decorate(wrapped, f)
        self._decorated_by(wrapped)
        return wrapped

    def _decorate(self, wrapped: typing.Any, f: Callable[..., typing.Any]) -> None:
        """Gives a decorated function tenacity's attributes."""

        def retry_with(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            return self.copy(*args, **kwargs).wraps(f)

        wrapped.retry = self
        wrapped.retry_with = retry_with
        wrapped.statistics = {}

    def _decorated_by(self, wrapped: typing.Any) -> None:
        import weakref

        decorated = self.__dict__.get("_decorated")
        if decorated is None:
            decorated = weakref.WeakSet()
            object.__setattr__(self, "_decorated", decorated)
        decorated.add(wrapped)
        self._configure(wrapped)

    def _resume(self, wrapped: typing.Any, f: Callable[..., typing.Any], outcome: int,
                value: typing.Any, args: tuple[typing.Any, ...], kwargs: dict[str, typing.Any],
                started: float) -> typing.Any:
        """The Python side of a decorated call: all of it (``RESUME_NOT_RUN``), or
        from a first attempt that raised ``value``."""
        if outcome == RESUME_NOT_RUN and not self.enabled:
            return f(*args, **kwargs)
        # A copy per call, so nested and concurrent calls keep their own state.
        copy = self.copy()
        stats = wrapped.statistics
        copy._local.statistics = stats
        if outcome == RESUME_NOT_RUN:
            stats.clear()
            self._local.statistics = stats
            return copy(f, *args, **kwargs)
        return copy._continue(f, args, kwargs, value, started)

    def _continue(self, fn: Callable[..., typing.Any], args: tuple[typing.Any, ...],
                  kwargs: dict[str, typing.Any], error: BaseException,
                  started: float) -> typing.Any:
        raise NotImplementedError(f"{type(self).__name__} has no native first attempt")

    def begin(self) -> None:
        """Resets this thread's statistics for a new call."""
        stats = self.statistics
        stats.clear()
        stats["start_time"] = time.monotonic()
        for key, value in _BEGIN_STATISTICS:
            stats[key] = value

    # -- the decision procedure ------------------------------------------------

    def _decide(self, retry_state: RetryCallState) -> Generator[Hook, typing.Any, typing.Any]:
        """The next step after ``retry_state``'s last outcome: yields each
        strategy or hook to call (and gets its value back); returns
        DoAttempt, DoSleep or the call's final value, or raises."""
        state = self.iter_state
        state.reset()
        outcome = retry_state.outcome
        if outcome is None:
            if self.before is not None:
                state.actions.append(self.before)
                yield self.before
            return DoAttempt()

        state.is_explicit_retry = outcome.failed and isinstance(outcome.exception(), TryAgain)
        if not state.is_explicit_retry:
            state.actions.append(self.retry)
            state.retry_run_result = yield self.retry
            if not state.retry_run_result:
                return outcome.result()  # the value, or the exception raised

        if self.after is not None:
            state.actions.append(self.after)
            yield self.after
        state.actions.append(self.wait)
        retry_state.upcoming_sleep = yield self.wait
        self.statistics["delay_since_first_attempt"] = retry_state.seconds_since_start
        state.actions.append(self.stop)
        # vr.testing may cap the attempts (its switch is read only here, after a failure).
        state.stop_run_result = (yield self.stop) or _testing_switch.stops(
            retry_state.attempt_number)

        if state.stop_run_result:
            if self.retry_error_callback:
                state.actions.append(self.retry_error_callback)
                return (yield self.retry_error_callback)
            error = self.retry_error_cls(outcome)
            if self.reraise:
                error.reraise()
            raise error from outcome.exception()

        sleep = retry_state.upcoming_sleep
        retry_state.next_action = RetryAction(sleep)
        retry_state.idle_for += sleep
        self.statistics["idle_for"] += sleep
        self.statistics["attempt_number"] += 1
        if self.before_sleep is not None:
            state.actions.append(self.before_sleep)
            yield self.before_sleep
        return DoSleep(_testing_switch.waited(sleep))  # vr.testing may skip the sleep

    def iter(self, retry_state: RetryCallState) -> typing.Any:
        """Decides the next step: DoAttempt, DoSleep, or the final value (or raises)."""
        steps = self._decide(retry_state)
        answer: typing.Any = None
        while True:
            try:
                hook = steps.send(answer)
            except StopIteration as decided:
                return decided.value
            answer = hook(retry_state)  # outside the try: a hook's StopIteration is its own

    def __iter__(self) -> Generator[AttemptManager, None, None]:
        if not self.enabled:
            retry_state = RetryCallState(self, fn=None, args=(), kwargs={})
            yield AttemptManager(retry_state=retry_state)
            outcome = retry_state.outcome
            if outcome is not None and outcome.failed:
                raise typing.cast(BaseException, outcome.exception())
            return
        self.begin()
        retry_state = RetryCallState(self, fn=None, args=(), kwargs={})
        while True:
            step = self.iter(retry_state=retry_state)
            if isinstance(step, DoAttempt):
                yield AttemptManager(retry_state=retry_state)
            elif isinstance(step, DoSleep):
                retry_state.prepare_for_next_attempt()
                self.sleep(step)
            else:
                break

    @abstractmethod
    def __call__(self, fn: Callable[..., WrappedFnReturnT], *args: typing.Any,
                 **kwargs: typing.Any) -> WrappedFnReturnT: ...


class Retrying(BaseRetrying):
    """Runs ``retrying(fn, *args, **kwargs)`` with retries; ``for attempt in
    retrying: with attempt: ...`` retries a block."""

    def __call__(self, fn: Callable[..., WrappedFnReturnT], *args: typing.Any,
                 **kwargs: typing.Any) -> WrappedFnReturnT:
        if not self.enabled:
            return fn(*args, **kwargs)
        self.begin()
        retry_state = RetryCallState(retry_object=self, fn=fn, args=args, kwargs=kwargs)
        return typing.cast(WrappedFnReturnT, self._run(retry_state))

    def _continue(self, fn: Callable[..., typing.Any], args: tuple[typing.Any, ...],
                  kwargs: dict[str, typing.Any], error: BaseException,
                  started: float) -> typing.Any:
        """Goes on from a native first attempt that raised ``error`` (begin()
        already done, natively, at ``started``)."""
        retry_state = RetryCallState(retry_object=self, fn=fn, args=args, kwargs=kwargs)
        retry_state.start_time = started
        retry_state.set_exception((type(error), error, error.__traceback__))
        return self._run(retry_state)

    def _run(self, retry_state: RetryCallState) -> typing.Any:
        fn = typing.cast(Callable[..., typing.Any], retry_state.fn)
        while True:
            step = self.iter(retry_state=retry_state)
            if isinstance(step, DoAttempt):
                try:
                    result = fn(*retry_state.args, **retry_state.kwargs)
                except BaseException:
                    retry_state.set_exception(sys.exc_info())  # type: ignore[arg-type]
                else:
                    retry_state.set_result(result)
            elif isinstance(step, DoSleep):
                retry_state.prepare_for_next_attempt()
                self.sleep(step)
            else:
                return step
