"""Guarded gRPC channels: each unary call guarded without grpc's
interceptor machinery.

grpc's interceptors cost a call more than our call step does: grpc.aio runs
each intercepted call in a task of its own behind an intercepted-call
object (one more event-loop turn per call), and the sync channel builds
call details and outcome objects around each one. A channel here hands out
multi-callables that admit, start grpc's own call and settle its outcome
inline, with the same call step (:class:`~.grpc.RpcCallStep`) and so the same
semantics as the interceptors: deadlines, one admission per attempt,
idempotency, the status mapping, the metrics.

- :class:`GuardedAioChannel` (what :func:`~.grpc.aio_channel` opens) guards
  a ``grpc.aio`` channel's unary-unary calls this way; its unary-stream
  calls go through the stream interceptor (a watch lives long: one task
  more is nothing to it). With ``wait=True`` or interceptors of the
  caller's, :func:`~.grpc.aio_channel` puts every call through the
  interceptors instead (a token wait needs a task of its own, and the
  caller's interceptors must see our errors).
- :class:`GuardedChannel` wraps a sync ``grpc.Channel`` (what
  :func:`~.grpc.intercept_channel` returns): unary-unary (blocking,
  ``with_call`` and ``future``) and unary-stream calls are guarded.

Stream-unary and stream-stream calls pass through unguarded, as with the
interceptors.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Generator
from typing import Any

import grpc
import grpc.aio

from ..breaker import Permit
from .grpc import RpcCallStep, start_sync_call
from .call_step import Method
from .grpc_call import GuardedCall, GuardedStream, Settler, _AioDelegate, _status_now

__all__ = ["GuardedAioChannel", "GuardedAioUnaryCall", "GuardedChannel", "RejectedAioUnaryCall"]


# ---------------------------------------------------------------------------
# grpc.aio
# ---------------------------------------------------------------------------


class GuardedAioChannel(grpc.aio.Channel):  # type: ignore[misc]
    """A ``grpc.aio`` channel whose unary-unary multi-callables are guarded
    (:class:`GuardedAioUnaryCall`); everything else is the channel's own."""

    def __init__(self, channel: Any, step: RpcCallStep) -> None:
        if step.wait:
            raise ValueError("GuardedAioChannel step must not wait for tokens (wait=False), "
                             "got wait=True: a token wait needs a task of its own; "
                             "aio_channel(..., wait=True) puts such calls through the "
                             "interceptors")
        self._channel = channel
        self.step = step

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _AioUnaryUnary(self.step, method, self._channel.unary_unary(method, *args,
                                                                            **kwargs))

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._channel.unary_stream(method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_stream(method, *args, **kwargs)

    async def __aenter__(self) -> GuardedAioChannel:
        await self._channel.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._channel.__aexit__(*exc_info)

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> Any:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: Any) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    def __repr__(self) -> str:
        return f"GuardedAioChannel({self._channel!r}, {self.step!r})"


class _AioUnaryUnary(grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[misc]
    """A guarded unary-unary multi-callable: admits (never waits), starts
    grpc's call, returns it as a :class:`GuardedAioUnaryCall`."""

    __slots__ = ("_step", "_method", "_call")

    def __init__(self, step: RpcCallStep, key: str, call: Any) -> None:
        self._step = step
        self._method = step.method(key)  # resolved once: the key is fixed
        self._call = call

    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Any = None,
                 credentials: Any = None, wait_for_ready: bool | None = None,
                 compression: Any = None) -> Any:
        step, method = self._step, self._method
        start = time.perf_counter()
        timeout = step.deadline(method, timeout)
        try:
            permit = step.admit(method, start)
        except Exception as rejection:  # raised when awaited, as grpc raises its errors
            return RejectedAioUnaryCall(rejection)
        try:
            call = self._call(request, timeout=timeout, metadata=metadata,
                              credentials=credentials, wait_for_ready=wait_for_ready,
                              compression=compression)
        except Exception as exc:  # grpc refused to start it (a closed channel)
            raise step.failed(permit, method, start, exc) from exc
        except BaseException:
            step.cancelled(permit, method, start)
            raise
        return GuardedAioUnaryCall(call, step, permit, method, start)


