"""httpx clients and transports that guard every request: breaker, limiter, deadline, taxonomy.

::

    from virtrigaud_resilience.providers.http import AsyncResilientClient

    client = AsyncResilientClient("vsphere", "prod", base_url=url)   # an httpx.AsyncClient
    vm = (await client.get(f"/vms/{vm_id}")).json()   # raises NotFoundError, UnavailableError, ...

(``ResilientClient`` for ``httpx.Client``.) The clients take every
``httpx.Client`` argument besides their own (``auth=``, ``event_hooks=``,
``headers=``, ...; ``transport=`` is the transport they step), and put a
:class:`ResilientTransport` (:class:`AsyncResilientTransport`) under them.

The transport, per request on the wire:

1. **circuit breaker** and **rate limiter** as the gRPC interceptors: an
   open breaker raises :class:`~virtrigaud_resilience.CircuitOpenError`
   without sending; no token raises ``RateLimitError`` (or waits, with
   ``wait=True``). Breaker failures: 5xx but 501, 408, timeouts,
   connection errors and a body that cannot be read; any other answer is a
   success. The outcome is reported once the body is read or the response
   closed (its half-open slot is held until then), or released, counting
   nothing, when the reader is cancelled.
2. **deadline**: the operation's timeout from the RPC config, never longer
   than an enclosing policy's time left, and it caps each of httpx's own
   timeouts (connect, read, write, pool). The async transport also bounds
   the whole exchange (until the response headers). The operation is
   ``extensions={"virtrigaud.operation": "Create"}`` on the request, or
   else taken from the HTTP method: GET, HEAD and OPTIONS get Describe's
   timeout, other methods the mutating one. An operation the config does
   not know gets the mutating timeout, with a warning logged once.
3. **failures keep their httpx type**: whatever the transport raises is a
   taxonomy error *and* the ``httpx.HTTPError`` it stands for, so ``except
   httpx.HTTPError`` keeps working: httpx timeouts -> ``OperationTimeoutError``
   (also the ``httpx.TimeoutException`` raised; our own deadline is an
   ``httpx.TimeoutException``); connect errors, dropped connections and
   bodies cut or failing mid-read -> ``UnavailableError`` (also the
   ``httpx.ConnectError``, ``httpx.RemoteProtocolError``, ...); an
   unsupported URL scheme -> ``NotSupportedError``; the breaker's and the
   limiter's rejections are also an ``httpx.TransportError``; any other
   exception is classified, else a ``RetryableError``; each chained from
   the original. A body that stalls ends with the read timeout (capped by
   the deadline) as an ``OperationTimeoutError``.
4. **metrics**: ``virtrigaud_provider_rpc_requests_total{provider_type,
   method, code}`` with ``method`` the operation (or the HTTP method) and
   ``code`` the HTTP status (``"200"``), or ``Unavailable``,
   ``DeadlineExceeded``, ``ResourceExhausted``, ``Canceled``, ``Unknown``
   where no response (or no whole body) came; and the latency histogram.

**Status -> taxonomy** (:data:`ERROR_TYPES`), raised by the client once
httpx's auth flow and response event hooks have seen the response (a
digest challenge or a session re-login on 401 works as without us): 404
NotFound; 400, 422 InvalidSpec; 401, 403 Unauthorized; 409, 412 Conflict;
429 RateLimit; 501 NotSupported; 502, 503, 504 Unavailable; 500 and other
5xx Retryable; 408 Timeout; any other 4xx a non-retryable
``InvalidSpecError`` (the request was not acceptable). The error is also an
``httpx.HTTPStatusError`` with ``.request`` and ``.response``, whose
``.content`` holds at most the first :data:`ERROR_BODY_LIMIT` bytes of the
body (the rest is not read). ``Retry-After`` on 429 and 503 (delta-seconds or
an HTTP-date) becomes ``retry_after``, so a retrying policy waits at least
that long; a malformed one is ignored. ``raise_for_status=False`` raises
no status error: responses pass through untouched (a 503 is still a breaker
failure). A bare transport in a plain ``httpx.Client`` raises the status
error itself (``raise_for_status=True``, its default), before auth flows and
hooks could see the response: use the clients where they must.

**Idempotency** (RFC 9110): a request whose method is not idempotent (POST,
PATCH, CONNECT or an extension method; GET, HEAD, OPTIONS, TRACE, PUT and
DELETE are) raises errors that are not retryable, so that no policy repeats
what the provider may have done, unless the error proves the request never
left (:func:`~virtrigaud_resilience.providers.never_sent`: a refused
connection, a connect or pool timeout, our breaker or limiter). An
``Idempotency-Key`` header or ``extensions={"virtrigaud.idempotent": True}``
marks a request idempotent; ``False`` marks any request not idempotent. The
errors keep their taxonomy type and their breaker accounting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from .._extras import require

require("httpx", "httpx", "http", __name__)
import httpx  # noqa: E402

from .. import _validate
from .._deprecated import RenamedAttribute, module_getattr
from ..breaker import CircuitBreaker, Permit, default_failure_predicate
from ..config import Config
from ..errors import (
    CircuitOpenError,
    ErrorType,
    InvalidSpecError,
    NotSupportedError,
    OperationTimeoutError,
    ProviderError,
    RateLimitError,
    RetryableError,
    UnavailableError,
    classify,
    error_classes,
)
from ..rpcstats import code_for_error
from ..timeouts import TimeoutScope
from .call_step import CallStep, Method
from .options import SHARED, AdapterOptions, OptionKeywords
from .resilient import mark_never_sent, never_sent
from .retry_after import parse_retry_after

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: Old names (before 0.2.0), served with a DeprecationWarning naming the new one.
__getattr__ = module_getattr(__name__, {
    "HttpGuard": "virtrigaud_resilience.providers.http.HttpCallStep"})

__all__ = [
    "ERROR_BODY_LIMIT",
    "ERROR_TYPES",
    "IDEMPOTENT_EXTENSION",
    "OPERATION_EXTENSION",
    "SHARED",
    "AsyncResilientClient",
    "AsyncResilientTransport",
    "HTTPCircuitOpenError",
    "HttpCallStep",
    "ResilientClient",
    "ResilientTransport",
    "aread_error_body",
    "error_from_exception",
    "error_from_response",
    "is_idempotent",
    "read_error_body",
]

#: The request extension naming the provider operation (the RPC timeout's key
#: and the metrics' ``method``): ``client.post(url, extensions={OPERATION_EXTENSION: "Create"})``.
OPERATION_EXTENSION = "virtrigaud.operation"

#: The request extension marking a request idempotent (True) or not (False),
#: whatever its method: ``client.post(url, extensions={IDEMPOTENT_EXTENSION: True})``.
IDEMPOTENT_EXTENSION = "virtrigaud.idempotent"

#: The most bytes of an error response's body that are read (for the
#: message and ``error.response.content``); the rest is never read.
ERROR_BODY_LIMIT = 64 * 1024

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
#: RFC 9110's idempotent methods (9.2.2); any other is not.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: How much of an error response's body its message quotes.
_BODY_IN_MESSAGE = 200


def status_type(status: int) -> ErrorType | None:
    """The taxonomy type of an HTTP status; None for a status below 400."""
    if status < 400:
        return None
    return ERROR_TYPES.get(status, ErrorType.RETRYABLE if status >= 500 else
                           ErrorType.INVALID_SPEC)


def is_breaker_failure(status: int) -> bool:
    """5xx and 408 count toward opening the breaker; any other status is an
    answer, 501 included (the provider lacks the operation, as gRPC's
    UNIMPLEMENTED: it is up and said so)."""
    return (status >= 500 and status != 501) or status == 408


def is_idempotent(request: httpx.Request, marked: bool | None = None) -> bool:
    """Whether a policy may repeat ``request`` after it reached the provider.

    Its ``virtrigaud.idempotent`` extension (a bool) when set; else
    ``marked`` when not None (what the adapter's ``idempotent=`` option says
    of the request's operation); else True for RFC 9110's idempotent methods
    (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) and for a request with an
    ``Idempotency-Key`` header. Raises TypeError for an extension that is
    not a bool.
    """
    extension = request.extensions.get(IDEMPOTENT_EXTENSION)
    if extension is not None:
        if not isinstance(extension, bool):
            raise TypeError(f"request extension {IDEMPOTENT_EXTENSION!r} must be a bool, got "
                            f"{type(extension).__name__} {extension!r}")
        return extension
    if marked is not None:
        return marked
    return request.method in _IDEMPOTENT_METHODS or "idempotency-key" in request.headers


def _once_sent(error: BaseException, idempotent: bool) -> BaseException:
    """``error`` made non-retryable when its request was not idempotent and
    may have reached the provider (nothing proves it never left)."""
    if not idempotent and isinstance(error, ProviderError) and error.retryable \
            and not never_sent(error):
        error.retryable = False
    return error


# ---------------------------------------------------------------------------
# Errors that are both taxonomy errors and httpx errors.
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


#: The class raised per type: e.g. ``HTTPNotFoundError(NotFoundError, httpx.HTTPStatusError)``.
_HTTP_CLASSES = error_classes("HTTP", _HTTPStatus, __name__)


class HTTPCircuitOpenError(CircuitOpenError, httpx.TransportError):
    """An open breaker's rejection (never sent), also an ``httpx.TransportError``."""


#: (taxonomy class, httpx class) -> the class that is both; made on first use.
_TRANSPORT_CLASSES: dict[tuple[type[ProviderError], type[httpx.HTTPError]],
                         Callable[..., ProviderError]] = {}


def _httpx_kind(exc: BaseException) -> type[httpx.HTTPError]:
    """httpx's own class of ``exc`` (a subclass from elsewhere may take other
    arguments); ``httpx.TransportError`` for an exception that is none."""
    for cls in type(exc).__mro__:
        if issubclass(cls, httpx.HTTPError) and cls.__module__.startswith("httpx"):
            return cls
    return httpx.TransportError


def _transport_error(base: type[ProviderError], kind: type[httpx.HTTPError], message: str,
                     cause: BaseException | None = None, **options: Any) -> ProviderError:
    """A ``base`` error that is also a ``kind`` (e.g. UnavailableError and httpx.ConnectError)."""
    cls = _TRANSPORT_CLASSES.get((base, kind))
    if cls is None:
        cls = type(f"{kind.__name__}{base.__name__}", (base, kind),
                   {"__module__": __name__,
                    "__doc__": f"A {base.__name__} that is also an httpx.{kind.__name__}."})
        _TRANSPORT_CLASSES[(base, kind)] = cls
    error = cls(message, cause, **options)
    if not hasattr(error, "_request"):  # an OSError base (TimeoutError) skips httpx's __init__
        setattr(error, "_request", None)  # noqa: B010 - httpx's slot, not ProviderError's
    return error


def error_from_response(response: httpx.Response, operation: str = "", *,
                        idempotent: bool | None = None) -> ProviderError:
    """The taxonomy error for an error response (status >= 400; see the table).

    The error is also an ``httpx.HTTPStatusError`` with ``.request`` and
    ``.response`` (the response must know its request, as a client's do);
    read the body first (:func:`read_error_body`) for the message to quote
    it. Not retryable when the request was not idempotent (``idempotent``;
    None: :func:`is_idempotent` of the request). Raises ValueError for a
    status below 400.
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
    _once_sent(error, is_idempotent(request) if idempotent is None else idempotent)
    return error


def _body_text(response: httpx.Response) -> str:
    try:
        content = response.content  # only once read; streaming bodies raise
    except httpx.ResponseNotRead:
        return ""
    text = content[:_BODY_IN_MESSAGE].decode("utf-8", "replace").strip()
    return text + ("..." if len(content) > _BODY_IN_MESSAGE else "")


def error_from_exception(exc: BaseException, operation: str = "", *,
                         idempotent: bool = True) -> tuple[BaseException, str, bool | None]:
    """``(error, metrics code, breaker outcome)`` for a request that got no
    response, or whose body could not be read.

    The error is a taxonomy error that is also ``exc``'s httpx class (an
    ``httpx.TransportError`` for a non-httpx ``exc``); a ProviderError from
    another layer stays as it is. The outcome is True (a breaker failure:
    timeouts, connection errors, unknown failures), or None (no outcome: a
    request this client could not even form, such as an unsupported URL
    scheme). Refused connections, connect and pool timeouts are marked never
    sent; with ``idempotent=False`` any other error is not retryable.
    """
    error, code, outcome = _classified(exc, operation)
    return _once_sent(error, idempotent), code, outcome


def _classified(exc: BaseException, operation: str) -> tuple[BaseException, str, bool | None]:
    # The cause's own text is appended by ProviderError.__str__.
    message = f"{operation}: {type(exc).__name__}" if operation else type(exc).__name__
    kind = _httpx_kind(exc)
    if isinstance(exc, httpx.TimeoutException):
        error = _transport_error(OperationTimeoutError, kind, message, exc)
        if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
            mark_never_sent(error)
        return error, "DeadlineExceeded", True
    if isinstance(exc, httpx.ConnectError):
        return (mark_never_sent(_transport_error(UnavailableError, kind, message, exc)),
                "Unavailable", True)
    if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)):
        return _transport_error(UnavailableError, kind, message, exc), "Unavailable", True
    if isinstance(exc, httpx.UnsupportedProtocol):
        return _transport_error(NotSupportedError, kind, message, exc), "Unimplemented", None
    if isinstance(exc, (httpx.LocalProtocolError, httpx.TooManyRedirects)):
        return _transport_error(InvalidSpecError, kind, message, exc), "InvalidArgument", None
    if isinstance(exc, httpx.HTTPError) and not isinstance(exc, ProviderError):
        # Any other httpx error (a body that cannot be decoded, ...): classify()
        # would hand it straight back here, so it is mapped here.
        error = _transport_error(RetryableError, kind, message, exc)
        return error, code_for_error(error), default_failure_predicate(error)
    found = classify(exc)  # a ProviderError (another layer's) stays as it is
    if isinstance(found, ProviderError) and found is exc:
        return found, code_for_error(found), default_failure_predicate(found)
    if isinstance(found, ProviderError):
        error = _transport_error(type(found), kind, message, exc)
    else:
        error = _transport_error(RetryableError, kind, message, exc)
    return error, code_for_error(error), default_failure_predicate(error)


# ---------------------------------------------------------------------------
# Reading an error body, at most ERROR_BODY_LIMIT bytes of it.
# ---------------------------------------------------------------------------


def read_error_body(response: httpx.Response) -> None:
    """Reads at most :data:`ERROR_BODY_LIMIT` bytes of ``response``'s body,
    then closes it; what was read becomes ``response.content``.

    Nothing is read from a response already read or closed. A read that
    fails raises the transport's classified error (the response is closed).
    """
    if response.is_stream_consumed or response.is_closed:
        return
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= ERROR_BODY_LIMIT:
                break
    finally:
        response.close()
    _keep(response, chunks)


async def aread_error_body(response: httpx.Response) -> None:
    """:func:`read_error_body` for an async response."""
    if response.is_stream_consumed or response.is_closed:
        return
    chunks: list[bytes] = []
    size = 0
    body = response.aiter_bytes()
    try:
        async for chunk in body:
            chunks.append(chunk)
            size += len(chunk)
            if size >= ERROR_BODY_LIMIT:
                break
    finally:
        await body.aclose()  # type: ignore[attr-defined]
        await response.aclose()
    _keep(response, chunks)


def _keep(response: httpx.Response, chunks: list[bytes]) -> None:
    # What httpx's own read() stores: .content, .text and .json() then work
    # on the (possibly cut) body, as on any read response.
    response._content = b"".join(chunks)[:ERROR_BODY_LIMIT]


# ---------------------------------------------------------------------------
# The outcome of an exchange, reported once its body is done.
# ---------------------------------------------------------------------------


class _Exchange:
    """One response's pending outcome: reported once, when its body ends, is
    closed, fails (a breaker failure) or its reader is cancelled (none)."""

    __slots__ = ("step", "permit", "method", "start", "status", "request", "idempotent",
                 "pending")

    def __init__(self, step: HttpCallStep, permit: Permit | None, method: Method, start: float,
                 status: int, request: httpx.Request, idempotent: bool) -> None:
        self.step = step
        self.permit = permit
        self.method = method
        self.start = start
        self.status = status
        self.request = request
        self.idempotent = idempotent
        self.pending = True

    def finished(self) -> None:
        """The body was read or closed: the status is the outcome."""
        if self.pending:
            self.pending = False
            status = self.status
            self.step.settle(self.permit, self.method, self.start, str(status),
                             is_breaker_failure(status))

    def failed(self, exc: BaseException) -> BaseException:
        """The body could not be read: returns the classified error to raise."""
        operation = self.step.operation_label(self.method, self.request)
        error, code, failure = error_from_exception(exc, operation, idempotent=self.idempotent)
        if self.pending:
            self.pending = False
            self.step.settle(self.permit, self.method, self.start, code, failure)
        return error

    def cancelled(self) -> None:
        """The reader was cancelled: no outcome."""
        if self.pending:
            self.pending = False
            self.step.cancelled(self.permit, self.method, self.start)


class _GuardedStream(httpx.SyncByteStream):
    """A response body that reports its exchange's outcome and classifies its failures."""

    def __init__(self, stream: httpx.SyncByteStream, exchange: _Exchange) -> None:
        self._stream = stream
        self._exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        exchange = self._exchange
        try:
            for chunk in self._stream:
                yield chunk
        except Exception as exc:
            raise exchange.failed(exc) from exc
        except GeneratorExit:
            raise  # the reader stopped: close() reports the status
        except BaseException:
            exchange.cancelled()
            raise
        exchange.finished()

    def close(self) -> None:
        try:
            self._stream.close()
        except Exception as exc:
            raise self._exchange.failed(exc) from exc
        finally:
            self._exchange.finished()


