"""Lock-free circuit breaker, GCRA token bucket and backoff (C++ core)."""

from collections.abc import Sequence
import enum
from typing import Any


from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, Callable, Generic, ParamSpec, TypeVar
from typing_extensions import Self
_T = TypeVar("_T")
_P = ParamSpec("_P")

class Hooks(enum.IntFlag):
    """
    CircuitBreaker._set_hooks() flags: the parts of the call path that go
    to the breaker's own Python methods.
    """

    TRANSITION = 1
    """self._transition(old, new) gets every transition."""

    REJECT = 2
    """A rejected call returns self._on_reject(fn, *args, **kwargs)."""

    ERROR = 4
    """A raised call returns or raises self._on_error(ticket, exc)."""

    GENERATOR = 8
    """
    A generator result is self._on_generator(ticket, gen), the outcome when it ends.
    """

    ACCEPT_COROUTINE = 16
    """A coroutine result is a value (a success), not a TypeError."""

    DELEGATE = 32
    """call() is self._call_python(fn, *args, **kwargs)."""

class Outcome(enum.IntEnum):
    """A call's outcome: what classify(exc) returns and _record takes."""

    SUCCESS = 0
    """Counts as a success."""

    FAILURE = 1
    """Counts toward opening."""

    RELEASE = 2
    """No outcome (cancelled): the slot is given back."""

class Stage(enum.IntEnum):
    """Why Policy's native first attempt calls self._resume(stage, ...)."""

    PYTHON_PATH = -1
    """Every call of this policy runs in Python."""

    CALLED = 0
    """Attempt 0 ran and raised exc (already recorded)."""

    BREAKER_OPEN = 1
    """The breaker refused attempt 0."""

    RATE_LIMITED = 2
    """The bucket had no token for attempt 0."""

    BULKHEAD_FULL = 3
    """No bulkhead slot for attempt 0."""

POLICY_ENTER_PYTHON_PATH: int = -100

class RetryCallMode(enum.IntEnum):
    """How a RetryCall runs a call (RetryCall._configure)."""

    PYTHON = 0
    """resume(NOT_RUN, ...) does it all."""

    NATIVE = 1
    """The first attempt runs natively."""

    PASSTHROUGH = 2
    """fn(*args, **kwargs), nothing else."""

class RetryCallOutcome(enum.IntEnum):
    """Why a RetryCall calls resume(outcome, value, args, kwargs, t0)."""

    NOT_RUN = 0
    """Nothing ran yet."""

    RAISED = 1
    """The first attempt raised value."""

    REJECTED = 2
    """The first attempt's result value was rejected."""

class StateCode(enum.IntEnum):
    """
    A breaker's state as _state_code, transitions and _counters report
    it (OPEN for a held-open breaker too) and as _restore_undispatched
    takes it.
    """

    CLOSED = 0

    HALF_OPEN = 1

    OPEN = 2

    HELD_OPEN = 3
    """Open until reset(): taken by _restore_undispatched only."""

class MoveKind(enum.IntEnum):
    """
    The manual transitions of CircuitBreaker._set_state_undispatched(kind).
    """

    CLOSE = 0
    """Close (forget the failures)."""

    HALF_OPEN = 1
    """Half-open with every probe slot free."""

    OPEN = 2
    """Open, timing out as a trip does."""

    OPEN_COUNTED = 3
    """Open, counting one failure."""

class Held(enum.IntFlag):
    """The bits of _held(breaker, bucket)."""

    BREAKER = 1
    """An enclosing native attempt holds the breaker."""

    BUCKET = 2
    """An enclosing native attempt holds a token of the bucket."""

def monotonic_ns() -> int:
    """
    Nanoseconds of the monotonic clock every primitive uses when it has no ManualClock.
    """

def _install_hooks(reject: object | None, on_transition: object | None) -> None:
    """
    Installed once by the package: the open breaker's error factory and the
    state-change dispatcher.
    """

def _set_rate_limited_hook(hook: object | None) -> None:
    """
    Installs hook(bucket, n), called when a bucket refuses n tokens (None removes it).
    """

MAX_CLOCK_NS: int = 4611686018427387904

class RetryCall:
    """
    RetryCall(fn, resume, *, clock=False, stats_key=None, clock_key=None,
              template=(), local=None)

    The function a retry decorator returns: its first attempt runs in one
    native call (see _configure); Python continues through resume(outcome,
    value, args, kwargs, t0) with outcome 0 not run, 1 raised, 2 rejected.
    """
    def __init__(self, fn: Callable[..., Any], resume: Callable[[int, Any, tuple[Any, ...], dict[str, Any], float], Any], *, clock: bool = False, stats_key: str | None = None, clock_key: str | None = None, template: tuple[tuple[str, Any], ...] = (), local: object | None = None) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, instance: object, owner: type | None = None, /) -> Any: ...
    def _configure(self, mode: int, retry_on: type[BaseException] | tuple[type[BaseException], ...] | None, check: Callable[[Any], object] | None, /) -> None: ...
    def _begin(self) -> float: ...
    @property
    def _mode(self) -> int: ...
    @property
    def _fn(self) -> Callable[..., Any]: ...
    def __getattr__(self, name: str) -> Any: ...

