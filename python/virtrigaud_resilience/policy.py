"""Composed policies: ``PolicyBuilder(name).with_retry(...)...build()``.

The layers, outermost first, fixed at :meth:`PolicyBuilder.build`:

    overall timeout -> retry -> circuit breaker -> rate limiter -> bulkhead
        -> attempt timeout -> call

Every attempt passes the breaker, the limiter and the bulkhead again. An
open breaker's :class:`CircuitOpenError` is an ``UnavailableError`` and so
retryable: the retry backs off across it, as in the guide's controller
example, for as long as the breaker's remaining open time (its
``retry_after``) fits the retry's ``max_delay`` and the deadline; beyond
that the policy gives up at once and re-raises it for the caller to
requeue. A rate limiter in the default mode raises :class:`RateLimitError`
(retryable, with ``retry_after`` the wait for a token); with ``wait=True``
the attempt waits for its token instead, up to ``max_wait`` seconds. A full
bulkhead raises ``RateLimitError``. An attempt the bulkhead refuses costs no
token: the native first attempt asks the bulkhead before the limiter, and a
later attempt refused (or cancelled while queued) gives its token back.

Timeouts: an attempt cut off by a deadline (the attempt's, the overall one,
or an ``asyncio.timeout`` around the call) counts as a Timeout, a breaker
failure; the caller sees :class:`OperationTimeoutError`. A cancellation from
outside records nothing, stays a ``CancelledError`` even when it coincides
with a deadline, and is never retried.

Speed: the sync success path (admit -> call -> record) of a policy without
a timeout runs in one native call; the async one in a native awaitable
(``_core.AsyncCall``) that drives the coroutine itself, with no Python
frame. Everything else (rejections, retries, waits, timeouts) continues in
Python.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import Any, ParamSpec, TYPE_CHECKING, TypeVar

from . import _admission, _core, _validate
from ._admission import hold, holding
from ._decorate import route_policy_calls
from ._native import (
    RELEASE,
    STAGE_BREAKER_OPEN,
    STAGE_BULKHEAD_FULL,
    STAGE_CALLED,
    STAGE_PYTHON_PATH,
    STAGE_RATE_LIMITED,
)
from ._specialised import HotMethods
from .breaker import BreakerState, CircuitBreaker, _reject
from .bulkhead import Bulkhead
from .clock import ManualClock, check_clock, sleeper_for
from .durations import Seconds
from .errors import RateLimitError
from .ratelimit import Reservation, TokenBucket
from .retry import OnRetry, Retrier, RetryConfig, RetryOn, refuse_coroutine
from .retry_budget import RetryBudget
from .timeouts import (
    RPCConfig,
    call_until,
    deadline_for,
    deadline_scope,
    record_outcome,
    remaining,
)

if TYPE_CHECKING:  # imported where used: the package imports this module, not them
    from .adaptive_bulkhead import AdaptiveBulkhead, AdaptiveSlot
    from .adaptive_rate import AdaptiveRate
    from .fallback import Fallback, FallbackOn
    from .hedging import Hedging

__all__ = ["AdaptiveBulkheadFallbackPolicy", "AdaptiveBulkheadPolicy", "AdaptiveFallbackPolicy",
           "AdaptiveHedgedPolicy", "AdaptivePolicy", "FallbackPolicy",
           "HedgedPolicy", "Policy", "PolicyBuilder"]

P = ParamSpec("P")
T = TypeVar("T")


class Policy(_core.Policy):
    """A composed resilience policy; build one with :class:`PolicyBuilder`.

    Use ``policy.execute(fn, *args, **kwargs)``, ``await
    policy.execute_async(fn, *args, **kwargs)``, or ``@policy`` on a sync or
    async function. Thread-safe; share one policy among callers. Its
    composition is fixed: the attributes are read-only.

    Args:
        name: the policy's name (logs, metrics); a str.
        retry: the :class:`RetryConfig`; None for no retries.
        breaker, limiter, bulkhead: the layers (each optional).
        wait: wait for a token instead of raising RateLimitError.
        max_wait: the longest token wait, in seconds (None: as the deadline allows).
        timeout: the overall budget for all attempts and backoff sleeps.
        attempt_timeout: the budget of each attempt (an RPC's deadline).
        clock: a :class:`ManualClock` for sleeps and deadlines, or None.
        on_retry: ``on_retry(attempt, exc, delay)`` before each backoff sleep.

    Durations accept float seconds, ``timedelta`` or Go strings ("30s").
    """

    __slots__ = ("_name", "_retrier", "_breaker", "_limiter", "_wait", "_max_wait", "_timeout",
                 "_attempt_timeout", "_bulkhead", "_clock", "__weakref__",
                 # AdaptivePolicy's, here so that it combines with the other
                 # subclasses (only one base of a class may add slots)
                 "_adaptive_bulkhead", "_adaptive_rate")

    def __init__(
        self,
        name: str,
        *,
        retry: RetryConfig | None = None,
        breaker: CircuitBreaker | None = None,
        limiter: TokenBucket | None = None,
        wait: bool = False,
        max_wait: Seconds | None = None,
        timeout: Seconds | None = None,
        attempt_timeout: Seconds | None = None,
        bulkhead: Bulkhead | None = None,
        clock: ManualClock | None = None,
        on_retry: OnRetry | None = None,
    ) -> None:
        if type(self) is not Policy:
            _HOT_METHODS.follow(type(self))  # a base method patched since?
        _validate.optional_instance("Policy", "breaker", breaker, CircuitBreaker)
        _validate.optional_instance("Policy", "limiter", limiter, TokenBucket)
        _validate.optional_instance("Policy", "bulkhead", bulkhead, Bulkhead)
        clock = check_clock("Policy", clock)
        self._name = _validate.string("Policy", "name", name)
        self._adaptive_bulkhead: AdaptiveBulkhead | None = None  # AdaptivePolicy's
        self._adaptive_rate: AdaptiveRate | None = None
        self._breaker = breaker
        self._limiter = limiter
        self._wait = _validate.boolean("Policy", "wait", wait)
        self._max_wait = (None if max_wait is None
                          else _validate.seconds("Policy", "max_wait", max_wait))
        self._timeout = _optional_budget("timeout", timeout)
        self._attempt_timeout = _optional_budget("attempt_timeout", attempt_timeout)
        self._bulkhead = bulkhead
        # Last of the checks: a Retrier counts in the metrics from birth.
        self._retrier = Retrier(retry or RetryConfig.none(), clock=clock, on_retry=on_retry,
                                name=name)
        self._clock = sleeper_for(clock)
        # A timeout needs Python around every call (the deadline). A retry
        # budget does not: a native first attempt that succeeds counts the
        # call in it, the Retrier's loop counts every other call.
        fast = self._timeout is None and self._attempt_timeout is None
        super().__init__(breaker, limiter, bulkhead, fast, self._wait,
                         self._retrier.config.budget)
        if self._timeout is None and self._attempt_timeout is not None:
            # Its first async attempt arms its own deadline natively (the
            # AsyncCall, on the loop's deadline heap); the rest continues in
            # Python, under the enclosing deadline (_resume_async).
            _core._policy_attempt_deadline(self, self._clock, self._attempt_timeout,
                                           f"{name} attempt")

    # The composition is fixed at construction: the native layer holds the
    # same breaker, bucket and bulkhead, and must never disagree with these.
    @property
    def name(self) -> str:
        """The policy's name (the ``policy`` label of its retry metrics)."""
        return self._name

    @property
    def retrier(self) -> Retrier:
        """The :class:`Retrier` running the retry loop."""
        return self._retrier

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The circuit breaker every attempt passes, or None."""
        return self._breaker

    @property
    def limiter(self) -> TokenBucket | None:
        """The token bucket every attempt takes a token from, or None."""
        return self._limiter

    @property
    def bulkhead(self) -> Bulkhead | None:
        """The bulkhead every attempt holds a slot of, or None."""
        return self._bulkhead

    @property
    def wait(self) -> bool:
        """Whether an attempt waits for its token (else RateLimitError)."""
        return self._wait

    @property
    def max_wait(self) -> float | None:
        """The longest token wait in seconds, or None (as the deadline allows)."""
        return self._max_wait

    @property
    def timeout(self) -> float | None:
        """The overall budget in seconds (all attempts and sleeps), or None."""
        return self._timeout

    @property
    def attempt_timeout(self) -> float | None:
        """The budget of each attempt in seconds, or None."""
        return self._attempt_timeout

    # execute(fn, /, *args, **kwargs) is native: see _core.pyi.

    # execute_async(fn, /, *args, **kwargs) is native too: it returns an
    # AsyncCall whose first attempt admits, awaits and records natively; what
    # else happens continues in _resume_async and _attempt_raised_async.

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorates a sync or async function; its name and signature are kept."""
        return route_policy_calls(fn, self)

    # -- the Python continuation of the native first attempt ------------------

    def _resume(self, stage: int, exc: BaseException | None, fn: Callable[..., T],
                args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        """Native hook: attempt 0 did not return a result; take it from here."""
        def attempt() -> T:
            return self._attempt(fn, args, kwargs)

        if stage == STAGE_PYTHON_PATH or (stage == STAGE_RATE_LIMITED and self._wait):
            deadline = deadline_for(self._clock, self._timeout)
            with deadline_scope(self._clock, deadline):
                return self._retrier.run(attempt, deadline)
        return self._retrier.run(attempt, None, 1, self._first_error(stage, exc))

    async def _resume_async(self, stage: int, exc: BaseException | None,
                            fn: Callable[..., Awaitable[T]], args: tuple[Any, ...],
                            kwargs: dict[str, Any]) -> T:
        def attempt() -> Awaitable[T]:
            return self._attempt_async(fn, args, kwargs)

        bulkhead = self._bulkhead
        queued = stage == STAGE_BULKHEAD_FULL and bulkhead is not None and bulkhead.max_queue
        if stage == STAGE_PYTHON_PATH or (stage == STAGE_RATE_LIMITED and self._wait) or queued:
            deadline = deadline_for(self._clock, self._timeout)
            return await call_until(self._clock, deadline, self._name,
                                    self._retrier.run_async, (attempt, deadline), {})
        if self._attempt_timeout is not None:
            # The native first attempt ran under its own deadline: the rest
            # of the call keeps the enclosing one, as the Python path does.
            deadline = deadline_for(self._clock, self._timeout)
            return await call_until(self._clock, deadline, self._name, self._retrier.run_async,
                                    (attempt, deadline, 1, self._first_error(stage, exc)), {})
        return await self._retrier.run_async(attempt, None, 1, self._first_error(stage, exc))

    def _attempt_raised_async(self, ticket: int, exc: BaseException,
                              fn: Callable[..., Awaitable[T]], args: tuple[Any, ...],
                              kwargs: dict[str, Any], start_ns: int = -1) -> Awaitable[T]:
        """Native hook: the native async attempt 0 raised ``exc``. Records it
        (a deadline's cancellation as a Timeout, one from outside as nothing)
        and returns the retry loop's coroutine, which the call awaits next; a
        BaseException that is no Exception (a cancellation) is raised again,
        never retried. ``start_ns`` (>= 0 when the breaker times slow calls)
        is the admission's clock time: the failure is timed from it."""
        record_outcome(self._exception_exit(start_ns), ticket, exc, self._name)
        if not isinstance(exc, Exception):
            raise exc
        return self._resume_async(STAGE_CALLED, exc, fn, args, kwargs)

    def _first_error(self, stage: int, exc: BaseException | None) -> BaseException:
        if stage == STAGE_CALLED:
            assert exc is not None
            return exc
        if stage == STAGE_BREAKER_OPEN:
            assert self._breaker is not None
            return _reject(self._breaker)
        if stage == STAGE_RATE_LIMITED:
            return self._rate_limited()
        assert self._bulkhead is not None
        return self._bulkhead._reject()

    def _rate_limited(self) -> RateLimitError:
        limiter = self._limiter
        assert limiter is not None
        return RateLimitError(f"policy {self._name!r}: rate limit exceeded "
                              f"({limiter.qps:g}/s, burst {limiter.burst})",
                              retry_after=limiter.retry_after())

    # -- one attempt in Python (retries, waits, timeouts) ----------------------

    def _attempt(self, fn: Callable[..., T], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> T:
        ticket = self._admit_attempt()
        start = self._attempt_start()
        held = _admission.nesting and hold(self._breaker, self._limiter)
        try:
            if self._attempt_timeout is None:
                result = fn(*args, **kwargs)
            else:
                # A sync call cannot be interrupted: its budget is what
                # remaining() tells it, to hand to its own timeout (a
                # socket's, a gRPC deadline).
                deadline = deadline_for(self._clock, self._attempt_timeout)
                with deadline_scope(self._clock, deadline):
                    result = fn(*args, **kwargs)
        except BaseException as exc:
            self._exit_exception(ticket, exc, start)
            raise
        finally:
            if held:
                held.end()
        if type(result) is CoroutineType:
            self._exit_unrun(ticket)
            refuse_coroutine(result, "Policy.execute()", "'await policy.execute_async(fn, ...)'")
        self._exit(ticket, start)
        return result

    async def _attempt_async(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...],
                             kwargs: dict[str, Any]) -> T:
        ticket = await self._admit_attempt_async()
        start = self._attempt_start()
        if _admission.nesting:  # an adapter exists: it may ask what this attempt holds
            fn, args, kwargs = holding, (self._breaker, self._limiter, fn, args, kwargs), {}
        try:
            if self._attempt_timeout is None:
                result = await fn(*args, **kwargs)
            else:
                deadline = deadline_for(self._clock, self._attempt_timeout)
                result = await call_until(self._clock, deadline, f"{self._name} attempt",
                                          fn, args, kwargs)
        except BaseException as exc:
            record_outcome(self._exception_exit(start), ticket, exc, self._name)
            raise
        self._exit(ticket, start)
        return result

    def _attempt_start(self) -> int:
        """The breaker's clock now (ns) when it times slow calls, else -1:
        an attempt of the Python path is timed from its admission (after any
        wait for a token or a bulkhead slot) to its outcome."""
        breaker = self._breaker
        return breaker._now_ns() if breaker is not None and breaker._timing else -1

    def _exception_exit(self, start_ns: int) -> Callable[[int, BaseException], None]:
        """The ``(ticket, exc)`` recorder for record_outcome: _exit_exception,
        timed from ``start_ns`` when that is >= 0."""
        if start_ns < 0:
            return self._exit_exception
        return lambda ticket, exc: self._exit_exception(ticket, exc, start_ns)

    def _admit_attempt(self) -> int:
        """Breaker, token, bulkhead for one attempt, or raises (nothing held)."""
        ticket = self._admit()
        token = None
        try:
            if self._limiter is not None:
                token = self._take_token()
            if self._bulkhead is not None:
                self._bulkhead._take()  # its slot goes back through the native exit
        except BaseException:
            self._release(ticket, token)
            raise
        return ticket

    async def _admit_attempt_async(self) -> int:
        ticket = self._admit()
        token = None
        try:
            if self._limiter is not None:
                token = await self._take_token_async()
            if self._bulkhead is not None:
                await self._bulkhead._take_async()
        except BaseException:
            self._release(ticket, token)
            raise
        return ticket

    def _admit(self) -> int:
        return self._breaker._admit() if self._breaker is not None else 0

    def _release(self, ticket: int, token: Reservation | None) -> None:
        """The attempt will not run: give back its breaker slot and its token."""
        if token is not None:
            token._refund()
        if self._breaker is not None:
            self._breaker._record(ticket, RELEASE)

    def _take_token(self) -> Reservation:
        """The attempt's token, waited for when ``wait``; else RateLimitError."""
        token = self._reserve_token()
        token.wait()
        return token

    async def _take_token_async(self) -> Reservation:
        token = self._reserve_token()
        await token.wait_async()
        return token

    def _reserve_token(self) -> Reservation:
        assert self._limiter is not None
        token = self._limiter._reserve_within(1, self._max_wait_now() if self._wait else 0.0)
        if token is None:
            raise self._rate_limited()
        return token

    def _max_wait_now(self) -> float | None:
        """max_wait, shortened to the time left before the deadline."""
        left = remaining(self._clock)
        if left is None:
            return self._max_wait
        return left if self._max_wait is None else min(left, self._max_wait)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _core._specialise(cls)

    def describe(self) -> dict[str, Any]:
        """The stages, outermost first, with their settings and live state
        (breaker state, bucket tokens, bulkhead occupancy): a plain dict, see describe.py."""
        from .describe import describe

        return describe(self)

    def __repr__(self) -> str:
        from .describe import summary

        return summary(self)  # one line: the stages of describe()


#: with_adaptive_rate() without a rate: one on the policy's limiter, made at build.
_ON_THE_LIMITER: Any = object()


def _adaptive_class(adaptive: dict[str, Any], plain: type[Policy], rate: type[Policy],
                    slots: type[Policy]) -> type[Policy]:
    """The class build() makes: ``plain`` without adaptive limits, ``slots``
    with an adaptive bulkhead (a Python frame per call), ``rate`` with an
    adaptive rate only (the native success path)."""
    if not adaptive:
        return plain
    return slots if adaptive.get("adaptive_bulkhead") is not None else rate


def _optional_budget(field: str, value: Seconds | None) -> float | None:
    return None if value is None else _validate.seconds("Policy", field, value, allow_zero=False)


#: The native hot methods of Policy and its subclasses (see _specialised.py).
_HOT_METHODS = HotMethods(Policy)


class PolicyBuilder:
    """Builds a :class:`Policy`, as the guide's ``resilience.NewPolicyBuilder``.

    >>> policy = (PolicyBuilder("create-vm")
    ...           .with_retry(RetryConfig(max_attempts=3, base_delay=1.0))
    ...           .with_circuit_breaker(CircuitBreaker("vm-operations", "vsphere", "prod"))
    ...           .build())
    """

    def __init__(self, name: str) -> None:
        self._name = _validate.string("PolicyBuilder", "name", name)
        self._bulkhead_size: tuple[int, int] | None = None
        self._options: dict[str, Any] = {}
        self._fallback_options: dict[str, Any] = {}
        self._hedging_options: dict[str, Any] = {}
        self._budget: RetryBudget | None = None

    def with_retry(self, config: RetryConfig | None = None,
                   on_retry: OnRetry | None = None,
                   retry_on: RetryOn | None = None) -> PolicyBuilder:
        """Retries retryable errors under ``config`` (None: the guide's default).

        ``retry_on`` (exception types or a predicate) retries more than the
        taxonomy's retryable errors, e.g. ``retry_on=ConnectionError``; it
        replaces ``config.retry_on`` when given.
        """
        config = _validate.optional_instance("PolicyBuilder", "retry", config, RetryConfig)
        config = config or RetryConfig.default()
        if retry_on is not None:
            config = config.replace(retry_on=retry_on)
        self._options["retry"] = config
        self._options["on_retry"] = on_retry
        return self

    def with_circuit_breaker(self, breaker: CircuitBreaker) -> PolicyBuilder:
        """Every attempt passes ``breaker``."""
        self._options["breaker"] = breaker
        return self

    def with_rate_limiter(self, limiter: TokenBucket, wait: bool = False,
                          max_wait: Seconds | None = None) -> PolicyBuilder:
        """Every attempt takes a token from ``limiter``.

        ``wait=False``: no token raises RateLimitError (retryable, with
        ``retry_after``). ``wait=True``: wait for the token, at most
        ``max_wait`` seconds (None: as long as the overall timeout allows).
        """
        self._options.update(limiter=limiter, wait=wait, max_wait=max_wait)
        return self

    def with_timeout(self, seconds: Seconds | None = None, *,
                     per_attempt: Seconds | None = None) -> PolicyBuilder:
        """Time budgets: ``seconds`` for all attempts and backoff sleeps
        together, ``per_attempt`` for each attempt, so that one hung attempt
        cannot eat the whole budget (None: no such budget).

        async: an attempt past its budget is cancelled and counts as a
        Timeout (a breaker failure, retried if the overall budget allows); at
        the overall deadline the call raises OperationTimeoutError. sync: a
        blocking call cannot be interrupted from Python; no attempt starts
        and no backoff sleeps past the overall deadline, and
        :func:`remaining` tells the running attempt the tighter of its two
        budgets, to pass to the call's own timeout (see timeouts.py).
        """
        self._options["timeout"] = seconds
        self._options["attempt_timeout"] = per_attempt
        return self

    def with_rpc_timeout(self, rpc: RPCConfig, operation: str) -> PolicyBuilder:
        """Each attempt gets the guide's timeout for ``operation``
        (``rpc.timeout_for(operation)``: Describe 30 s, Create/Delete/Power/
        Reconfigure 4 min, Validate 10 s, TaskStatus 10 s), as Go's client
        puts ``context.WithTimeout(ctx, GetRPCTimeout(op))`` around each RPC.
        The overall budget (``with_timeout(seconds)``) is kept."""
        if not isinstance(rpc, RPCConfig):
            raise TypeError(f"PolicyBuilder rpc must be an RPCConfig, "
                            f"got {type(rpc).__name__} {rpc!r}")
        self._options["attempt_timeout"] = rpc.timeout_for(operation)
        return self

    def with_bulkhead(self, bulkhead: Bulkhead | int, max_queue: int = 0) -> PolicyBuilder:
        """At most ``bulkhead`` calls in flight (a Bulkhead, or its size).

        A bulkhead made from a size takes the circuit breaker's
        ``provider_type`` / ``provider`` labels (for its metrics), if the
        policy has a breaker.
        """
        if isinstance(bulkhead, Bulkhead):
            self._options["bulkhead"] = bulkhead
        else:
            self._options.pop("bulkhead", None)
            self._bulkhead_size = Bulkhead.check_size(bulkhead, max_queue)
        return self

    def with_retry_budget(self, budget: RetryBudget | None) -> PolicyBuilder:
        """Every retry must be allowed by ``budget`` (a :class:`RetryBudget`,
        shared with whatever else retries against the same provider; None
        removes it). Applies to the retry configuration given by
        :meth:`with_retry`, before or after this call (a budget never adds
        retries: without one it only counts the calls). When the budget
        refuses, the attempt's own error is raised with
        ``budget_exhausted=True``. A call's first attempt stays native: its
        success counts in the budget there (a ratio's deposit, a token's
        share, a quota's refund)."""
        self._budget = _validate.optional_instance("PolicyBuilder", "budget", budget,
                                                   RetryBudget)
        return self

    def with_clock(self, clock: ManualClock | None) -> PolicyBuilder:
        """Sleeps and deadlines on ``clock`` (a ManualClock in tests)."""
        self._options["clock"] = clock
        return self

    def build(self) -> Policy:
        """The policy; its composition is fixed from here on."""
        options = dict(self._options)
        if self._budget is not None:
            retry = options.get("retry") or RetryConfig.none()
            options["retry"] = retry.replace(budget=self._budget)
        if "bulkhead" not in options and self._bulkhead_size is not None:
            breaker = options.get("breaker")
            options["bulkhead"] = Bulkhead(
                *self._bulkhead_size,
                provider_type=breaker.provider_type if isinstance(breaker, CircuitBreaker) else "",
                provider=breaker.provider if isinstance(breaker, CircuitBreaker) else "")
        adaptive: dict[str, Any] = {key: options.pop(key)
                                    for key in ("adaptive_bulkhead", "adaptive_rate")
                                    if key in options}
        if adaptive.get("adaptive_rate") is _ON_THE_LIMITER:
            limiter = options.get("limiter")
            if not isinstance(limiter, TokenBucket):
                raise ValueError("PolicyBuilder with_adaptive_rate() needs a rate limiter to "
                                 "control: call with_rate_limiter() too")
            from .adaptive_rate import AdaptiveRate

            adaptive["adaptive_rate"] = AdaptiveRate(limiter)
        options.update(adaptive)
        if self._hedging_options:
            from .hedging import Hedging

            hedging = Hedging("Policy", **self._hedging_options)
            hedged = AdaptiveHedgedPolicy if adaptive else HedgedPolicy
            return hedged(self._name, hedging=hedging, **self._fallback_options, **options)
        if "fallback" in self._fallback_options:
            falling_back = _adaptive_class(adaptive, FallbackPolicy, AdaptiveFallbackPolicy,
                                           AdaptiveBulkheadFallbackPolicy)
            return falling_back(self._name, **self._fallback_options, **options)
        plain = _adaptive_class(adaptive, Policy, AdaptivePolicy, AdaptiveBulkheadPolicy)
        return plain(self._name, **options)

    # -- fallback (fallback.py) -------------------------------------------------

    def with_fallback(self, fn_or_value: Any, *, on: FallbackOn | None = None) -> PolicyBuilder:
        """Answers with ``fn_or_value`` instead of raising the call's final error.

        ``fn_or_value``: a callable, called with the final error (an
        ``Exception``) once retries are over, whose result (awaited, for an
        async function under ``execute_async``) is the call's; or a value,
        returned as is. ``on`` picks the errors that fall back: None (every
        ``Exception``), :class:`ErrorType` members, ``Exception`` subclasses,
        a tuple of them, or a predicate ``error -> bool``. Breaker, limiter
        and bulkhead rejections fall back when ``on`` includes them
        (``CircuitOpenError`` is ``Unavailable``, the others ``RateLimit``).
        An exception from the fallback propagates with the final error as
        its ``__context__``; a cancellation never falls back. Each fallback
        counts in ``virtrigaud_fallback_total{policy, reason}``. The
        success path costs what it costs without a fallback.
        """
        from .fallback import Fallback

        Fallback("PolicyBuilder", fn_or_value, on)  # validated here, where the mistake is
        self._fallback_options = {"fallback": fn_or_value, "fallback_on": on}
        return self

    # -- hedging (hedging.py) ---------------------------------------------------

    def with_hedging(self, max_hedges: int = 1, delay: str | Seconds = "p95", *,
                     window: int = 1000, floor: Seconds | None = None) -> PolicyBuilder:
        """Sends up to ``max_hedges`` (an int in [1, 10]) more requests for a
        call that has not answered after ``delay``, one per further ``delay``;
        the first success wins and the others are cancelled (their permits,
        tokens and slots come back). ``delay``: ``"pNN"`` (NN in (0, 100)),
        that percentile of the last ``window`` successful calls' latencies
        (``floor`` seconds, or no hedge when None, until 20 are known), or
        seconds. Async only: the policy's ``execute`` raises TypeError. No
        hedge while the breaker is not closed, the limiter has no token to
        spare, or the provider pushed back. For idempotent operations only
        (see hedging.py).
        """
        options: dict[str, Any] = {"max_hedges": max_hedges, "delay": delay, "window": window,
                                   "floor": floor}
        from .hedging import Hedging

        Hedging("PolicyBuilder", **options)  # validated here, where the mistake is
        self._hedging_options = options
        return self

    # -- adaptive limits (issue 24) --------------------------------------------

    def with_adaptive_bulkhead(self, bulkhead: AdaptiveBulkhead) -> PolicyBuilder:
        """Every attempt also holds a slot of ``bulkhead`` (an
        :class:`~virtrigaud_resilience.AdaptiveBulkhead`), and its outcome
        is the slot's sample: the limit learns the provider's capacity."""
        from .adaptive_bulkhead import AdaptiveBulkhead

        self._options["adaptive_bulkhead"] = _validate.optional_instance(
            "PolicyBuilder", "adaptive_bulkhead", bulkhead, AdaptiveBulkhead)
        return self

    def with_adaptive_rate(self, rate: AdaptiveRate | None = None) -> PolicyBuilder:
        """Every attempt's outcome is reported to ``rate`` (an
        :class:`~virtrigaud_resilience.AdaptiveRate`; None: one with its
        defaults on the policy's rate limiter, made at build), so the
        limiter's rate learns the provider's quota."""
        from .adaptive_rate import AdaptiveRate

        self._options["adaptive_rate"] = _validate.optional_instance(
            "PolicyBuilder", "adaptive_rate", rate, AdaptiveRate) or _ON_THE_LIMITER
        return self


class FallbackPolicy(Policy):
    """A :class:`Policy` that answers with a fallback instead of its final
    error (built by :meth:`PolicyBuilder.with_fallback`; see fallback.py).

    The native first attempt is the Policy's own: the fallback is consulted
    in the Python continuation that every failed or rejected call enters,
    so a successful call runs exactly as in a plain Policy.
    """

    __slots__ = ("_fallback",)

    def __init__(self, name: str, *, fallback: Any, fallback_on: FallbackOn | None = None,
                 **options: Any) -> None:
        from .fallback import Fallback

        self._fallback = Fallback("Policy", fallback, fallback_on)
        super().__init__(name, **options)

    @property
    def fallback(self) -> Fallback:
        """The :class:`Fallback` answering for this policy's final errors."""
        return self._fallback

    def _resume(self, stage: int, exc: BaseException | None, fn: Callable[..., T],
                args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        try:
            return super()._resume(stage, exc, fn, args, kwargs)
        except Exception as error:
            if not self._fallback.handles(error):
                raise
            result: T = self._fallback.recover(self._name, error)
            return result

    async def _resume_async(self, stage: int, exc: BaseException | None,
                            fn: Callable[..., Awaitable[T]], args: tuple[Any, ...],
                            kwargs: dict[str, Any]) -> T:
        try:
            return await super()._resume_async(stage, exc, fn, args, kwargs)
        except Exception as error:
            if not self._fallback.handles(error):
                raise
            result: T = await self._fallback.recover_async(self._name, error)
            return result


class HedgedPolicy(Policy):
    """A :class:`Policy` whose async calls are hedged (built by
    :meth:`PolicyBuilder.with_hedging`; see hedging.py), with an optional
    fallback over the whole race.

    Each request of a call is a whole execution of the Policy (breaker,
    limiter, bulkhead, retries, timeouts). ``execute`` raises TypeError:
    hedging is async only.
    """

    __slots__ = ("_hedging", "_fallback")

    def __init__(self, name: str, *, hedging: Hedging, fallback: Any = None,
                 fallback_on: FallbackOn | None = None, **options: Any) -> None:
        self._hedging = hedging
        from .fallback import Fallback

        self._fallback = None if fallback is None else Fallback("Policy", fallback, fallback_on)
        super().__init__(name, **options)

    @property
    def hedging(self) -> Hedging:
        """The :class:`Hedging` deciding this policy's hedges."""
        return self._hedging

    @property
    def fallback(self) -> Fallback | None:
        """The :class:`Fallback` answering for the race's final error, or None."""
        return self._fallback

    def execute(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Refused: a sync call cannot be abandoned, so it cannot be hedged."""
        raise TypeError(f"policy {self._name!r} hedges, which only an async call can: "
                        f"use 'await policy.execute_async(fn, ...)'")

    async def execute_async(self, fn: Callable[P, Awaitable[T]], /, *args: P.args,
                            **kwargs: P.kwargs) -> T:
        """Awaits ``fn(*args, **kwargs)`` under the policy, hedged (see hedging.py)."""
        def start() -> Awaitable[T]:
            # Policy's execution, never this one's: a request is not hedged again.
            return Policy.execute_async(self, self._observed, fn, args, kwargs)

        try:
            return await self._hedging.race(start, self._may_hedge, self._spend_on_hedge)
        except Exception as error:
            if self._fallback is None or not self._fallback.handles(error):
                raise
            result: T = await self._fallback.recover_async(self._name, error)
            return result

    async def _observed(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> T:
        """One attempt's call; a pushback it raises holds the hedges back."""
        try:
            return await fn(*args, **kwargs)
        except Exception as error:
            self._hedging.note(error, self._clock.now())
            raise

    def _may_hedge(self) -> bool:
        """Whether another request may go now: breaker closed, a token to
        spare, no pushback in force."""
        breaker = self._breaker
        if breaker is not None and breaker.state is not BreakerState.CLOSED:
            return False
        limiter = self._limiter
        if limiter is not None and limiter.tokens < 1:
            return False
        return not self._hedging.pushed_back(self._clock.now())

    def _spend_on_hedge(self) -> bool:
        """Whether the retry budget (when the retry config has one) lets a
        hedge go, as gRPC's retryThrottling throttles hedges: a tokens budget
        is only asked (A6 sends none at or below half its tokens); ratio and
        quota budgets give the hedge their share of a retry."""
        budget = self._retrier.config.budget
        if budget is None:
            return True
        return budget.available > 0 if budget.kind == "tokens" else budget.try_withdraw()


# The mixin below is a plain class at run time (nanobind refuses a class with
# two bases derived from _core.Policy); mypy checks it as the Policy it extends.
if TYPE_CHECKING:
    _PolicyMixin = Policy
else:
    _PolicyMixin = object


class _AdaptiveRateHooks(_PolicyMixin):
    """What makes a policy adaptive (see :class:`AdaptivePolicy`), as a mixin
    put before each policy class it makes adaptive. It adds nothing to the
    native success path: it overrides only the Python continuations, which
    every failed attempt and every refusal or wait of the limiter reach."""

    __slots__ = ()  # Policy holds them: only one base of a class may add slots

    def __init__(self, name: str, *, adaptive_bulkhead: AdaptiveBulkhead | None = None,
                 adaptive_rate: AdaptiveRate | None = None, **options: Any) -> None:
        from .adaptive_bulkhead import AdaptiveBulkhead
        from .adaptive_rate import AdaptiveRate

        bulkhead = _validate.optional_instance("AdaptivePolicy", "adaptive_bulkhead",
                                               adaptive_bulkhead, AdaptiveBulkhead)
        rate = _validate.optional_instance("AdaptivePolicy", "adaptive_rate", adaptive_rate,
                                           AdaptiveRate)
        super().__init__(name, **options)
        self._adaptive_bulkhead = bulkhead
        self._adaptive_rate = rate

    @property
    def adaptive_bulkhead(self) -> AdaptiveBulkhead | None:
        return self._adaptive_bulkhead

    @property
    def adaptive_rate(self) -> AdaptiveRate | None:
        return self._adaptive_rate

    # The native first attempt failed (sync), or the limiter refused it.
    def _resume(self, stage: int, exc: BaseException | None, fn: Callable[..., T],
                args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        self._adapt(stage, exc)
        return super()._resume(stage, exc, fn, args, kwargs)

    async def _resume_async(self, stage: int, exc: BaseException | None,
                            fn: Callable[..., Awaitable[T]], args: tuple[Any, ...],
                            kwargs: dict[str, Any]) -> T:
        if stage != STAGE_CALLED:  # a STAGE_CALLED here came from _attempt_raised_async
            self._adapt(stage, None)
        return await super()._resume_async(stage, exc, fn, args, kwargs)

    # The native first attempt failed (async).
    def _attempt_raised_async(self, ticket: int, exc: BaseException,
                              fn: Callable[..., Awaitable[T]], args: tuple[Any, ...],
                              kwargs: dict[str, Any], start_ns: int = -1) -> Awaitable[T]:
        self._adapt(STAGE_CALLED, exc)
        return super()._attempt_raised_async(ticket, exc, fn, args, kwargs, start_ns)

    # Attempts after the first (retries), and a first one off the native path.
    def _attempt(self, fn: Callable[..., T], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> T:
        try:
            return super()._attempt(fn, args, kwargs)
        except BaseException as exc:
            self._adapt(STAGE_CALLED, exc)
            raise

    async def _attempt_async(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...],
                             kwargs: dict[str, Any]) -> T:
        try:
            return await super()._attempt_async(fn, args, kwargs)
        except BaseException as exc:
            self._adapt(STAGE_CALLED, exc)
            raise

    def _reserve_token(self) -> Reservation:
        if self._adaptive_rate is not None:
            self._adaptive_rate.refresh()  # the rate binds: bring its growth up to date
        return super()._reserve_token()

    def _adapt(self, stage: int, exc: BaseException | None) -> None:
        """An attempt's failure ``exc`` (STAGE_CALLED: a throttle of the
        provider's lowers the rate; our own refusals are never one), or a
        refusal at ``stage`` (the limiter's: the rate binds, refresh it)."""
        rate = self._adaptive_rate
        if rate is None:
            return
        if stage == STAGE_CALLED:
            if exc is not None:
                # The send time is unknown off the native path's frame: the
                # throttle's arrival stands for it (see AdaptiveRate.on_throttle).
                rate.observe(exc, rate.bucket._now_ns())
        elif stage == STAGE_RATE_LIMITED:
            rate.refresh()


class _AdaptiveSlots(_PolicyMixin):
    """Each attempt inside an adaptive bulkhead's slot: wraps execute (a
    Python frame per call; only the policies with an adaptive bulkhead)."""

    __slots__ = ()

    def execute(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """As :meth:`Policy.execute`, each attempt inside the adaptive bulkhead."""
        return super().execute(self._adapted, fn, *args, **kwargs)  # type: ignore[arg-type]

    async def execute_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """As :meth:`Policy.execute_async`, each attempt inside the adaptive bulkhead."""
        return await super().execute_async(self._adapted_async, fn, *args, **kwargs)  # type: ignore[arg-type]

    def _adapted(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        bulkhead = self._adaptive_bulkhead
        slot = bulkhead.acquire() if bulkhead is not None else None
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _finish(slot, exc)
            raise
        if type(result) is CoroutineType:  # refused by execute(): no call was made
            if slot is not None:
                slot.ignore()
            return result
        _finish(slot, None)
        return result

    async def _adapted_async(self, fn: Callable[..., Awaitable[T]], *args: Any,
                             **kwargs: Any) -> T:
        bulkhead = self._adaptive_bulkhead
        slot = await bulkhead.acquire_async() if bulkhead is not None else None
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            _finish(slot, exc)
            raise
        _finish(slot, None)
        return result


def _finish(slot: AdaptiveSlot | None, exc: BaseException | None) -> None:
    if slot is not None:
        slot.finish(exc)


class AdaptivePolicy(_AdaptiveRateHooks, Policy):
    """A :class:`Policy` whose attempts' outcomes also feed the adaptive limits.

    ``adaptive_rate`` (:class:`AdaptiveRate`) learns from the attempts'
    failures only: a provider's throttle lowers it (:meth:`AdaptiveRate.observe`),
    and the limiter's refusals and waits bring its growth up to date
    (:meth:`AdaptiveRate.refresh`); the native success path stays as it is.
    With an ``adaptive_bulkhead`` the policy is an :class:`AdaptiveBulkheadPolicy`:
    each attempt (the first and every retry) holds a slot of it around the
    call, and its outcome goes to the slot (:meth:`AdaptiveSlot.finish`).
    The attempt's call is what they measure: a refusal of the policy's own
    breaker, limiter or bulkhead is never a sample nor a throttle, and
    neither is the adaptive bulkhead's own refusal (a ``RateLimitError``
    that never reached the provider, retried as any rate limit). Built by
    :meth:`PolicyBuilder.build` when ``with_adaptive_bulkhead`` or
    ``with_adaptive_rate`` was used.

    Args:
        adaptive_bulkhead: an AdaptiveBulkhead, or None.
        adaptive_rate: an AdaptiveRate (usually on the policy's limiter), or None.
        The rest: as :class:`Policy`.
    """

    __slots__ = ()


class AdaptiveBulkheadPolicy(_AdaptiveSlots, AdaptivePolicy):
    """An :class:`AdaptivePolicy` with an adaptive bulkhead: each attempt holds its slot."""

    __slots__ = ()


class AdaptiveFallbackPolicy(_AdaptiveRateHooks, FallbackPolicy):
    """An :class:`AdaptivePolicy` with a fallback: the attempts feed the
    adaptive limits, and the final error goes to the fallback."""

    __slots__ = ()


class AdaptiveBulkheadFallbackPolicy(_AdaptiveSlots, AdaptiveFallbackPolicy):
    """An :class:`AdaptiveFallbackPolicy` whose attempts hold an adaptive bulkhead's slots."""

    __slots__ = ()


class AdaptiveHedgedPolicy(_AdaptiveSlots, _AdaptiveRateHooks, HedgedPolicy):
    """A :class:`HedgedPolicy` whose every request's attempts feed the
    adaptive limits (a hedge holds an adaptive slot of its own; its execute
    runs in Python anyway, so the slot wrapper stays when there is no
    adaptive bulkhead)."""

    __slots__ = ()