class _AsyncGuardedStream(httpx.AsyncByteStream):
    """:class:`_GuardedStream` for an async body.

    Its iterator is a plain object (:class:`_AsyncGuardedChunks`), not an
    async generator: one response's body costs no generator frame and no
    trip through the event loop's async-generator hooks (a weak set entry
    per body), which a loopback call measurably pays.
    """

    def __init__(self, stream: httpx.AsyncByteStream, exchange: _Exchange) -> None:
        self._stream = stream
        self._exchange = exchange

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _AsyncGuardedChunks(self._stream.__aiter__(), self._exchange)

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except Exception as exc:
            raise self._exchange.failed(exc) from exc
        finally:
            self._exchange.finished()


class _AsyncGuardedChunks:
    """The chunks of a guarded async body: its end reports the status, a
    failure is classified, a cancelled read reports no outcome. A reader that
    stops early reports nothing here: closing the body does."""

    __slots__ = ("_chunks", "_exchange")

    def __init__(self, chunks: AsyncIterator[bytes], exchange: _Exchange) -> None:
        self._chunks = chunks
        self._exchange = exchange

    def __aiter__(self) -> _AsyncGuardedChunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self._exchange.finished()
            raise
        except Exception as exc:
            raise self._exchange.failed(exc) from exc
        except GeneratorExit:
            raise  # this read was dropped unfinished: closing the body reports
        except BaseException:
            self._exchange.cancelled()
            raise


