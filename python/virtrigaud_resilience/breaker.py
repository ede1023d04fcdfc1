"""Circuit breakers: the guide's three-state breaker on a lock-free native core.

A :class:`CircuitBreaker` counts consecutive failures while **closed**;
``failure_threshold`` of them **open** it. While open it rejects calls with
:class:`~virtrigaud_resilience.errors.CircuitOpenError` (an
``UnavailableError``) without running them, until ``reset_timeout`` seconds
have passed since the failure that opened it; then the next call moves it to
**half-open** and runs as the first probe. Half-open admits up to
``half_open_max_calls`` probes; any failure re-opens it; once that many were
admitted and one succeeds, it closes.

What counts as a failure (the default, as the guide's gRPC interceptor):
exceptions that are not a ``ProviderError``, and ``ProviderError`` s of type
``Retryable``, ``Unavailable`` and ``Timeout``. Business answers
(``NotFound``, ``InvalidSpec``, ``Conflict``, ...) and ``RateLimit`` are
recorded as *successes*: the provider answered. A cancelled call (a
``BaseException`` that is not an ``Exception``: ``asyncio.CancelledError``,
``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``) records nothing and
gives its half-open slot back, unless a deadline cut it off: then it is a
Timeout, a failure (see :func:`~virtrigaud_resilience.timeouts.attempt_outcome`).
"""

from __future__ import annotations

import builtins
import atexit
import enum
import logging
import threading
import warnings
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

from . import _core, _native, _validate, events
from . import _admission, _deprecated
from ._admission import Held, hold
from ._decorate import route_calls
from ._native import FAILURE as _FAILURE
from ._native import RELEASE as _RELEASE
from ._native import SUCCESS as _SUCCESS
from ._specialised import HotMethods
from ._tracking import Census, Counters, Labels
from .clock import ManualClock, check_clock
from .durations import Seconds
from .errors import MAX_RETRY_AFTER, CircuitOpenError, ErrorType, ProviderError
from .timeouts import record_outcome
from .windows import CountWindow, TimeWindow, Window

if TYPE_CHECKING:
    from .backoff import Backoff

__all__ = [
    "BreakerState",
    "BreakerMode",
    "BreakerConfig",
    "CircuitBreaker",
    "BreakerScope",
    "Permit",
    "default_failure_predicate",
    "StateListener",
    "BreakerRegistry",
]

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("virtrigaud_resilience")
# A library logs nothing unless the application configures logging.
logger.addHandler(logging.NullHandler())

#: Longest reset timeout (and half-open lease) accepted: about 31 years.
MAX_RESET_TIMEOUT = 1e9
#: The default half-open lease: 5 minutes, longer than the guide's longest
#: RPC timeout (4 minutes for mutating operations).
DEFAULT_HALF_OPEN_LEASE = 300.0

_INFRASTRUCTURE = frozenset({ErrorType.RETRYABLE, ErrorType.UNAVAILABLE, ErrorType.TIMEOUT})


class BreakerState(enum.IntEnum):
    """The breaker's state; the value is the metric's (0 closed, 1 half-open, 2 open)."""

    CLOSED = _native.CLOSED
    HALF_OPEN = _native.HALF_OPEN
    OPEN = _native.OPEN


class BreakerMode(enum.IntEnum):
    """The operator's override in force (resilience4j's special states); the
    value is the ``virtrigaud_circuit_breaker_mode`` gauge's.

    NORMAL: the breaker judges outcomes. DISABLED (:meth:`CircuitBreaker.disable`):
    every call admitted, no outcome judged; ``state`` reads CLOSED.
    METRICS_ONLY (:meth:`CircuitBreaker.metrics_only`): every call admitted,
    outcomes recorded and rates reported, never opens; ``state`` reads
    CLOSED. FORCED_OPEN (:meth:`CircuitBreaker.force_open`): every call
    rejected until :meth:`CircuitBreaker.reset`; ``state`` reads OPEN.
    The state keeps its three values, so what reads it (the state gauge, the
    Redis sync, the drop-ins) is unchanged.
    """

    NORMAL = 0
    DISABLED = 1
    METRICS_ONLY = 2
    FORCED_OPEN = 3
#: The default minimum_calls (capped at a count window's size).
DEFAULT_MINIMUM_CALLS = 100
#: Largest minimum_calls for a time window.
MAX_MINIMUM_CALLS = 1_000_000_000


