"""gRPC client interceptors: breaker, limiter, per-method deadline, status -> taxonomy.

For ``grpc.aio`` channels (unary-unary and unary-stream)::

    from virtrigaud_resilience.providers.grpc import aio_interceptors

    channel = grpc.aio.insecure_channel(target, interceptors=aio_interceptors("vsphere", "prod"))

and for sync channels::

    channel = intercept_channel(grpc.insecure_channel(target), "vsphere", "prod")

Each call, as Virtrigaud's Go client does it:

1. **circuit breaker**: an open breaker fails the call without sending it,
   with a :class:`~virtrigaud_resilience.CircuitOpenError` that is also a
   ``grpc.RpcError`` (a ``grpc.aio.AioRpcError``) whose ``code()`` is
   ``UNAVAILABLE``, so code that catches ``grpc.RpcError`` by code still
   works. Only ``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ``INTERNAL`` and
   ``UNKNOWN`` count as breaker failures (Go's ``isInfraFailure``; the
   breaker's own ``failure_predicate`` is not consulted); every other
   status is the provider answering. ``CANCELLED`` records nothing and
   frees the call's half-open slot.
2. **rate limiter**: no token raises ``RateLimitError`` (``code()``
   ``RESOURCE_EXHAUSTED``, ``retry_after`` the wait), or waits for one with
   ``wait=True`` (never past the call's deadline).
3. **deadline**: the method's timeout from the RPC config (Describe 30 s,
   Validate 10 s, TaskStatus 10 s, Create/Delete/Power/Reconfigure 4 min),
   never longer than a ``timeout=`` the caller passed or the time left of an
   enclosing policy (:func:`~virtrigaud_resilience.remaining`). A method the
   config does not know gets the mutating timeout, as Go's
   ``GetRPCTimeout``, and a warning is logged once per method;
   ``timeouts={"WatchEvents": None}`` sets any method's timeout
   (None: no deadline of ours).
4. **status -> taxonomy** (:data:`ERROR_TYPES`): every failure is raised as
   a ProviderError subclass that is also an ``AioRpcError`` carrying the
   original code, details and metadata. ``UNAVAILABLE`` because no
   connection could be made ("failed to connect to all addresses") is marked
   :func:`~virtrigaud_resilience.providers.never_sent`. ``RESOURCE_EXHAUSTED`` takes
   ``retry_after`` from the ``retry-after`` trailing metadata (seconds or an
   HTTP-date; a malformed value is ignored). ``CANCELLED`` is the caller's
   cancellation: ``asyncio.CancelledError`` on ``grpc.aio``,
   ``grpc.FutureCancelledError`` on sync channels. An exception that is not
   a gRPC status (a bug in another interceptor, say) is classified
   (:func:`~virtrigaud_resilience.classify`), else treated as ``UNKNOWN``.
5. **metrics**: ``virtrigaud_provider_rpc_requests_total{provider_type,
   method, code}`` and ``virtrigaud_provider_rpc_latency_seconds`` for every
   call, rejections included (as Virtrigaud's metrics interceptor sits
   outside its breaker interceptor).

The breaker and the bucket are the provider's shared ones
(:func:`~virtrigaud_resilience.providers.shared_registries`) unless
``breaker=`` / ``limiter=`` give others, or None for none.

Cancelling the awaiting task frees everything the call holds: the breaker's
half-open slot, and tokens reserved while waiting for one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Union

try:
    import grpc
    import grpc.aio
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "virtrigaud_resilience.providers.grpc needs grpcio: "
        "pip install 'virtrigaud-resilience[grpc]'"
    ) from exc

from ..breaker import CircuitBreaker, Permit, default_failure_predicate
from ..clock import ManualClock
from ..config import Config
from ..errors import (
    CircuitOpenError,
    ConflictError,
    ErrorType,
    InvalidSpecError,
    NotFoundError,
    NotSupportedError,
    OperationTimeoutError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    RetryableError,
    UnauthorizedError,
    UnavailableError,
    classify,
)
from ..ratelimit import TokenBucket
from ..rpcstats import code_for_error, go_code_name
from .guard import SHARED, CallGuard, Method, Shared
from .resilient import mark_never_sent
from .retry_after import parse_retry_after

__all__ = [
    "ERROR_TYPES",
    "INFRA_FAILURES",
    "SHARED",
    "AioUnaryStreamInterceptor",
    "AioUnaryUnaryInterceptor",
    "RpcGuard",
    "SyncInterceptor",
    "aio_interceptors",
    "error_from_rpc",
    "intercept_channel",
]

_S = grpc.StatusCode

#: gRPC status -> taxonomy (``CANCELLED`` is the caller's cancellation, not an error type).
ERROR_TYPES: Mapping[Any, ErrorType] = {
    _S.NOT_FOUND: ErrorType.NOT_FOUND,
    _S.INVALID_ARGUMENT: ErrorType.INVALID_SPEC,
    _S.OUT_OF_RANGE: ErrorType.INVALID_SPEC,
    _S.UNAUTHENTICATED: ErrorType.UNAUTHORIZED,
    _S.PERMISSION_DENIED: ErrorType.UNAUTHORIZED,
    _S.UNIMPLEMENTED: ErrorType.NOT_SUPPORTED,
    _S.UNAVAILABLE: ErrorType.UNAVAILABLE,
    _S.DEADLINE_EXCEEDED: ErrorType.TIMEOUT,
    _S.RESOURCE_EXHAUSTED: ErrorType.RATE_LIMIT,
    _S.ALREADY_EXISTS: ErrorType.CONFLICT,
    _S.ABORTED: ErrorType.CONFLICT,
    _S.FAILED_PRECONDITION: ErrorType.CONFLICT,
    _S.INTERNAL: ErrorType.RETRYABLE,
    _S.UNKNOWN: ErrorType.RETRYABLE,
    _S.DATA_LOSS: ErrorType.RETRYABLE,
}

#: The statuses that count as breaker failures (Virtrigaud's ``isInfraFailure``).
INFRA_FAILURES: frozenset[Any] = frozenset(
    {_S.UNAVAILABLE, _S.DEADLINE_EXCEEDED, _S.INTERNAL, _S.UNKNOWN})

_GO_NAMES: dict[Any, str] = {code: go_code_name(code.name) for code in _S}

# ---------------------------------------------------------------------------
# Errors that are both taxonomy errors and gRPC errors.
# ---------------------------------------------------------------------------


class _RpcStatus(grpc.aio.AioRpcError):  # type: ignore[misc]
    """The gRPC side of a taxonomy error: ``code()``, ``details()``, the metadata.

    Sits after ProviderError in the MRO: ProviderError's ``__init__`` reaches
    this one with the message, and the status is filled in afterwards.
    """

    def __init__(self, message: str = "", *_: object, **__: object) -> None:
        Exception.__init__(self, message)
        self._code = _S.UNKNOWN
        self._details = message
        self._initial_metadata = None
        self._trailing_metadata = None
        self._debug_error_string = None


_BASES: dict[ErrorType, type[ProviderError]] = {
    ErrorType.NOT_FOUND: NotFoundError,
    ErrorType.INVALID_SPEC: InvalidSpecError,
    ErrorType.UNAUTHORIZED: UnauthorizedError,
    ErrorType.NOT_SUPPORTED: NotSupportedError,
    ErrorType.RETRYABLE: RetryableError,
    ErrorType.UNAVAILABLE: UnavailableError,
    ErrorType.RATE_LIMIT: RateLimitError,
    ErrorType.TIMEOUT: OperationTimeoutError,
    ErrorType.QUOTA_EXCEEDED: QuotaExceededError,
    ErrorType.CONFLICT: ConflictError,
}

#: The class raised for each type: e.g. ``RpcNotFoundError(NotFoundError, AioRpcError)``.
_RPC_CLASSES: dict[ErrorType, Callable[..., ProviderError]] = {
    kind: type(f"Rpc{base.__name__}", (base, _RpcStatus), {"__module__": __name__})
    for kind, base in _BASES.items()
}


class RpcCircuitOpenError(CircuitOpenError, _RpcStatus):
    """An open breaker's rejection, also an ``AioRpcError`` with code ``UNAVAILABLE``."""