# ---------------------------------------------------------------------------
# The call step and the transports.
# ---------------------------------------------------------------------------


class HttpMethod(Method):
    """An operation (or HTTP method) of the transports, resolved once: what
    ``idempotent=`` says of it too (None: the request decides)."""

    __slots__ = ("marked",)

    def __init__(self, method: Method, marked: bool | None) -> None:
        super().__init__(method.name, method.timeout, method.stats)
        self.marked = marked


class HttpCallStep(CallStep[tuple[str, str]]):
    """The breaker, limiter, deadlines and metrics of the transports (the
    arguments as :class:`ResilientTransport`; see :class:`CallStep`)."""

    owner = "ResilientTransport"
    system = "http"

    def __init__(self, provider_type: str, provider: str, config: Config | None = None, *,
                 raise_for_status: bool = True, owner: str = "ResilientTransport",
                 options: AdapterOptions | None = None,
                 **overrides: Unpack[OptionKeywords]) -> None:
        self.owner = owner  # names the transport in every message below
        super().__init__(provider_type, provider, config, options=options, **overrides)
        self.raise_for_status = _validate.boolean(self.owner, "raise_for_status",
                                                  raise_for_status)

    def idempotent(self, request: httpx.Request, method: HttpMethod | None = None) -> bool:
        """:func:`is_idempotent` of ``request``, with what ``idempotent=``
        says of its operation (``method``, looked up when None)."""
        if method is None:
            method = self.method_of(request)
        return is_idempotent(request, method.marked)

    def method_of(self, request: httpx.Request) -> HttpMethod:
        """The request's operation: its ``virtrigaud.operation`` extension, or its HTTP method."""
        operation = request.extensions.get(OPERATION_EXTENSION)
        if operation is None:
            return self.method(("", request.method))  # type: ignore[return-value]
        if not isinstance(operation, str) or not operation:
            raise TypeError(f"request extension {OPERATION_EXTENSION!r} must be a non-empty str, "
                            f"got {type(operation).__name__} {operation!r}")
        return self.method((operation, request.method))  # type: ignore[return-value]

    def _resolve(self, key: tuple[str, str]) -> HttpMethod:
        operation, http_method = key
        if operation:
            method = self._method_named(operation, operation)
        else:
            # No operation named: the HTTP method is the label, and a read gets
            # Describe's timeout, a write the mutating one (no warning: documented).
            method = self._method_named(http_method,
                                        "Describe" if http_method in _READS else "Create",
                                        warn=False)
        return HttpMethod(method, self.options.idempotent_mark(method.name, method.name))

    def prepare(self, request: httpx.Request, method: Method) -> float | None:
        """Caps the request's httpx timeouts at its deadline; returns the deadline."""
        deadline = self.deadline(method)
        if deadline is not None:
            timeouts = request.extensions.get("timeout") or _NO_TIMEOUTS
            for limit in timeouts.values():
                if limit is None or limit > deadline:  # else (the common case) nothing to cap
                    capped = {phase: deadline if limit is None else min(limit, deadline)
                              for phase, limit in timeouts.items()}
                    request.extensions = {**request.extensions, "timeout": capped}
                    break
        return deadline

    def answered(self, permit: Permit | None, method: Method, start: float,
                 request: httpx.Request, response: httpx.Response, idempotent: bool,
                 body: type[_GuardedStream] | type[_AsyncGuardedStream]) -> None:
        """Binds ``response`` to ``request`` and has its body (wrapped in
        ``body``) report the outcome when read or closed: a breaker failure
        for 5xx but 501, and 408, or for a body that fails."""
        response.request = request
        if self.adaptive_rate is not None:
            self.quota_answer(response.headers, response.status_code == 429)
        exchange = _Exchange(self, permit, method, start, response.status_code, request,
                             idempotent)
        if response.is_stream_consumed or response.is_closed:
            exchange.finished()  # an in-memory body, read already: nothing can fail
        else:
            response.stream = body(response.stream, exchange)  # type: ignore[arg-type]

    @staticmethod
    def operation_label(method: Method, request: httpx.Request) -> str:
        """The operation to name in messages ("" when it is just the HTTP method)."""
        return "" if method.name == request.method else method.name

    def label_of(self, request: httpx.Request) -> str:
        """:meth:`operation_label` of ``request``."""
        return self.operation_label(self.method_of(request), request)

    def no_response(self, permit: Permit | None, method: Method, start: float,
                    exc: BaseException, request: httpx.Request,
                    idempotent: bool = True) -> BaseException:
        """Reports a request that got no response; returns the error to raise."""
        error, code, failure = error_from_exception(exc, self.operation_label(method, request),
                                                    idempotent=idempotent)
        self.settle(permit, method, start, code, failure)
        return _bound(error, request)

    def open_error(self, method: Method, breaker: CircuitBreaker,
                   retry_after: float | None) -> CircuitOpenError:
        """The open breaker's rejection, also an ``httpx.TransportError``."""
        return HTTPCircuitOpenError(breaker.name, breaker.provider_type, breaker.provider,
                                    retry_after)

    def rate_limited_error(self, message: str, retry_after: float) -> RateLimitError:
        """The limiter's rejection, also an ``httpx.TransportError``."""
        error = _transport_error(RateLimitError, httpx.TransportError, message,
                                 retry_after=retry_after)
        assert isinstance(error, RateLimitError)
        return error


