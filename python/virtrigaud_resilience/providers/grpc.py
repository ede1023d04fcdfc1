"""Guarded gRPC channels and interceptors: breaker, limiter, per-method
deadline, status -> taxonomy.

For ``grpc.aio`` (unary-unary and unary-stream calls)::

    from virtrigaud_resilience.providers.grpc import aio_channel

    channel = aio_channel(target, "vsphere", "prod")

or, for a channel you build yourself, the same call step as interceptors (one
event-loop turn more per unary call: grpc.aio runs intercepted calls in a
task of their own)::

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
   status is the provider answering. ``CANCELLED`` (the caller's or the
   server's) records nothing and frees the call's half-open slot, and so
   does a stream that ends because its reader stopped, or by a deadline the
   interceptor chose itself (the method's timeout, not the caller's).
2. **rate limiter**: no token raises ``RateLimitError`` (``code()``
   ``RESOURCE_EXHAUSTED``, ``retry_after`` the wait), or waits for one with
   ``wait=True``: the wait ends by the call's deadline (below), and the
   deadline sent with the call is what is left of it after the wait.
3. **deadline**: the method's timeout from the RPC config (Describe 30 s,
   Validate 10 s, TaskStatus 10 s, Create/Delete/Power/Reconfigure 4 min),
   never longer than a ``timeout=`` the caller passed or the time left of an
   enclosing policy (:func:`~virtrigaud_resilience.remaining`). A unary
   method the config does not know gets the mutating timeout, as Go's
   ``GetRPCTimeout``, and a warning is logged once per method; a stream the
   config does not know (a watch) gets no deadline of ours.
   ``timeouts={"WatchEvents": 600, "Create": None}`` sets any method's
   timeout (None: no deadline of ours).
4. **status -> taxonomy** (:data:`ERROR_TYPES`): every failure is raised as
   a ProviderError subclass that is also an ``AioRpcError`` carrying the
   original code, details and metadata. ``UNAVAILABLE`` because no
   connection could be made ("failed to connect to all addresses": refused,
   or a peer that closed the connection before the call went out) is marked
   :func:`~virtrigaud_resilience.providers.never_sent`; every other status
   came from the provider or the path to it (marked reached), so a
   ``RESOURCE_EXHAUSTED`` is the provider's rate limit, with ``retry_after``
   from the ``retry-after`` trailing metadata (seconds or an HTTP-date; a
   malformed value is ignored). ``CANCELLED`` is the caller's cancellation
   (``asyncio.CancelledError`` on ``grpc.aio``, ``grpc.FutureCancelledError``
   on sync channels) only when the caller's task was cancelled or the call
   was cancelled locally; a ``CANCELLED`` status sent by the server or a
   proxy is a retryable error like the others. An exception that is not a
   gRPC status (a bug in another interceptor, say) is classified
   (:func:`~virtrigaud_resilience.classify`), else treated as ``UNKNOWN``.
5. **idempotency**: a method the RPC config maps to a mutating operation
   (Create, Delete, Power, Reconfigure, and any unary method it does not
   know; streams only when so named) may have acted when its call failed
   after being sent, so its error is raised non-retryable (same type, same
   breaker accounting): a policy retries it only when the error proves the
   call never left (:func:`~virtrigaud_resilience.providers.never_sent`).
   ``idempotent=`` marks methods safe to retry: a set of names (short
   "Create" or full "/pkg.Service/Create"), a predicate of the full name,
   True for all, False for none, or a mapping of name to bool that sets
   each named method either way (``{"Describe": False}``).
6. **metrics**: ``virtrigaud_provider_rpc_requests_total{provider_type,
   method, code}`` and ``virtrigaud_provider_rpc_latency_seconds`` for every
   call, rejections included (as Virtrigaud's metrics interceptor sits
   outside its breaker interceptor).

The unary-unary interceptors return the call, so ``initial_metadata()``,
``trailing_metadata()``, ``code()`` and ``details()`` answer as without
them: grpc's own call when it succeeded, a wrapper whose result is the
taxonomy error when it failed (:mod:`.grpc_call`). The ``grpc.aio`` one
awaits the call before it returns it (the outcome is recorded there, with
no done callback or wrapper on a call that succeeded), so interceptors
outside it get a finished call, and the caller's ``initial_metadata()``
answers once the call has ended. (grpc.aio's intercepted call objects
themselves raise ``NotImplementedError`` from ``time_remaining()`` whatever
the interceptor; interceptors outside this one get the call's own.)

The breaker and the bucket are the provider's shared ones
(:func:`~virtrigaud_resilience.providers.shared_registries`) unless
``breaker=`` / ``limiter=`` give others, or None for none. Every setting
is a field of :class:`~virtrigaud_resilience.providers.AdapterOptions`:
pass one ``options=`` value (shared with the provider's ``ResilientProvider``,
say) or the fields as keywords, a keyword overriding its field.

Cancelling the awaiting task frees everything the call holds: the breaker's
half-open slot, and tokens reserved while waiting for one. A stream's slot
is freed as soon as its reader is closed or collected (a loop left with
``break``), or its call cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Union

from .._extras import require

require("grpc.aio", "grpcio", "grpc", __name__)
import grpc  # noqa: E402
import grpc._interceptor  # noqa: E402
import grpc.aio  # noqa: E402

from .._deprecated import RenamedAttribute, module_getattr
from ..breaker import CircuitBreaker, Permit, default_failure_predicate
from ..clock import SYSTEM_CLOCK
from ..config import Config
from ..errors import CircuitOpenError, ErrorType, ProviderError, RateLimitError, classify
from ..rpcstats import code_for_error
from ..timeouts import MUTATING_OPERATIONS, deadline_scope
from .grpc_call import (
    FailedAioUnaryCall,
    GuardedAioStreamCall,
    GuardedCall,
    GuardedStream,
    Settler,
)
from .call_step import _MAX_CACHED, KNOWN_OPERATIONS, CallStep, Method
from .options import SHARED, AdapterOptions, Idempotent, OptionKeywords
from .grpc_errors import (
    _GO_NAMES,
    _RPC_CLASSES,
    ERROR_TYPES,
    INFRA_FAILURES,
    RpcCircuitOpenError,
    _set_status,
    error_from_rpc,
)
from .resilient import never_sent

_S = grpc.StatusCode

#: Old names (before 0.2.0), served with a DeprecationWarning naming the new one.
__getattr__ = module_getattr(__name__, {
    "RpcGuard": "virtrigaud_resilience.providers.grpc.RpcCallStep"})

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "ERROR_TYPES",
    "INFRA_FAILURES",
    "SHARED",
    "AdapterOptions",
    "AioUnaryStreamInterceptor",
    "AioUnaryUnaryInterceptor",
    "Idempotent",
    "RpcCallStep",
    "RpcCircuitOpenError",
    "RpcMethod",
    "SyncInterceptor",
    "aio_channel",
    "aio_interceptors",
    "error_from_rpc",
    "intercept_channel",
]

#: The operations that only read (every other unary method may change something).
_READS = KNOWN_OPERATIONS - MUTATING_OPERATIONS


def _unretryable_once_sent(error: BaseException) -> None:
    """A non-idempotent call's error: retryable only while it proves the
    call never left (the type and the breaker accounting stay)."""
    if isinstance(error, ProviderError) and error.retryable and not never_sent(error):
        error.retryable = False


# ---------------------------------------------------------------------------
# The call step: what each interceptor does before and after a call.
# ---------------------------------------------------------------------------

class RpcMethod(Method):
    """A gRPC method, resolved once per call step and arity: whether it is idempotent too."""

    __slots__ = ("idempotent",)

    def __init__(self, method: Method, idempotent: bool) -> None:
        super().__init__(method.name, method.timeout, method.stats)
        self.idempotent = idempotent


class RpcCallStep(CallStep[Union[str, bytes]]):
    """The breaker, limiter, deadlines and metrics the interceptors share
    (the arguments as :func:`aio_interceptors`; see :class:`CallStep`)."""

    owner = "RpcCallStep"
    system = "grpc"

    def __init__(self, provider_type: str, provider: str, config: Config | None = None, *,
                 options: AdapterOptions | None = None,
                 **overrides: Unpack[OptionKeywords]) -> None:
        super().__init__(provider_type, provider, config, options=options, **overrides)
        self._streams: dict[str | bytes, RpcMethod] = {}

    # -- methods -------------------------------------------------------------------

    def _resolve(self, key: str | bytes) -> RpcMethod:  # what method() returns and caches
        full, name = _names(key)
        mark = self.options.idempotent_mark(full, name)
        return RpcMethod(self._method_named(name, name),
                         name in _READS if mark is None else mark)

    def stream_method(self, key: str | bytes) -> RpcMethod:
        """The unary-stream method ``key``, resolved once: its timeout only
        where the RPC config or ``timeouts=`` names the method (a watch runs
        as long as it is read), mutating only when it is named so."""
        found = self._streams.get(key)
        if found is None:
            full, name = _names(key)
            method = self._method_named(name, name, warn=False)
            if name not in KNOWN_OPERATIONS and name not in self._overrides:
                method = Method(method.name, None, method.stats)
            mark = self.options.idempotent_mark(full, name)
            found = RpcMethod(method, name not in MUTATING_OPERATIONS if mark is None else mark)
            with self._lock:
                if len(self._streams) < _MAX_CACHED:
                    self._streams[key] = found
        return found

    def timeout_for(self, method: str, caller_timeout: float | None = None) -> float | None:
        """The deadline (seconds) a call of ``method`` ("/pkg.Service/Describe")
        gets: its timeout, capped by ``caller_timeout`` and the time left of
        an enclosing policy."""
        return self.deadline(self.method(method), caller_timeout)

    # -- admission -------------------------------------------------------------------

    def until(self, budget: float) -> Any:
        """The scope in which a token wait ends by ``budget`` seconds from now
        (the call step's wait is bounded by the innermost deadline)."""
        return deadline_scope(SYSTEM_CLOCK, SYSTEM_CLOCK.now() + budget)

    @staticmethod
    def left(budget: float, start: float) -> float:
        """What is left of ``budget`` seconds since ``start`` (``time.perf_counter()``)."""
        return max(0.0, budget - (time.perf_counter() - start))

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

    # -- outcomes --------------------------------------------------------------------

    @staticmethod
    def status_outcome(status: Any, own_deadline: bool = False) -> tuple[str, bool | None]:
        """``(metrics code, breaker outcome)`` of a call that ended with ``status``.

        The outcome is True for a breaker failure (an infrastructure status),
        False for the provider's answer, None for no outcome: ``CANCELLED``,
        and ``DEADLINE_EXCEEDED`` of a deadline the interceptor chose itself
        (``own_deadline``, a stream's).
        """
        if status is _S.OK:
            return "OK", False
        code = _GO_NAMES.get(status, "Unknown")
        if status is _S.CANCELLED or (own_deadline and status is _S.DEADLINE_EXCEEDED):
            return code, None
        return code, status in INFRA_FAILURES or status not in ERROR_TYPES

    def outcome_of(self, method: Method, exc: BaseException,
                   own_deadline: bool = False) -> tuple[BaseException, str, bool | None]:
        """``(error to raise, metrics code, breaker outcome)`` of a failed call
        (:meth:`status_outcome`); a non-idempotent method's error is
        retryable only while it proves the call never left."""
        code = getattr(exc, "code", None)
        if isinstance(exc, grpc.RpcError) and callable(code):
            error: BaseException = error_from_rpc(exc, method.name)
            metrics_code, outcome = self.status_outcome(getattr(error, "_code"), own_deadline)
        else:
            error = classify(exc)
            if not isinstance(error, ProviderError):  # not a status: gRPC's UNKNOWN
                error = _RPC_CLASSES[ErrorType.RETRYABLE](f"{method.name}: {exc!r}", exc)
                _set_status(error, _S.UNKNOWN, str(exc))
            metrics_code, outcome = code_for_error(error), default_failure_predicate(error)
        if isinstance(method, RpcMethod) and not method.idempotent:
            _unretryable_once_sent(error)
        return error, metrics_code, outcome

    def failed(self, permit: Permit | None, method: Method, start: float,
               exc: BaseException) -> BaseException:
        """Reports a call that failed before it had a call object; returns the error to raise."""
        error, code, outcome = self.outcome_of(method, exc)
        self.settle(permit, method, start, code, outcome)
        self.failed_quota(error)
        return error

    def failed_quota(self, error: BaseException) -> None:
        """A failed call's word on the quota (:meth:`CallStep.quota_error`):
        a ``RESOURCE_EXHAUSTED`` and its trailing metadata."""
        if self.adaptive_rate is not None:
            self.quota_error(error, getattr(error, "_trailing_metadata", None))


def _names(key: str | bytes) -> tuple[str, str]:
    """(full, short) name of a method key: b"/pkg.Service/Create" ->
    ("/pkg.Service/Create", "Create")."""
    full = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
    return full, full.rsplit("/", 1)[-1] or full


#: The call details grpc hands its interceptors, plain namedtuples of
#: (method, timeout, ...): grpc.aio's and the sync channel's (private there).
_GRPC_DETAILS = frozenset(kind for kind in (
    grpc.aio.ClientCallDetails, getattr(grpc._interceptor, "_ClientCallDetails", None))
    if kind is not None)


def _with_timeout(details: Any, timeout: float | None) -> Any:
    """``details`` with its timeout replaced (ClientCallDetails are namedtuples)."""
    if timeout == details.timeout:
        return details
    kind = type(details)
    if kind in _GRPC_DETAILS:  # rebuilt directly: half the cost of _replace
        return tuple.__new__(kind, (details[0], timeout, *details[2:]))
    return details._replace(timeout=timeout)


# ---------------------------------------------------------------------------
# grpc.aio interceptors
# ---------------------------------------------------------------------------


async def _admit_waiting(step: RpcCallStep, method: Method, start: float,
                         budget: float | None) -> tuple[Permit | None, float | None]:
    """With ``wait=True``: the permit, and the deadline to send (``budget``
    less the token wait, which ends by it)."""
    if budget is None or step.limiter is None:
        return await step.admit_async(method, start), budget
    with step.until(budget):
        permit = await step.admit_async(method, start)
    return permit, step.left(budget, start)


async def _guarded_aio_call(step: RpcCallStep, method: Method, unary: bool,
                            continuation: Callable[..., Any], details: Any,
                            request: Any) -> Any:
    """One ``grpc.aio`` call through ``step``: the body both interceptors share.

    A unary-unary call (``unary``) is awaited and its outcome recorded
    inline (no done callback, no wrapper on the way out), then returned
    finished: grpc's own call when it succeeded, else a
    :class:`~.grpc_call.FailedAioUnaryCall` around it whose await raises the
    taxonomy error. A unary-stream call is admitted when it starts and handed
    back as a :class:`~.grpc_call.GuardedAioStreamCall`, settled when the call
    is done whether or not the stream is read to its end.

    A function, not a method of a base class both interceptors share: its
    attribute reads then always see the same types, so the interpreter's
    specialisations of them hold whichever arity runs.
    """
    start = time.perf_counter()
    budget = step.deadline(method, details.timeout)
    if step.wait:
        permit, timeout = await _admit_waiting(step, method, start, budget)
    else:  # never waits: admitted without a coroutine of its own
        permit = step.admit(method, start)
        timeout = budget
    call = None
    try:
        call = await continuation(_with_timeout(details, timeout), request)
        if unary:
            await call  # the outcome, recorded here: grpc's own await then returns at once
    except Exception as exc:
        error = step.failed(permit, method, start, exc)
        if call is None:  # no call to return (another interceptor raised)
            raise error from exc
        return FailedAioUnaryCall(call, error, exc)
    except BaseException:  # the caller's task, a local cancel(), or the task closed
        step.cancelled(permit, method, start)
        raise
    if unary:
        step.settle(permit, method, start, "OK", False)
        return call
    return GuardedAioStreamCall(call, Settler(step, permit, method, start,
                                              _own_deadline(method, budget)))


class AioUnaryUnaryInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """The call step around ``grpc.aio`` unary-unary calls (see :func:`_guarded_aio_call`).

    ``intercept_unary_unary`` returns the call's coroutine, which grpc
    awaits (no coroutine of its own in between)."""

    #: Named ``guard`` before 0.2.0 (the old name warns).
    guard = RenamedAttribute["RpcCallStep"]("step")

    def __init__(self, step: RpcCallStep) -> None:
        self.step = step

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any,
                              request: Any) -> Coroutine[Any, Any, Any]:
        step = self.step
        # The step's cache read inline (the call of method() only on a miss):
        # what the frame of this wrapper costs, the frame it saves gives back.
        method = step._methods.get(details.method) or step.method(details.method)
        return _guarded_aio_call(step, method, True, continuation, details, request)


