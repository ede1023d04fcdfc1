"""circuitbreaker 2.1 on the native circuit breaker.

Replace ``import circuitbreaker`` (or ``from circuitbreaker import circuit``)
with::

    from virtrigaud_resilience.compat import circuitbreaker
    from virtrigaud_resilience.compat.circuitbreaker import circuit

and nothing else changes: ``@circuit`` (bare or with arguments) on
functions, coroutines, generators and async generators; ``CircuitBreaker``
subclasses with ``FAILURE_THRESHOLD``, ``RECOVERY_TIMEOUT``,
``EXPECTED_EXCEPTION`` and ``FALLBACK_FUNCTION``; the same ``state``
(``'half_open'`` as soon as the recovery timeout has passed), counters,
``CircuitBreakerError`` message and ``CircuitBreakerMonitor``.

Semantics (circuitbreaker's): ``failure_threshold`` failures in a row
(exceptions ``expected_exception`` matches) open the circuit; while open,
calls raise :class:`CircuitBreakerError` (or return the fallback function's
result) without running; once ``recovery_timeout`` seconds have passed since
it opened, calls run again: the first success closes it, a failure opens it
for another timeout. Any other exception counts as a success.

A decorated plain function is a native ``Guarded`` callable: the closed path
is one native call. What still differs from circuitbreaker is listed in
docs/migrating.md.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone
from functools import wraps
from typing import Any, AnyStr, ClassVar, Literal

from .. import _core, _native, _validate
from .._native import CLOSED, FAILURE, HALF_OPEN, OPEN, RELEASE, SUCCESS
from . import _shared
from ._shared import CANCELLED

__all__ = [
    "STATE_CLOSED",
    "STATE_OPEN",
    "STATE_HALF_OPEN",
    "CircuitBreaker",
    "CircuitBreakerError",
    "CircuitBreakerMonitor",
    "build_failure_predicate",
    "circuit",
    "in_exception_list",
]

STRING_TYPES = (bytes, str)
STATE_CLOSED = "closed"
STATE_OPEN = "open"
STATE_HALF_OPEN = "half_open"

_NAME_OF = {CLOSED: STATE_CLOSED, HALF_OPEN: STATE_HALF_OPEN, OPEN: STATE_OPEN}
# Errors and rejections come to Python; a coroutine result is a value (call()
# of an async function returns its coroutine, counted a success).
_HOOKS = _native.HOOK_REJECT | _native.HOOK_ERROR | _native.ACCEPT_COROUTINE
# circuitbreaker lets every call through once the timeout has passed: the
# native half-open admits (almost) unlimited probes and the first success closes.
_HALF_OPEN_CALLS: int = _core.BREAKER_MAX_HALF_OPEN_CALLS


def in_exception_list(*exc_types: type[BaseException]) -> Callable[[type, BaseException], bool]:
    """A predicate ``(type, exc) -> bool``: the type is a subclass of one of ``exc_types``."""

    def matches_types(thrown_type: type, _: BaseException) -> bool:
        return issubclass(thrown_type, exc_types)

    return matches_types


def build_failure_predicate(expected_exception: Any) -> Callable[[type, BaseException], bool]:
    """``is_failure(type, exc)`` from an exception type, an iterable of them,
    or a predicate (returned as it is).

    Raises:
        ValueError: a str or bytes ("cannot be a string"), or something that
            is neither a type, an iterable nor a callable.
    """
    if inspect.isclass(expected_exception) and issubclass(expected_exception, Exception):
        return in_exception_list(expected_exception)
    try:
        iter(expected_exception)
    except TypeError:
        if not callable(expected_exception) or inspect.isclass(expected_exception):
            raise ValueError("expected_exception does not look like a predicate") from None
        predicate: Callable[[type, BaseException], bool] = expected_exception
        return predicate
    if isinstance(expected_exception, STRING_TYPES):
        raise ValueError("expected_exception cannot be a string. Did you mean name?")
    return in_exception_list(*expected_exception)


class CircuitBreaker(_core.CircuitBreaker):
    """circuitbreaker's CircuitBreaker on the native breaker.

    Args (each None, or 0, falls back to the class attribute of the same
    name in capitals):
        failure_threshold: failures in a row that open it; int in ``[1, 4_194_303]``.
        recovery_timeout: seconds it stays open; a number ``>= 0``.
        expected_exception: what is a failure: an exception type, an
            iterable of them, or a predicate ``(type, exc) -> bool``.
        name: the name (default: the decorated function's ``__qualname__``).
        fallback_function: called with the call's arguments instead of
            raising CircuitBreakerError while open.
    """

    FAILURE_THRESHOLD: ClassVar[int] = 5
    RECOVERY_TIMEOUT: ClassVar[float] = 30
    EXPECTED_EXCEPTION: ClassVar[Any] = Exception
    FALLBACK_FUNCTION: ClassVar[Callable[..., Any] | None] = None

    def __init__(
        self,
        failure_threshold: int | None = None,
        recovery_timeout: float | None = None,
        expected_exception: Any = None,
        name: str | None = None,
        fallback_function: Callable[..., Any] | None = None,
    ) -> None:
        owner = type(self).__name__
        threshold = _validate.integer(owner, "failure_threshold",
                                      failure_threshold or self.FAILURE_THRESHOLD, 1,
                                      _shared.MAX_FAILURE_THRESHOLD)
        recovery = recovery_timeout or self.RECOVERY_TIMEOUT
        _validate.non_negative(owner, "recovery_timeout", recovery, maximum=_shared.MAX_TIMEOUT)
        if not expected_exception:
            # This very class's attribute (a function there must not become a
            # method), else the base class's.
            expected_exception = type(self).__dict__.get("EXPECTED_EXCEPTION",
                                                         CircuitBreaker.EXPECTED_EXCEPTION)
        self.is_failure = build_failure_predicate(expected_exception)
        super().__init__("" if name is None else str(name), "", "", threshold,
                         round(recovery * 1e9), _HALF_OPEN_CALLS, None, _count_everything, 0)
        self._configure(threshold, round(recovery * 1e9), 1)
        self._failure_threshold = threshold
        self._recovery_timeout = recovery
        self._fallback_function = fallback_function or self.FALLBACK_FUNCTION
        self._name = name
        self._last_failure: BaseException | None = None
        self._last_failure_mark = 0  # successes when it was recorded: any since clears it
        self._entered: ContextVar[tuple[int, ...]] = ContextVar("circuitbreaker_tickets",
                                                                default=())
        # Counted as opened at creation (circuitbreaker's open_remaining counts from it).
        self._restore(CLOSED, 0, 0, self._now_ns())
        self._set_hooks(_HOOKS)

    # -- decorating ----------------------------------------------------------------

    def __call__(self, wrapped: Callable[..., Any]) -> Any:
        return self.decorate(wrapped)

    def decorate(self, function: Callable[..., Any]) -> Any:
        """Guards ``function`` (sync, async, generator or async generator) and
        registers this breaker with :class:`CircuitBreakerMonitor`."""
        if self._name is None:
            try:
                self._name = function.__qualname__
            except AttributeError:
                self._name = function.__name__
        CircuitBreakerMonitor.register(self)
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            return self._decorate_async(function)
        return self._decorate_sync(function)

    def _decorate_sync(self, function: Callable[..., Any]) -> Any:
        if inspect.isgeneratorfunction(function):
            @wraps(function)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
                if self.opened:
                    if self.fallback_function:
                        yield from self.fallback_function(*args, **kwargs)
                        return
                    raise CircuitBreakerError(self)
                yield from self.call_generator(function, *args, **kwargs)

            return gen_wrapper
        if self._native_decorator():
            return wraps(function)(_core.Guarded(self, function))

        @wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.opened:
                if self.fallback_function:
                    return self.fallback_function(*args, **kwargs)
                raise CircuitBreakerError(self)
            return self.call(function, *args, **kwargs)

        return wrapper

    def _native_decorator(self) -> bool:
        """Whether the native guarded call means what this class's wrapper
        would: ``opened``, ``call`` and ``fallback_function`` are ours."""
        cls = type(self)
        return all(inspect.getattr_static(cls, attr) is original
                   for attr, original in _DECORATOR_READS.items())

    def _decorate_async(self, function: Callable[..., Any]) -> Any:
        if inspect.isasyncgenfunction(function):
            @wraps(function)
            async def gen_awrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
                if self.opened:
                    if self.fallback_function:
                        async for element in self.fallback_function(*args, **kwargs):
                            yield element
                        return
                    raise CircuitBreakerError(self)
                async for element in self.call_async_generator(function, *args, **kwargs):
                    yield element

            return gen_awrapper

        @wraps(function)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            if self.opened:
                if self.fallback_function:
                    return await self.fallback_function(*args, **kwargs)
                raise CircuitBreakerError(self)
            return await self.call_async(function, *args, **kwargs)

        return awrapper

    # -- calling (the breaker's rules, whatever the state: the decorators check) ----

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Calls ``func`` and records the outcome (it runs even while open)."""
        ticket = self._try_admit()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            self._settle(ticket, exc)
            raise
        self._settle(ticket, None)
        return result

    def call_generator(self, func: Callable[..., Any], *args: Any,
                       **kwargs: Any) -> Generator[Any, Any, None]:
        """Iterates ``func(...)``'s generator and records the outcome at its end."""
        ticket = self._try_admit()
        try:
            for element in func(*args, **kwargs):
                yield element
        except BaseException as exc:
            self._settle(ticket, exc)
            raise
        self._settle(ticket, None)

    async def call_async(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Awaits ``func(...)`` and records the outcome."""
        ticket = self._try_admit()
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            self._settle(ticket, exc)
            raise
        self._settle(ticket, None)
        return result

    async def call_async_generator(self, func: Callable[..., Any], *args: Any,
                                   **kwargs: Any) -> AsyncGenerator[Any, None]:
        """Iterates ``func(...)``'s async generator and records the outcome at its end."""
        ticket = self._try_admit()
        try:
            async for element in func(*args, **kwargs):
                yield element
        except BaseException as exc:
            self._settle(ticket, exc)
            raise
        self._settle(ticket, None)

    def __enter__(self) -> None:
        self._entered.set((*self._entered.get(), self._try_admit()))
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                 _traceback: Any) -> Literal[False]:
        tickets = self._entered.get()
        self._entered.set(tickets[:-1])
        self._settle(tickets[-1] if tickets else -1, exc_value)
        return False

    def _settle(self, ticket: int, exc: BaseException | None) -> None:
        """Records a call's outcome: a failure if ``is_failure`` says so,
        nothing for a cancellation, else a success. A call that ran without
        being admitted (while open) still counts, as in circuitbreaker: a
        failure re-opens, a success closes."""
        try:
            failed = exc is not None and self.is_failure(type(exc), exc)
        except BaseException:
            self._record_quiet(ticket, RELEASE)  # the predicate raised: no outcome
            raise
        if failed:
            self._last_failure = exc
            self._last_failure_mark = self.successes
            if ticket >= 0:
                self._record_quiet(ticket, FAILURE)
            else:
                self._move(_native.MOVE_OPEN_COUNTED)
        elif isinstance(exc, CANCELLED):
            self._record_quiet(ticket, RELEASE)
        elif ticket >= 0:
            self._record_quiet(ticket, SUCCESS)
        else:
            self.reset()

    # Native hooks (the Guarded path).

    def _on_reject(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.fallback_function:
            return self.fallback_function(*args, **kwargs)
        raise CircuitBreakerError(self)

    def _on_error(self, ticket: int, exc: BaseException) -> BaseException:
        self._settle(ticket, exc)
        return exc

    def reset(self) -> None:
        """Closes the circuit and forgets failures."""
        self._move(_native.MOVE_CLOSE)
        self._last_failure = None

    # -- state -----------------------------------------------------------------------

    @property
    def state(self) -> str:
        """'closed', 'open', or 'half_open' (open, and the timeout has passed)."""
        code = self._state_code
        if code == OPEN and self.open_remaining <= 0:
            return STATE_HALF_OPEN
        return _NAME_OF[code]

    @property
    def open_until(self) -> datetime:
        """When it will let calls through again (approximately, UTC)."""
        return datetime.now(timezone.utc) + timedelta(seconds=self.open_remaining)

    @property
    def open_remaining(self) -> int:
        """Whole seconds until the recovery timeout passes (rounded up; <= 0
        once passed), counted from the last opening (or the creation)."""
        remain = (self.opened_at_ns + round(self._recovery_timeout * 1e9) - self._now_ns()) / 1e9
        return math.ceil(remain) if remain > 0 else math.floor(remain)

    @property
    def failure_count(self) -> int:
        """Failures since the last success (kept while open)."""
        return self.failure_streak

    @property
    def closed(self) -> bool:
        return self.state == STATE_CLOSED

    @property
    def opened(self) -> bool:
        return self.state == STATE_OPEN

    @property
    def name(self) -> str | None:  # type: ignore[override]
        """The name given, or the first decorated function's qualified name."""
        return self._name

    @property
    def last_failure(self) -> BaseException | None:
        """The exception of the last failure, until a success."""
        if self.successes != self._last_failure_mark:
            return None
        return self._last_failure

    @property
    def fallback_function(self) -> Callable[..., Any] | None:
        return self._fallback_function

    def __str__(self, *args: Any, **kwargs: Any) -> str:
        return self.name or "unnamed_CircuitBreaker"

    def __repr__(self) -> str:
        return f"<circuitbreaker.CircuitBreaker {self} state={self.state!r}>"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _core._specialise(cls)


def _count_everything(exc: BaseException) -> int:
    # Not consulted: errors go to _on_error.
    return FAILURE


class CircuitBreakerError(Exception):
    """Raised by a call while its circuit is open. ``str()`` describes the
    breaker as it is then: name, reopening time, failures, seconds left and
    the last failure."""

    def __init__(self, circuit_breaker: CircuitBreaker, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._circuit_breaker = circuit_breaker

    def __str__(self, *args: Any, **kwargs: Any) -> str:
        cb = self._circuit_breaker
        return 'Circuit "%s" OPEN until %s (%d failures, %d sec remaining) (last_failure: %r)' % (
            cb.name, cb.open_until, cb.failure_count, round(cb.open_remaining), cb.last_failure)


class CircuitBreakerMonitor:
    """Every breaker that decorated something, by name (a later one of the same name wins)."""

    circuit_breakers: ClassVar[dict[Any, CircuitBreaker]] = {}

    @classmethod
    def register(cls, circuit_breaker: CircuitBreaker) -> None:
        cls.circuit_breakers[circuit_breaker.name] = circuit_breaker

    @classmethod
    def all_closed(cls) -> bool:
        return len(list(cls.get_open())) == 0

    @classmethod
    def get_circuits(cls) -> Iterable[CircuitBreaker]:
        return cls.circuit_breakers.values()

    @classmethod
    def get(cls, name: AnyStr) -> CircuitBreaker | None:
        return cls.circuit_breakers.get(name)

    @classmethod
    def get_open(cls) -> Iterable[CircuitBreaker]:
        for breaker in cls.get_circuits():
            if breaker.opened:
                yield breaker

    @classmethod
    def get_closed(cls) -> Iterable[CircuitBreaker]:
        for breaker in cls.get_circuits():
            if breaker.closed:
                yield breaker


def circuit(failure_threshold: Any = None, recovery_timeout: float | None = None,
            expected_exception: Any = None, name: str | None = None,
            fallback_function: Callable[..., Any] | None = None,
            cls: type[CircuitBreaker] = CircuitBreaker) -> Any:
    """``@circuit`` or ``@circuit(...)``: a ``cls`` breaker guarding the function."""
    if callable(failure_threshold):
        return cls().decorate(failure_threshold)
    return cls(failure_threshold=failure_threshold, recovery_timeout=recovery_timeout,
               expected_exception=expected_exception, name=name,
               fallback_function=fallback_function)


_core._specialise(CircuitBreaker)

# What the decorator's wrapper consults: the Guarded path stands for it only
# while these are the ones defined here (a subclass, or a test, may replace them).
_DECORATOR_READS = {attr: CircuitBreaker.__dict__[attr]
                    for attr in ("opened", "call", "fallback_function", "state", "open_remaining")}