def _bound(error: BaseException, request: httpx.Request) -> BaseException:
    """``error`` with its ``.request`` set when it is an httpx error without one."""
    if isinstance(error, httpx.RequestError) and getattr(error, "_request", None) is None:
        error.request = request
    return error


_NO_TIMEOUTS: dict[str, float | None] = {"connect": None, "read": None, "write": None,
                                         "pool": None}


def _step(owner: str, provider_type: str, provider: str, config: Config | None,
          transport: object, expected: type, raise_for_status: bool,
          options: AdapterOptions | None, overrides: OptionKeywords) -> HttpCallStep:
    if not isinstance(transport, expected):
        raise TypeError(f"{owner} transport must be an {expected.__module__}."
                        f"{expected.__name__}, got {type(transport).__name__} {transport!r}")
    return HttpCallStep(provider_type, provider, config, owner=owner,
                        raise_for_status=raise_for_status, options=options, **overrides)


class ResilientTransport(httpx.BaseTransport):
    """An ``httpx.BaseTransport`` guarding each request (see the module docstring).

    Args:
        provider_type, provider: the provider's labels.
        config: RPC timeouts and the shared breaker's and bucket's settings;
            overrides ``options.config`` unless None.
        transport: the transport to send through (default ``httpx.HTTPTransport()``).
        raise_for_status: raise the taxonomy error for a status >= 400 from
            the transport (default; auth flows and response hooks then never
            see such a response: :class:`ResilientClient` raises after
            them); False passes every response through.
        options: an :class:`~.options.AdapterOptions` (None: the defaults):
            the breaker and limiter, ``wait`` (up to the deadline),
            ``timeouts`` (per operation), ``idempotent`` (per operation, or
            per HTTP method for a request naming none; a request's
            ``virtrigaud.idempotent`` extension still decides first),
            ``clock``, ``metrics``.
        **overrides: any AdapterOptions field as a keyword, overriding that
            field of ``options``.

    A blocking request cannot be interrupted from Python: its deadline caps
    each of httpx's timeouts (each network wait), not the whole exchange.
    """

    #: Named ``guard`` before 0.2.0 (the old name warns).
    guard = RenamedAttribute["HttpCallStep"]("step")

    def __init__(
        self,
        provider_type: str,
        provider: str,
        config: Config | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        raise_for_status: bool = True,
        options: AdapterOptions | None = None,
        **overrides: Unpack[OptionKeywords],
    ) -> None:
        inner = httpx.HTTPTransport() if transport is None else transport
        self.step = _step("ResilientTransport", provider_type, provider, config, inner,
                          httpx.BaseTransport, raise_for_status, options, overrides)
        self.transport = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        step = self.step
        method = step.method_of(request)
        idempotent = is_idempotent(request, method.marked)
        start = time.perf_counter()
        try:
            permit = step.admit(method, start)
        except httpx.RequestError as exc:
            raise _bound(exc, request)  # noqa: B904 - our own rejection, raised as it is
        try:
            step.prepare(request, method)
            response = self.transport.handle_request(request)
        except Exception as exc:
            raise step.no_response(permit, method, start, exc, request, idempotent) from exc
        except BaseException:
            step.cancelled(permit, method, start)
            raise
        step.answered(permit, method, start, request, response, idempotent, _GuardedStream)
        if step.raise_for_status and response.status_code >= 400:
            read_error_body(response)
            raise error_from_response(response, step.operation_label(method, request),
                                      idempotent=idempotent)
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

    #: Named ``guard`` before 0.2.0 (the old name warns).
    guard = RenamedAttribute["HttpCallStep"]("step")

    def __init__(
        self,
        provider_type: str,
        provider: str,
        config: Config | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        raise_for_status: bool = True,
        options: AdapterOptions | None = None,
        **overrides: Unpack[OptionKeywords],
    ) -> None:
        inner = httpx.AsyncHTTPTransport() if transport is None else transport
        self.step = _step("AsyncResilientTransport", provider_type, provider, config, inner,
                          httpx.AsyncBaseTransport, raise_for_status, options, overrides)
        self.transport = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        step = self.step
        method = step.method_of(request)
        idempotent = is_idempotent(request, method.marked)
        start = time.perf_counter()
        try:
            permit = await step.admit_async(method, start)
        except httpx.RequestError as exc:
            raise _bound(exc, request)  # noqa: B904 - our own rejection, raised as it is
        scope = None
        try:
            deadline = step.prepare(request, method)
            if deadline is None:
                response = await self.transport.handle_async_request(request)
            else:
                scope = TimeoutScope(deadline)
                async with scope:
                    response = await self.transport.handle_async_request(request)
        except asyncio.CancelledError:
            step.cancelled(permit, method, start)
            raise
        except Exception as exc:
            if scope is not None and scope.fired and isinstance(exc, asyncio.TimeoutError):
                error = _transport_error(OperationTimeoutError, httpx.TimeoutException,
                                         f"{method.name}: deadline of {deadline:g}s exceeded",
                                         exc)
                step.settle(permit, method, start, "DeadlineExceeded", True)
                raise _bound(_once_sent(error, idempotent), request) from exc
            raise step.no_response(permit, method, start, exc, request, idempotent) from exc
        step.answered(permit, method, start, request, response, idempotent, _AsyncGuardedStream)
        if step.raise_for_status and response.status_code >= 400:
            await aread_error_body(response)
            raise error_from_response(response, step.operation_label(method, request),
                                      idempotent=idempotent)
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()