def default_failure_predicate(exc: BaseException) -> bool:
    """True iff ``exc`` should count toward opening the breaker.

    Exceptions that are not a ``ProviderError`` count; a ``ProviderError``
    counts iff its type is ``Retryable``, ``Unavailable`` or ``Timeout``.
    """
    if isinstance(exc, ProviderError):
        return exc.type in _INFRASTRUCTURE
    return True


def _make_classifier(predicate: Callable[[BaseException], bool]) -> Callable[[BaseException], int]:
    """A new native classify hook: exception -> 0 success, 1 failure, 2 release."""

    def classify(exc: BaseException) -> int:
        # Not an Exception: a cancellation (asyncio.CancelledError,
        # KeyboardInterrupt, SystemExit, GeneratorExit), not an outcome.
        if not isinstance(exc, Exception):
            return _RELEASE
        return _FAILURE if predicate(exc) else _SUCCESS

    return classify


#: The hook of the default predicate, shared by every breaker that uses it.
_DEFAULT_CLASSIFY = _make_classifier(default_failure_predicate)
#: config -> the hook of its predicate, so that the breakers of one config
#: (a registry's, a fleet's) share one hook: a closure is ~240 bytes. Weak
#: keys: an entry goes with its config (the hook holds the predicate, never
#: the config, so a cache keyed by the predicate would keep it forever).
_CLASSIFIERS: weakref.WeakKeyDictionary[BreakerConfig, Callable[[BaseException], int]] = (
    weakref.WeakKeyDictionary())
_CLASSIFIERS_LOCK = threading.Lock()


def _classifier_of(config: BreakerConfig) -> Callable[[BaseException], int]:
    """The native classify hook of ``config``'s failure predicate (exception
    -> 0 success, 1 failure, 2 release): the same hook for equal configs
    while one of them lives."""
    predicate = config.failure_predicate
    if predicate is None or predicate is default_failure_predicate:
        return _DEFAULT_CLASSIFY
    try:
        with _CLASSIFIERS_LOCK:
            classify = _CLASSIFIERS.get(config)
            if classify is None:
                classify = _CLASSIFIERS[config] = _make_classifier(predicate)
        return classify
    except TypeError:  # an unhashable predicate makes the config unhashable
        return _make_classifier(predicate)


def _classifier(predicate: Callable[[BaseException], bool] | None) -> Callable[[BaseException], int]:
    """A native classify hook for ``predicate`` (None: the default one, shared)."""
    if predicate is None or predicate is default_failure_predicate:
        return _DEFAULT_CLASSIFY
    return _make_classifier(predicate)