def _set_status(error: BaseException, code: Any, details: str | None,
                initial: Any = None, trailing: Any = None, debug: str | None = None) -> None:
    error._code = code  # type: ignore[attr-defined]
    error._details = details  # type: ignore[attr-defined]
    error._initial_metadata = initial  # type: ignore[attr-defined]
    error._trailing_metadata = trailing  # type: ignore[attr-defined]
    error._debug_error_string = debug  # type: ignore[attr-defined]


def _status_of(error: BaseException) -> tuple[Any, str | None, Any, Any, str | None]:
    """(code, details, initial metadata, trailing metadata, debug string) of a gRPC error."""
    def read(name: str) -> Any:
        method = getattr(error, name, None)
        try:
            return method() if callable(method) else None
        except Exception:  # an inactive call may refuse a question; no answer then
            return None
    return (read("code"), read("details"), read("initial_metadata"),
            read("trailing_metadata"), read("debug_error_string"))


def _metadata_value(metadata: Any, key: str) -> Any:
    """The first value of ``key`` in gRPC metadata (pairs, or grpc.aio.Metadata)."""
    if not metadata:
        return None
    try:
        for item_key, value in metadata:
            if item_key == key:
                return value
    except (TypeError, ValueError):
        return None
    return None


def error_from_rpc(error: BaseException, method: str = "", *,
                   aio: bool = True) -> BaseException:
    """The taxonomy error for a failed RPC (the table of the module docstring).

    ``error`` is a ``grpc.RpcError`` (anything with ``code()``); the result
    is a ProviderError subclass that is also an ``AioRpcError`` with the same
    code, details and metadata, chained from ``error``. ``CANCELLED`` gives
    ``asyncio.CancelledError`` (``aio``) or ``grpc.FutureCancelledError``.
    A code outside the table (``OK``, or none at all) gives a Retryable
    error with code ``UNKNOWN``. ``method`` prefixes the message.
    """
    code, details, initial, trailing, debug = _status_of(error)
    where = f"{method}: " if method else ""
    text = details or (code.name if code is not None else type(error).__name__)
    if code is _S.CANCELLED:
        cancelled: BaseException = (asyncio.CancelledError(f"{where}{text}") if aio
                                    else grpc.FutureCancelledError(f"{where}{text}"))
        cancelled.__cause__ = error
        return cancelled
    kind = ERROR_TYPES.get(code)
    if kind is None:
        kind, code = ErrorType.RETRYABLE, _S.UNKNOWN
    retry_after = None
    if kind is ErrorType.RATE_LIMIT:
        retry_after = parse_retry_after(_metadata_value(trailing, "retry-after"))
    result = _RPC_CLASSES[kind](f"{where}{text}", error, retry_after=retry_after)
    _set_status(result, code, details, initial, trailing, debug)
    if code is _S.UNAVAILABLE and details and _NO_CONNECTION in details:
        mark_never_sent(result)  # gRPC core found no address to connect to: nothing was sent
    return result