class GuardedAioUnaryCall(_AioDelegate, grpc.aio.UnaryUnaryCall):  # type: ignore[misc]
    """A guarded ``grpc.aio`` unary-unary call, settled when awaited.

    Awaiting it awaits grpc's call in the caller's own task and records
    the outcome inline: the response, or the taxonomy error that is also
    an ``AioRpcError`` with the call's status. The caller's cancellation
    (its task, or :meth:`cancel`) stays ``asyncio.CancelledError`` and frees
    the breaker slot; a CANCELLED status from the server is an error like
    any other. A call whose response nobody awaits is settled by its status
    when ``code()``, ``details()``, ``trailing_metadata()`` or ``done()``
    report its end, or, dropped unfinished, when grpc finishes it.
    Everything else (metadata, ``time_remaining()``) is grpc's.
    """

    # Settles itself, as grpc_call.Settler does for the wrappers, without a
    # Settler per call: Settler's lock serves sync grpc's callback threads,
    # and this call is only ever settled on its event loop's thread.
    __slots__ = ("_inner", "_step", "_permit", "_method", "_start", "_settled", "_error",
                 "_cause")

    def __init__(self, inner: Any, step: RpcCallStep, permit: Permit | None, method: Method,
                 start: float) -> None:
        self._inner = inner
        self._step = step
        self._permit = permit
        self._method = method
        self._start = start
        self._settled = False
        self._error: BaseException | None = None
        self._cause: BaseException | None = None

    def __await__(self) -> Generator[Any, None, Any]:
        if self._settled:  # awaited again: the same answer, from grpc's finished call
            if self._error is not None:
                raise self._error from self._cause
            return (yield from self._inner.__await__())
        try:
            response = yield from self._inner.__await__()
        except Exception as exc:
            self._settled = True
            step = self._step
            self._error = error = step.failed(self._permit, self._method, self._start, exc)
            self._cause = exc
            raise error from exc
        except BaseException:  # the caller's task was cancelled, or cancel() was called
            self._release()
            raise
        self._settled = True
        self._step.settle(self._permit, self._method, self._start, "OK", False)
        return response

    def cancel(self) -> bool:
        cancelled = bool(self._inner.cancel())
        if cancelled:
            self._release()
        return cancelled

    # A caller that reads how the call ended without awaiting its response
    # settles it too: by the status grpc reports.

    def done(self) -> bool:
        finished = bool(self._inner.done())
        if finished and not self._settled:
            self._settle(_status_now(self._inner))
        return finished

    async def code(self) -> Any:
        status = await self._inner.code()
        self._settle(status)
        return status

    async def details(self) -> Any:
        details = await self._inner.details()
        self._settle(await self._inner.code())
        return details

    async def trailing_metadata(self) -> Any:
        metadata = await self._inner.trailing_metadata()
        self._settle(await self._inner.code())
        return metadata

    def _settle(self, status: Any) -> None:
        if not self._settled and status is not None:
            self._settled = True
            code, outcome = self._step.status_outcome(status)
            self._step.settle(self._permit, self._method, self._start, code, outcome)

    def _release(self) -> None:
        if not self._settled:
            self._settled = True
            self._step.cancelled(self._permit, self._method, self._start)

    def __del__(self) -> None:
        # Dropped before it was awaited: the call goes on in grpc; its end
        # settles it (no slot is held past the call, no outcome is lost).
        if not getattr(self, "_settled", True):
            self._settled = True
            Settler(self._step, self._permit, self._method, self._start).watch(self._inner)