@dataclass(frozen=True)
class BreakerConfig:
    """A breaker's thresholds (the guide's ``resilience.Config``).

    Attributes:
        failure_threshold: consecutive counted failures that open a closed
            breaker; int in ``[1, 4_194_303]``. Default 10.
        reset_timeout: seconds an open breaker waits, after the failure that
            opened it, before admitting a probe; ``>= 0``. Accepts float
            seconds, ``timedelta`` or a Go duration string. Default 60.
        half_open_max_calls: probes admitted while half-open; int in
            ``[1, 65_535]``. Default 3.
        failure_predicate: ``exc -> bool`` deciding what counts as a failure;
            None means :func:`default_failure_predicate`. Cancellations from
            outside never reach it (they release instead); an attempt cut off
            by a deadline reaches it as an ``OperationTimeoutError``.
        half_open_lease: seconds a half-open probe may go unreported. A probe
            whose outcome never comes (a lost :class:`Permit`, a thread that
            died) would hold its slot forever and wedge the breaker
            half-open; when every slot is taken and the newest probe was
            admitted this long ago, the next call starts a fresh round of
            probes, and the lost ones' outcomes are ignored. ``> 0`` (float,
            timedelta or Go string), or None for no lease. Default 300 s.

    Window mode (resilience4j's rules; ``window`` None keeps the consecutive
    count above, the default, and the fields below must stay at their
    defaults):

    Attributes:
        window: a :class:`~virtrigaud_resilience.windows.CountWindow` (the
            last N outcomes) or :class:`~virtrigaud_resilience.windows.TimeWindow`
            (the outcomes of the last N seconds); ``failure_threshold`` is
            then unused.
        minimum_calls: outcomes the window must hold before it judges; int
            ``>= 1``, at most a count window's size; None (default) means
            100, capped at a count window's size.
        failure_rate_threshold: opens when failed / outcomes in the window
            ``>=`` it; in ``(0, 1]``. Default 0.5.
        slow_call_duration: seconds at or above which a call (success or
            failure) is slow, timed on the breaker's clock from admission to
            outcome; ``>= 0``, or None (default) for no slow calls.
        slow_call_rate_threshold: opens when slow / outcomes ``>=`` it; in
            ``(0, 1]``. Default 1.0.
        max_wait_in_half_open: seconds ``> 0`` after which a half-open
            breaker whose probes have not all reported opens again (when the
            next call asks); None (default): it waits for them.
        open_backoff: a :class:`~virtrigaud_resilience.backoff.Backoff`: the
            k-th opening since the breaker last closed lasts its delay for
            attempt k-1 instead of ``reset_timeout``; None (default): always
            ``reset_timeout``.

    In window mode half-open admits ``half_open_max_calls`` probes and judges
    them together once all have reported: at or above either threshold it
    opens again, else it closes with an empty window. Bad values raise
    ValueError (TypeError for a wrong type) naming the field and the value.
    """

    failure_threshold: int = 10
    reset_timeout: float = 60.0
    half_open_max_calls: int = 3
    failure_predicate: Callable[[BaseException], bool] | None = None
    half_open_lease: float | None = DEFAULT_HALF_OPEN_LEASE
    window: Window | None = None
    minimum_calls: int | None = None
    failure_rate_threshold: float = 0.5
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float = 1.0
    max_wait_in_half_open: float | None = None
    open_backoff: Backoff | None = None

    if TYPE_CHECKING:  # what the constructor accepts (the fields hold float seconds)
        def __init__(self, failure_threshold: int = 10, reset_timeout: Seconds = 60.0,
                     half_open_max_calls: int = 3,
                     failure_predicate: Callable[[BaseException], bool] | None = None,
                     half_open_lease: Seconds | None = DEFAULT_HALF_OPEN_LEASE,
                     window: Window | None = None, minimum_calls: int | None = None,
                     failure_rate_threshold: float = 0.5,
                     slow_call_duration: Seconds | None = None,
                     slow_call_rate_threshold: float = 1.0,
                     max_wait_in_half_open: Seconds | None = None,
                     open_backoff: Backoff | None = None) -> None: ...

    def __post_init__(self) -> None:
        owner = "BreakerConfig"
        set_ = object.__setattr__
        set_(self, "failure_threshold", _validate.integer(
            owner, "failure_threshold", self.failure_threshold, 1,
            _core.BREAKER_MAX_FAILURE_THRESHOLD))
        set_(self, "reset_timeout", _validate.seconds(
            owner, "reset_timeout", self.reset_timeout, maximum=MAX_RESET_TIMEOUT))
        set_(self, "half_open_max_calls", _validate.integer(
            owner, "half_open_max_calls", self.half_open_max_calls, 1,
            _core.BREAKER_MAX_HALF_OPEN_CALLS))
        if self.half_open_lease is not None:
            set_(self, "half_open_lease", _validate.seconds(
                owner, "half_open_lease", self.half_open_lease, allow_zero=False,
                maximum=MAX_RESET_TIMEOUT))
        if self.failure_predicate is not None and not callable(self.failure_predicate):
            raise TypeError(
                f"{owner} failure_predicate must be callable or None, "
                f"got {type(self.failure_predicate).__name__} {self.failure_predicate!r}"
            )
        self._check_window()

    def _check_window(self) -> None:
        """Validates (and normalises) the window-mode fields."""
        owner = "BreakerConfig"
        set_ = object.__setattr__
        window = self.window
        if window is None:
            for field, default in (("minimum_calls", None), ("failure_rate_threshold", 0.5),
                                   ("slow_call_duration", None),
                                   ("slow_call_rate_threshold", 1.0),
                                   ("max_wait_in_half_open", None), ("open_backoff", None)):
                value = getattr(self, field)
                if value is not default and value != default:
                    raise ValueError(f"{owner} {field} needs window= (a CountWindow or "
                                     f"TimeWindow), got {field}={value!r} without one")
            return
        if not isinstance(window, (CountWindow, TimeWindow)):
            raise TypeError(f"{owner} window must be a CountWindow, a TimeWindow or None, "
                            f"got {type(window).__name__} {window!r}")
        if self.minimum_calls is not None:
            minimum = _validate.integer(owner, "minimum_calls", self.minimum_calls, 1,
                                        MAX_MINIMUM_CALLS)
            if isinstance(window, CountWindow) and minimum > window.size:
                raise ValueError(f"{owner} minimum_calls must be <= the window's size "
                                 f"({window!r}), got {minimum!r}")
        for field in ("failure_rate_threshold", "slow_call_rate_threshold"):
            rate = _validate.number(owner, field, getattr(self, field))
            if not 0 < rate <= 1:
                raise ValueError(f"{owner} {field} must be in (0, 1], got {getattr(self, field)!r}")
            set_(self, field, rate)
        if self.slow_call_duration is not None:
            set_(self, "slow_call_duration", _validate.seconds(
                owner, "slow_call_duration", self.slow_call_duration, maximum=MAX_RESET_TIMEOUT))
        if self.max_wait_in_half_open is not None:
            set_(self, "max_wait_in_half_open", _validate.seconds(
                owner, "max_wait_in_half_open", self.max_wait_in_half_open, allow_zero=False,
                maximum=MAX_RESET_TIMEOUT))
        if self.open_backoff is not None and not isinstance(self.open_backoff, _core.Backoff):
            raise TypeError(f"{owner} open_backoff must be a Backoff or None, "
                            f"got {type(self.open_backoff).__name__} {self.open_backoff!r}")

    @property
    def minimum_calls_in_force(self) -> int | None:
        """``minimum_calls``, or its default (100, capped at a count window's
        size) when None; None in consecutive mode."""
        window = self.window
        if window is None:
            return None
        if self.minimum_calls is not None:
            return self.minimum_calls
        if isinstance(window, CountWindow):
            return min(DEFAULT_MINIMUM_CALLS, window.size)
        return DEFAULT_MINIMUM_CALLS

    def _window_settings(self) -> _core.WindowSettings | None:
        """The native settings of window mode; None in consecutive mode."""
        window, minimum = self.window, self.minimum_calls_in_force
        if window is None or minimum is None:
            return None
        backoff = self.open_backoff
        return _core.WindowSettings(
            window.kind, window.size, minimum, self.failure_rate_threshold,
            -1 if self.slow_call_duration is None else round(self.slow_call_duration * 1e9),
            self.slow_call_rate_threshold,
            0 if self.max_wait_in_half_open is None else max(1, round(
                self.max_wait_in_half_open * 1e9)),
            None if backoff is None else (
                _backoff_strategy(backoff), backoff.base_delay, backoff.max_delay,
                backoff.multiplier, backoff.jitter),
        )