#: What gRPC core says when no connection could be made (the RPC was never sent).
_NO_CONNECTION = "failed to connect to all addresses"


# ---------------------------------------------------------------------------
# The guard: what each interceptor does before and after a call.
# ---------------------------------------------------------------------------


class RpcGuard(CallGuard[Union[str, bytes]]):
    """The breaker, limiter, deadlines and metrics the interceptors share
    (the arguments as :func:`aio_interceptors`; see :class:`CallGuard`)."""

    owner = "RpcGuard"

    def _resolve(self, key: str | bytes) -> Method:
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        name = text.rsplit("/", 1)[-1] or text
        return self._method_named(name, name)

    def timeout_for(self, method: str, caller_timeout: float | None = None) -> float | None:
        """The deadline (seconds) a call of ``method`` ("/pkg.Service/Describe")
        gets: its timeout, capped by ``caller_timeout`` and the time left of
        an enclosing policy."""
        return self.deadline(self.method(method), caller_timeout)

    def open_error(self, method: Method, breaker: CircuitBreaker,
                   retry_after: float | None) -> CircuitOpenError:
        error = RpcCircuitOpenError(breaker.name, breaker.provider_type, breaker.provider,
                                    retry_after)
        _set_status(error, _S.UNAVAILABLE, f"circuit breaker open: {error.message}")
        return error

    def rate_limited_error(self, message: str, retry_after: float) -> RateLimitError:
        error = _RPC_CLASSES[ErrorType.RATE_LIMIT](message, retry_after=retry_after)
        _set_status(error, _S.RESOURCE_EXHAUSTED, message)
        assert isinstance(error, RateLimitError)
        return error

    def outcome_of(self, method: Method, exc: BaseException,
                   aio: bool) -> tuple[BaseException, str, bool | None]:
        """``(error to raise, metrics code, breaker outcome)`` of a failed call.

        The outcome is True for a breaker failure (an infrastructure status),
        False for the provider's answer, None for a cancellation.
        """
        code = getattr(exc, "code", None)
        if isinstance(exc, grpc.RpcError) and callable(code):
            error = error_from_rpc(exc, method.name, aio=aio)
            status = getattr(error, "_code", _S.CANCELLED)
            if status is _S.CANCELLED:
                return error, "Canceled", None
            return error, _GO_NAMES[status], status in INFRA_FAILURES
        error = classify(exc)
        if not isinstance(error, ProviderError):  # not a status: gRPC's UNKNOWN
            error = _RPC_CLASSES[ErrorType.RETRYABLE](f"{method.name}: {exc!r}", exc)
            _set_status(error, _S.UNKNOWN, str(exc))
        return error, code_for_error(error), default_failure_predicate(error)

    def failed(self, permit: Permit | None, method: Method, start: float,
               exc: BaseException, aio: bool) -> BaseException:
        """Reports a failed call; returns the error to raise (the module docstring's table)."""
        error, code, outcome = self.outcome_of(method, exc, aio)
        self.settle(permit, method, start, code, outcome)
        return error

    def settle_status(self, permit: Permit | None, method: Method, start: float,
                      status: Any) -> None:
        """Reports a call by its final status alone."""
        if status is _S.OK:
            self.settle(permit, method, start, "OK", False)
        elif status is _S.CANCELLED:
            self.cancelled(permit, method, start)
        else:
            self.settle(permit, method, start, _GO_NAMES.get(status, "Unknown"),
                        status in INFRA_FAILURES or status not in ERROR_TYPES)


