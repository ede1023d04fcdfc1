"""pybreaker 1.4 on the native circuit breaker.

Replace ``import pybreaker`` with::

    from virtrigaud_resilience.compat import pybreaker

and nothing else changes: :class:`CircuitBreaker` takes the same arguments,
counts the same way (``fail_counter`` is the number of counted failures since
the last success or close, and survives opening; ``success_counter`` counts
successful half-open calls), makes the same transitions at the same moments
(``fail_max`` failures open it; after ``reset_timeout`` seconds the next call
half-opens it and runs; ``success_threshold`` successes close it; a failure
re-opens it), raises the same :class:`CircuitBreakerError` messages, calls
listeners in the same order (``before_call``, then the call, then
``failure`` before the ``state_change`` it causes, or the ``state_change``
of closing before ``success``), and stores state in the same Redis keys.

The state machine is the native one (``_core.CircuitBreaker`` with a success
threshold and the failure streak kept across opening): a call on a closed
breaker without ``before_call``/``success`` listeners runs in one native
call. Listener callbacks of one breaker never run concurrently (they are
called under the breaker's lock, as pybreaker's whole call is), but the
guarded functions do. What still differs from pybreaker is listed in
docs/migrating.md.
"""

from __future__ import annotations

import calendar
import contextlib
import importlib.util
import inspect
import logging
import threading
import time
import types
import weakref
from collections.abc import Callable, Generator, Iterable, Sequence
from datetime import datetime, timezone
from functools import wraps
from typing import Any, TypeVar

from .. import _core, _native, _validate
from .._native import CLOSED, FAILURE, HALF_OPEN, OPEN, RELEASE, SUCCESS
from . import _shared
from ._shared import CANCELLED

__all__ = (
    "CircuitBreaker",
    "CircuitBreakerListener",
    "CircuitBreakerError",
    "CircuitBreakerStorage",
    "CircuitMemoryStorage",
    "CircuitRedisStorage",
    "STATE_OPEN",
    "STATE_CLOSED",
    "STATE_HALF_OPEN",
)

STATE_OPEN = "open"
STATE_CLOSED = "closed"
STATE_HALF_OPEN = "half-open"

#: Whether tornado can be imported (pybreaker's flag: the tornado decorator
#: form ``@breaker(__pybreaker_call_async=True)`` raises ImportError without it).
HAS_TORNADO_SUPPORT = importlib.util.find_spec("tornado") is not None
#: Whether redis-py can be imported (CircuitRedisStorage needs it).
HAS_REDIS_SUPPORT = importlib.util.find_spec("redis") is not None

T = TypeVar("T")

_NAME_OF = {CLOSED: STATE_CLOSED, HALF_OPEN: STATE_HALF_OPEN, OPEN: STATE_OPEN}
_CODE_OF = {name: code for code, name in _NAME_OF.items()}
_MOVE_TO = {STATE_CLOSED: _native.MOVE_CLOSE, STATE_HALF_OPEN: _native.MOVE_HALF_OPEN,
            STATE_OPEN: _native.MOVE_OPEN}
_THRESHOLD_REACHED = "Failures threshold reached, circuit breaker opened"
_TRIAL_FAILED = "Trial call failed, circuit breaker opened"
_STILL_OPEN = "Timeout not elapsed yet, circuit breaker still open"
_TRIAL_IN_PROGRESS = "Trial call in progress, circuit breaker half-open"
#: A trial call whose outcome never comes (a generator never finished) holds
#: the one half-open slot at most this long (seconds).
_HALF_OPEN_LEASE = 300.0
# The native path: transitions, rejections, errors and generators come to
# Python; a coroutine result is a value, as pybreaker's call() returns it.
_NATIVE_HOOKS = (_native.HOOK_TRANSITION | _native.HOOK_REJECT | _native.HOOK_ERROR
                 | _native.HOOK_GENERATOR | _native.ACCEPT_COROUTINE)


class CircuitBreakerError(Exception):
    """Raised instead of calling the function while the circuit is open, and
    (unless ``throw_new_error_on_trip=False``) by the call that opens it."""