class AioUnaryStreamInterceptor(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """The call step around ``grpc.aio`` unary-stream calls (see :func:`_guarded_aio_call`).
    The call's reader (:class:`~.grpc_call.GuardedAioStreamCall`) cancels the
    call and frees the breaker slot as soon as it is closed or collected
    unfinished (a loop left with ``break``), or its task cancelled."""

    #: Named ``guard`` before 0.2.0 (the old name warns).
    guard = RenamedAttribute["RpcCallStep"]("step")

    def __init__(self, step: RpcCallStep) -> None:
        self.step = step

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any,
                               request: Any) -> Coroutine[Any, Any, Any]:
        step = self.step
        method = step._streams.get(details.method) or step.stream_method(details.method)
        return _guarded_aio_call(step, method, False, continuation, details, request)


def _own_deadline(method: Method, budget: float | None) -> bool:
    """Whether a call's deadline is the method's timeout (the interceptor's
    choice), not the caller's or an enclosing policy's."""
    return budget is not None and budget == method.timeout


def aio_interceptors(
    provider_type: str,
    provider: str,
    config: Config | None = None,
    *,
    options: AdapterOptions | None = None,
    **overrides: Unpack[OptionKeywords],
) -> list[Any]:
    """The interceptors for ``grpc.aio.insecure_channel(..., interceptors=...)``.

    Args:
        provider_type, provider: the provider's labels (metrics, the shared breaker).
        config: the settings (RPC timeouts; the shared breaker's and bucket's
            configuration); overrides ``options.config`` unless None.
        options: an :class:`~.options.AdapterOptions` (None: the defaults):
            the breaker and limiter, ``wait``, ``timeouts`` (per method name,
            short or full), ``idempotent`` (the methods safe to retry after
            they were sent, beyond the reads Describe, Validate and
            TaskStatus; evaluated once per method), ``clock``, ``metrics``.
        **overrides: any AdapterOptions field as a keyword
            (``wait=True``), overriding that field of ``options``.

    Returns a unary-unary and a unary-stream interceptor sharing one call step.
    Raises TypeError / ValueError naming a bad argument.
    """
    step = RpcCallStep(provider_type, provider, config, options=options, **overrides)
    return [AioUnaryUnaryInterceptor(step), AioUnaryStreamInterceptor(step)]


