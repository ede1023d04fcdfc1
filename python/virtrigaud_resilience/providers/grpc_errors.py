"""The gRPC adapter's errors: taxonomy errors that are also gRPC errors (and finished calls).

Every failure the interceptors raise is a
:class:`~virtrigaud_resilience.ProviderError` subclass that is also a
``grpc.aio.AioRpcError`` carrying the call's code, details and metadata
(:func:`error_from_rpc`; the status -> taxonomy table is
:data:`ERROR_TYPES`, the breaker failures :data:`INFRA_FAILURES`), so code
that catches ``grpc.RpcError`` by code keeps working. Such an error also
answers as the finished call it ended (``result()`` raises it, ``done()``
is True), since a sync interceptor chain passes an error raised inside it
on as the call's outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc
import grpc.aio

from ..errors import CircuitOpenError, ErrorType, ProviderError, error_classes
from ..rpcstats import go_code_name
from .resilient import mark_never_sent, mark_reached
from .retry_after import parse_retry_after

__all__ = ["ERROR_TYPES", "INFRA_FAILURES", "RpcCircuitOpenError", "error_from_rpc"]

_S = grpc.StatusCode

#: gRPC status -> taxonomy (``CANCELLED`` as a status the server or a proxy
#: sent; the caller's own cancellation is no error type).
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
    _S.CANCELLED: ErrorType.RETRYABLE,
}

#: The statuses that count as breaker failures (Virtrigaud's ``isInfraFailure``).
INFRA_FAILURES: frozenset[Any] = frozenset(
    {_S.UNAVAILABLE, _S.DEADLINE_EXCEEDED, _S.INTERNAL, _S.UNKNOWN})

_GO_NAMES: dict[Any, str] = {code: go_code_name(code.name) for code in _S}


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

    # A finished sync call's outcome too, as grpc's own sync errors are: a
    # sync interceptor chain passes an error raised inside it on as the
    # call's outcome (grpc.intercept_channel's continuation returns it), and
    # an interceptor outside ours asks that for ``result()``.

    def result(self, timeout: float | None = None) -> Any:
        """Raises this error (the outcome of the call that failed with it)."""
        raise self

    def exception(self, timeout: float | None = None) -> BaseException:
        return self

    def traceback(self, timeout: float | None = None) -> Any:
        return self.__traceback__

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        fn(self)  # already done

    def done(self) -> bool:
        return True

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def add_callback(self, callback: Callable[[], object]) -> bool:
        return False


#: The class raised for each type: e.g. ``RpcNotFoundError(NotFoundError, AioRpcError)``.
_RPC_CLASSES = error_classes("Rpc", _RpcStatus, __name__)


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




def error_from_rpc(error: BaseException, method: str = "") -> ProviderError:
    """The taxonomy error for a failed RPC's status (the module docstring's table).

    ``error`` is a ``grpc.RpcError`` (anything with ``code()``); the result
    is a ProviderError subclass that is also an ``AioRpcError`` with the same
    code, details and metadata, chained from ``error``. ``CANCELLED`` is a
    status like the others here (a Retryable error): telling the caller's
    own cancellation apart is the interceptors' work. A code outside the
    table (``OK``, or none at all) gives a Retryable error with code
    ``UNKNOWN``. ``method`` prefixes the message. The result is marked
    :func:`~virtrigaud_resilience.providers.never_sent` when no connection
    could be made, else :func:`~virtrigaud_resilience.providers.mark_reached`.
    """
    code, details, initial, trailing, debug = _status_of(error)
    where = f"{method}: " if method else ""
    text = details or (code.name if code is not None else type(error).__name__)
    kind = ERROR_TYPES.get(code)
    if kind is None:
        kind, code = ErrorType.RETRYABLE, _S.UNKNOWN
    retry_after = None
    if kind is ErrorType.RATE_LIMIT:
        retry_after = parse_retry_after(_metadata_value(trailing, "retry-after"))
    result = _RPC_CLASSES[kind](f"{where}{text}", error, retry_after=retry_after)
    _set_status(result, code, details, initial, trailing, debug)
    if code is _S.UNAVAILABLE and details and _NO_CONNECTION in details:
        # gRPC core found no address to connect to: nothing was sent
        return mark_never_sent(result)
    return mark_reached(result)


#: What gRPC core says when no connection could be made (the RPC was never sent).
_NO_CONNECTION = "failed to connect to all addresses"
