"""Retries with exponential backoff, as the guide's ``resilience.Retry``.

Only retryable errors are retried (:func:`~virtrigaud_resilience.is_retryable`:
a ``ProviderError`` of type Retryable, Unavailable, RateLimit or Timeout, or
one created with ``retryable=True``), plus whatever ``RetryConfig.retry_on``
adds; anything else is raised at once, as in the Go code. When attempts run
out the last error is re-raised unchanged (its chain intact) with
``exc.attempts`` set to the number of attempts made. No sleep follows the
last attempt. A cancellation (``asyncio.CancelledError``,
``KeyboardInterrupt``) stops at once, and a task cancelled while its
attempt turned the cancellation into an error is not retried either (seen
through ``Task.cancelling()``: Python 3.11+).

An error's ``retry_after`` (a ``RateLimitError``'s wait for a token, a
``CircuitOpenError``'s time to the next probe, a provider's Retry-After) is
a floor on the next delay. When it is longer than ``max_delay``, or would
end past the overall deadline, the retry gives up at once and re-raises the
error itself, ``retry_after`` intact, for the caller to requeue (kopf's
``TemporaryError(delay=...)``): it never sleeps beyond its configuration,
and never retries into a breaker it knows is open.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import update_wrapper
from types import CoroutineType
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar, Union

from . import _core, _validate, events
from ._tracking import Census, Counters, Labels
from .backoff import STRATEGIES, Backoff
from . import _testing_switch
from .clock import ManualClock, check_clock, pause, pause_async, sleeper_for
from .durations import Seconds
from ._sent import mark_call_reached, never_sent
from .errors import is_retryable, refused_retry
from .retry_budget import RetryBudget
from .timeouts import (
    _DEADLINE,
    call_until,
    cancel_requests,
    deadline_exceeded,
    deadline_for,
    deadline_scope,
)

__all__ = ["RetryConfig", "Retrier", "retry", "retry_async", "current_attempt", "OnRetry",
           "RetryOn"]

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("virtrigaud_resilience")

#: ``on_retry(attempt, exc, delay)``: called before sleeping ``delay`` seconds
#: after attempt number ``attempt`` (1-based: the attempts made so far) failed with ``exc``.
OnRetry = Callable[[int, BaseException, float], object]

#: What ``RetryConfig.retry_on`` takes: an exception type, a tuple of them,
#: or a predicate ``exc -> bool``.
RetryOn = Union[type[Exception], tuple[type[Exception], ...], Callable[[Exception], bool]]

_ATTEMPT: ContextVar[int] = ContextVar("virtrigaud_resilience_attempt", default=0)

# Guards the retry counters. Only retries take it (after a failure, before a
# sleep), never a first attempt, so one lock for all retriers is enough.
_COUNTERS_LOCK = threading.Lock()


def current_attempt() -> int:
    """The 0-based attempt number of the innermost retry loop running this code.

    The guide passes ``attempt`` to the retried function; in Python the
    function asks for it. 0 on a first attempt and outside any retry loop.
    """
    return _ATTEMPT.get()

#: Far beyond any sane retry budget, small enough that nothing overflows.
MAX_ATTEMPTS_LIMIT = 1_000_000
#: One day: the longest delay any config may ask for.
MAX_DELAY_LIMIT = 86_400.0


@dataclass(frozen=True)
class RetryConfig:
    """How often and how patiently to retry.

    Attributes:
        max_attempts: total calls, the first included (1 = no retry); int in [1, 1_000_000].
        base_delay: seconds before the first retry; >= 0.
        max_delay: cap on any one delay, in seconds; >= base_delay, <= 86400.
        multiplier: growth factor per attempt; >= 1.
        jitter: add randomness (for ``exponential``: up to +10% of the capped delay).
        strategy: one of ``exponential`` (the guide's formula), ``full_jitter``,
            ``equal_jitter``, ``decorrelated_jitter``; see :class:`Backoff`.
        retry_on: what to retry besides the taxonomy's retryable errors: an
            exception type (an ``Exception`` subclass), a tuple of them, or a
            predicate ``exc -> bool``; None for the taxonomy alone. For
            example ``retry_on=ConnectionError``. Cancellations
            (``BaseException`` s that are not ``Exception`` s) are never
            retried.
        seed: an int in ``[0, 2**64)`` that makes the jitter reproducible:
            each retrier built from this config draws the same sequence
            (see :class:`Backoff`); None (the default) draws fresh randomness.
        budget: a :class:`~virtrigaud_resilience.RetryBudget` every retry
            must be allowed by, shared by all the calls (and retriers) given
            it; None for none. A call starts (ratio: a deposit), a retryable
            failure asks ``try_withdraw`` before its retry, a success pays
            back (tokens, quota). When the budget refuses, no retry is made:
            the attempt's own error is raised, ``budget_exhausted=True`` on
            it and a note saying so.

    The delay before retry ``n`` (0-based) under ``exponential`` is
    ``min(base_delay * multiplier**n, max_delay)`` plus, with jitter, a uniform
    0-10% of that: with the defaults 0.5, 1, 2, 4, 8 s.

    Durations accept float seconds, ``timedelta`` or Go strings ("500ms").
    Every field is validated; a bad value raises ValueError or TypeError
    naming the field and the value.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: bool = True
    strategy: str = "exponential"
    retry_on: RetryOn | None = None
    seed: int | None = None
    budget: RetryBudget | None = None

    if TYPE_CHECKING:  # what the constructor accepts (the fields hold float seconds)
        def __init__(self, max_attempts: int = 5, base_delay: Seconds = 0.5,
                     max_delay: Seconds = 30.0, multiplier: float = 2.0, jitter: bool = True,
                     strategy: str = "exponential", retry_on: RetryOn | None = None,
                     seed: int | None = None, budget: RetryBudget | None = None) -> None: ...

    def __post_init__(self) -> None:
        owner = "RetryConfig"
        set_ = object.__setattr__
        set_(self, "max_attempts",
             _validate.integer(owner, "max_attempts", self.max_attempts, 1, MAX_ATTEMPTS_LIMIT))
        base = _validate.seconds(owner, "base_delay", self.base_delay, maximum=MAX_DELAY_LIMIT)
        cap = _validate.seconds(owner, "max_delay", self.max_delay, maximum=MAX_DELAY_LIMIT)
        if cap < base:
            raise ValueError(
                f"{owner} max_delay must be >= base_delay ({base:g}), got {self.max_delay!r}"
            )
        set_(self, "base_delay", base)
        set_(self, "max_delay", cap)
        set_(self, "multiplier",
             _validate.at_least(owner, "multiplier", self.multiplier, 1.0))
        set_(self, "jitter", _validate.boolean(owner, "jitter", self.jitter))
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"{owner} strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )
        _check_retry_on(owner, self.retry_on)
        if self.seed is not None:
            set_(self, "seed", _validate.integer(owner, "seed", self.seed, 0, 2**64 - 1))
        _validate.optional_instance(owner, "budget", self.budget, RetryBudget)

    def should_retry(self, error: BaseException) -> bool:
        """Whether ``error`` may be retried: an ``Exception`` that is retryable
        in the taxonomy (:func:`is_retryable`) or matches ``retry_on``."""
        if not isinstance(error, Exception):
            return False
        if is_retryable(error):
            return True
        if refused_retry(error):
            return False  # e.g. a sent non-idempotent request: retry_on cannot override it
        retry_on = self.retry_on
        if retry_on is None:
            return False
        if isinstance(retry_on, (type, tuple)):
            return isinstance(error, retry_on)
        return bool(retry_on(error))

    @classmethod
    def default(cls) -> RetryConfig:
        """The guide's DefaultRetryConfig: 5 attempts, 0.5 s base, 30 s cap, x2, jitter."""
        return cls()

    @classmethod
    def aggressive(cls) -> RetryConfig:
        """For frequent, low-latency operations: 10 attempts, 0.1 s base, 10 s cap, x1.5."""
        return cls(max_attempts=10, base_delay=0.1, max_delay=10.0, multiplier=1.5)

    @classmethod
    def conservative(cls) -> RetryConfig:
        """For expensive operations: 3 attempts, 1 s base, 60 s cap, x3."""
        return cls(max_attempts=3, base_delay=1.0, max_delay=60.0, multiplier=3.0)

    @classmethod
    def none(cls) -> RetryConfig:
        """Retries disabled: exactly one attempt."""
        return cls(max_attempts=1)

    def replace(self, **changes: Any) -> RetryConfig:
        """A copy with ``changes`` applied (validated like the constructor)."""
        from dataclasses import replace

        return replace(self, **changes)


def _check_retry_on(owner: str, retry_on: object) -> None:
    """Validates ``retry_on``: None, an Exception subclass, a tuple of them, or a callable."""
    if retry_on is None:
        return
    types_ = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if isinstance(retry_on, tuple) or isinstance(retry_on, type):
        for kind in types_:
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                raise TypeError(
                    f"{owner} retry_on must be Exception subclasses (cancellations are never "
                    f"retried), got {kind!r}"
                )
        return
    if not callable(retry_on):
        raise TypeError(
            f"{owner} retry_on must be an exception type, a tuple of them or a callable, "
            f"got {type(retry_on).__name__} {retry_on!r}"
        )


def _final_counters(retrier: Retrier) -> tuple[Labels, Counters]:
    """A dropped retrier's name and (retries, exhausted)."""
    return (retrier.name,), (retrier.retries, retrier.exhausted)


#: Every live retrier (policies' included), for the metrics collector.
RETRIERS: Census[Retrier] = Census(_final_counters)


class Retrier:
    """Runs calls with retries under a :class:`RetryConfig` (tenacity's ``Retrying``).

    Args:
        config: the :class:`RetryConfig`; None for :meth:`RetryConfig.default`.
        clock: a :class:`ManualClock` to sleep on (virtual time), or None.
        timeout: overall budget in seconds (float, timedelta or Go string) for
            all attempts and sleeps; None for none. No attempt starts and no
            sleep runs past it; when the budget cannot cover the next delay,
            :class:`OperationTimeoutError` chained from the last error is
            raised. Async calls are also cancelled at the deadline.
        on_retry: ``on_retry(attempt, exc, delay)`` before each sleep (before
            the :func:`events.on_retry` listeners); an exception from it is
            logged and ignored.
        name: a label for logs and metrics (the ``policy`` label of
            ``virtrigaud_retry_*``); a str.

    An error's ``retry_after`` raises that retry's delay to at least
    ``retry_after``; beyond ``max_delay`` or the timeout, the retrier gives up
    and re-raises the error (see the module docstring).
    """

    __slots__ = ("config", "timeout", "on_retry", "_name", "retries", "exhausted",
                 "_backoff", "_clock", "__weakref__")

    def __init__(
        self,
        config: RetryConfig | None = None,
        *,
        clock: ManualClock | None = None,
        timeout: Seconds | None = None,
        on_retry: OnRetry | None = None,
        name: str = "retry",
    ) -> None:
        config = _validate.optional_instance("Retrier", "config", config, RetryConfig) or RetryConfig()
        if on_retry is not None and not callable(on_retry):
            raise TypeError(f"Retrier on_retry must be callable, got {type(on_retry).__name__}")
        self.config = config
        self.timeout = (
            None if timeout is None
            else _validate.seconds("Retrier", "timeout", timeout, allow_zero=False)
        )
        self.on_retry = on_retry
        self._name = _validate.string("Retrier", "name", name)
        #: Retries begun (attempts after the first), counted as the backoff
        #: sleep before each starts, for metrics.
        self.retries = 0
        #: Calls that gave up retrying a retryable error: all max_attempts
        #: (> 1) used, the overall timeout too short for the next delay, or
        #: the error's retry_after beyond max_delay or the deadline.
        self.exhausted = 0
        self._backoff = Backoff(config.base_delay, config.max_delay, config.multiplier,
                                config.jitter, config.strategy, config.seed)
        self._clock = sleeper_for(check_clock("Retrier", clock))
        RETRIERS.track(self)

    def __del__(self, _retire: Callable[[Retrier], None] = RETRIERS.retire) -> None:
        # Bound at definition: module globals may be gone at interpreter exit.
        _retire(self)

    @property
    def name(self) -> str:
        """The label for logs and metrics (read-only: metrics sum by it)."""
        return self._name

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Calls ``fn(*args, **kwargs)`` until it succeeds, retrying retryable errors."""
        deadline = deadline_for(self._clock, self.timeout)
        with deadline_scope(self._clock, deadline):
            return self.run(lambda: fn(*args, **kwargs), deadline)

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Awaits ``fn(*args, **kwargs)`` until it succeeds, retrying retryable errors."""
        deadline = deadline_for(self._clock, self.timeout)
        return await call_until(self._clock, deadline, self.name,
                                self.run_async, (lambda: fn(*args, **kwargs), deadline), {})

    def run(
        self,
        attempt: Callable[[], T],
        deadline: float | None = None,
        done: int = 0,
        error: BaseException | None = None,
    ) -> T:
        """The loop: ``attempt()`` until success. ``done`` attempts already
        failed, the last with ``error`` (how a policy continues after its
        native first attempt)."""
        previous = 0.0
        reached = False
        budget = self.config.budget
        if budget is not None:
            budget._call_started()
        while True:
            if done:
                assert error is not None
                reached = reached or not never_sent(error)
                previous = self._next_delay(done, error, previous, deadline, reached)
                pause(self._clock, previous)  # vr.testing may skip it
            elif deadline is not None and self._clock.now() >= deadline:
                raise deadline_exceeded(self.name)
            token = _ATTEMPT.set(done)
            try:
                result = attempt()
            except Exception as exc:  # BaseExceptions (cancellation) propagate at once
                error = exc
            else:
                result = refuse_coroutine(result, "retry()", "'await vr.retry_async(...)'")
                if budget is not None:
                    budget._call_succeeded(budget._cost_of(error) if done else 0)
                return result
            finally:
                _ATTEMPT.reset(token)
            done += 1

    async def run_async(
        self,
        attempt: Callable[[], Awaitable[T]],
        deadline: float | None = None,
        done: int = 0,
        error: BaseException | None = None,
    ) -> T:
        """The asyncio form of :meth:`run`."""
        previous = 0.0
        reached = False
        cancels_before = cancel_requests()
        budget = self.config.budget
        if budget is not None:
            budget._call_started()
        while True:
            if done:
                assert error is not None
                reached = reached or not never_sent(error)
                if cancel_requests() > cancels_before:
                    # The task was cancelled and an attempt turned that into
                    # an error: a cancelled task stops, it is not retried.
                    raise mark_call_reached(error) if reached else error
                previous = self._next_delay(done, error, previous, deadline, reached)
                await pause_async(self._clock, previous)
            elif deadline is not None and self._clock.now() >= deadline:
                raise deadline_exceeded(self.name)
            token = _ATTEMPT.set(done)
            try:
                result = await attempt()
            except Exception as exc:
                error = exc
            else:
                if budget is not None:
                    budget._call_succeeded(budget._cost_of(error) if done else 0)
                return result
            finally:
                _ATTEMPT.reset(token)
            done += 1

    def _next_delay(self, done: int, error: BaseException, previous: float,
                    deadline: float | None, reached: bool) -> float:
        """:meth:`_before_retry`; the error that ends the call is marked
        :func:`~virtrigaud_resilience.providers.mark_call_reached` when an
        attempt of it (``reached``) got to the provider: ``never_sent`` of it
        answers for the whole call, not only its last attempt."""
        if not reached:
            return self._before_retry(done, error, previous, deadline)
        try:
            return self._before_retry(done, error, previous, deadline)
        except Exception as final:
            raise mark_call_reached(final)  # the traceback stays _before_retry's

    def _before_retry(
        self, done: int, error: BaseException, previous: float, deadline: float | None
    ) -> float:
        """Raises ``error`` if it must not be retried; else returns the delay."""
        if not self.config.should_retry(error):
            raise error
        budget = self.config.budget
        if done >= _testing_switch.capped(self.config.max_attempts):  # vr.testing may cap it
            if budget is not None:
                budget._failed_without_retry()
            self._give_up(error, done, counted=done > 1)  # without retries nothing was exhausted
        delay = self._backoff.delay(done - 1, previous)
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            if retry_after > self.config.max_delay or (
                    deadline is not None and self._clock.now() + retry_after >= deadline):
                # The error says when to come back, and it is later than this
                # retrier may wait: hand it to the caller to requeue.
                if budget is not None:
                    budget._failed_without_retry()
                self._give_up(error, done)
            delay = max(delay, retry_after)
        if deadline is not None and self._clock.now() + delay >= deadline:
            if budget is not None:
                budget._failed_without_retry()
            self._count_exhausted()  # the time budget ran out instead
            _mark_attempts(error, done)
            raise deadline_exceeded(f"{self.name} after {done} attempts", error) from error
        if budget is not None and not budget._allows_retry_of(error):
            # The budget says this retry would multiply an outage: the
            # attempt's own error ends the call (marked, counted, logged).
            budget._refuse(self.name, error, done)
            self._give_up(error, done, counted=False)
        if self.on_retry is not None:
            events.emit((self.on_retry,), "on_retry", done, error, delay)
        events._emit_retry(self, done, error, delay)
        with _COUNTERS_LOCK:
            self.retries += 1
        return delay

    def _give_up(self, error: BaseException, done: int, counted: bool = True) -> NoReturn:
        """Stops retrying: re-raises ``error`` unchanged, marked with the attempts made."""
        if counted:
            self._count_exhausted()
        _mark_attempts(error, done)
        raise error

    def _count_exhausted(self) -> None:
        with _COUNTERS_LOCK:
            self.exhausted += 1

    def __repr__(self) -> str:
        return f"Retrier({self.config!r}, timeout={self.timeout!r}, name={self.name!r})"


def _mark_attempts(error: BaseException, attempts: int) -> None:
    error.attempts = attempts  # type: ignore[attr-defined]
    add_note = getattr(error, "add_note", None)
    if add_note is not None:
        add_note(f"virtrigaud_resilience: gave up after {attempts} attempt(s)")


def refuse_coroutine(result: T, entry: str, instead: str) -> T:
    """``result`` itself, unless it is a coroutine: a sync entry point ran an
    async function. Then the coroutine (whose body never ran) is closed and
    a TypeError names the function and the async method to use."""
    if isinstance(result, CoroutineType):  # CoroutineType has no subclasses
        name = result.__qualname__
        result.close()
        raise TypeError(f"{entry} cannot run async function {name!r}: it returned a "
                        f"coroutine; use {instead}")
    return result


#: The Retrier behind retry() / retry_async() for each config (a few at most
#: in a program; bounded anyway). A Retrier is stateless between calls.
#: Copy-on-write: a published dict is never mutated, so a read needs no lock
#: (nor the GIL, on a free-threaded build); a miss builds the next dict under
#: the lock and rebinds the name (oldest entry evicted past the bound).
_RETRIERS_BY_CONFIG: dict[RetryConfig | None, Retrier] = {}
_RETRIERS_CACHE_SIZE = 64
_RETRIERS_LOCK = threading.Lock()


def _retrier_for(config: RetryConfig | None) -> Retrier:
    if config is not None and not isinstance(config, RetryConfig):
        return Retrier(config)  # raises the TypeError naming the value
    retrier = _RETRIERS_BY_CONFIG.get(config)
    if retrier is None:
        retrier = _cache_retrier(config)
    return retrier


def _cache_retrier(config: RetryConfig | None) -> Retrier:
    """The cached Retrier for ``config`` (built and published on a miss)."""
    global _RETRIERS_BY_CONFIG
    with _RETRIERS_LOCK:
        retrier = _RETRIERS_BY_CONFIG.get(config)
        if retrier is None:
            retrier = Retrier(config)
            cache = dict(_RETRIERS_BY_CONFIG)
            cache[config] = retrier
            if len(cache) > _RETRIERS_CACHE_SIZE:
                del cache[next(iter(cache))]
            _RETRIERS_BY_CONFIG = cache
    return retrier


def retry(config: RetryConfig | None, fn: Callable[P, T], /, *args: P.args,
          **kwargs: P.kwargs) -> T:
    """``Retry(ctx, config, fn)``: calls ``fn(*args, **kwargs)`` with retries.

    ``config`` None means :meth:`RetryConfig.default`. Sleeps on the system
    clock; use :class:`Retrier` for a ManualClock, an overall timeout or an
    ``on_retry`` hook. One Retrier per config serves every call (its
    ``virtrigaud_retry_*`` metrics carry the policy label "retry"). Raises
    TypeError for an async ``fn`` (use :func:`retry_async`).
    """
    return _retrier_for(config).call(fn, *args, **kwargs)


# retry() as defined above runs every attempt in Python. The retry() the
# package exports is native (_core.RetryEntry, with the docstring, signature
# and name of the one above): its first attempt is one native call, as
# Policy.execute's is, and it hands a call to the functions below when the
# call needs Python.

#: Every attempt in Python: for a call whose config or context needs it.
_retry_in_python = retry


def _native_retrier(config: RetryConfig | None) -> Retrier | None:
    """The Retrier whose calls may run their first attempt natively; None
    would make every call of ``config`` run in Python. Raises TypeError for
    a ``config`` that is neither None nor a RetryConfig. A config with a
    retry budget runs in Python: every call's start and success count in
    the budget (a ratio budget's deposits), which a native attempt skips."""
    retrier = _retrier_for(config)
    return None if retrier.config.budget is not None else retrier


def _after_first_attempt(retrier: Retrier, error: Exception, fn: Callable[..., T], /,
                         *args: Any, **kwargs: Any) -> T:
    """The loop from attempt 1, after a native attempt 0 raised ``error``
    (no deadline encloses such a call: the entry checked)."""
    return retrier.run(lambda: fn(*args, **kwargs), None, 1, error)


if not TYPE_CHECKING:  # to type checkers, retry is the function above
    retry = update_wrapper(
        _core.RetryEntry(_native_retrier, _retry_in_python, _after_first_attempt, _ATTEMPT,
                         _DEADLINE),
        _retry_in_python)


async def retry_async(config: RetryConfig | None, fn: Callable[P, Awaitable[T]], /,
                      *args: P.args, **kwargs: P.kwargs) -> T:
    """The asyncio form of :func:`retry`."""
    return await _retrier_for(config).call_async(fn, *args, **kwargs)
