"""Per-call statistics of provider RPCs and VM operations, with Virtrigaud's metric names.

The adapters (``providers/``: the gRPC interceptors, the httpx transport,
``ResilientProvider``) record one entry per call here; the Prometheus
collector (:mod:`virtrigaud_resilience.metrics`) reads them when scraped:

=================================================  =========  ====================================
series                                             type       labels
=================================================  =========  ====================================
``virtrigaud_provider_rpc_requests_total``         counter    provider_type, method, code
``virtrigaud_provider_rpc_latency_seconds``        histogram  provider_type, method
``virtrigaud_vm_operations_total``                 counter    operation, provider_type, provider,
                                                              outcome (``success`` / ``error``)
=================================================  =========  ====================================

``code`` is the gRPC status in Go's spelling (``OK``, ``Unavailable``,
``DeadlineExceeded``, ``Canceled``, ...) as Virtrigaud's Go client writes
it; the httpx transport writes the HTTP status (``"200"``, ``"503"``) and a
gRPC-style name where no response came (``Unavailable``, ``DeadlineExceeded``,
``Canceled``). The latency buckets are 1 ms doubling up to 32.768 s
(:data:`LATENCY_BUCKETS`, 16 of them, plus ``+Inf``).

A histogram has to be recorded per call (a counter could be read from
elsewhere, a distribution cannot): :meth:`RPCStats.record` is one binary
search over the 16 bounds and three additions under an uncontended lock,
about a third of a microsecond, part of the adapters' own work per call
that ``virtrigaud-resilience bench --sections adapters`` reports. Stats objects are created once per label set
and live for the life of the process, so their counters never go backwards.
"""

from __future__ import annotations

import asyncio
import threading
from bisect import bisect_left
from collections.abc import Callable
from typing import TypeVar

from .errors import ErrorType, ProviderError

__all__ = [
    "LATENCY_BUCKETS",
    "OperationStats",
    "RPCStats",
    "all_operation_stats",
    "all_rpc_stats",
    "code_for_error",
    "go_code_name",
    "operation_stats",
    "rpc_stats",
]

K = TypeVar("K")
V = TypeVar("V")

#: Upper bounds (seconds) of the latency histogram's buckets: 1 ms * 2**k for
#: k = 0..15, i.e. 1 ms to 32.768 s; slower calls land in ``+Inf``.
LATENCY_BUCKETS: tuple[float, ...] = tuple(0.001 * 2**k for k in range(16))

#: The gRPC code (Go spelling) an error of each taxonomy type stands for, for
#: calls whose error carries no status of its own (a plain Python provider).
_CODE_BY_TYPE: dict[ErrorType, str] = {
    ErrorType.NOT_FOUND: "NotFound",
    ErrorType.INVALID_SPEC: "InvalidArgument",
    ErrorType.UNAUTHORIZED: "Unauthenticated",
    ErrorType.NOT_SUPPORTED: "Unimplemented",
    ErrorType.RETRYABLE: "Unknown",
    ErrorType.UNAVAILABLE: "Unavailable",
    ErrorType.RATE_LIMIT: "ResourceExhausted",
    ErrorType.TIMEOUT: "DeadlineExceeded",
    ErrorType.QUOTA_EXCEEDED: "ResourceExhausted",
    ErrorType.CONFLICT: "AlreadyExists",
}


def go_code_name(python_name: str) -> str:
    """``"DEADLINE_EXCEEDED"`` (grpc's StatusCode name) -> ``"DeadlineExceeded"``
    (Go's ``codes.Code.String()``); ``CANCELLED`` is Go's ``Canceled``."""
    if python_name == "CANCELLED":
        return "Canceled"
    if python_name == "OK":
        return "OK"
    return "".join(part.capitalize() for part in python_name.split("_"))


def code_for_error(exc: BaseException | None) -> str:
    """The ``code`` label for a call that ended with ``exc`` (None: ``OK``).

    An error carrying a gRPC status (``exc.code()``, as the gRPC adapter's
    errors and grpc's own do) gives that status; a cancellation ``Canceled``;
    a ``ProviderError`` the status of its type (NotFound -> ``NotFound``,
    Timeout -> ``DeadlineExceeded``, ...); anything else ``Unknown``, as Go's
    ``status.Code(err)`` says for a non-gRPC error.
    """
    if exc is None:
        return "OK"
    if isinstance(exc, asyncio.CancelledError):
        return "Canceled"
    code = getattr(exc, "code", None)
    if callable(code):
        try:
            name = getattr(code(), "name", None)
        except Exception:  # a foreign code() that needs arguments or fails
            name = None
        if isinstance(name, str):
            return go_code_name(name)
    if isinstance(exc, ProviderError):
        return _CODE_BY_TYPE[exc.type]
    return "Unknown"