def aio_channel(
    target: str,
    provider_type: str,
    provider: str,
    config: Config | None = None,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    channel_options: Sequence[tuple[str, Any]] | None = None,
    compression: grpc.Compression | None = None,
    interceptors: Sequence[Any] | None = None,
    options: AdapterOptions | None = None,
    **overrides: Unpack[OptionKeywords],
) -> Any:
    """A guarded ``grpc.aio`` channel to ``target``: the recommended way to
    guard grpc.aio calls (the same call step as :func:`aio_interceptors`,
    at a lower cost per call).

    ``credentials`` (a secure channel when given), ``channel_options``
    (grpc's channel arguments), ``compression`` and ``interceptors`` are
    grpc's own; the caller's interceptors run outside ours. ``config``,
    ``options`` and the keywords are :func:`aio_interceptors`'. Unary-unary
    calls are guarded without grpc's interceptor machinery unless
    ``wait=True`` or ``interceptors`` are given (see :mod:`.grpc_channel`).
    Call it inside a running event loop, as ``grpc.aio.insecure_channel``.
    Raises TypeError / ValueError naming a bad argument.
    """
    from .grpc_channel import GuardedAioChannel  # it builds on this module

    step = RpcCallStep(provider_type, provider, config, options=options, **overrides)
    own = list(interceptors or ())
    stream = AioUnaryStreamInterceptor(step)
    direct = not own and not step.wait
    chain = [*own, stream] if direct else [*own, AioUnaryUnaryInterceptor(step), stream]
    # By keyword: an instrumentation that wraps the constructors (OpenTelemetry's
    # grpc.aio one) adds its interceptors to the keyword.
    if credentials is None:
        channel = grpc.aio.insecure_channel(target, channel_options, compression,
                                            interceptors=chain)
    else:
        channel = grpc.aio.secure_channel(target, credentials, channel_options, compression,
                                          interceptors=chain)
    return GuardedAioChannel(channel, step) if direct else channel


