"""The error taxonomy of the Virtrigaud resilience guide.

Every provider failure is a :class:`ProviderError` carrying one of ten
:class:`ErrorType` values. Four types are retryable (``Retryable``,
``Unavailable``, ``RateLimit``, ``Timeout``); the other six are business
answers that a retry cannot change. Exceptions that are not a
``ProviderError`` are *not* retryable (the conservative choice of the Go
code); :func:`classify` maps the common builtin ones onto the taxonomy.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "ErrorType",
    "RETRYABLE_TYPES",
    "ProviderError",
    "NotFoundError",
    "InvalidSpecError",
    "UnauthorizedError",
    "NotSupportedError",
    "RetryableError",
    "UnavailableError",
    "RateLimitError",
    "OperationTimeoutError",
    "QuotaExceededError",
    "ConflictError",
    "new_error",
    "MAX_RETRY_AFTER",
    "is_retryable",
    "is_not_found",
    "is_type",
    "classify",
]


class ErrorType(str, enum.Enum):
    """The guide's ten error categories; the value is the Go constant's string."""

    NOT_FOUND = "NotFound"
    INVALID_SPEC = "InvalidSpec"
    UNAUTHORIZED = "Unauthorized"
    NOT_SUPPORTED = "NotSupported"
    RETRYABLE = "Retryable"
    UNAVAILABLE = "Unavailable"
    RATE_LIMIT = "RateLimit"
    TIMEOUT = "Timeout"
    QUOTA_EXCEEDED = "QuotaExceeded"
    CONFLICT = "Conflict"

    def __str__(self) -> str:
        return self.value


#: The types a retry may cure (the guide's "Retryable: Yes" rows).
RETRYABLE_TYPES: frozenset[ErrorType] = frozenset(
    {ErrorType.RETRYABLE, ErrorType.UNAVAILABLE, ErrorType.RATE_LIMIT, ErrorType.TIMEOUT}
)


#: The longest ``retry_after`` an error may carry, in seconds (about 31
#: years: the longest reset timeout a breaker accepts). Retries never sleep
#: that long: a ``retry_after`` beyond the retry's ``max_delay`` or deadline
#: makes it give up at once and re-raise the error for the caller to requeue.
MAX_RETRY_AFTER = 1e9


def check_retry_after(owner: str, value: object) -> float | None:
    """``value`` as float seconds in ``[0, MAX_RETRY_AFTER]``, or None.

    Raises TypeError for a non-number and ValueError for NaN, infinity, a
    negative value or one above MAX_RETRY_AFTER, naming ``owner`` and the value.
    """
    if value is None:
        return None
    from ._validate import non_negative

    return non_negative(owner, "retry_after", value, maximum=MAX_RETRY_AFTER)


class ProviderError(Exception):
    """A classified provider failure.

    Attributes:
        type: the :class:`ErrorType`.
        message: the human-readable message, without the cause.
        cause: the underlying exception, or None; also set as ``__cause__`` so
            tracebacks show the chain.
        retryable: whether :func:`is_retryable` says yes. Defaults to
            ``type in RETRYABLE_TYPES``; pass ``retryable=True`` to mark any
            error retryable.
        retry_after: seconds after which a retry may succeed (a provider's
            Retry-After, a bucket's wait for a token, an open breaker's time
            to its next probe), or None when unknown. A finite float in
            ``[0, MAX_RETRY_AFTER]``; anything else is refused where the error
            is built. A retry waits at least this long, and gives up at once,
            re-raising the error, when that is longer than its ``max_delay`` or
            its deadline allows.
    """

    type: ErrorType
    message: str
    cause: BaseException | None
    retryable: bool
    retry_after: float | None

    def __init__(
        self,
        type: ErrorType | str,
        message: str,
        cause: BaseException | None = None,
        *,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        try:
            error_type = ErrorType(type)
        except ValueError:
            valid = ", ".join(t.value for t in ErrorType)
            raise ValueError(f"ProviderError type must be one of {valid}, got {type!r}") from None
        if not isinstance(message, str):
            raise TypeError(
                f"ProviderError message must be a str, got {type_name(message)} {message!r}"
            )
        if cause is not None and not isinstance(cause, BaseException):
            raise TypeError(
                f"ProviderError cause must be an exception or None, got {type_name(cause)} {cause!r}"
            )
        if retryable is not None and not isinstance(retryable, bool):
            raise TypeError(
                f"ProviderError retryable must be a bool or None, got {type_name(retryable)} "
                f"{retryable!r}"
            )
        retry_after = check_retry_after(type_of(self).__name__, retry_after)
        super().__init__(message)
        self.type = error_type
        self.message = message
        self.cause = cause
        self.retryable = error_type in RETRYABLE_TYPES if retryable is None else retryable
        self.retry_after = retry_after
        if cause is not None:
            self.__cause__ = cause

    def __str__(self) -> str:
        text = f"{self.type.value}: {self.message}"
        return f"{text}: {self.cause}" if self.cause is not None else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(type={self.type.value!r}, message={self.message!r})"

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.type, self.message, self.retryable), self.__dict__)

    def __setstate__(self, state: Any) -> None:
        self.__dict__.update(state)
        if self.cause is not None:  # keep the chain across pickling (process pools)
            self.__cause__ = self.cause


def type_name(value: object) -> str:
    return type(value).__name__


type_of = type  # ProviderError.__init__ shadows the builtin with its parameter


def _rebuild(
    cls: type[ProviderError], error_type: ErrorType, message: str, retryable: bool
) -> ProviderError:
    error = cls.__new__(cls)
    ProviderError.__init__(error, error_type, message, retryable=retryable)
    return error


class _TypedError(ProviderError):
    """Base of the per-type subclasses: the type is fixed by the class."""

    error_type: ErrorType

    def __init__(
        self,
        message: str,
        cause: BaseException | None = None,
        *,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(self.error_type, message, cause, retryable=retryable,
                         retry_after=retry_after)


class NotFoundError(_TypedError):
    """The resource does not exist (not retryable)."""

    error_type = ErrorType.NOT_FOUND


class InvalidSpecError(_TypedError):
    """The request or spec is malformed (not retryable)."""

    error_type = ErrorType.INVALID_SPEC


class UnauthorizedError(_TypedError):
    """Authentication or authorisation failed (not retryable)."""

    error_type = ErrorType.UNAUTHORIZED


class NotSupportedError(_TypedError):
    """The provider does not support the operation (not retryable)."""

    error_type = ErrorType.NOT_SUPPORTED


class RetryableError(_TypedError):
    """A transient failure worth retrying."""

    error_type = ErrorType.RETRYABLE


class UnavailableError(_TypedError):
    """The provider (or an open circuit breaker in front of it) is unavailable (retryable)."""

    error_type = ErrorType.UNAVAILABLE


class RateLimitError(_TypedError):
    """Rate limited (retryable).

    ``retry_after`` is the number of seconds after which a retry may succeed,
    or None when unknown; a retry waits at least that long.
    """

    error_type = ErrorType.RATE_LIMIT


class OperationTimeoutError(_TypedError, TimeoutError):
    """The operation timed out (retryable). Also a builtin :class:`TimeoutError`."""

    error_type = ErrorType.TIMEOUT


class QuotaExceededError(_TypedError):
    """A resource quota is exhausted (not retryable)."""

    error_type = ErrorType.QUOTA_EXCEEDED


class ConflictError(_TypedError):
    """The resource conflicts with an existing one (not retryable)."""

    error_type = ErrorType.CONFLICT


_CLASS_BY_TYPE: dict[ErrorType, type[_TypedError]] = {
    cls.error_type: cls
    for cls in (
        NotFoundError,
        InvalidSpecError,
        UnauthorizedError,
        NotSupportedError,
        RetryableError,
        UnavailableError,
        RateLimitError,
        OperationTimeoutError,
        QuotaExceededError,
        ConflictError,
    )
}


def error_classes(prefix: str, mixin: type,
                  module: str) -> dict[ErrorType, Callable[..., ProviderError]]:
    """Per taxonomy type, a class that is both its error class and ``mixin``,
    named ``prefix`` + that class's name, of ``module``: a transport adapter's
    errors that are also the transport's (``RpcNotFoundError(NotFoundError,
    AioRpcError)``). The error class comes first in the MRO."""
    return {kind: type(f"{prefix}{base.__name__}", (base, mixin), {"__module__": module})
            for kind, base in _CLASS_BY_TYPE.items()}


def new_error(
    error_type: ErrorType | str, message: str, cause: BaseException | None = None
) -> ProviderError:
    """Build the subclass for ``error_type`` (``new_error("NotFound", "vm gone")``)."""
    try:
        cls = _CLASS_BY_TYPE[ErrorType(error_type)]
    except ValueError:
        valid = ", ".join(t.value for t in ErrorType)
        raise ValueError(f"error type must be one of {valid}, got {error_type!r}") from None
    return cls(message, cause)


def is_retryable(exc: BaseException | None) -> bool:
    """True iff ``exc`` is a :class:`ProviderError` whose ``retryable`` is set.

    Anything else, including builtin ``TimeoutError``, is not retryable: pass
    it through :func:`classify` first to map it onto the taxonomy.
    """
    return isinstance(exc, ProviderError) and exc.retryable


def is_type(exc: BaseException | None, error_type: ErrorType) -> bool:
    """True iff ``exc`` is a :class:`ProviderError` of ``error_type``."""
    return isinstance(exc, ProviderError) and exc.type is error_type


def is_not_found(exc: BaseException | None) -> bool:
    """True iff ``exc`` is a :class:`ProviderError` of type ``NotFound``."""
    return is_type(exc, ErrorType.NOT_FOUND)


def _is_timeout(exc: BaseException) -> bool:
    """A builtin TimeoutError, or (Python 3.10, where they are classes of their
    own) asyncio's or concurrent.futures'. Those modules are looked up, not
    imported: an instance of their TimeoutError implies they are loaded."""
    if isinstance(exc, TimeoutError):
        return True
    for name in ("asyncio", "concurrent.futures"):
        module = sys.modules.get(name)
        if module is not None and isinstance(exc, module.TimeoutError):
            return True
    return False


def classify(exc: BaseException) -> BaseException:
    """Map a builtin exception onto the taxonomy.

    ============================================  =========================
    exception                                     result
    ============================================  =========================
    a ``ProviderError``                           returned unchanged
    ``TimeoutError``, ``asyncio.TimeoutError``    ``OperationTimeoutError``
    ``ConnectionError`` (and subclasses)          ``UnavailableError``
    ``PermissionError``                           ``UnauthorizedError``
    ``NotImplementedError``                       ``NotSupportedError``
    an ``httpx.HTTPError``                        as the httpx transport maps it
    a ``grpc.RpcError``                           as the gRPC interceptors map it
    anything else                                 returned unchanged
    ============================================  =========================

    httpx: ``ConnectError`` Unavailable (never sent), ``TimeoutException``
    Timeout, other network and protocol errors Unavailable,
    ``HTTPStatusError`` by its status (404 NotFound, 429 RateLimit, 503
    Unavailable, ...: ``providers.http.ERROR_TYPES``). gRPC: by ``code()``
    (``providers.grpc.ERROR_TYPES``; a ``CANCELLED`` status, or none, is
    Retryable). httpx and grpc are never imported here: their errors are
    recognised only once the application has loaded them.

    A new error keeps the original as its ``cause`` (and ``__cause__``).
    Unmapped exceptions stay unchanged and so stay non-retryable.
    """
    if isinstance(exc, ProviderError):
        return exc
    transport = _classify_transport_error(exc)
    if transport is not None:
        return transport
    # The cause's text is appended by __str__, so the message names only its kind.
    message = type(exc).__name__
    if _is_timeout(exc):
        return OperationTimeoutError(message, exc)
    if isinstance(exc, ConnectionError):
        return UnavailableError(message, exc)
    if isinstance(exc, PermissionError):
        return UnauthorizedError(message, exc)
    if isinstance(exc, NotImplementedError):
        return NotSupportedError(message, exc)
    return exc


def _classify_transport_error(exc: BaseException) -> ProviderError | None:
    """A raw httpx or grpc error mapped as the adapters map them, or None.

    The adapters' mappings are the single source (providers/http.py,
    providers/grpc.py); they are imported only for an error of a package the
    application already loaded, so nothing optional is imported here.
    """
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, httpx.HTTPError):
        from .providers import http

        if isinstance(exc, httpx.HTTPStatusError):
            # raise_for_status() raises for 1xx and 3xx too: those are no failure of ours to name.
            status = exc.response.status_code
            return http.error_from_response(exc.response) if status >= 400 else None
        error = http.error_from_exception(exc)[0]
        return error if isinstance(error, ProviderError) else None
    grpc = sys.modules.get("grpc")
    if grpc is not None and isinstance(exc, grpc.RpcError):
        from .providers import grpc as rpc

        error = rpc.error_from_rpc(exc)
        if isinstance(error, ProviderError):
            return error
        # CANCELLED: raw, nobody here cancelled anything; the server or a proxy did.
        return RetryableError(f"{type(exc).__name__}: CANCELLED", exc)
    return None


def refused_retry(exc: BaseException) -> bool:
    """True iff ``exc`` says it must not be retried although its type is
    retryable: a ``ProviderError`` of a retryable type built (or marked) with
    ``retryable=False``, such as the adapters' error for a non-idempotent
    request that was sent. No retry loop retries it, ``retry_on`` included."""
    return (isinstance(exc, ProviderError) and not exc.retryable
            and exc.type in RETRYABLE_TYPES)


class CircuitOpenError(UnavailableError):
    """Raised, without calling the function, by an open circuit breaker.

    An :class:`UnavailableError`, so it is retryable: a retry policy backs
    off across an open breaker, as in the guide's controller example.

    Attributes:
        breaker: the breaker's name.
        provider_type, provider: the breaker's labels.
        retry_after: seconds until the breaker admits a probe (None while
            it is held open by ``force_open()``, or when half-open and full).
    """

    breaker: str
    provider_type: str
    provider: str

    def __init__(
        self,
        breaker: str,
        provider_type: str = "",
        provider: str = "",
        retry_after: float | None = None,
    ) -> None:
        retry_after = check_retry_after("CircuitOpenError", retry_after)
        where = f" ({provider_type}/{provider})" if provider_type or provider else ""
        when = f"; next probe in {retry_after:.3g}s" if retry_after else ""
        super().__init__(f"circuit breaker {breaker!r}{where} is open{when}",
                         retry_after=retry_after)
        self.breaker = breaker
        self.provider_type = provider_type
        self.provider = provider


__all__.append("CircuitOpenError")