class RetryEntry:
    """
    RetryEntry(resolve, python_path, after_first, attempt_var, deadline_var)

    retry(config, fn, *args, **kwargs) with its first attempt in one native
    call: resolve(config) gives the config's Retrier (cached by identity) or
    None (every call in Python); python_path(config, fn, *args, **kwargs)
    runs a call that needs Python (an enclosing deadline, an outer loop's
    attempt number); after_first(retrier, exc, fn, *args, **kwargs)
    continues from attempt 1 after attempt 0 raised an Exception.
    """
    _SLOTS: int
    def __init__(self, resolve: Callable[[Any], Any], python_path: Callable[..., Any], after_first: Callable[..., Any], attempt_var: Any, deadline_var: Any, /) -> None: ...
    def __call__(self, config: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, instance: object, owner: type | None = None, /) -> Any: ...
    @property
    def _cached(self) -> int: ...
    def __getattr__(self, name: str) -> Any: ...

class OneShot:
    """
    OneShot(): a flag that _claim() sets once, atomically (the base of objects
    that give something back exactly once).
    """
    def _claim(self) -> bool:
        """True for the first call on this object (any thread), False for every later one."""
    @property
    def _claimed(self) -> bool:
        """Whether _claim() was called."""

class BulkheadSlot(OneShot):
    """
    One slot of a Bulkhead, taken by enter() / enter_async(): give it back with
    bulkhead.exit(slot), exactly once (a native atomic flag decides which of
    several exits counts).
    """
    @property
    def bulkhead(self) -> Bulkhead:
        """The Bulkhead this is a slot of."""
    @property
    def released(self) -> bool:
        """Whether the slot was given back."""
    @property
    def _below(self) -> BulkheadSlot | None:
        """The slot its context held before this one (None if none)."""

class ManualClock:
    """A clock that moves only when told to (native part)."""

    def __init__(self, start_ns: int = 0) -> None: ...

    def now_ns(self) -> int:
        """The current time in nanoseconds."""

    def now(self) -> float:
        """The current time in seconds."""

    def _advance_ns(self, delta_ns: int) -> None:
        """
        Moves time forward (a negative delta does nothing; time stops at MAX_CLOCK_NS).
        """

    def _set_ns(self, t_ns: int) -> bool:
        """
        Sets the time (clamped to [0, MAX_CLOCK_NS]) if it is not in the past;
        returns whether it moved.
        """

TOKEN_BUCKET_MAX_BURST: int = 1048575

TOKEN_BUCKET_MAX_INTERVAL_NS: int = 4398046511103

TOKEN_BUCKET_MAX_TAU_NS: int = 288230376151711744

TOKEN_BUCKET_MAX_WAIT_NS: int = 288230376151711744

class TokenBucket:
    """GCRA token bucket (native part)."""

    def __init__(self, interval_ns: int, burst: int, clock: ManualClock | None = None) -> None: ...

    def _reserve(self, n: int, max_wait_ns: int) -> tuple[bool, int, int, int, int]:
        """
        Reserves n tokens: (ok, delay_ns, tat_after, time_to_act, config). ok is
        False, and nothing is reserved, when the wait would exceed max_wait_ns.
        """

    def _cancel(self, n: int, tat_after: int, time_to_act: int, config: int) -> int: ...

    def _refund(self, n: int, tat_after: int, config: int) -> int:
        """
        Gives back n tokens taken for a call that never ran (minus those taken
        since; nothing once the rate changed); returns the tokens given back.
        """

    def _set_rate(self, interval_ns: int, burst: int, max_tokens: int = 1048575) -> None:
        """
        Changes the rate; the tokens available now are kept, at most the new burst
        and at most max_tokens (0 empties the bucket).
        """

    def _set_refusal_calls_python(self, on: bool) -> None:
        """
        While on, a refusal by try_acquire returns (or raises) what
        self._refused(n) does; an admission never looks at the flag.
        """

    def _now_ns(self) -> int: ...

    def _try_acquire_ns(self, cost_ns: int, now_ns: int = -1) -> bool:
        """
        Takes cost_ns of capacity (n tokens cost n * interval_ns) if it conforms at
        now_ns (< 0: the bucket's clock); never waits.
        """

    def _debt_ns(self, now_ns: int = -1) -> int:
        """
        Capacity in use at now_ns, in ns: a cost c conforms iff debt + c <= burst * interval.
        """

    @property
    def tokens(self) -> float:
        """Tokens available now (a float); negative while reservations wait."""

    @property
    def burst(self) -> int:
        """Bucket capacity in tokens."""

    @property
    def interval_ns(self) -> int:
        """Nanoseconds per token."""

    @property
    def qps(self) -> float:
        """Tokens per second (as rounded to a whole nanosecond per token)."""

    @property
    def admitted(self) -> int:
        """Acquisitions granted at once (try_acquire True, reserve with no wait)."""

    @property
    def rejected(self) -> int:
        """Acquisitions refused (try_acquire False, reserve over its max wait)."""

    @property
    def reserved(self) -> int:
        """Reservations granted with a wait."""

    @property
    def cancelled(self) -> int:
        """
        Reservations cancelled, and acquisitions refunded (a policy's call that
        never ran), that gave tokens back.
        """

    def _counters(self) -> tuple[int, int, int]:
        """(admitted, rejected, reserved) in one call, for the metrics collector."""

    def _census_link(self) -> bool:
        """
        Counts this object among the live ones of its kind (the metrics census).
        """

    def _census_unlink(self) -> bool:
        """
        Takes this object out of the live ones; False if it was not among them
        (or is not initialised).
        """

    @staticmethod
    def _census_live() -> list[TokenBucket]:
        """
        The live objects of this kind (those linked), in the order they were linked.
        """

    @staticmethod
    def _census_size() -> int:
        """How many objects of this kind are linked."""

    def try_acquire(self, n: int = 1) -> bool:
        """
        Takes n tokens (1 <= n <= burst) if the bucket holds them now and returns
        True; otherwise takes nothing and returns False. Never waits.
        """

