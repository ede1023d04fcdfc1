"""An httpx transport that guards every request: breaker, limiter, deadline, status -> taxonomy.

::

    from virtrigaud_resilience.providers.http import AsyncResilientTransport

    client = httpx.AsyncClient(base_url=url, transport=AsyncResilientTransport("vsphere", "prod"))
    vm = (await client.get(f"/vms/{vm_id}")).json()   # raises NotFoundError, UnavailableError, ...

(``ResilientTransport`` for ``httpx.Client``.) Each request:

1. **circuit breaker** and **rate limiter** as the gRPC interceptors: an
   open breaker raises :class:`~virtrigaud_resilience.CircuitOpenError`
   without sending; no token raises ``RateLimitError`` (or waits, with
   ``wait=True``). Breaker failures: 5xx, 408, timeouts and connection
   errors; any other answer is a success.
2. **deadline**: the operation's timeout from the RPC config, never longer
   than an enclosing policy's time left, and it caps each of httpx's own
   timeouts (connect, read, write, pool). The async transport also bounds
   the whole exchange (until the response headers). The operation is
   ``extensions={"virtrigaud.operation": "Create"}`` on the request, or
   else taken from the HTTP method: GET, HEAD and OPTIONS get Describe's
   timeout, other methods the mutating one. An operation the config does
   not know gets the mutating timeout, with a warning logged once.
3. **status -> taxonomy** (:data:`ERROR_TYPES`): 404 NotFound; 400, 422
   InvalidSpec; 401, 403 Unauthorized; 409, 412 Conflict; 429 RateLimit; 501
   NotSupported; 502, 503, 504 Unavailable; 500 and other 5xx Retryable; 408
   Timeout; any other 4xx a non-retryable ``InvalidSpecError`` (the request
   was not acceptable). The error is also an ``httpx.HTTPStatusError`` with
   ``.request`` and ``.response`` (its body read). ``Retry-After`` on 429
   and 503 (delta-seconds or an HTTP-date) becomes ``retry_after``, so a
   retrying policy waits at least that long; a malformed one is ignored.
   Transport failures: httpx timeouts -> ``OperationTimeoutError``; connect
   errors and dropped connections -> ``UnavailableError``; an unsupported
   URL scheme -> ``NotSupportedError``; any other exception is classified,
   else a ``RetryableError``; each chained from the original.
4. **metrics**: ``virtrigaud_provider_rpc_requests_total{provider_type,
   method, code}`` with ``method`` the operation (or the HTTP method) and
   ``code`` the HTTP status (``"200"``), or ``Unavailable``,
   ``DeadlineExceeded``, ``ResourceExhausted``, ``Canceled``, ``Unknown``
   where no response came; and the latency histogram.

``raise_for_status=False`` keeps only the breaker, the limiter and the
deadline: responses pass through untouched (a 503 is still a breaker failure).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "virtrigaud_resilience.providers.http needs httpx: "
        "pip install 'virtrigaud-resilience[http]'"
    ) from exc

from .. import _validate
from ..breaker import CircuitBreaker, Permit, default_failure_predicate
from ..clock import ManualClock
from ..config import Config
from ..errors import (
    ConflictError,
    ErrorType,
    InvalidSpecError,
    NotFoundError,
    NotSupportedError,
    OperationTimeoutError,
    ProviderError,
    RateLimitError,
    RetryableError,
    UnauthorizedError,
    UnavailableError,
    classify,
)
from ..ratelimit import TokenBucket
from ..rpcstats import code_for_error
from ..timeouts import TimeoutScope
from .guard import SHARED, CallGuard, Method, Shared
from .resilient import mark_never_sent
from .retry_after import parse_retry_after

__all__ = [
    "ERROR_TYPES",
    "OPERATION_EXTENSION",
    "SHARED",
    "AsyncResilientTransport",
    "HttpGuard",
    "ResilientTransport",
    "error_from_exception",
    "error_from_response",
]

#: The request extension naming the provider operation (the RPC timeout's key
#: and the metrics' ``method``): ``client.post(url, extensions={OPERATION_EXTENSION: "Create"})``.
OPERATION_EXTENSION = "virtrigaud.operation"

#: HTTP status -> taxonomy for the statuses the table names; any other 5xx is
#: Retryable and any other 4xx InvalidSpec (non-retryable).
ERROR_TYPES: Mapping[int, ErrorType] = {
    400: ErrorType.INVALID_SPEC,
    401: ErrorType.UNAUTHORIZED,
    403: ErrorType.UNAUTHORIZED,
    404: ErrorType.NOT_FOUND,
    408: ErrorType.TIMEOUT,
    409: ErrorType.CONFLICT,
    412: ErrorType.CONFLICT,
    422: ErrorType.INVALID_SPEC,
    429: ErrorType.RATE_LIMIT,
    500: ErrorType.RETRYABLE,
    501: ErrorType.NOT_SUPPORTED,
    502: ErrorType.UNAVAILABLE,
    503: ErrorType.UNAVAILABLE,
    504: ErrorType.UNAVAILABLE,
}

#: Statuses whose Retry-After becomes ``retry_after``.
_RETRY_AFTER_STATUSES = frozenset({429, 503})
#: The methods that read (Describe's timeout); any other writes (mutating).
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
#: How much of an error response's body its message quotes.
_BODY_IN_MESSAGE = 200


def status_type(status: int) -> ErrorType | None:
    """The taxonomy type of an HTTP status; None for a status below 400."""
    if status < 400:
        return None
    return ERROR_TYPES.get(status, ErrorType.RETRYABLE if status >= 500 else
                           ErrorType.INVALID_SPEC)


def is_breaker_failure(status: int) -> bool:
    """5xx and 408 count toward opening the breaker; any other status is an answer."""
    return status >= 500 or status == 408


# ---------------------------------------------------------------------------
# Errors that are both taxonomy errors and httpx.HTTPStatusError.
# ---------------------------------------------------------------------------


class _HTTPStatus(httpx.HTTPStatusError):
    """The httpx side of a taxonomy error: ``.request`` and ``.response``.

    Sits after ProviderError in the MRO: ProviderError's ``__init__`` reaches
    this one with the message, and the exchange is filled in afterwards.
    """

    def __init__(self, message: str = "", *_: object, **__: object) -> None:
        Exception.__init__(self, message)
        self._request = None
        self.response = None  # type: ignore[assignment]


_BASES: dict[ErrorType, type[ProviderError]] = {
    ErrorType.NOT_FOUND: NotFoundError,
    ErrorType.INVALID_SPEC: InvalidSpecError,
    ErrorType.UNAUTHORIZED: UnauthorizedError,
    ErrorType.NOT_SUPPORTED: NotSupportedError,
    ErrorType.RETRYABLE: RetryableError,
    ErrorType.UNAVAILABLE: UnavailableError,
    ErrorType.RATE_LIMIT: RateLimitError,
    ErrorType.TIMEOUT: OperationTimeoutError,
    ErrorType.CONFLICT: ConflictError,
}

#: The class raised per type: e.g. ``HTTPNotFoundError(NotFoundError, httpx.HTTPStatusError)``.
_HTTP_CLASSES: dict[ErrorType, Callable[..., ProviderError]] = {
    kind: type(f"HTTP{base.__name__}", (base, _HTTPStatus), {"__module__": __name__})
    for kind, base in _BASES.items()
}


def error_from_response(response: httpx.Response, operation: str = "") -> ProviderError:
    """The taxonomy error for an error response (status >= 400; see the table).

    The error is also an ``httpx.HTTPStatusError`` with ``.request`` and
    ``.response`` (the response must know its request, as a client's do);
    read the body first (``response.read()``) for the message to quote it.
    Raises ValueError for a status below 400.
    """
    status = response.status_code
    kind = status_type(status)
    if kind is None:
        raise ValueError(f"error_from_response needs a status >= 400, got {status}")
    retry_after = None
    if status in _RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
    request = response.request
    where = f"{operation}: " if operation else ""
    text = f"{where}HTTP {status} {response.reason_phrase} for {request.method} {request.url}"
    body = _body_text(response)
    if body:
        text = f"{text}: {body}"
    error = _HTTP_CLASSES[kind](text, retry_after=retry_after)
    error.request = request  # type: ignore[attr-defined]
    error.response = response  # type: ignore[attr-defined]
    return error


def _body_text(response: httpx.Response) -> str:
    try:
        content = response.content  # only once read; streaming bodies raise
    except httpx.ResponseNotRead:
        return ""
    text = content[:_BODY_IN_MESSAGE].decode("utf-8", "replace").strip()
    return text + ("..." if len(content) > _BODY_IN_MESSAGE else "")


def error_from_exception(exc: BaseException, operation: str = "") -> tuple[BaseException, str,
                                                                          bool | None]:
    """``(error, metrics code, breaker outcome)`` for a request that got no response.

    The outcome is True (a breaker failure: timeouts, connection errors,
    unknown failures), or None (no outcome: a request this client could not
    even form, such as an unsupported URL scheme). Refused connections,
    connect and pool timeouts are marked never sent.
    """
    # The cause's own text is appended by ProviderError.__str__.
    message = f"{operation}: {type(exc).__name__}" if operation else type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        error: BaseException = OperationTimeoutError(message, exc)
        if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
            mark_never_sent(error)
        return error, "DeadlineExceeded", True
    if isinstance(exc, httpx.ConnectError):
        return mark_never_sent(UnavailableError(message, exc)), "Unavailable", True
    if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)):
        return UnavailableError(message, exc), "Unavailable", True
    if isinstance(exc, httpx.UnsupportedProtocol):
        return NotSupportedError(message, exc), "Unimplemented", None
    if isinstance(exc, httpx.LocalProtocolError):
        return InvalidSpecError(message, exc), "InvalidArgument", None
    error = classify(exc)  # a ProviderError (another layer's) stays as it is
    if not isinstance(error, ProviderError):
        error = RetryableError(message, exc)
    return error, code_for_error(error), default_failure_predicate(error)


# ---------------------------------------------------------------------------
# The guard and the transports.
# ---------------------------------------------------------------------------


class HttpGuard(CallGuard[tuple[str, str]]):
    """The breaker, limiter, deadlines and metrics of the transports (the
    arguments as :class:`ResilientTransport`; see :class:`CallGuard`)."""

    owner = "ResilientTransport"

    def __init__(self, *args: Any, raise_for_status: bool = True,
                 owner: str = "ResilientTransport", **kwargs: Any) -> None:
        self.owner = owner  # names the transport in every message below
        super().__init__(*args, **kwargs)
        self.raise_for_status = _validate.boolean(self.owner, "raise_for_status",
                                                  raise_for_status)

    def method_of(self, request: httpx.Request) -> Method:
        """The request's operation: its ``virtrigaud.operation`` extension, or its HTTP method."""
        operation = request.extensions.get(OPERATION_EXTENSION)
        if operation is None:
            return self.method(("", request.method))
        if not isinstance(operation, str) or not operation:
            raise TypeError(f"request extension {OPERATION_EXTENSION!r} must be a non-empty str, "
                            f"got {type(operation).__name__} {operation!r}")
        return self.method((operation, request.method))

    def _resolve(self, key: tuple[str, str]) -> Method:
        operation, http_method = key
        if operation:
            return self._method_named(operation, operation)
        # No operation named: the HTTP method is the label, and a read gets
        # Describe's timeout, a write the mutating one (no warning: documented).
        return self._method_named(http_method,
                                  "Describe" if http_method in _READS else "Create", warn=False)

    def prepare(self, request: httpx.Request, method: Method) -> float | None:
        """Caps the request's httpx timeouts at its deadline; returns the deadline."""
        deadline = self.deadline(method)
        if deadline is not None:
            timeouts = request.extensions.get("timeout")
            capped = {phase: deadline if limit is None else min(limit, deadline)
                      for phase, limit in (timeouts or _NO_TIMEOUTS).items()}
            request.extensions = {**request.extensions, "timeout": capped}
        return deadline

    def answered(self, permit: Permit | None, method: Method, start: float,
                 response: httpx.Response) -> None:
        """Reports a response (a breaker failure for 5xx and 408)."""
        status = response.status_code
        self.settle(permit, method, start, str(status), is_breaker_failure(status))

    @staticmethod
    def operation_label(method: Method, request: httpx.Request) -> str:
        """The operation to name in messages ("" when it is just the HTTP method)."""
        return "" if method.name == request.method else method.name

    def no_response(self, permit: Permit | None, method: Method, start: float,
                    exc: BaseException, operation: str = "") -> BaseException:
        """Reports a request that got no response; returns the error to raise."""
        error, code, failure = error_from_exception(exc, operation)
        self.settle(permit, method, start, code, failure)
        return error


_NO_TIMEOUTS: dict[str, float | None] = {"connect": None, "read": None, "write": None,
                                         "pool": None}


def _guard(owner: str, provider_type: str, provider: str, config: Config | None,
           transport: object, expected: type, **options: Any) -> HttpGuard:
    if not isinstance(transport, expected):
        raise TypeError(f"{owner} transport must be an {expected.__module__}."
                        f"{expected.__name__}, got {type(transport).__name__} {transport!r}")
    return HttpGuard(provider_type, provider, config, owner=owner, **options)


class ResilientTransport(httpx.BaseTransport):
    """An ``httpx.BaseTransport`` guarding each request (see the module docstring).

    Args:
        provider_type, provider: the provider's labels.
        config: RPC timeouts and the shared breaker's and bucket's settings;
            None for :meth:`Config.production`.
        transport: the transport to send through (default ``httpx.HTTPTransport()``).
        breaker, limiter: the provider's shared ones by default; an object,
            or None for none.
        wait: wait for a token (up to the deadline) instead of raising.
        raise_for_status: raise the taxonomy error for a status >= 400
            (default); False passes every response through untouched.
        timeouts: per operation, seconds or None; overrides the RPC config.
        clock: a ManualClock for the shared breaker and bucket (tests).
        metrics: record the per-call RPC metrics.

    A blocking request cannot be interrupted from Python: its deadline caps
    each of httpx's timeouts (each network wait), not the whole exchange.
    """

    def __init__(
        self,
        provider_type: str,
        provider: str,
        config: Config | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        breaker: CircuitBreaker | None | Shared = SHARED,
        limiter: TokenBucket | None | Shared = SHARED,
        wait: bool = False,
        raise_for_status: bool = True,
        timeouts: Mapping[str, float | None] | None = None,
        clock: ManualClock | None = None,
        metrics: bool = True,
    ) -> None:
        inner = httpx.HTTPTransport() if transport is None else transport
        self.guard = _guard("ResilientTransport", provider_type, provider, config, inner,
                            httpx.BaseTransport, breaker=breaker, limiter=limiter, wait=wait,
                            raise_for_status=raise_for_status, timeouts=timeouts, clock=clock,
                            metrics=metrics)
        self.transport = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        guard = self.guard
        method = guard.method_of(request)
        start = time.perf_counter()
        permit = guard.admit(method, start)
        try:
            guard.prepare(request, method)
            response = self.transport.handle_request(request)
        except Exception as exc:
            raise guard.no_response(permit, method, start, exc,
                                    guard.operation_label(method, request)) from exc
        except BaseException:
            guard.cancelled(permit, method, start)
            raise
        response.request = request
        guard.answered(permit, method, start, response)
        if guard.raise_for_status and response.status_code >= 400:
            try:
                response.read()
            finally:
                response.close()
            raise error_from_response(response, guard.operation_label(method, request))
        return response

    def close(self) -> None:
        self.transport.close()


class AsyncResilientTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` guarding each request (the arguments
    as :class:`ResilientTransport`; ``transport`` defaults to
    ``httpx.AsyncHTTPTransport()``).

    The deadline also bounds the whole exchange until the response headers:
    past it the request is cancelled and ``OperationTimeoutError`` raised (a
    breaker failure). Cancelling the awaiting task records nothing, frees
    the breaker's half-open slot and gives back tokens reserved while waiting.
    """

    def __init__(
        self,
        provider_type: str,
        provider: str,
        config: Config | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        breaker: CircuitBreaker | None | Shared = SHARED,
        limiter: TokenBucket | None | Shared = SHARED,
        wait: bool = False,
        raise_for_status: bool = True,
        timeouts: Mapping[str, float | None] | None = None,
        clock: ManualClock | None = None,
        metrics: bool = True,
    ) -> None:
        inner = httpx.AsyncHTTPTransport() if transport is None else transport
        self.guard = _guard("AsyncResilientTransport", provider_type, provider, config, inner,
                            httpx.AsyncBaseTransport, breaker=breaker, limiter=limiter,
                            wait=wait, raise_for_status=raise_for_status, timeouts=timeouts,
                            clock=clock, metrics=metrics)
        self.transport = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        guard = self.guard
        method = guard.method_of(request)
        start = time.perf_counter()
        permit = await guard.admit_async(method, start)
        scope = None
        try:
            deadline = guard.prepare(request, method)
            if deadline is None:
                response = await self.transport.handle_async_request(request)
            else:
                scope = TimeoutScope(deadline)
                async with scope:
                    response = await self.transport.handle_async_request(request)
        except asyncio.CancelledError:
            guard.cancelled(permit, method, start)
            raise
        except Exception as exc:
            if scope is not None and scope.fired and isinstance(exc, asyncio.TimeoutError):
                error: BaseException = OperationTimeoutError(
                    f"{method.name}: deadline of {deadline:g}s exceeded", exc)
                guard.settle(permit, method, start, "DeadlineExceeded", True)
                raise error from exc
            raise guard.no_response(permit, method, start, exc,
                                    guard.operation_label(method, request)) from exc
        response.request = request
        guard.answered(permit, method, start, response)
        if guard.raise_for_status and response.status_code >= 400:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise error_from_response(response, guard.operation_label(method, request))
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()