def _with_timeout(details: Any, timeout: float | None) -> Any:
    """``details`` with its timeout replaced (ClientCallDetails are namedtuples)."""
    if timeout == details.timeout:
        return details
    return details._replace(timeout=timeout)


# ---------------------------------------------------------------------------
# grpc.aio interceptors
# ---------------------------------------------------------------------------


class AioUnaryUnaryInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """The guard around ``grpc.aio`` unary-unary calls."""

    def __init__(self, guard: RpcGuard) -> None:
        self.guard = guard

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any,
                                    request: Any) -> Any:
        guard = self.guard
        method = guard.method(details.method)
        start = time.perf_counter()
        permit = await guard.admit_async(method, start)
        try:
            call = await continuation(_with_timeout(details, guard.deadline(method, details.timeout)),
                                      request)
            response = await call
        except asyncio.CancelledError:
            guard.cancelled(permit, method, start)
            raise
        except Exception as exc:
            raise guard.failed(permit, method, start, exc, aio=True) from exc
        guard.settle(permit, method, start, "OK", False)
        return response


class AioUnaryStreamInterceptor(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """The guard around ``grpc.aio`` unary-stream calls: admitted when the call
    starts, settled when the call is done, whether or not the stream is read
    to its end: ``call.cancel()`` (grpc.aio's way to stop a stream early) or a
    cancelled reader frees the breaker slot at once. A stream merely dropped
    unread is not cancelled by grpc.aio once interceptors are installed; its
    slot is freed when the call ends, at the latest at its deadline."""

    def __init__(self, guard: RpcGuard) -> None:
        self.guard = guard

    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any,
                                     request: Any) -> Any:
        guard = self.guard
        method = guard.method(details.method)
        start = time.perf_counter()
        permit = await guard.admit_async(method, start)
        try:
            call = await continuation(_with_timeout(details, guard.deadline(method, details.timeout)),
                                      request)
        except asyncio.CancelledError:
            guard.cancelled(permit, method, start)
            raise
        except Exception as exc:
            raise guard.failed(permit, method, start, exc, aio=True) from exc
        settler = _Settler(guard, permit, method, start, aio=True)
        call.add_done_callback(settler.on_aio_done)
        return self._responses(call, settler)

    @staticmethod
    async def _responses(call: Any, settler: _Settler) -> AsyncIterator[Any]:
        try:
            async for response in call:
                yield response
        except (asyncio.CancelledError, GeneratorExit):
            call.cancel()
            settler.settle(None, cancelled=True)
            raise
        except Exception as exc:
            error = settler.settle(exc)
            assert error is not None
            raise error from exc
        settler.settle(None)