BREAKER_MAX_FAILURE_THRESHOLD: int = 4194303

BREAKER_MAX_HALF_OPEN_CALLS: int = 65535

BREAKER_MAX_TIMEOUT_NS: int = 1152921504606846976

BREAKER_MAX_SUCCESS_THRESHOLD: int = 2097151

WINDOW_MAX_COUNT: int = 65535

WINDOW_MAX_SECONDS: int = 3600

class WindowSettings:
    """
    A window-mode breaker's settings (sliding_window.hpp), shared
    by the breakers made with it (one per BreakerConfig).
    """

    def __init__(self, kind: int, size: int, minimum_calls: int, failure_rate: float, slow_call_ns: int, slow_call_rate: float, max_wait_half_open_ns: int, open_backoff: tuple[int, float, float, float, bool] | None) -> None:
        """
        kind 0 count / 1 time; slow_call_ns < 0 off; max_wait_half_open_ns 0 off;
        open_backoff (strategy, base, cap, multiplier, jitter) or None. Unchecked:
        the caller (BreakerConfig) validates.
        """

    @property
    def size(self) -> int: ...

    @property
    def minimum_calls(self) -> int: ...

class CircuitBreaker:
    """Lock-free circuit breaker (native part)."""

    def __init__(self, name: str, provider_type: str, provider: str, failure_threshold: int, reset_timeout_ns: int, half_open_max_calls: int, clock: ManualClock | None, classify: object, half_open_lease_ns: int = 0, window: WindowSettings | None = None) -> None: ...

    @property
    def _timing(self) -> bool:
        """Whether the Python call paths time their calls (window mode with slow calls)."""

    _listeners: list[Any] | None

    def _admit(self) -> int:
        """
        Admits a call and returns its ticket, or raises the open breaker's error.
        """

    def _record(self, ticket: int, outcome: int) -> None:
        """
        Records a ticket's outcome: 0 success, 1 failure, 2 release (cancelled).
        """

    def _record_exception(self, ticket: int, exc: object) -> None:
        """Records a ticket whose call raised exc, as classify says."""

    def reset(self) -> None:
        """Closes the breaker and forgets its failures (manual override)."""

    def force_open(self) -> None:
        """Opens the breaker and holds it open until reset() (manual override)."""

    def disable(self) -> None:
        """
        Admits every call and judges no outcome until reset() (an operator's override).
        """

    def metrics_only(self) -> None:
        """
        Admits every call, records outcomes (rates, streak) and never opens, until
        reset() (an operator's override).
        """

    @property
    def _mode(self) -> int:
        """0 normal, 1 disabled, 2 metrics only."""

    def _record_since(self, ticket: int, outcome: int, start_ns: int) -> None:
        """
        _record() of a call admitted at clock time start_ns (window mode times it).
        """

    def _record_exception_since(self, ticket: int, exc: object, start_ns: int) -> None:
        """_record_exception() of a call admitted at clock time start_ns."""

    @property
    def windowed(self) -> bool:
        """True for a breaker judging rates over a window."""

    @property
    def _timed(self) -> bool:
        """Whether outcomes are timed (window mode with slow calls)."""

    @property
    def failure_rate(self) -> float:
        """
        Failed / outcomes in the window; -1 below minimum_calls or without one.
        """

    @property
    def slow_call_rate(self) -> float:
        """Slow / outcomes in the window; -1 below minimum_calls or without one."""

    @property
    def window_calls(self) -> tuple[int, int, int]:
        """(outcomes, failed, slow) in the window now; zeros without one."""

    @property
    def slow_calls(self) -> int:
        """Outcomes judged slow (window mode)."""

    @property
    def ignored(self) -> int:
        """
        Outcomes that moved nothing: reported while disabled, or (window mode)
        stale.
        """

    @property
    def openings(self) -> int:
        """Window mode: openings since the breaker last closed."""

    def _open_for_ns(self, open_for_ns: int) -> None:
        """
        Opens the breaker (or re-times an open one) to admit its next probe
        open_for_ns from now; a held-open breaker stays held.
        """

    @property
    def _state_code(self) -> int: ...

    def _set_hooks(self, hooks: int) -> None:
        """
        Hands parts of the call path to Python methods (Hooks flags): TRANSITION
        _transition, REJECT _on_reject, ERROR _on_error, GENERATOR _on_generator,
        ACCEPT_COROUTINE coroutine results are values, DELEGATE call() is _call_python().
        """

    def _try_admit(self) -> int:
        """
        Admits a call: its ticket, or -1 when the breaker refuses it (nothing raised).
        """

    def _record_undispatched(self, ticket: int, outcome: int, storage_count: int = -1) -> tuple[int, int] | None:
        """
        Records a ticket's outcome (0 success, 1 failure, 2 release) without
        dispatching the transition it makes: returns it (old, new) or None, for the
        caller (a drop-in) to dispatch in its own order. `storage_count` >= 0 is a
        shared store's count after this outcome (successful probes, or the failure
        streak), which the breaker adopts.
        """

    def _set_state_undispatched(self, kind: int) -> tuple[int, int] | None:
        """
        A manual transition, not dispatched: 0 close, 1 half-open (slots
        free), 2 open (times out as a trip does), 3 open counting one failure.
        Returns the visible transition (old, new) or None.
        """

    def _restore_undispatched(self, state: int, streak: int, successes: int, opened_at_ns: int) -> tuple[int, int] | None:
        """
        Sets state, failure streak, half-open successes and the opening stamp at
        once, not dispatched; returns the visible transition (old, new) or None.
        """

    def _configure(self, failure_threshold: int, reset_timeout_ns: int, success_threshold: int) -> None:
        """Changes the thresholds at run time (clamped; the caller validates)."""

    @property
    def failure_streak(self) -> int:
        """Counted failures since the last success or close, across opening."""

    @property
    def half_open_successes(self) -> int:
        """Successful probes of the current half-open round."""

    @property
    def success_threshold(self) -> int:
        """0: the guide's half-open rule; S: the S-th successful probe closes."""

    @property
    def opened_at_ns(self) -> int:
        """Clock time (ns) of the last opening; 0 if none."""

    def _now_ns(self) -> int:
        """The breaker's clock, in ns."""

    @property
    def held_open(self) -> bool:
        """True while force_open() holds the breaker open."""

    @property
    def failures(self) -> int:
        """Consecutive counted failures while closed."""

    @property
    def half_open_calls(self) -> int:
        """Half-open probe calls admitted and not released."""

    @property
    def generation(self) -> int:
        """Bumped by every transition (64 bits: it never wraps in practice)."""

    @property
    def remaining_open(self) -> float:
        """Seconds until an open breaker admits a probe; 0 when not open."""

    @property
    def name(self) -> str: ...

    @property
    def provider_type(self) -> str: ...

    @property
    def provider(self) -> str: ...

    @property
    def failure_threshold(self) -> int: ...

    @property
    def half_open_max_calls(self) -> int: ...

    @property
    def reset_timeout(self) -> float: ...

    @property
    def successes(self) -> int:
        """Outcomes recorded as success (stale ones included)."""

    @property
    def failures_total(self) -> int:
        """Outcomes recorded as failure (stale ones included)."""

    @property
    def rejected(self) -> int:
        """Calls refused without running."""

    @property
    def released(self) -> int:
        """Admitted calls that ended without an outcome (cancelled)."""

    @property
    def reclaimed(self) -> int:
        """Half-open rounds restarted because every probe outlived its lease."""

    @property
    def half_open_lease(self) -> float | None:
        """
        Seconds a half-open probe may go unreported before its slot is reclaimed;
        None for no lease.
        """

    @property
    def transitions(self) -> tuple[int, int, int]:
        """Transitions into (closed, half-open, open)."""

    @property
    def last_transition_ns(self) -> int:
        """Clock time of the last transition in ns, 0 if none."""

    def _counters(self) -> tuple[int, int, int, int, int, int, int, int, int]:
        """
        (state, successes, failures_total, rejected, to_closed, to_half_open, to_open,
        slow_calls, ignored) in one call, for the metrics collector.
        """

    def _window_report(self) -> tuple[int, bool, float, float, int, int, int, int, int]:
        """
        (mode, windowed, failure_rate, slow_call_rate, successes, failures_total, slow_calls,
        rejected, ignored) in one call, for the metrics collector (mode as BreakerMode:
        3 forced open).
        """

    def _census_link(self) -> bool:
        """
        Counts this object among the live ones of its kind (the metrics census).
        """

    def _census_unlink(self) -> bool:
        """
        Takes this object out of the live ones; False if it was not among them
        (or is not initialised).
        """

    @staticmethod
    def _census_live() -> list[CircuitBreaker]:
        """
        The live objects of this kind (those linked), in the order they were linked.
        """

    @staticmethod
    def _census_size() -> int:
        """How many objects of this kind are linked."""

    @staticmethod
    def _sum_by_labels(breakers: Sequence[CircuitBreaker]) -> dict[tuple[str, ...], list[int]]:
        """
        For the metrics collector: these breakers summed by (provider_type,
        provider): [successes, failures_total, rejected, to_closed,
        to_half_open, to_open, slow_calls, ignored, the highest state code,
        the highest mode].
        """

    @staticmethod
    def _sum_by_name(breakers: Sequence[CircuitBreaker], dropped: dict[tuple[str, ...], Any]) -> dict[tuple[str, ...], list[int]]:
        """
        For the OpenTelemetry instruments: these breakers summed by
        (provider_type, provider, name) as _sum_by_labels sums them, and
        dropped (key tuple -> 8 counters) added to the rows of their keys
        (state and mode 0 in a row of dropped breakers only).
        """

    @staticmethod
    def _emit_by_labels(breakers: Sequence[CircuitBreaker], dropped: dict[tuple[str, ...], Any], label_names: tuple[str, ...], columns: tuple[tuple[list[object], str, object, object, int, bool], ...], proto: tuple[object, ...], reported: dict[tuple[str, ...], list[Any]] | None) -> None:
        """
        For the Prometheus collector, in one pass: these breakers and the dropped
        ones' totals (labels -> 8 counters) summed by (provider_type, provider),
        emitted as by _emit_samples from the rows [the 8 counters of _sum_by_labels
        (slow_calls None for labels without a window-mode breaker or a slow call),
        then for labels with a live breaker the highest state code and mode, then
        for labels with a window-mode breaker the highest failure rate and
        slow-call rate (-1 below minimum_calls)].
        """

    def call(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """
        Calls fn(*args, **kwargs) through the breaker and returns its result.
        Raises UnavailableError without calling fn while the breaker is open.
        An exception from fn is recorded (failure, success or nothing, as the
        breaker's failure predicate says) and re-raised unchanged.
        """

def _emit_samples(rows: dict[tuple[str, ...], Any], label_names: tuple[str, ...], columns: tuple[tuple[list[object], str, object, object, int, bool], ...], proto: tuple[object, ...], reported: dict[tuple[str, ...], list[Any]] | None) -> None:
    """
    For the metrics collector: for each (key, values) of rows and each column
    (samples, name, extra label or None, its value, index, clamped), appends
    to samples a sample like proto named name, labelled label_names = key (and
    the extra label), valued values[index] (none where the row has no such
    value, or None). With reported (key -> the list of the samples reported
    before, one per column, None where none was), an unchanged series is
    reported by the same sample, a clamped column's value never goes below
    the one reported before nor disappears, and reported is updated.
    """

class Bulkhead:
    """Bounded concurrency counter (native part)."""

    def __init__(self, max_concurrent: int) -> None: ...

    def _try_take(self) -> bool:
        """try_enter() without counting a refusal (the caller may queue)."""

    def _take_as_waiter(self) -> bool:
        """Takes a free slot whoever is queued: for the waiter at the head."""

    def _count_rejection(self) -> None: ...

    def _free(self) -> None:
        """
        Gives a slot back without a token (a slot handed to a waiter that left):
        to the longest waiter if one is queued, else to the pool. Raises
        RuntimeError, changing nothing, when no call is in flight.
        """

    def _add_waiter(self, delta: int) -> None: ...

    @property
    def max_concurrent(self) -> int: ...

    @property
    def in_flight(self) -> int:
        """Calls holding a slot now."""

    @property
    def waiting(self) -> int:
        """asyncio tasks queued for a slot."""

    @property
    def admitted(self) -> int:
        """Slots granted."""

    @property
    def rejected(self) -> int:
        """
        Attempts turned away: try_enter() False, a full bulkhead raised, or a
        queued wait that timed out. A waiter admitted later is not one.
        """

    def enter(self) -> BulkheadSlot:
        """
        Takes a slot or raises RateLimitError; never waits (and never barges past
        queued asyncio waiters). Returns its token (a BulkheadSlot), for exit(),
        which also finds it without being passed it.
        """

    def try_enter(self) -> bool:
        """
        Takes a slot if one is free and nobody is queued for one, and returns True;
        otherwise counts a rejection and returns False. Never waits. The slot goes
        back with exit() from this thread or task.
        """

    def _hold(self) -> BulkheadSlot:
        """
        Records a slot just taken (by a waiter) as the current thread's or task's
        latest, and returns its token. Out of memory, the slot goes back.
        """

    def exit(self, slot: BulkheadSlot | None = None) -> None:
        """
        Gives a slot back: to the longest asyncio waiter if one is queued, else to
        the pool. `slot` is the token enter() or enter_async() returned; None gives
        back the latest slot the calling thread or task took and still holds. Each
        token goes back once, whichever threads try.

        Raises RuntimeError, changing nothing, when there is nothing to give back
        (no slot held here, or the token was given back already, or is another
        bulkhead's); TypeError when `slot` is not a BulkheadSlot.
        """

    def __enter__(self) -> Self:
        """enter(), returning the bulkhead: `with bulkhead:` rejects when full."""

    def __exit__(self, *exc_info: object) -> None:
        """exit(): gives back the latest slot this thread or task holds."""

class Policy:
    """Composed policy (native part)."""

    def __init__(self, breaker: object | None, bucket: object | None, bulkhead: object | None, fast: bool, waits: bool, budget: object | None = None) -> None: ...

    def _exit_exception(self, ticket: int, exc: object, start_ns: int = -1) -> None:
        """
        The attempt raised exc: record it and free its slot (a breaker timing
        slow calls times it from start_ns, the admission's clock time, when >= 0).
        """

    def _exit_unrun(self, ticket: int) -> None:
        """
        The attempt did not run after all: give its slots back, record nothing.
        """

    def execute(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """
        Runs fn(*args, **kwargs) under the policy and returns its result. The
        first attempt's admit -> call -> record runs natively; rejections,
        retries and timeouts continue in Policy._resume.
        """

    def _enter(self, /) -> int:
        """
        Admits an attempt: a ticket >= 0; or -1 breaker open, -2 rate limited,
        -3 bulkhead full (nothing held); or -100 when every call needs Python.
        """

    def _exit(self, ticket: int, start_ns: int = -1, /) -> None:
        """
        The attempt succeeded: record it and free its slot (a breaker timing slow
        calls times it from start_ns, the attempt's start on its clock, when >= 0).
        """

    def execute_async(self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs) -> Coroutine[Any, Any, _T]:
        """
        Awaits fn(*args, **kwargs) under the policy and returns its result (await
        the awaitable returned, an AsyncCall). An attempt cut off by a deadline
        (the policy's, or one around this call: asyncio.timeout, anyio's
        fail_after) counts as a Timeout: a breaker failure. Cancelling the
        awaiting task from outside records nothing and gives back the breaker
        slot, the bulkhead slot and any tokens reserved while waiting; a
        cancelled task is never retried. The first attempt's admit -> await ->
        record runs natively; rejections, retries and timeouts continue in
        Policy._resume_async.
        """

class AsyncCall(Coroutine[Any, Any, _T]):
    """
    The awaitable of Policy.execute_async() and CircuitBreaker.call_async():
    a coroutine whose success path runs natively.
    """
    def send(self, value: Any, /) -> Any: ...
    def throw(self, typ: Any, val: Any = None, tb: Any = None, /) -> Any: ...
    def close(self) -> None: ...
    def __await__(self) -> Generator[Any, None, _T]: ...
    def __next__(self) -> Any: ...

_breaker_call_async: Any

class _LoopDeadlines:
    """
    The pending deadlines of one event loop (native part of
    _loop_deadlines.LoopDeadlines).
    """
    def __init__(self, loop_ref: Any, time: Callable[[], float] | None,
                 ask_loop: bool = False) -> None: ...
    def __len__(self) -> int:
        """Return len(self)."""
    def add(self, delay: float, target: Any, /) -> int:
        """
        Fires target._fire() delay seconds of loop time from now, unless end() is
        called with the handle returned (an int) first.
        """
    def end(self, handle: int, /) -> None:
        """
        The deadline will not fire (it ended first): removed now. Nothing happens
        if it fired or ended already.
        """
    def _fire_until(self, due: float, /) -> None:
        """
        A TimerHandle of ours fired: fires every deadline due at `due` (loop
        time) and schedules a handle for the earliest left if none comes first.
        """
    @property
    def _heap(self) -> list[tuple[float, int, Any]]:
        """The pending deadlines, (when, order, target) each, in heap order (a copy)."""
    @property
    def _loop(self) -> Any:
        """The weak reference to the loop."""

class _DeadlineScope:
    """The native part of timeouts.TimeoutScope."""
    def __init__(self, timeout: float | None) -> None: ...
    def _start(self) -> None:
        """
        Enters the scope inside the running task: its deadline is armed on the
        loop's deadlines. RuntimeError outside a running loop or a task.
        """
    def _stop(self, exc_type: type[BaseException] | None, exc: BaseException | None, /) -> None:
        """
        Leaves the scope; raises asyncio.TimeoutError from exc if the cancellation
        ending it was this deadline's (and not also one from outside).
        """
    def _fire(self) -> None:
        """The deadline passed: marks the scope fired and cancels its task."""
    fired: bool
    """Whether the deadline fired."""
    @property
    def expiring(self) -> bool:
        """
        True between the deadline firing and this scope's exit: the
        cancellation under way is (at least in part) this deadline's.
        """
    @property
    def _task(self) -> Any:
        """The task the deadline cancels (None before _start)."""
    @property
    def _timeout(self) -> float | None:
        """The timeout in seconds, or None."""

def _install_deadlines(scope_type: object, scopes_var: object, deadline_var: object, find_deadlines: object, timeouts: object, system_clock: object, deadline_exceeded: object, tasks_count_cancels: bool) -> None:
    """
    Installed once by timeouts.py: what call_until's awaitable needs of Python.
    """

def _forget_running_loop() -> None:
    """
    Forgets the loop last found running (after a fork: the child must ask again).
    """

def _call_until(clock: Any, deadline: float | None, what: str, fn: Callable[..., Awaitable[_T]], args: tuple[Any, ...], kwargs: dict[str, Any], /) -> AsyncCall[_T]:
    """
    Awaits fn(*args, **kwargs), cut off at deadline (seconds on clock; None: no
    limit): timeouts.call_until.
    """

def _deadline_for(clock: Any, timeout: float | None, /) -> float | None:
    """
    The absolute deadline (seconds on clock) for a call starting now: now +
    timeout, tightened by any enclosing deadline on the same clock (timeout
    None: that enclosing deadline, or None): timeouts.deadline_for.
    """

def _policy_attempt_deadline(policy: Policy, clock: Any, timeout: float, what: str, /) -> None:
    """
    Set once by a Policy with a per-attempt timeout and no overall one: its
    execute_async() awaitable arms the first attempt's deadline (timeout
    seconds on clock, tightened by an enclosing one) itself; `what` names the
    attempt in the deadline's error.
    """

def _install_async_helpers(holding: object, awaited: object) -> None:
    """
    Installed once by the package: _admission.holding (an attempt an adapter
    may ask about) and _admission.awaited (`await` of what has no __await__).
    """

def _held(breaker: object | None, bucket: object | None) -> int:
    """
    Whether a native sync attempt of this thread (Policy.execute's first,
    CircuitBreaker.call) is running inside its call and holds `breaker`
    (Held.BREAKER) or a token of `bucket` (Held.BUCKET).
    """

def _track_held() -> None:
    """
    From now on native sync attempts record what they hold, for _held()
    (an adapter exists).
    """

def _specialise(cls: object) -> None:
    """
    Installs the fast hot methods on a subclass of TokenBucket, CircuitBreaker or Policy.
    """

class Backoff:
    """Backoff delay calculator (native part)."""

    def __init__(self, base_delay: float, max_delay: float, multiplier: float, jitter: bool, strategy: int, seeded: bool, seed: int) -> None: ...

    def delay(self, attempt: object | None, previous: float = 0.0) -> float:
        """
        Seconds to wait before retry `attempt` (an int >= 0; attempts beyond
        int64 saturate at max_delay). `previous` is the delay used before, for
        decorrelated_jitter.
        """

    def uniform(self) -> float:
        """One draw in [0, 1) from this calculator's generator."""

class LatencyHistogram:
    """
    The last `window` latencies in log-linear buckets (16 per power of
    two, at most 6.25% wide), lock-free: for a percentile per call.
    """

    def __init__(self, window: int) -> None: ...

    @property
    def window(self) -> int:
        """Samples kept (the newest)."""

    @property
    def count(self) -> int:
        """Samples held now (up to window)."""

    @property
    def recorded(self) -> int:
        """Samples recorded since construction."""

    def record(self, seconds: float) -> None:
        """Adds one latency in seconds (the oldest of a full window goes)."""

    def percentile(self, percent: float, min_samples: int = 1) -> float:
        """
        The `percent` percentile (in (0, 100)) of the samples held, in seconds,
        linear within its bucket; NaN while fewer than `min_samples` are held.
        """

ADAPTIVE_MAX_LIMIT: int = 1073741824

class AdaptiveBulkhead:
    """Adaptive concurrency limit (native part)."""

    def __init__(self, limit: int, clock: ManualClock | None = None) -> None: ...

    def _try_take(self) -> bool:
        """
        A newcomer's slot if one is free and nobody is queued (a refusal is not counted).
        """

    def _take_as_waiter(self) -> bool:
        """Takes a free slot whoever is queued: for the waiter at the head."""

    def _count_rejection(self) -> None: ...

    def _add_waiter(self, delta: int) -> None: ...

    def _free(self) -> None:
        """
        Gives a slot back without a sample (a slot handed to a waiter that left).
        """

    def _release(self, start_ns: int, in_flight: int, dropped: bool, sample: bool) -> None:
        """
        Gives a slot back; with `sample`, records (now - start_ns, in_flight,
        dropped) and, when the window is due, calls self._on_window(now_ns).
        """

    def _take_window(self) -> tuple[int, int, int, int, int]:
        """
        (samples, rtt_sum_ns, min_rtt_ns, max_in_flight, drops) of the window, reset.
        """

    def _set_window_end(self, end_ns: int) -> None: ...

    def _set_min_samples(self, n: int) -> None: ...

    def _set_limit(self, limit: int) -> None: ...

    def _now_ns(self) -> int: ...

    @property
    def limit(self) -> int:
        """The concurrency limit now."""

    @property
    def in_flight(self) -> int:
        """Calls holding a slot now."""

    @property
    def waiting(self) -> int:
        """asyncio tasks queued for a slot."""

    @property
    def admitted(self) -> int:
        """Slots granted."""

    @property
    def rejected(self) -> int:
        """Attempts turned away (full, queue full, or a queued wait timed out)."""

class RetryBudget:
    """A retry budget (native part)."""

    def __init__(self, kind: int, a: int, b: int, c: int, d: int, ttl_ns: int, clock: ManualClock | None = None) -> None: ...

    def deposit(self) -> None:
        """
        Credits the budget. ratio: one call; tokens: one success (+token_ratio);
        quota: one success without retries (+refund). Never blocks.
        """

    def try_withdraw(self, timeout: bool = False) -> bool:
        """
        Whether one retry may be made now, taking its share if so. ratio: 1/percent
        of a deposit; tokens: records a retryable failure (-1 token) and allows the
        retry while tokens stay above max_tokens / 2; quota: the retry's cost
        (timeout_cost when `timeout`). Never blocks.
        """

    @property
    def available(self) -> int:
        """Retries allowed now (an int >= 0), if nothing else happened meanwhile."""

    @property
    def _kind(self) -> int: ...

    def _balance(self) -> int:
        """
        The raw balance: ratio units (window + reserve), milli-tokens, or quota units.
        """

    def _call_started(self) -> None:
        """A retry loop's call starts (ratio: a deposit)."""

    def _call_succeeded(self, last_cost: int) -> None:
        """
        A call succeeded after a last retry that cost `last_cost` (0: no retries).
        """

    def _failed_without_retry(self) -> None:
        """
        A retryable failure not retried for want of attempts (tokens: -1 token).
        """

    def _retry_cost(self, timeout: bool) -> int:
        """What a retry takes (quota), to give back on success; else 0."""

    def _share(self) -> None:
        """Counts this process's amounts for _take_unsynced() from now on."""

    def _take_unsynced(self) -> int:
        """This process's net amounts (units) added since the last call."""

    def _take_wanted(self) -> bool:
        """Whether this process asked for a retry since the last call."""

    def _set_external(self, units: int) -> None:
        """What the rest of the fleet adds to the balance (units, may be < 0)."""

    def _own_window(self) -> int:
        """This process's own net amount over the window (units)."""

class TraceGate:
    """
    TraceGate(native, traced, var, span_key, root_off, off): a method that
    calls native(self, ...) when a parent-based sampler drops the call (the
    current span of the Context in var, under span_key: a valid parent's
    delegate off[is_remote][sampled], a root's root_off, is ALWAYS_OFF),
    else traced(self, ...). Binds as a method when it is a class attribute.
    """
    def __init__(self, native: Callable[..., Any], traced: Callable[..., Any], var: Any, span_key: str, root_off: bool, off: tuple[tuple[bool, bool], tuple[bool, bool]]) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, instance: object, owner: type | None = None, /) -> Any: ...
    @property
    def native(self) -> Callable[..., Any]:
        """The method a call the sampler drops runs."""
    @property
    def traced(self) -> Callable[..., Any]:
        """The method every other call runs."""

def _context_with(context: dict[str, object], key: str, value: object, /) -> Any:
    """
    A copy of context (of its type: an OpenTelemetry Context) that also maps
    key to value.
    """

class TracedAttempt:
    """
    TracedAttempt(start_span, name, attributes, number_key, span_key, attach,
    detach, clock, ended, raised, execution_type): called as (execution, fn,
    *args, **kwargs) with an execution_type instance (its slots number,
    context, spanned, limited, attempt_span read and written),
    runs fn(*args, **kwargs) inside a span start_span(name,
    context=execution.context, attributes=attributes[execution.number])
    made current (attach/detach), ended after; ended(execution, number, span,
    error, started) ends it instead when fn raised or clock is not None;
    raised(exception) when start_span raised an Exception (fn then runs
    untraced).
    """
    def __init__(self, start_span: Callable[..., Any], name: str, attributes: tuple[dict[str, Any], ...], number_key: str, span_key: str, attach: Callable[[Any], Any], detach: Callable[[Any], Any], clock: Callable[[], float] | None, ended: Callable[..., Any], raised: Callable[[BaseException], Any], execution_type: type) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

class TracedExecute:
    """
    TracedExecute(native, fallback, active_in, tracing, attempt, start_span,
    kind, constants, make_constants, current, span_key, current_set,
    current_reset, clock, raised, execution_type): called as (policy, fn,
    *args, **kwargs) while active_in['active'] is tracing (else fallback is),
    makes an execution_type instance without its __init__ (its span from
    start_span(constants[policy._name][0], context=current(), kind=kind,
    attributes=constants[...][1])), sets it in current_set, and returns
    native(policy, attempt, execution, fn, *args, **kwargs); then
    current_reset and the span's end(), or execution.exit(token, error).
    Binds as a method when it is a class attribute.
    """
    def __init__(self, native: Callable[..., Any], fallback: Callable[..., Any], active_in: dict[str, Any], tracing: Any, attempt: Callable[..., Any], start_span: Callable[..., Any], kind: Any, constants: dict[str, tuple[str, dict[str, Any]]], make_constants: Callable[[str], Any], current: Callable[[], Any], span_key: str, current_set: Callable[[Any], Any], current_reset: Callable[[Any], Any], clock: Callable[[], float] | None, raised: Callable[[BaseException], Any], execution_type: type) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, instance: object, owner: type | None = None, /) -> Any: ...

class BreakerCall(Generic[_P, _T]):
    """
    BreakerCall(breaker, fn): fn whose every call is breaker.call(fn, ...), in one
    native call; binds as a method when it is a class attribute.
    """

    def __init__(self, breaker: CircuitBreaker, fn: Callable[_P, _T], /) -> None: ...
    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _T: ...
    def __get__(self, obj: object, owner: type | None = None) -> Any: ...
    @property
    def breaker(self) -> CircuitBreaker:
        """The CircuitBreaker every call goes through."""
    @property
    def fn(self) -> Callable[_P, _T]:
        """The callable every call runs."""

Guarded = BreakerCall
