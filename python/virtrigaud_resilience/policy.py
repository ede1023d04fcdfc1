"""Composed policies: ``PolicyBuilder(name).with_retry(...)...build()``.

The layers, outermost first, fixed at :meth:`PolicyBuilder.build`:

    overall timeout -> retry -> circuit breaker -> rate limiter -> bulkhead -> call

Every attempt passes the breaker, the limiter and the bulkhead again. An
open breaker's :class:`CircuitOpenError` is an ``UnavailableError`` and so
retryable: the retry backs off across it, as in the guide's controller
example. A rate limiter in the default mode raises :class:`RateLimitError`
(retryable, with ``retry_after`` the wait for a token); with ``wait=True``
the attempt waits for its token instead, up to ``max_wait`` seconds. A full
bulkhead raises ``RateLimitError``. An attempt the bulkhead refuses costs no
token: the native first attempt asks the bulkhead before the limiter, and a
later attempt refused (or cancelled while queued) gives its token back.

Speed: the sync success path (admit -> call -> record) of a policy without
an overall timeout runs in one native call; the async one costs one
coroutine frame and two native calls. Everything else (rejections, retries,
waits, timeouts) continues in Python.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from . import _core, _validate
from ._decorate import guarded
from .breaker import _RELEASE, CircuitBreaker, _reject
from .bulkhead import Bulkhead
from .clock import ManualClock, check_clock, sleeper_for
from .errors import RateLimitError
from .ratelimit import Reservation, TokenBucket
from .retry import OnRetry, Retrier, RetryConfig
from .timeouts import deadline_for, deadline_scope, remaining, run_until

__all__ = ["Policy", "PolicyBuilder"]

P = ParamSpec("P")
T = TypeVar("T")

# Stages reported by the native first attempt (see cpp/src/module.cpp).
_PYTHON_PATH, _CALLED, _BREAKER_OPEN, _RATE_LIMITED, _BULKHEAD_FULL = -1, 0, 1, 2, 3
_ENTER_PYTHON_PATH = -100  # what native _enter() returns when every call needs Python


class Policy(_core.Policy):
    """A composed resilience policy; build one with :class:`PolicyBuilder`.

    Use ``policy.execute(fn, *args, **kwargs)``, ``await
    policy.execute_async(fn, *args, **kwargs)``, or ``@policy`` on a sync or
    async function. Thread-safe; share one policy among callers.
    """

    __slots__ = ("name", "retrier", "breaker", "limiter", "wait", "max_wait", "timeout",
                 "bulkhead", "_clock", "__weakref__")

    def __init__(
        self,
        name: str,
        *,
        retry: RetryConfig | None = None,
        breaker: CircuitBreaker | None = None,
        limiter: TokenBucket | None = None,
        wait: bool = False,
        max_wait: float | None = None,
        timeout: float | None = None,
        bulkhead: Bulkhead | None = None,
        clock: ManualClock | None = None,
        on_retry: OnRetry | None = None,
    ) -> None:
        _validate.optional_instance("Policy", "breaker", breaker, CircuitBreaker)
        _validate.optional_instance("Policy", "limiter", limiter, TokenBucket)
        _validate.optional_instance("Policy", "bulkhead", bulkhead, Bulkhead)
        clock = check_clock("Policy", clock)
        self.name = _validate.string("Policy", "name", name)
        self.breaker = breaker
        self.limiter = limiter
        self.wait = _validate.boolean("Policy", "wait", wait)
        self.max_wait = (None if max_wait is None
                         else _validate.seconds("Policy", "max_wait", max_wait))
        self.timeout = (None if timeout is None
                        else _validate.seconds("Policy", "timeout", timeout, allow_zero=False))
        self.bulkhead = bulkhead
        # Last of the checks: a Retrier counts in the metrics from birth.
        self.retrier = Retrier(retry or RetryConfig.none(), clock=clock, on_retry=on_retry,
                               name=name)
        self._clock = sleeper_for(clock)
        # An overall timeout needs Python around every call (the deadline).
        super().__init__(breaker, limiter, bulkhead, self.timeout is None, self.wait)

    # execute(fn, /, *args, **kwargs) is native: see _core.pyi.

    async def execute_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Awaits ``fn(*args, **kwargs)`` under the policy and returns its result.

        Cancelling the awaiting task gives back the breaker slot, the
        bulkhead slot and any tokens reserved while waiting.
        """
        ticket = self._enter()  # native: admit everywhere, or say why not
        if ticket >= 0:
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                self._exit_exception(ticket, exc)
                error = exc
            else:
                self._exit(ticket)
                return result
            # Retry outside the except block, so later errors keep their own __context__.
            return await self._resume_async(_CALLED, error, fn, args, kwargs)
        stage = _PYTHON_PATH if ticket == _ENTER_PYTHON_PATH else -ticket
        return await self._resume_async(stage, None, fn, args, kwargs)

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorates a sync or async function; its name and signature are kept."""
        return guarded(fn, self.execute, self.execute_async)

    # -- the Python continuation of the native first attempt ------------------

    def _resume(self, stage: int, exc: BaseException | None, fn: Callable[..., T],
                args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        """Native hook: attempt 0 did not return a result; take it from here."""
        def attempt() -> T:
            return self._attempt(fn, args, kwargs)

        if stage == _PYTHON_PATH or (stage == _RATE_LIMITED and self.wait):
            deadline = deadline_for(self._clock, self.timeout)
            with deadline_scope(self._clock, deadline):
                return self.retrier.run(attempt, deadline)
        return self.retrier.run(attempt, None, 1, self._first_error(stage, exc))

    async def _resume_async(self, stage: int, exc: BaseException | None,
                            fn: Callable[..., Awaitable[T]], args: tuple[Any, ...],
                            kwargs: dict[str, Any]) -> T:
        def attempt() -> Awaitable[T]:
            return self._attempt_async(fn, args, kwargs)

        queued = stage == _BULKHEAD_FULL and self.bulkhead is not None and self.bulkhead.max_queue
        if stage == _PYTHON_PATH or (stage == _RATE_LIMITED and self.wait) or queued:
            deadline = deadline_for(self._clock, self.timeout)
            with deadline_scope(self._clock, deadline):
                return await run_until(self.retrier.run_async(attempt, deadline), self._clock,
                                       deadline, self.name)
        return await self.retrier.run_async(attempt, None, 1, self._first_error(stage, exc))

    def _first_error(self, stage: int, exc: BaseException | None) -> BaseException:
        if stage == _CALLED:
            assert exc is not None
            return exc
        if stage == _BREAKER_OPEN:
            assert self.breaker is not None
            return _reject(self.breaker)
        if stage == _RATE_LIMITED:
            return self._rate_limited()
        assert self.bulkhead is not None
        return self.bulkhead._reject()

    def _rate_limited(self) -> RateLimitError:
        limiter = self.limiter
        assert limiter is not None
        return RateLimitError(f"policy {self.name!r}: rate limit exceeded "
                              f"({limiter.qps:g}/s, burst {limiter.burst})",
                              retry_after=limiter.retry_after())

    # -- one attempt in Python (retries, waits, timeouts) ----------------------

    def _attempt(self, fn: Callable[..., T], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> T:
        ticket = self._admit()
        token = None
        try:
            if self.limiter is not None:
                token = self._take_token()
            if self.bulkhead is not None:
                self.bulkhead.enter()
        except BaseException:
            self._release(ticket, token)
            raise
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._exit_exception(ticket, exc)
            raise
        self._exit(ticket)
        return result

    async def _attempt_async(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...],
                             kwargs: dict[str, Any]) -> T:
        ticket = self._admit()
        token = None
        try:
            if self.limiter is not None:
                token = await self._take_token_async()
            if self.bulkhead is not None:
                await self.bulkhead.enter_async()
        except BaseException:
            self._release(ticket, token)
            raise
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._exit_exception(ticket, exc)
            raise
        self._exit(ticket)
        return result

    def _admit(self) -> int:
        return self.breaker._admit() if self.breaker is not None else 0

    def _release(self, ticket: int, token: Reservation | None) -> None:
        """The attempt will not run: give back its breaker slot and its token."""
        if token is not None:
            token._refund()
        if self.breaker is not None:
            self.breaker._record(ticket, _RELEASE)

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
        assert self.limiter is not None
        token = self.limiter._reserve_within(1, self._max_wait() if self.wait else 0.0)
        if token is None:
            raise self._rate_limited()
        return token

    def _max_wait(self) -> float | None:
        """max_wait, shortened to the time left before the deadline."""
        left = remaining(self._clock)
        if left is None:
            return self.max_wait
        return left if self.max_wait is None else min(left, self.max_wait)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _core._specialise(cls)

    def __repr__(self) -> str:
        layers = [f"retry={self.retrier.config.max_attempts}"]
        if self.timeout is not None:
            layers.insert(0, f"timeout={self.timeout:g}")
        if self.breaker is not None:
            layers.append(f"breaker={self.breaker.name!r}")
        if self.limiter is not None:
            layers.append(f"limiter={self.limiter.qps:g}/s{' wait' if self.wait else ''}")
        if self.bulkhead is not None:
            layers.append(f"bulkhead={self.bulkhead.max_concurrent}")
        return f"Policy({self.name!r}, {', '.join(layers)})"


_core._specialise(Policy)


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

    def with_retry(self, config: RetryConfig | None = None,
                   on_retry: OnRetry | None = None) -> PolicyBuilder:
        """Retries retryable errors under ``config`` (None: the guide's default)."""
        self._options["retry"] = config or RetryConfig.default()
        self._options["on_retry"] = on_retry
        return self

    def with_circuit_breaker(self, breaker: CircuitBreaker) -> PolicyBuilder:
        """Every attempt passes ``breaker``."""
        self._options["breaker"] = breaker
        return self

    def with_rate_limiter(self, limiter: TokenBucket, wait: bool = False,
                          max_wait: float | None = None) -> PolicyBuilder:
        """Every attempt takes a token from ``limiter``.

        ``wait=False``: no token raises RateLimitError (retryable, with
        ``retry_after``). ``wait=True``: wait for the token, at most
        ``max_wait`` seconds (None: as long as the overall timeout allows).
        """
        self._options.update(limiter=limiter, wait=wait, max_wait=max_wait)
        return self

    def with_timeout(self, seconds: float) -> PolicyBuilder:
        """An overall budget for all attempts and backoff sleeps (see timeouts.py
        for what it can and cannot do to a blocking sync call)."""
        self._options["timeout"] = seconds
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

    def with_clock(self, clock: ManualClock | None) -> PolicyBuilder:
        """Sleeps and deadlines on ``clock`` (a ManualClock in tests)."""
        self._options["clock"] = clock
        return self

    def build(self) -> Policy:
        """The policy; its composition is fixed from here on."""
        options = dict(self._options)
        if "bulkhead" not in options and self._bulkhead_size is not None:
            breaker = options.get("breaker")
            options["bulkhead"] = Bulkhead(
                *self._bulkhead_size,
                provider_type=breaker.provider_type if isinstance(breaker, CircuitBreaker) else "",
                provider=breaker.provider if isinstance(breaker, CircuitBreaker) else "")
        return Policy(self._name, **options)