# ---------------------------------------------------------------------------
# The clients: the status error raised after auth flows and event hooks.
# ---------------------------------------------------------------------------

#: The keyword arguments of the clients that go to their transport.
_GUARD_OPTIONS = frozenset({"options", *(f.name for f in dataclasses.fields(AdapterOptions))})


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The clients' keyword arguments: (the transport's, httpx's)."""
    step = {name: value for name, value in options.items() if name in _GUARD_OPTIONS}
    client = {name: value for name, value in options.items() if name not in _GUARD_OPTIONS}
    return step, client


def _raise_classified(exc: httpx.HTTPError, step: HttpCallStep,
                      request: httpx.Request) -> NoReturn:
    """Raises ``exc`` if it is classified already, else its taxonomy error
    from it: an httpx error that reached the client unclassified (a hook's
    ``raise_for_status()``, too many redirects, a body that cannot be
    decoded). Called while handling ``exc``."""
    if isinstance(exc, ProviderError):
        raise exc
    if isinstance(exc, httpx.HTTPStatusError):
        raise error_from_response(exc.response, step.label_of(exc.request),
                                  idempotent=step.idempotent(exc.request)) from exc
    raise _bound(error_from_exception(exc, step.label_of(request),
                                      idempotent=step.idempotent(request))[0], request) from exc