class RPCStats:
    """Requests by code and a latency histogram of one (provider_type, method).

    Get the shared instance with :func:`rpc_stats`; thread-safe.
    """

    __slots__ = ("provider_type", "method", "_codes", "_buckets", "_sum", "_lock")

    def __init__(self, provider_type: str, method: str) -> None:
        self.provider_type = provider_type
        self.method = method
        self._codes: dict[str, int] = {}
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def record(self, code: str, seconds: float) -> None:
        """Counts one call that ended with ``code`` after ``seconds`` (a
        negative or NaN duration counts as 0)."""
        if not seconds > 0.0:
            seconds = 0.0
        index = bisect_left(LATENCY_BUCKETS, seconds)  # the first bound >= seconds: "le"
        with self._lock:
            codes = self._codes
            codes[code] = codes.get(code, 0) + 1
            self._buckets[index] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[dict[str, int], list[int], float]:
        """``(requests by code, per-bucket counts (not cumulative, +Inf last),
        sum of seconds)``, read together."""
        with self._lock:
            return dict(self._codes), list(self._buckets), self._sum

    def requests(self, code: str | None = None) -> int:
        """Calls recorded with ``code``, or all of them for None."""
        codes = self.snapshot()[0]
        return sum(codes.values()) if code is None else codes.get(code, 0)

    def __repr__(self) -> str:
        return (f"RPCStats({self.provider_type!r}, {self.method!r}, "
                f"requests={self.snapshot()[0]!r})")


class OperationStats:
    """Successes and errors of one (operation, provider_type, provider);
    get the shared instance with :func:`operation_stats`. Thread-safe."""

    __slots__ = ("operation", "provider_type", "provider", "_counts", "_lock")

    def __init__(self, operation: str, provider_type: str, provider: str) -> None:
        self.operation = operation
        self.provider_type = provider_type
        self.provider = provider
        self._counts = [0, 0]  # success, error
        self._lock = threading.Lock()

    def record(self, ok: bool) -> None:
        """Counts one operation that succeeded (``ok``) or failed."""
        with self._lock:
            self._counts[0 if ok else 1] += 1

    @property
    def success(self) -> int:
        """Operations that succeeded."""
        return self._counts[0]

    @property
    def error(self) -> int:
        """Operations that failed (after any retries)."""
        return self._counts[1]

    def __repr__(self) -> str:
        return (f"OperationStats({self.operation!r}, {self.provider_type!r}, {self.provider!r}, "
                f"success={self.success}, error={self.error})")


_RPC: dict[tuple[str, str], RPCStats] = {}
_OPERATIONS: dict[tuple[str, str, str], OperationStats] = {}
_LOCK = threading.Lock()


def _shared(table: dict[K, V], key: K, make: Callable[[], V]) -> V:
    found = table.get(key)  # lock-free on the common path
    if found is None:
        with _LOCK:
            found = table.get(key)
            if found is None:
                found = table[key] = make()
    return found


def _labels(owner: str, **values: object) -> None:
    for field, value in values.items():
        if not isinstance(value, str):
            raise TypeError(f"{owner} {field} must be a str, got {type(value).__name__} {value!r}")


def rpc_stats(provider_type: str, method: str) -> RPCStats:
    """The process-wide :class:`RPCStats` of these labels, created on first use."""
    _labels("rpc_stats", provider_type=provider_type, method=method)
    return _shared(_RPC, (provider_type, method), lambda: RPCStats(provider_type, method))


def operation_stats(operation: str, provider_type: str, provider: str) -> OperationStats:
    """The process-wide :class:`OperationStats` of these labels, created on first use."""
    _labels("operation_stats", operation=operation, provider_type=provider_type,
            provider=provider)
    return _shared(_OPERATIONS, (operation, provider_type, provider),
                   lambda: OperationStats(operation, provider_type, provider))


def all_rpc_stats() -> list[RPCStats]:
    """Every :class:`RPCStats` created so far (for the collector)."""
    return list(_RPC.values())


def all_operation_stats() -> list[OperationStats]:
    """Every :class:`OperationStats` created so far (for the collector)."""
    return list(_OPERATIONS.values())