class CircuitBreaker(_core.CircuitBreaker):
    """pybreaker's CircuitBreaker on the native breaker.

    Args:
        fail_max: counted failures (consecutive, since the last success or
            close) that open the circuit; int in ``[1, 4_194_303]``.
        reset_timeout: seconds the circuit stays open before the next call
            half-opens it; a number ``>= 0``.
        success_threshold: successful half-open calls that close it; int in
            ``[1, 2_097_151]``.
        exclude: exception types (subclasses included) and predicates
            ``exc -> bool`` whose exceptions count as successes.
        listeners: :class:`CircuitBreakerListener` instances.
        state_storage: where the state lives: :class:`CircuitMemoryStorage`
            (the default; the native breaker itself), :class:`CircuitRedisStorage`
            or another :class:`CircuitBreakerStorage`.
        name: any name (for logs).
        throw_new_error_on_trip: raise :class:`CircuitBreakerError` from the
            call that opens the circuit (True), or that call's own error.

    Raises:
        ValueError, TypeError: a bad argument, naming it and its value.
    """

    def __init__(
        self,
        fail_max: int = 5,
        reset_timeout: float = 60,
        success_threshold: int = 1,
        exclude: Iterable[type[BaseException] | Callable[[Any], bool]] | None = None,
        listeners: Sequence[CircuitBreakerListener] | None = None,
        state_storage: CircuitBreakerStorage | None = None,
        name: str | None = None,
        throw_new_error_on_trip: bool = True,
    ) -> None:
        fail_max, reset_timeout, success_threshold = _check_config(
            fail_max, reset_timeout, success_threshold)
        super().__init__("" if name is None else str(name), "", "", fail_max,
                         _ns(reset_timeout), 1, None, _count_everything, _ns(_HALF_OPEN_LEASE))
        self._configure(fail_max, _ns(reset_timeout), success_threshold)
        self._fail_max = fail_max
        self._reset_timeout = reset_timeout
        self._success_threshold = success_threshold
        self._lock = threading.RLock()
        self._excluded_exceptions = list(exclude or [])
        self._listeners: list[Any] = list(listeners or [])
        self._name = name
        self._throw_new_error_on_trip = throw_new_error_on_trip
        storage = state_storage if state_storage is not None else CircuitMemoryStorage(STATE_CLOSED)
        self._state_storage = storage
        # The exact CircuitMemoryStorage is the native breaker itself; any
        # other storage is the truth this breaker syncs with around each call.
        self._external = type(storage) is not CircuitMemoryStorage
        self._adopt(storage, storage.state)
        if isinstance(storage, CircuitMemoryStorage) and not self._external:
            storage._bind(self)
        self._state = self._create_new_state(self.current_state)
        self._update_hooks()

    # -- configuration ---------------------------------------------------------

    @property
    def fail_counter(self) -> int:
        """Counted failures since the last success or close (kept while open)."""
        return self._state_storage.counter

    @property
    def success_counter(self) -> int:
        """Successful calls in the current half-open state."""
        return self._state_storage.success_counter

    @property
    def fail_max(self) -> int:
        """Counted failures that open the circuit."""
        return self._fail_max

    @fail_max.setter
    def fail_max(self, number: int) -> None:
        self._fail_max = _check_config(number, self._reset_timeout, self._success_threshold)[0]
        self._reconfigure()

    @property
    def reset_timeout(self) -> float:
        """Seconds the circuit stays open before a trial call."""
        return self._reset_timeout

    @reset_timeout.setter
    def reset_timeout(self, timeout: float) -> None:
        self._reset_timeout = _check_config(self._fail_max, timeout, self._success_threshold)[1]
        self._reconfigure()

    @property
    def success_threshold(self) -> int:
        """Successful half-open calls that close the circuit."""
        return self._success_threshold

    @success_threshold.setter
    def success_threshold(self, threshold: int) -> None:
        self._success_threshold = _check_config(self._fail_max, self._reset_timeout, threshold)[2]
        self._reconfigure()

    def _reconfigure(self) -> None:
        self._configure(self._fail_max, _ns(self._reset_timeout), self._success_threshold)

    @property  # type: ignore[override]
    def name(self) -> str | None:
        """The name given, or None."""
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        self._name = name

    # -- state -------------------------------------------------------------------

    @property
    def current_state(self) -> str:
        """The storage's state name: 'closed', 'open' or 'half-open'."""
        return self._state_storage.state

    @property
    def state(self) -> CircuitBreakerState:
        """The state object; first catches up with a state changed elsewhere
        (another process sharing the storage), telling the listeners."""
        current = self.current_state
        if current != self._state.name:
            self.state = current
        return self._state

    @state.setter
    def state(self, state_str: str) -> None:
        if state_str not in _CODE_OF:
            self._create_new_state(state_str)  # raises pybreaker's ValueError
        with self._lock:
            if self._external:
                self._adopt(self._state_storage, state_str)
            elif self._native_state() != state_str:
                self._move(_MOVE_TO[state_str])
            self._state = self._create_new_state(state_str, prev_state=self._state, notify=True)

    def _create_new_state(self, new_state: str, prev_state: CircuitBreakerState | None = None,
                          notify: bool = False) -> CircuitBreakerState:
        """The state object for a state name (module-level classes, looked up now)."""
        classes = {STATE_CLOSED: CircuitClosedState, STATE_OPEN: CircuitOpenState,
                   STATE_HALF_OPEN: CircuitHalfOpenState}
        try:
            cls = classes[new_state]
        except (KeyError, TypeError):
            raise ValueError(
                f"Unknown state {new_state!r}, valid states: {', '.join(classes)}") from None
        return cls(self, prev_state=prev_state, notify=notify)

    def _native_state(self) -> str:
        return _NAME_OF[self._state_code]

    def open(self) -> bool:
        """Opens the circuit: calls fail at once until ``reset_timeout`` passes.
        Returns ``throw_new_error_on_trip``."""
        self._manual(STATE_OPEN)
        return self._throw_new_error_on_trip

    def half_open(self) -> None:
        """Half-opens the circuit: the next call is a trial."""
        self._manual(STATE_HALF_OPEN)

    def close(self) -> None:
        """Closes the circuit, forgetting failures."""
        self._manual(STATE_CLOSED)

    def _manual(self, name: str) -> None:
        # A manual transition always tells the listeners, even to the same state.
        with self._lock:
            self._move(_MOVE_TO[name])
            if self._external:
                self._write_through(name)
            self._state = self._create_new_state(name, prev_state=self._state, notify=True)

    # -- exclusions and listeners ------------------------------------------------

    @property
    def excluded_exceptions(self) -> tuple[Any, ...]:
        """Exception types and predicates whose exceptions are not failures."""
        return tuple(self._excluded_exceptions)

    def add_excluded_exception(self, exception: Any) -> None:
        """Excludes an exception type (or a predicate ``exc -> bool``)."""
        with self._lock:
            self._excluded_exceptions.append(exception)

    def add_excluded_exceptions(self, *exceptions: Any) -> None:
        """Excludes several exception types or predicates."""
        for exception in exceptions:
            self.add_excluded_exception(exception)

    def remove_excluded_exception(self, exception: Any) -> None:
        """Stops excluding an exception type (ValueError if it was not)."""
        with self._lock:
            self._excluded_exceptions.remove(exception)

    def is_system_error(self, exception: BaseException) -> bool:
        """Whether ``exception`` counts as a failure: it is excluded when its
        type is a subclass of an excluded type (compared as ``type(x) is
        type``, as pybreaker does) or an excluded predicate returns true."""
        exception_type = type(exception)
        for exclusion in self._excluded_exceptions:
            if type(exclusion) is type:
                if issubclass(exception_type, exclusion):
                    return False
            elif callable(exclusion) and exclusion(exception):
                return False
        return True

    @property
    def listeners(self) -> tuple[Any, ...]:
        """The listeners, in the order they are called."""
        return tuple(self._listeners)

    def add_listener(self, listener: Any) -> None:
        """Adds a listener (called after those added before it)."""
        with self._lock:
            self._listeners.append(listener)
            self._update_hooks()

    def add_listeners(self, *listeners: Any) -> None:
        """Adds several listeners."""
        for listener in listeners:
            self.add_listener(listener)

    def remove_listener(self, listener: Any) -> None:
        """Removes a listener (ValueError if absent)."""
        with self._lock:
            self._listeners.remove(listener)
            self._update_hooks()

    def _update_hooks(self) -> None:
        # A call needs Python around it only when a listener wants to hear of
        # every call (before_call / success) or the state lives elsewhere.
        per_call = any(_overrides(listener, "before_call") or _overrides(listener, "success")
                       for listener in self._listeners)
        self._set_hooks(_NATIVE_HOOKS | (_native.DELEGATE if per_call or self._external else 0))

    # -- calls -------------------------------------------------------------------

    # call(func, *args, **kwargs) is the native one (_core.CircuitBreaker.call)
    # with the hooks below; _call_python is the same in Python, for listeners
    # and external storages.

    def _call_python(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        ticket = self._enter(func, args, kwargs)
        try:
            ret = func(*args, **kwargs)
        except BaseException as exc:
            raised = self._on_error(ticket, exc)
            if raised is exc:
                raise
            raise raised  # noqa: B904  (chained to exc, as pybreaker's raise in except)
        if isinstance(ret, types.GeneratorType):
            return self._on_generator(ticket, ret)  # type: ignore[return-value]
        self._on_success(ticket)
        return ret

    def call_async(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Awaits ``func(*args, **kwargs)`` through the breaker; returns the
        awaitable (a coroutine: await it in asyncio, or yield it in a tornado
        coroutine). ``func`` may return any awaitable (a tornado Future, a
        coroutine). Nothing runs until it is awaited."""
        return self._await_call(func, args, kwargs)

    async def acall(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``await breaker.acall(func, *args, **kwargs)``: the asyncio form of
        :meth:`call` for coroutine functions (generators are refused with
        TypeError). Cancelling the awaiting task records nothing."""
        if inspect.isasyncgenfunction(func):
            raise TypeError("acall does not support async generators; "
                            "iterate the generator inside a guarded coroutine")
        if inspect.isgeneratorfunction(func):
            raise TypeError("acall does not support generator functions; use call()")
        return await self._await_call(func, args, kwargs)

    async def _await_call(self, func: Callable[..., Any], args: tuple[Any, ...],
                          kwargs: dict[str, Any]) -> Any:
        ticket = self._enter(func, args, kwargs)
        try:
            ret = await func(*args, **kwargs)
        except BaseException as exc:
            raised = self._on_error(ticket, exc)
            if raised is exc:
                raise
            raise raised  # noqa: B904
        self._on_success(ticket)
        return ret

    @contextlib.contextmanager
    def calling(self) -> Generator[None, None, None]:
        """``with breaker.calling():`` guards the block as :meth:`call` guards
        a function (a block that raises is a failed call)."""

        def _block() -> Generator[None, None, None]:
            yield

        yield from self.call(_block)

    def __call__(self, *call_args: Any, **call_kwargs: bool) -> Any:
        """``@breaker`` (or ``@breaker()``) guards a function: each call is
        ``breaker.call(func, ...)``. ``@breaker(__pybreaker_call_async=True)``
        makes each call ``breaker.call_async(func, ...)`` (pybreaker's tornado
        form; ImportError when tornado is not installed, as pybreaker)."""
        call_async = call_kwargs.pop("__pybreaker_call_async", False)
        if call_async and not HAS_TORNADO_SUPPORT:
            raise ImportError("No module named tornado")

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            if call_async:
                @wraps(func)
                def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return self.call_async(func, *args, **kwargs)

                return async_wrapper
            if isinstance(inspect.getattr_static(type(self), "call"), types.FunctionType):
                # A subclass's own call(): every call goes through it, as in pybreaker.
                @wraps(func)
                def wrapper(*args: Any, **kwargs: Any) -> Any:
                    return self.call(func, *args, **kwargs)

                return wrapper
            return wraps(func)(_core.Guarded(self, func))

        if call_args:
            return decorate(*call_args)
        return decorate

    # -- the outcome of a call (also the native call path's hooks) ------------------

    def _enter(self, func: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> int:
        """Admits a call (or raises CircuitBreakerError) and tells before_call."""
        if self._external:
            self._sync()
        ticket = self._try_admit()
        if ticket < 0:
            raise self._rejection()
        try:
            if self._listeners:
                with self._lock:
                    for listener in self._listeners:
                        listener.before_call(self, func, *args, **kwargs)
        except BaseException:
            self._record_quiet(ticket, RELEASE)
            raise
        return ticket

    def _rejection(self) -> CircuitBreakerError:
        # pybreaker serialises calls, so a trial call never meets another; here
        # a call that finds the trial slot taken is refused and says so.
        in_trial = self._state_code == HALF_OPEN
        return CircuitBreakerError(_TRIAL_IN_PROGRESS if in_trial else _STILL_OPEN)

    def _on_reject(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        raise self._rejection()

    def _on_error(self, ticket: int, exc: BaseException) -> BaseException:
        """Records a failed call; returns what the call raises: ``exc``, or
        CircuitBreakerError (with exc's traceback) when this failure opened
        the circuit and ``throw_new_error_on_trip`` is set."""
        try:
            counted = self.is_system_error(exc)
        except BaseException:
            self._record_quiet(ticket, RELEASE)  # an exclusion predicate raised: no outcome
            raise
        if not counted:
            self._on_success(ticket)
            return exc
        if isinstance(exc, CANCELLED):
            self._record_quiet(ticket, RELEASE)
            return exc
        with self._lock:
            change = self._record_failure(ticket)
            try:
                for listener in self._listeners:
                    listener.failure(self, exc)
            finally:
                if change is not None:
                    self._transition(*change)
        if change is not None and change[1] == OPEN and self._throw_new_error_on_trip:
            message = _THRESHOLD_REACHED if change[0] == CLOSED else _TRIAL_FAILED
            return CircuitBreakerError(message).with_traceback(exc.__traceback__)
        return exc

    def _on_success(self, ticket: int) -> None:
        with self._lock:
            change = self._record_success(ticket)
            if change is not None:
                self._transition(*change)
            for listener in self._listeners:
                listener.success(self)

    def _on_generator(self, ticket: int, generator: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
        finalizers: list[weakref.finalize[Any, Any]] = []
        guarded = self._guard_generator(ticket, generator, finalizers)
        if _native.is_half_open_probe(ticket):
            # A trial generator dropped before its first next() never runs its
            # body: give its slot back when it is collected (unless it reported).
            finalizers.append(weakref.finalize(guarded, self._record_quiet, ticket, RELEASE))
        return guarded

    def _guard_generator(self, ticket: int, generator: Generator[Any, Any, Any],
                         finalizers: list[weakref.finalize[Any, Any]]) -> Generator[Any, Any, Any]:
        try:
            result = yield from generator
        except BaseException as exc:
            for finalizer in finalizers:
                finalizer.detach()
            raised = self._on_error(ticket, exc)
            if raised is exc:
                raise
            raise raised  # noqa: B904
        for finalizer in finalizers:
            finalizer.detach()
        self._on_success(ticket)
        return result

    def _record_success(self, ticket: int) -> tuple[int, int] | None:
        if not self._external:
            return self._record_quiet(ticket, SUCCESS)
        storage = self._state_storage
        storage.reset_counter()
        synced = -1
        if _native.is_half_open_probe(ticket):
            storage.increment_success_counter()
            synced = storage.success_counter
        return self._record_quiet(ticket, SUCCESS, synced)

    def _record_failure(self, ticket: int) -> tuple[int, int] | None:
        if not self._external:
            return self._record_quiet(ticket, FAILURE)
        self._inc_counter()
        return self._record_quiet(ticket, FAILURE, self._state_storage.counter)

    def _inc_counter(self) -> None:
        """Increments the storage's failure counter (external storages)."""
        self._state_storage.increment_counter()

    def _transition(self, old: int, new: int) -> None:
        """A native transition: tells the storage (external) and the listeners."""
        name = _NAME_OF[new]
        with self._lock:
            if self._external:
                self._write_through(name)
            self._state = self._create_new_state(name, prev_state=self._state, notify=True)

    def _entered(self, state: CircuitBreakerState, prev_state: CircuitBreakerState | None) -> None:
        """A state object was created with notify=True: pybreaker's side effects
        on an external storage, then the listeners' state_change."""
        if self._external:
            if state.name == STATE_CLOSED:
                self._state_storage.reset_counter()
            else:
                self._state_storage.reset_success_counter()
        with self._lock:
            for listener in self._listeners:
                listener.state_change(self, prev_state, state)

    # -- external storages -----------------------------------------------------

    def _sync(self) -> None:
        """Catches up with the storage's state (changed by another process)."""
        current = self._state_storage.state
        if current != self._state.name:
            self.state = current

    def _adopt(self, storage: CircuitBreakerStorage, name: str) -> None:
        """Sets the native state from the storage's (a state named ``name``)."""
        code = _CODE_OF.get(name)
        if code is None:
            self._create_new_state(name)  # raises pybreaker's ValueError
            return
        opened_at = storage.opened_at
        if opened_at is None:
            # Never opened: an open circuit lets the next call through (as pybreaker).
            stamp = self._now_ns() - _ns(self._reset_timeout) - 1
        else:
            stamp = _shared.stamp_of(self, opened_at)
        self._restore(code, storage.counter, storage.success_counter, stamp)

    def _write_through(self, name: str) -> None:
        storage = self._state_storage
        if name == STATE_OPEN:
            storage.opened_at = _shared.wall_of(self, self.opened_at_ns)
        elif name == STATE_CLOSED:
            storage.reset_success_counter()
        storage.state = name

    def __repr__(self) -> str:
        return (f"<pybreaker.CircuitBreaker name={self._name!r} state={self._native_state()!r} "
                f"fail_counter={self.failure_streak}>")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _core._specialise(cls)


def _count_everything(exc: BaseException) -> int:
    # The native classifier is not consulted (errors go to _on_error); were
    # it, every exception would be a failure.
    return FAILURE


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _check_config(fail_max: Any, reset_timeout: Any, success_threshold: Any) -> tuple[int, Any, int]:
    owner = "CircuitBreaker"
    fail_max = _validate.integer(owner, "fail_max", fail_max, 1, _shared.MAX_FAILURE_THRESHOLD)
    _validate.non_negative(owner, "reset_timeout", reset_timeout, maximum=_shared.MAX_TIMEOUT)
    success_threshold = _validate.integer(owner, "success_threshold", success_threshold, 1,
                                          _shared.MAX_SUCCESS_THRESHOLD)
    return fail_max, reset_timeout, success_threshold


def _overrides(listener: Any, method: str) -> bool:
    """Whether ``listener`` does something in ``method`` (the base class's no-op does not)."""
    return getattr(type(listener), method, None) is not getattr(CircuitBreakerListener, method)


class CircuitBreakerListener:
    """Subclass it and override what you need; each method is called by the
    breaker ``cb`` (under its lock: one callback at a time per breaker).
    What a callback raises propagates to the caller of the guarded call."""

    def before_call(self, cb: CircuitBreaker, func: Callable[..., Any], *args: Any,
                    **kwargs: Any) -> None:
        """Before ``cb`` calls ``func`` (a rejected call is not announced)."""

    def failure(self, cb: CircuitBreaker, exc: BaseException) -> None:
        """After a call raised an exception that counts (a system error)."""

    def success(self, cb: CircuitBreaker) -> None:
        """After a call succeeded (or raised an excluded exception)."""

    def state_change(self, cb: CircuitBreaker, old_state: CircuitBreakerState | None,
                     new_state: CircuitBreakerState) -> None:
        """After the state changed (manual transitions announce even the same state)."""


class CircuitBreakerState:
    """A state of a breaker, as the listeners see it: ``name`` is 'closed',
    'open' or 'half-open'. The behaviour is the native breaker's."""

    def __init__(self, cb: CircuitBreaker, name: str) -> None:
        self._breaker = cb
        self._name = name

    @property
    def name(self) -> str:
        """'closed', 'open' or 'half-open'."""
        return self._name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r}>"

    def __str__(self) -> str:
        return self._name


class CircuitClosedState(CircuitBreakerState):
    """Closed: calls run; ``fail_max`` counted failures open the circuit."""

    def __init__(self, cb: CircuitBreaker, prev_state: CircuitBreakerState | None = None,
                 notify: bool = False) -> None:
        super().__init__(cb, STATE_CLOSED)
        if notify:
            cb._entered(self, prev_state)


class CircuitOpenState(CircuitBreakerState):
    """Open: calls raise CircuitBreakerError until ``reset_timeout`` passes."""

    def __init__(self, cb: CircuitBreaker, prev_state: CircuitBreakerState | None = None,
                 notify: bool = False) -> None:
        super().__init__(cb, STATE_OPEN)
        if notify:
            cb._entered(self, prev_state)


class CircuitHalfOpenState(CircuitBreakerState):
    """Half-open: a trial call runs; ``success_threshold`` successes close the
    circuit, a failure opens it again."""

    def __init__(self, cb: CircuitBreaker, prev_state: CircuitBreakerState | None = None,
                 notify: bool = False) -> None:
        super().__init__(cb, STATE_HALF_OPEN)
        if notify:
            cb._entered(self, prev_state)


class CircuitBreakerStorage:
    """Where a breaker's state lives; subclass it for your own backing (every
    member below is used: override them all)."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def name(self) -> str:
        """The storage's kind ('memory', 'redis')."""
        return self._name

    @property
    def state(self) -> str:
        """The state name."""
        raise NotImplementedError

    @state.setter
    def state(self, state: str) -> None:
        raise NotImplementedError

    def increment_counter(self) -> None:
        """Adds one to the failure counter."""
        raise NotImplementedError

    def reset_counter(self) -> None:
        """Sets the failure counter to 0."""
        raise NotImplementedError

    def increment_success_counter(self) -> None:
        """Adds one to the half-open success counter."""
        raise NotImplementedError

    def reset_success_counter(self) -> None:
        """Sets the half-open success counter to 0."""
        raise NotImplementedError

    @property
    def counter(self) -> int:
        """The failure counter."""
        raise NotImplementedError

    @property
    def success_counter(self) -> int:
        """The half-open success counter."""
        raise NotImplementedError

    @property
    def opened_at(self) -> datetime | None:
        """When the circuit last opened (an aware UTC datetime), or None."""
        raise NotImplementedError

    @opened_at.setter
    def opened_at(self, datetime: datetime) -> None:
        raise NotImplementedError


class CircuitMemoryStorage(CircuitBreakerStorage):
    """The state in this process: once a breaker uses it, a view of that
    breaker's native state (reads and writes go there). A storage handed to a
    second breaker is adopted by it: from then on it shows the second one's.
    """

    def __init__(self, state: str) -> None:
        super().__init__("memory")
        self._state = state
        self._fail_counter = 0
        self._success_counter = 0
        self._opened_at: datetime | None = None
        self._opened_at_stamp = 0  # the native stamp _opened_at stands for
        self._breaker: CircuitBreaker | None = None

    def _bind(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._opened_at_stamp = breaker.opened_at_ns

    def _set(self, *, state: str | None = None, counter: int | None = None,
             successes: int | None = None, stamp: int | None = None) -> None:
        breaker = self._breaker
        assert breaker is not None
        state = state if state is not None else breaker._native_state()
        if state not in _CODE_OF:
            breaker._create_new_state(state)  # raises
        breaker._restore(_CODE_OF[state], breaker.failure_streak if counter is None else counter,
                         breaker.half_open_successes if successes is None else successes,
                         breaker.opened_at_ns if stamp is None else stamp)

    @property
    def state(self) -> str:
        if self._breaker is None:
            return self._state
        return self._breaker._native_state()

    @state.setter
    def state(self, state: str) -> None:
        if self._breaker is None:
            self._state = state
        else:
            self._set(state=state)

    def increment_counter(self) -> None:
        if self._breaker is None:
            self._fail_counter += 1
        else:
            self._set(counter=self._breaker.failure_streak + 1)

    def reset_counter(self) -> None:
        if self._breaker is None:
            self._fail_counter = 0
        else:
            self._set(counter=0)

    def increment_success_counter(self) -> None:
        if self._breaker is None:
            self._success_counter += 1
        else:
            self._set(successes=self._breaker.half_open_successes + 1)

    def reset_success_counter(self) -> None:
        if self._breaker is None:
            self._success_counter = 0
        else:
            self._set(successes=0)

    @property
    def counter(self) -> int:
        if self._breaker is None:
            return self._fail_counter
        return self._breaker.failure_streak

    @property
    def success_counter(self) -> int:
        if self._breaker is None:
            return self._success_counter
        return self._breaker.half_open_successes

    @property
    def opened_at(self) -> datetime | None:
        breaker = self._breaker
        if breaker is None or breaker.opened_at_ns == self._opened_at_stamp:
            return self._opened_at
        self._opened_at = _shared.wall_of(breaker, breaker.opened_at_ns)
        self._opened_at_stamp = breaker.opened_at_ns
        return self._opened_at

    @opened_at.setter
    def opened_at(self, datetime: datetime) -> None:
        self._opened_at = datetime
        if self._breaker is not None:
            stamp = _shared.stamp_of(self._breaker, datetime)
            self._set(stamp=stamp)
            self._opened_at_stamp = stamp


class CircuitRedisStorage(CircuitBreakerStorage):
    """The state in Redis, shared by every process using the same keys:
    ``[namespace:]pybreaker:state`` ('closed', 'open', 'half-open'),
    ``...:fail_counter``, ``...:success_counter`` (ints) and ``...:opened_at``
    (Unix seconds), as pybreaker keeps them (the two interoperate).

    When Redis fails, each operation logs the RedisError (logger
    ``pybreaker``) and carries on: the state reads as
    ``fallback_circuit_state``, the counters as 0, ``opened_at`` as None, and
    writes are dropped. A missing state key is re-created from the fallback.
    Do not give it a client made with ``decode_responses=True``.
    """

    BASE_NAMESPACE = "pybreaker"

    logger = logging.getLogger("pybreaker")

    def __init__(self, state: str, redis_object: Any, namespace: str | None = None,
                 fallback_circuit_state: str = STATE_CLOSED, cluster_mode: bool = False) -> None:
        if not HAS_REDIS_SUPPORT:
            raise ImportError(
                "CircuitRedisStorage can only be used if the required dependencies exist")
        from redis.exceptions import RedisError

        super().__init__("redis")
        self._redis_error: type[Exception] = RedisError
        self._redis = redis_object
        self._namespace_name = namespace
        self._fallback_circuit_state = fallback_circuit_state
        self._initial_state = str(state)
        self._cluster_mode = cluster_mode
        self._initialize_redis_state(self._initial_state)

    def _initialize_redis_state(self, state: str) -> None:
        self._redis.setnx(self._namespace("fail_counter"), 0)
        self._redis.setnx(self._namespace("success_counter"), 0)
        self._redis.setnx(self._namespace("state"), state)

    def _logged(self, operation: Callable[[], T], message: str, default: T) -> T:
        """operation(), or ``default`` after logging the RedisError it raised."""
        try:
            return operation()
        except self._redis_error:
            self.logger.exception(message)
            return default

    @property
    def state(self) -> str:
        """The state; the fallback when Redis fails or has no state (then re-created)."""
        missing: Any = object()
        raw: Any = self._logged(lambda: self._redis.get(self._namespace("state")),
                                "RedisError: falling back to default circuit state", missing)
        if raw is missing:
            return self._fallback_circuit_state
        if raw is None:
            self._initialize_redis_state(self._fallback_circuit_state)
            return self._fallback_circuit_state
        return str(raw.decode("utf-8"))

    @state.setter
    def state(self, state: str) -> None:
        self._logged(lambda: self._redis.set(self._namespace("state"), str(state)),
                     "RedisError", None)

    def increment_counter(self) -> None:
        self._logged(lambda: self._redis.incr(self._namespace("fail_counter")), "RedisError", None)

    def reset_counter(self) -> None:
        self._logged(lambda: self._redis.set(self._namespace("fail_counter"), 0), "RedisError", None)

    def increment_success_counter(self) -> None:
        self._logged(lambda: self._redis.incr(self._namespace("success_counter")), "RedisError",
                     None)

    def reset_success_counter(self) -> None:
        self._logged(lambda: self._redis.set(self._namespace("success_counter"), 0), "RedisError",
                     None)

    @property
    def counter(self) -> int:
        raw = self._logged(lambda: self._redis.get(self._namespace("fail_counter")),
                           "RedisError: Assuming no errors", None)
        return int(raw) if raw else 0

    @property
    def success_counter(self) -> int:
        raw = self._logged(lambda: self._redis.get(self._namespace("success_counter")),
                           "RedisError: Assuming no successes", None)
        return int(raw) if raw else 0

    @property
    def opened_at(self) -> datetime | None:
        raw = self._logged(lambda: self._redis.get(self._namespace("opened_at")), "RedisError",
                           None)
        if not raw:
            return None
        return datetime(*time.gmtime(int(raw))[:6], tzinfo=timezone.utc)

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        """Stores ``now`` as Unix seconds, only if later than what is stored
        (atomically with WATCH, or read-then-write in cluster mode)."""
        key = self._namespace("opened_at")
        seconds = int(calendar.timegm(now.utctimetuple() if now.tzinfo else now.timetuple()))

        def later(current: Any) -> bool:
            return not current or seconds > int(current)

        def set_if_later(pipe: Any) -> None:
            current = pipe.get(key)
            pipe.multi()
            if later(current):
                pipe.set(key, seconds)

        def store() -> None:
            if self._cluster_mode:
                if later(self._redis.get(key)):
                    self._redis.set(key, seconds)
            else:
                self._redis.transaction(set_if_later, key)

        self._logged(store, "RedisError", None)

    def _namespace(self, key: str) -> str:
        parts = [self.BASE_NAMESPACE, key]
        if self._namespace_name:
            parts.insert(0, self._namespace_name)
        return ":".join(parts)


_core._specialise(CircuitBreaker)