def aio_interceptors(
    provider_type: str,
    provider: str,
    config: Config | None = None,
    *,
    breaker: CircuitBreaker | None | Shared = SHARED,
    limiter: TokenBucket | None | Shared = SHARED,
    wait: bool = False,
    timeouts: Mapping[str, float | None] | None = None,
    clock: ManualClock | None = None,
    metrics: bool = True,
) -> list[Any]:
    """The interceptors for ``grpc.aio.insecure_channel(..., interceptors=...)``.

    Args:
        provider_type, provider: the provider's labels (metrics, the shared breaker).
        config: the settings (RPC timeouts; the shared breaker's and bucket's
            configuration); None for :meth:`Config.production`.
        breaker, limiter: the shared ones by default; an object to use that
            one; None for none.
        wait: wait for a token (up to the call's deadline) instead of
            raising ``RateLimitError``.
        timeouts: per method name (short or full), seconds or None (no
            deadline of ours); overrides the RPC config.
        clock: a ManualClock for the shared breaker and bucket (tests).
        metrics: record the per-call RPC metrics.

    Returns a unary-unary and a unary-stream interceptor sharing one guard.
    """
    guard = RpcGuard(provider_type, provider, config, breaker=breaker, limiter=limiter,
                     wait=wait, timeouts=timeouts, clock=clock, metrics=metrics)
    return [AioUnaryUnaryInterceptor(guard), AioUnaryStreamInterceptor(guard)]


# ---------------------------------------------------------------------------
# sync interceptors
# ---------------------------------------------------------------------------


class _Settler:
    """Settles one call exactly once (records its outcome), and maps its errors.

    Whichever learns the outcome first (the caller reading the result, or a
    done callback) records it; the error is mapped for every reader.
    """

    __slots__ = ("_guard", "_permit", "_method", "_start", "_aio", "_lock", "_done", "_task")

    def __init__(self, guard: RpcGuard, permit: Permit | None, method: Method, start: float,
                 aio: bool) -> None:
        self._guard = guard
        self._permit = permit
        self._method = method
        self._start = start
        self._aio = aio
        self._lock = threading.Lock()
        self._done = False
        self._task: asyncio.Future[None] | None = None

    def _first(self) -> bool:
        with self._lock:
            first, self._done = not self._done, True
            return first

    def settle(self, failure: BaseException | None, *,
               cancelled: bool = False) -> BaseException | None:
        """Records the outcome the first time; returns the error to raise (None: success)."""
        guard, method = self._guard, self._method
        if cancelled:
            if self._first():
                guard.cancelled(self._permit, method, self._start)
            return (asyncio.CancelledError(f"{method.name}: cancelled") if self._aio
                    else grpc.FutureCancelledError(f"{method.name}: cancelled"))
        if failure is None:
            if self._first():
                guard.settle(self._permit, method, self._start, "OK", False)
            return None
        error, code, outcome = guard.outcome_of(method, failure, self._aio)
        if self._first():
            guard.settle(self._permit, method, self._start, code, outcome)
        return error

    def settle_future(self, future: Any) -> BaseException | None:
        """Settles from a finished grpc future (or outcome)."""
        try:
            if future.cancelled():
                return self.settle(None, cancelled=True)
            failure = future.exception()
        except grpc.FutureCancelledError:
            return self.settle(None, cancelled=True)
        return self.settle(failure)

    def on_aio_done(self, call: Any) -> None:
        """Done callback of a grpc.aio call: settles even if nobody reads the stream."""
        if self._done:
            return
        if call.cancelled():
            self.settle(None, cancelled=True)
            return
        self._task = asyncio.ensure_future(self._settle_status(call))  # code() must be awaited

    async def _settle_status(self, call: Any) -> None:
        status = await call.code()
        if self._first():
            self._guard.settle_status(self._permit, self._method, self._start, status)

    @property
    def done(self) -> bool:
        return self._done


class _DelegatedCall(grpc.Call):  # type: ignore[misc]
    """grpc.Call's status methods, answered by the wrapped call (``_inner``)."""

    _inner: Any

    def code(self) -> Any:
        return self._inner.code()

    def details(self) -> Any:
        return self._inner.details()

    def initial_metadata(self) -> Any:
        return self._inner.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._inner.trailing_metadata()

    def is_active(self) -> bool:
        return bool(self._inner.is_active())

    def time_remaining(self) -> Any:
        return self._inner.time_remaining()

    def add_callback(self, callback: Callable[[], object]) -> Any:
        return self._inner.add_callback(callback)