#: config -> its native window settings, so that the breakers of one config
#: share one settings object (natively reference counted: each breaker holds
#: a reference, so an entry may go with its config while they live).
_WINDOW_SETTINGS: weakref.WeakKeyDictionary[BreakerConfig, _core.WindowSettings] = (
    weakref.WeakKeyDictionary())


def _window_settings_of(config: BreakerConfig) -> _core.WindowSettings | None:
    """``config``'s native window settings (None in consecutive mode): the
    same object for equal configs while one of them lives."""
    if config.window is None:
        return None
    try:
        with _CLASSIFIERS_LOCK:
            settings = _WINDOW_SETTINGS.get(config)
            if settings is None:
                settings = config._window_settings()
                if settings is not None:
                    _WINDOW_SETTINGS[config] = settings
        return settings
    except TypeError:  # an unhashable predicate makes the config unhashable
        return config._window_settings()


def _backoff_strategy(backoff: Backoff) -> int:
    """The native strategy code of a Backoff."""
    from .backoff import STRATEGIES

    return STRATEGIES.index(backoff.strategy)


StateListener = events.StateListener["CircuitBreaker", BreakerState]

#: The config of a breaker given none: one frozen instance, shared (a
#: BreakerConfig and its __dict__ are ~110 bytes).
_DEFAULT_CONFIG = BreakerConfig()