class RejectedAioUnaryCall(grpc.aio.UnaryUnaryCall):  # type: ignore[misc]
    """A unary-unary call the step refused (open breaker, no token): never
    sent; awaiting it raises the rejection, an ``AioRpcError`` whose status
    the call's methods answer."""

    __slots__ = ("_error",)

    def __init__(self, error: BaseException) -> None:
        self._error = error

    def __await__(self) -> Generator[Any, None, Any]:
        raise self._error
        yield  # pragma: no cover - makes this a generator, as grpc's __await__

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def cancel(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        callback(self)

    async def initial_metadata(self) -> Any:
        return self._status("initial_metadata")

    async def trailing_metadata(self) -> Any:
        return self._status("trailing_metadata")

    async def code(self) -> Any:
        return self._status("code")

    async def details(self) -> Any:
        return self._status("details")

    async def debug_error_string(self) -> Any:
        return self._status("debug_error_string")

    async def wait_for_connection(self) -> None:
        raise self._error

    def _status(self, name: str) -> Any:
        read = getattr(self._error, name, None)
        return read() if callable(read) else None


# ---------------------------------------------------------------------------
# sync grpc
# ---------------------------------------------------------------------------


class GuardedChannel(grpc.Channel):  # type: ignore[misc]
    """A sync ``grpc.Channel`` whose unary-unary and unary-stream
    multi-callables are guarded; everything else is the channel's own.

    A blocking call cannot be interrupted from Python: its deadline is what
    gRPC enforces (the method's timeout, capped as documented).
    """

    def __init__(self, channel: Any, step: RpcCallStep) -> None:
        self._channel = channel
        self.step = step
        self._start = functools.partial(start_sync_call, step)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _UnaryUnary(self.step.method(method), self._start,
                           self._channel.unary_unary(method, *args, **kwargs))

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _UnaryStream(self.step.stream_method(method), self._start,
                            self._channel.unary_stream(method, *args, **kwargs))

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_stream(method, *args, **kwargs)

    def subscribe(self, callback: Callable[[Any], None], try_to_connect: bool = False) -> None:
        self._channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Callable[[Any], None]) -> None:
        self._channel.unsubscribe(callback)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GuardedChannel:
        self._channel.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self._channel.__exit__(*exc_info)

    def __repr__(self) -> str:
        return f"GuardedChannel({self._channel!r}, {self.step!r})"


#: start_sync_call bound to a step: (method, caller's timeout, stream) -> (settler, timeout to send)
_Start = Callable[[Method, "float | None", bool], "tuple[Settler, float | None]"]


class _SyncMultiCallable:
    """What a guarded sync multi-callable holds: its method (resolved once),
    how a call of it starts (:func:`~.grpc.start_sync_call`) and
    grpc's own multi-callable."""

    __slots__ = ("_method", "_start", "_call")

    def __init__(self, method: Method, start: _Start, call: Any) -> None:
        self._method = method
        self._start = start
        self._call = call


class _UnaryUnary(_SyncMultiCallable, grpc.UnaryUnaryMultiCallable):  # type: ignore[misc]
    """A guarded sync unary-unary multi-callable."""

    __slots__ = ()

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None,
                 credentials: Any = None, wait_for_ready: bool | None = None,
                 compression: Any = None) -> Any:
        settler, timeout = self._start(self._method, timeout, False)
        try:
            response = self._call(request, timeout, metadata, credentials, wait_for_ready,
                                  compression)
        except Exception as exc:
            raise settler.failed(exc) from exc
        except BaseException:  # interrupted (KeyboardInterrupt): no outcome, the slot freed
            settler.cancelled()
            raise
        settler.succeeded()
        return response

    def with_call(self, request: Any, timeout: float | None = None, metadata: Any = None,
                  credentials: Any = None, wait_for_ready: bool | None = None,
                  compression: Any = None) -> tuple[Any, Any]:
        settler, timeout = self._start(self._method, timeout, False)
        try:
            response, call = self._call.with_call(request, timeout, metadata, credentials,
                                                  wait_for_ready, compression)
        except Exception as exc:
            raise settler.failed(exc) from exc
        except BaseException:
            settler.cancelled()
            raise
        settler.succeeded()
        return response, call

    def future(self, request: Any, timeout: float | None = None, metadata: Any = None,
               credentials: Any = None, wait_for_ready: bool | None = None,
               compression: Any = None) -> Any:
        settler, timeout = self._start(self._method, timeout, False)
        try:
            future = self._call.future(request, timeout, metadata, credentials,
                                       wait_for_ready, compression)
        except Exception as exc:
            raise settler.failed(exc) from exc
        return GuardedCall(future, settler)


class _UnaryStream(_SyncMultiCallable, grpc.UnaryStreamMultiCallable):  # type: ignore[misc]
    """A guarded sync unary-stream multi-callable (:class:`~.grpc_call.GuardedStream`)."""

    __slots__ = ()

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None,
                 credentials: Any = None, wait_for_ready: bool | None = None,
                 compression: Any = None) -> Any:
        settler, timeout = self._start(self._method, timeout, True)
        try:
            responses = self._call(request, timeout, metadata, credentials, wait_for_ready,
                                   compression)
        except Exception as exc:
            raise settler.failed(exc) from exc
        return GuardedStream(responses, settler)