class _GuardedCall(_DelegatedCall, grpc.Future):  # type: ignore[misc]
    """A sync unary call's outcome, with its error mapped to the taxonomy.

    Blocking calls see the mapped error from ``result()``; ``.future()``
    calls keep their semantics (nothing here blocks until asked).
    """

    def __init__(self, inner: Any, settler: _Settler) -> None:
        self._inner = inner
        self._settler = settler
        inner.add_done_callback(settler.settle_future)

    def result(self, timeout: float | None = None) -> Any:
        try:
            return self._inner.result(timeout)
        except grpc.FutureTimeoutError:
            raise  # waiting for the result timed out; the call goes on
        except grpc.FutureCancelledError:
            self._settler.settle(None, cancelled=True)
            raise
        except Exception as exc:
            error = self._settler.settle_future(self._inner) or exc
            if error is exc:
                raise
            raise error from exc

    def exception(self, timeout: float | None = None) -> BaseException | None:
        failure = self._inner.exception(timeout)
        return None if failure is None else (self._settler.settle_future(self._inner) or failure)

    def traceback(self, timeout: float | None = None) -> Any:
        error = self.exception(timeout)
        return None if error is None else error.__traceback__

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        self._inner.add_done_callback(lambda _: fn(self))

    def cancel(self) -> bool:
        return bool(self._inner.cancel())

    def cancelled(self) -> bool:
        return bool(self._inner.cancelled())

    def running(self) -> bool:
        return bool(self._inner.running())

    def done(self) -> bool:
        return bool(self._inner.done())


class _GuardedStream(_DelegatedCall):
    """A sync unary-stream call: an iterator of responses whose error is
    mapped; settled when the stream ends, is cancelled, or is dropped."""

    def __init__(self, inner: Any, settler: _Settler) -> None:
        self._inner = inner
        self._settler = settler

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._inner)
        except StopIteration:
            self._settler.settle(None)
            raise
        except Exception as exc:
            code = getattr(exc, "code", None)
            if callable(code) and code() is _S.CANCELLED:
                error = self._settler.settle(None, cancelled=True)
            else:
                error = self._settler.settle(exc)
            assert error is not None
            raise error from exc

    def cancel(self) -> bool:
        cancelled = bool(self._inner.cancel())
        self._settler.settle(None, cancelled=True)
        return cancelled

    def __del__(self) -> None:
        settler = getattr(self, "_settler", None)
        if settler is not None and not settler.done:  # abandoned mid-stream: free the slot
            try:
                self._inner.cancel()
            finally:
                settler.settle(None, cancelled=True)

    def __getattr__(self, name: str) -> Any:  # the rest of the Future API
        return getattr(self._inner, name)


class SyncInterceptor(grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
                      grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """The guard around sync ``grpc`` unary-unary and unary-stream calls.

    A blocking call cannot be interrupted from Python: its deadline is what
    gRPC enforces (the method's timeout, capped as documented).
    """

    def __init__(self, guard: RpcGuard) -> None:
        self.guard = guard

    def _start(self, details: Any) -> tuple[Method, float, Permit | None, Any]:
        guard = self.guard
        method = guard.method(details.method)
        start = time.perf_counter()
        permit = guard.admit(method, start)
        return method, start, permit, _with_timeout(details, guard.deadline(method, details.timeout))

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any,
                              request: Any) -> Any:
        method, start, permit, details = self._start(details)
        settler = _Settler(self.guard, permit, method, start, aio=False)
        try:
            outcome = continuation(details, request)
        except BaseException as exc:
            error = settler.settle(exc)
            raise (error or exc) from exc
        return _GuardedCall(outcome, settler)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any,
                               request: Any) -> Any:
        method, start, permit, details = self._start(details)
        settler = _Settler(self.guard, permit, method, start, aio=False)
        try:
            responses = continuation(details, request)
        except BaseException as exc:
            error = settler.settle(exc)
            raise (error or exc) from exc
        return _GuardedStream(responses, settler)


def intercept_channel(
    channel: Any,
    provider_type: str,
    provider: str,
    config: Config | None = None,
    *,
    breaker: CircuitBreaker | None | Shared = SHARED,
    limiter: TokenBucket | None | Shared = SHARED,
    wait: bool = False,
    timeouts: Mapping[str, float | None] | None = None,
    clock: ManualClock | None = None,
    metrics: bool = True,
) -> Any:
    """``grpc.intercept_channel(channel, ...)`` with the guard (the arguments
    as :func:`aio_interceptors`); returns the intercepted ``grpc.Channel``."""
    guard = RpcGuard(provider_type, provider, config, breaker=breaker, limiter=limiter,
                     wait=wait, timeouts=timeouts, clock=clock, metrics=metrics)
    return grpc.intercept_channel(channel, SyncInterceptor(guard))