class ResilientClient(httpx.Client):
    """An ``httpx.Client`` whose requests go through a :class:`ResilientTransport`.

    Args:
        provider_type, provider, config: as :class:`ResilientTransport`.
        transport: the transport to guard (default ``httpx.HTTPTransport()``).
        raise_for_status: raise the taxonomy error (also an
            ``httpx.HTTPStatusError``) for a final response >= 400, after
            the auth flow and the response event hooks saw it (default);
            False returns every response.
        options, and each AdapterOptions field as a keyword: the transport's.
        **options: any other ``httpx.Client`` argument (``base_url``,
            ``auth``, ``event_hooks``, ``headers``, ``timeout``, ...). Requests
            through ``mounts`` are not guarded.

    ``send`` (and so ``get``, ``post``, ``stream``, ...) reads at most
    :data:`ERROR_BODY_LIMIT` bytes of an error response, closes it and raises.
    """

    def __init__(self, provider_type: str, provider: str, config: Config | None = None, *,
                 transport: httpx.BaseTransport | None = None, raise_for_status: bool = True,
                 **options: Any) -> None:
        step_options, client_options = _split(options)
        self.resilient_transport = ResilientTransport(
            provider_type, provider, config, transport=transport, raise_for_status=False,
            **step_options)
        self._raise_status = _validate.boolean("ResilientClient", "raise_for_status",
                                               raise_for_status)
        super().__init__(transport=self.resilient_transport, **client_options)

    def send(self, request: httpx.Request, *, stream: bool = False,
             **options: Any) -> httpx.Response:
        step = self.resilient_transport.step
        try:
            response = super().send(request, stream=True, **options)
        except httpx.HTTPError as exc:
            _raise_classified(exc, step, request)
        try:
            if self._raise_status and response.status_code >= 400:
                read_error_body(response)
                raise error_from_response(response, step.label_of(response.request),
                                          idempotent=step.idempotent(response.request))
            if not stream:
                response.read()
        except httpx.HTTPError as exc:
            response.close()
            _raise_classified(exc, step, request)
        except BaseException:
            response.close()
            raise
        return response