# ---------------------------------------------------------------------------
# sync interceptors
# ---------------------------------------------------------------------------


def start_sync_call(step: RpcCallStep, method: Method, caller_timeout: float | None,
                    stream: bool) -> tuple[Settler, float | None]:
    """Admits a sync call of ``method`` through ``step`` (a token waited for
    by the deadline with ``wait``); returns its settler and the timeout to
    send, in seconds or None. Raises the step's rejection when it is not
    admitted. The sync interceptor and the guarded sync channel both start
    their calls here."""
    start = time.perf_counter()
    budget = timeout = step.deadline(method, caller_timeout)
    if step.wait and budget is not None and step.limiter is not None:
        with step.until(budget):
            permit = step.admit(method, start)
        timeout = step.left(budget, start)
    else:
        permit = step.admit(method, start)
    own = stream and _own_deadline(method, budget)
    return Settler(step, permit, method, start, own), timeout


class SyncInterceptor(grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
                      grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """The interceptor of sync ``grpc`` unary-unary and unary-stream calls.

    A blocking call cannot be interrupted from Python: its deadline is what
    gRPC enforces (the method's timeout, capped as documented).
    """

    #: Named ``guard`` before 0.2.0 (the old name warns).
    guard = RenamedAttribute["RpcCallStep"]("step")

    def __init__(self, step: RpcCallStep) -> None:
        self.step = step

    def start(self, method: Method, caller_timeout: float | None,
              stream: bool) -> tuple[Settler, float | None]:
        """:func:`start_sync_call` through this interceptor's step."""
        return start_sync_call(self.step, method, caller_timeout, stream)

    def _start(self, method: Method, details: Any, stream: bool) -> tuple[Settler, Any]:
        settler, timeout = start_sync_call(self.step, method, details.timeout, stream)
        return settler, _with_timeout(details, timeout)

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any,
                              request: Any) -> Any:
        settler, details = self._start(self.step.method(details.method), details, False)
        try:
            outcome = continuation(details, request)
        except Exception as exc:
            raise settler.failed(exc) from exc
        if _finished_ok(outcome):  # a blocking call's answer: grpc's own outcome, settled here
            settler.succeeded()
            return outcome
        return GuardedCall(outcome, settler)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any,
                               request: Any) -> Any:
        settler, details = self._start(self.step.stream_method(details.method), details, True)
        try:
            responses = continuation(details, request)
        except Exception as exc:
            raise settler.failed(exc) from exc
        return GuardedStream(responses, settler)


def _finished_ok(outcome: Any) -> bool:
    """Whether a sync call's outcome has already finished with a response (a
    blocking call's has; a ``.future()`` call's usually has not)."""
    try:
        return bool(outcome.done()) and not outcome.cancelled() and outcome.exception() is None
    except Exception:  # an outcome that cannot say: the guarded call will ask again
        return False


def intercept_channel(
    channel: Any,
    provider_type: str,
    provider: str,
    config: Config | None = None,
    *,
    options: AdapterOptions | None = None,
    **overrides: Unpack[OptionKeywords],
) -> Any:
    """``channel`` guarded, each call by an :class:`RpcCallStep` (the
    arguments as :func:`aio_interceptors`): a ``grpc.Channel`` whose
    unary-unary and unary-stream calls go through the step directly
    (:class:`~.grpc_channel.GuardedChannel`), the same as
    ``grpc.intercept_channel(channel, SyncInterceptor(step))`` at a lower
    cost per call."""
    from .grpc_channel import GuardedChannel  # it builds on this module

    step = RpcCallStep(provider_type, provider, config, options=options, **overrides)
    return GuardedChannel(channel, step)