def _final_counters(breaker: CircuitBreaker) -> tuple[Labels, Counters]:
    """A dropped breaker's labels and counters (those after the state in _counters())."""
    return (breaker.provider_type, breaker.provider), breaker._counters()[1:]


def _breaker_name(breaker: CircuitBreaker) -> str:
    """The name a dropped breaker's totals are kept under while the
    OpenTelemetry instruments report names (otel/_instruments.py)."""
    return breaker.name


#: Every live breaker, for the metrics collector (see _tracking.py).
BREAKERS: Census[CircuitBreaker] = Census(_final_counters, native=_core.CircuitBreaker,
                                          name=_breaker_name)


class CircuitBreaker(_core.CircuitBreaker):
    """A circuit breaker for one provider (``NewCircuitBreaker(name, type, provider, config)``).

    Thread-safe and lock-free: admission while closed is one atomic load.
    Use it as ``breaker.call(fn, *args, **kwargs)``, ``await
    breaker.call_async(fn, ...)``, ``with breaker.guard():`` / ``async with
    breaker.guard():``, as a decorator (``@breaker``), or in two steps with
    :meth:`try_acquire`.

    Args:
        name: the breaker's name (``"provider-vsphere"``); any str.
        provider_type: the provider type label (``"vsphere"``).
        provider: the provider instance label (``"prod"``).
        config: a :class:`BreakerConfig`; None for the defaults (10, 60 s, 3).
        clock: a :class:`ManualClock`, or None for the monotonic clock.
    """

    # _listeners (None until the first add_listener()) and _timing (window
    # mode with slow calls: the Python call paths time their calls) are
    # native (_core.pyi): two slots fewer make the object a size class smaller.
    # Weak references are the native type's too (no "__weakref__" here).
    __slots__ = ("config",)

    config: BreakerConfig

    def __init__(
        self,
        name: str,
        provider_type: str = "",
        provider: str = "",
        config: BreakerConfig | None = None,
        *,
        clock: ManualClock | None = None,
    ) -> None:
        if type(self) is not CircuitBreaker:
            _HOT_METHODS.follow(type(self))  # a base method patched since?
        for field, value in (("name", name), ("provider_type", provider_type),
                             ("provider", provider)):
            _validate.string("CircuitBreaker", field, value)
        config = (_validate.optional_instance("CircuitBreaker", "config", config, BreakerConfig)
                  or _DEFAULT_CONFIG)
        clock = check_clock("CircuitBreaker", clock)
        lease = config.half_open_lease
        super().__init__(
            name, provider_type, provider, config.failure_threshold,
            round(config.reset_timeout * 1e9), config.half_open_max_calls, clock,
            # A lease under half a nanosecond is still a lease (0 means none).
            _classifier_of(config),
            0 if lease is None else max(1, round(lease * 1e9)),
            _window_settings_of(config),
        )
        self.config = config
        BREAKERS.track(self)

    def __del__(self, _retire: Callable[[CircuitBreaker], None] = BREAKERS.retire) -> None:
        # Bound at definition: module globals may be gone at interpreter exit.
        _retire(self)

    # call(fn, /, *args, **kwargs) is native: see _core.pyi.

    @property
    def state(self) -> BreakerState:
        """The current :class:`BreakerState` (held open reads as OPEN)."""
        return BreakerState(self._state_code)

    @property
    def mode(self) -> BreakerMode:
        """The operator's override in force (:class:`BreakerMode`)."""
        if self.held_open:
            return BreakerMode.FORCED_OPEN
        return BreakerMode(self._mode)

    if TYPE_CHECKING:
        def call_async(self, fn: Callable[P, Awaitable[T]], /, *args: P.args,
                       **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
            """Awaits ``fn(*args, **kwargs)`` through the breaker (native: an AsyncCall).

            Raises CircuitOpenError without calling ``fn`` while open. A call cut
            off by a deadline (a policy's timeout, ``asyncio.timeout`` at any
            depth, ``asyncio.wait_for`` on Python 3.12+, anyio's ``fail_after``:
            see :func:`~virtrigaud_resilience.timeouts.deadline_expired`) is
            recorded as a Timeout: a failure. Cancelling the awaiting task from
            outside records nothing and frees its half-open slot.
            """
    else:
        # Native: admits, awaits and records a success without a Python frame;
        # an attempt that raised continues in _attempt_raised_async.
        call_async = _core._breaker_call_async

    def _attempt_raised_async(self, ticket: int, exc: BaseException, fn: object,
                              args: tuple[Any, ...], kwargs: dict[str, Any],
                              start_ns: int = -1) -> NoReturn:
        """Native hook: the call's awaitable raised ``exc``; record it and raise it.

        A call cut off by a deadline (a policy's timeout, ``asyncio.timeout``
        at any depth, ``asyncio.wait_for`` on Python 3.12+, anyio's
        ``fail_after``: see :func:`~virtrigaud_resilience.timeouts.deadline_expired`)
        is recorded as a Timeout: a failure. A cancellation from outside
        records nothing and frees the half-open slot. ``start_ns`` (>= 0 for
        a breaker timing slow calls, else -1) is the admission's clock time:
        the failure is timed from it, as a success is natively.
        """
        record_outcome(_exception_recorder(self, start_ns), ticket, exc, self.name)
        raise exc

    def _recorder_since(self, start_ns: int) -> Callable[[int, BaseException], None]:
        """_record_exception for a call admitted at ``start_ns`` (timed)."""
        def record_exception(ticket: int, exc: BaseException) -> None:
            self._record_exception_since(ticket, exc, start_ns)
        return record_exception

    def guard(self) -> BreakerScope:
        """A :class:`BreakerScope` (``with`` or ``async with``) guarding its body.

        Entering admits or raises CircuitOpenError; leaving records the
        outcome of the body (an exception is classified as in :meth:`call`).
        """
        return BreakerScope(self)

    def try_acquire(self) -> Permit | None:
        """The two-step form (gobreaker's TwoStepCircuitBreaker): a
        :class:`Permit` if a call may proceed, else None. Report the outcome
        exactly once with ``permit.success()``, ``permit.failure()``,
        ``permit.record(exc)`` or ``permit.release()``.
        """
        try:
            return Permit(self, self._admit())
        except CircuitOpenError:
            return None

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorates a sync or async function so every call goes through the breaker."""
        return route_calls(fn, self.call, self.call_async)

    def add_listener(self, listener: StateListener) -> None:
        """Calls ``listener(breaker, old, new)`` after each state change of this breaker.

        Listeners run in the thread that caused the change, before those of
        :func:`events.on_state_change`; one that raises is logged and never
        breaks the call.
        """
        listener = events.check_listener(listener)
        if self._listeners is None:
            self._listeners = [listener]
        else:
            self._listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        """Removes a listener added with :meth:`add_listener` (ValueError if absent)."""
        if not self._listeners:
            raise ValueError(f"{listener!r} is not a listener of circuit breaker {self.name!r}")
        self._listeners.remove(listener)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _core._specialise(cls)

    def __repr__(self) -> str:
        mode = self.mode
        return (
            f"CircuitBreaker({self.name!r}, {self.provider_type!r}, {self.provider!r}, "
            f"state={self.state.name}, failures={self.failures}"
            + (f", mode={mode.name})" if mode else ")")
        )

    # disable(), metrics_only(), reset() and force_open() are native (_core.pyi).


class Permit(_core.OneShot):
    """One admitted call of :meth:`CircuitBreaker.try_acquire`; report it once.

    Report with :meth:`success`, :meth:`failure`, :meth:`record` or
    :meth:`release`, or use the permit as a context manager (``with permit:``
    or ``async with permit:``), which reports the body's outcome as
    :meth:`CircuitBreaker.call` would. A permit dropped unreported gives its
    half-open slot back and warns (``ResourceWarning``); a permit lost for
    good (a thread that died holding it) is reclaimed after the breaker's
    ``half_open_lease``. The outcome is reported at most once, whichever
    threads report it (a native atomic flag decides which one counts).
    """

    __slots__ = ("_breaker", "_ticket", "_start")

    def __init__(self, breaker: CircuitBreaker, ticket: int) -> None:
        self._breaker = breaker
        self._ticket = ticket
        # Admission time, for a breaker that times its calls (-1: untimed).
        self._start = breaker._now_ns() if breaker._timing else -1

    def success(self) -> None:
        """The call succeeded."""
        self._report(_SUCCESS)

    def failure(self) -> None:
        """The call failed in a way that counts toward opening."""
        self._report(_FAILURE)

    def release(self) -> None:
        """The call ended without an outcome (cancelled): count nothing."""
        self._report(_RELEASE)

    def record(self, exc: BaseException | None) -> None:
        """Records ``exc`` as the breaker's predicate classifies it (None: success)."""
        if exc is None:
            self._report(_SUCCESS)
            return
        self._use()
        _record_exception(self._breaker, self._ticket, exc, self._start)

    @property
    def reported(self) -> bool:
        """Whether the outcome was reported (or the permit released)."""
        return self._claimed

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._claimed:
            self.record(exc)

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._claimed:
            return
        if exc is None:
            self._report(_SUCCESS)
        else:
            self._use()
            record_outcome(_exception_recorder(self._breaker, self._start), self._ticket, exc,
                           self._breaker.name)

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        # Bound at definition: module globals may be gone at interpreter exit.
        if self._claim():
            self._breaker._record(self._ticket, _RELEASE)  # first: the warning may raise
            _warn(f"Permit of circuit breaker {self._breaker.name!r} dropped without an "
                  "outcome: its slot is released", ResourceWarning, source=self)

    def _report(self, outcome: int) -> None:
        self._use()
        _record(self._breaker, self._ticket, outcome, self._start)

    def _use(self) -> None:
        if not self._claim():
            raise RuntimeError("this Permit's outcome was already reported")


class BreakerScope:
    """One block run through a breaker: the context manager of :meth:`CircuitBreaker.guard`.

    Entering admits (or raises CircuitOpenError); leaving records the
    block's outcome, as :meth:`CircuitBreaker.call` records a call's.
    """

    __slots__ = ("_breaker", "_ticket", "_held", "_start")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._ticket = -1
        self._held: Held | None = None
        self._start = -1

    def __enter__(self) -> BreakerScope:
        self._ticket = self._breaker._admit()
        if self._breaker._timing:
            self._start = self._breaker._now_ns()
        self._held = hold(self._breaker, None) if _admission.nesting else None  # for adapters
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end_held()
        if exc is None:
            _record(self._breaker, self._ticket, _SUCCESS, self._start)
        else:
            _record_exception(self._breaker, self._ticket, exc, self._start)

    async def __aenter__(self) -> BreakerScope:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end_held()
        if exc is None:
            _record(self._breaker, self._ticket, _SUCCESS, self._start)
        else:
            record_outcome(_exception_recorder(self._breaker, self._start), self._ticket, exc,
                           self._breaker.name)

    def _end_held(self) -> None:
        """Adapters inside the block no longer find the breaker held."""
        held, self._held = self._held, None
        if held is not None:
            held.end()


def _record(breaker: CircuitBreaker, ticket: int, outcome: int, start_ns: int) -> None:
    """Records an outcome, timed from ``start_ns`` when that is >= 0."""
    if start_ns < 0:
        breaker._record(ticket, outcome)
    else:
        breaker._record_since(ticket, outcome, start_ns)


def _record_exception(breaker: CircuitBreaker, ticket: int, exc: BaseException,
                      start_ns: int) -> None:
    """Records a raised exception, timed from ``start_ns`` when that is >= 0."""
    if start_ns < 0:
        breaker._record_exception(ticket, exc)
    else:
        breaker._record_exception_since(ticket, exc, start_ns)


def _exception_recorder(breaker: CircuitBreaker,
                        start_ns: int) -> Callable[[int, BaseException], None]:
    """The ``(ticket, exc)`` recorder for timeouts.record_outcome."""
    if start_ns < 0:
        return breaker._record_exception
    return breaker._recorder_since(start_ns)


_LOG_LEVEL = {BreakerState.OPEN: logging.WARNING}


def _on_transition(breaker: CircuitBreaker, old: int, new: int) -> None:
    """Native hook: logs the transition and runs the listeners (never raises).

    The log record carries the fields as ``extra`` too (``breaker``,
    ``provider_type``, ``provider``, ``old_state``, ``new_state``), for
    structured log handlers.
    """
    old_state, new_state = BreakerState(old), BreakerState(new)
    logger.log(
        _LOG_LEVEL.get(new_state, logging.INFO),
        "circuit breaker %r (%s/%s) %s -> %s",
        breaker.name, breaker.provider_type, breaker.provider, old_state.name, new_state.name,
        extra={"breaker": breaker.name, "provider_type": breaker.provider_type,
               "provider": breaker.provider, "old_state": old_state.name,
               "new_state": new_state.name},
    )
    own = getattr(breaker, "_listeners", None)  # None for a bare _core.CircuitBreaker
    if own:
        events.emit(own, "circuit breaker state", breaker, old_state, new_state)
    events._emit_state_change(breaker, old_state, new_state)


def _reject(breaker: CircuitBreaker) -> CircuitOpenError:
    """Native hook: the error an open breaker raises."""
    if breaker.held_open:
        retry_after = None
    else:
        # Clamped: an opening timed from elsewhere (_trip, _restore) may end
        # later than an error's retry_after may say, and the rejection must
        # stay a CircuitOpenError rather than fail validation.
        retry_after = min(breaker.remaining_open, MAX_RETRY_AFTER) or None
    return CircuitOpenError(breaker.name, breaker.provider_type, breaker.provider, retry_after)



class BreakerRegistry:
    """One breaker per (name, provider_type, provider), created once (the
    guide's ``CircuitBreakerRegistry.GetOrCreate``). Thread-safe.

    The guide's manual override is reachable by key: :meth:`force_open` and
    :meth:`reset`.
    """

    def __init__(self, config: BreakerConfig | None = None, *,
                 clock: ManualClock | None = None) -> None:
        self.config = (_validate.optional_instance("BreakerRegistry", "config", config,
                                                   BreakerConfig) or BreakerConfig())
        self._clock = check_clock("BreakerRegistry", clock)
        self._breakers: dict[tuple[str, str, str], CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get_or_create(self, name: str, provider_type: str = "",
                      provider: str = "") -> CircuitBreaker:
        """The breaker for this key, created with the registry's config on first use."""
        key = (name, provider_type, provider)
        breaker = self._breakers.get(key)  # lock-free on the common path
        if breaker is None:
            with self._lock:
                breaker = self._breakers.get(key)
                if breaker is None:
                    breaker = CircuitBreaker(name, provider_type, provider, self.config,
                                             clock=self._clock)
                    self._breakers[key] = breaker
        return breaker

    def get(self, name: str, provider_type: str = "", provider: str = "") -> CircuitBreaker | None:
        """The breaker for this key, or None."""
        return self._breakers.get((name, provider_type, provider))

    def remove(self, name: str, provider_type: str = "", provider: str = "") -> bool:
        """Forgets the breaker for this key; returns whether there was one."""
        with self._lock:
            return self._breakers.pop((name, provider_type, provider), None) is not None

    def list(self) -> list[CircuitBreaker]:
        """All breakers, in creation order."""
        return list(self._breakers.values())

    def reset(self, name: str | None = None, provider_type: str = "",
              provider: str = "") -> None:
        """Closes one breaker (by key) or, without a name, all of them.

        Raises KeyError for an unknown key.
        """
        for breaker in self._select(name, provider_type, provider):
            breaker.reset()

    def force_open(self, name: str, provider_type: str = "", provider: str = "") -> None:
        """Holds one breaker open until reset (KeyError for an unknown key)."""
        for breaker in self._select(name, provider_type, provider):
            breaker.force_open()

    def _select(self, name: str | None, provider_type: str,
                provider: str) -> builtins.list[CircuitBreaker]:
        if name is None:
            return self.list()
        breaker = self.get(name, provider_type, provider)
        if breaker is None:
            raise KeyError(f"no circuit breaker {(name, provider_type, provider)!r}")
        return [breaker]

    def __len__(self) -> int:
        return len(self._breakers)

    def __contains__(self, key: object) -> bool:
        return key in self._breakers

    def __repr__(self) -> str:
        return f"BreakerRegistry({self.config!r}, breakers={len(self)})"


_core._install_hooks(_reject, _on_transition)
# Drop the hooks at exit so no module object outlives the interpreter.
atexit.register(_core._install_hooks, None, None)


#: The native hot methods of CircuitBreaker and its subclasses (see _specialised.py).
_HOT_METHODS = HotMethods(CircuitBreaker)

if TYPE_CHECKING:
    Guard = BreakerScope  # the old name, until 0.3.0 (at run time it warns: below)
else:
    __getattr__ = _deprecated.module_getattr(__name__, {
        "Guard": f"{__name__}.BreakerScope",
    })