class AsyncResilientClient(httpx.AsyncClient):
    """:class:`ResilientClient` for ``httpx.AsyncClient``, over an
    :class:`AsyncResilientTransport` (``transport`` defaults to
    ``httpx.AsyncHTTPTransport()``)."""

    def __init__(self, provider_type: str, provider: str, config: Config | None = None, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 raise_for_status: bool = True, **options: Any) -> None:
        step_options, client_options = _split(options)
        self.resilient_transport = AsyncResilientTransport(
            provider_type, provider, config, transport=transport, raise_for_status=False,
            **step_options)
        self._raise_status = _validate.boolean("AsyncResilientClient", "raise_for_status",
                                               raise_for_status)
        super().__init__(transport=self.resilient_transport, **client_options)

    async def send(self, request: httpx.Request, *, stream: bool = False,
                   **options: Any) -> httpx.Response:
        step = self.resilient_transport.step
        try:
            response = await super().send(request, stream=True, **options)
        except httpx.HTTPError as exc:
            _raise_classified(exc, step, request)
        try:
            if self._raise_status and response.status_code >= 400:
                await aread_error_body(response)
                raise error_from_response(response, step.label_of(response.request),
                                          idempotent=step.idempotent(response.request))
            if not stream:
                await response.aread()
        except httpx.HTTPError as exc:
            await response.aclose()
            _raise_classified(exc, step, request)
        except BaseException:
            await response.aclose()
            raise
        return response
