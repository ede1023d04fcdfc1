"""The call objects the gRPC interceptors hand back, and the settling of each call.

Every guarded call is settled exactly once: its breaker permit gets one
outcome and the metrics one count. A unary call that succeeded is settled
by its interceptor and handed back as grpc made it; a stream, a failed
call and a sync ``.future()`` call are wrapped, and settled by
:class:`Settler`, by whichever learns the outcome first (grpc's done
callback, or the caller reading the result).
The wrappers keep grpc's call semantics: a ``grpc.aio`` call answers
``code()``, ``details()``, the metadata and ``time_remaining()`` from the
call itself (grpc.aio's own intercepted call, the object a stub returns,
raises ``NotImplementedError`` from ``time_remaining()`` whatever the
interceptors; interceptors outside ours get the answer); a sync call is
still a ``grpc.Future``; only the errors a caller sees are mapped to the
taxonomy.

The caller's own cancellation stays what grpc makes it
(``asyncio.CancelledError``, ``grpc.FutureCancelledError``); a CANCELLED
status that came over the wire is an error like any other status.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from ..breaker import Permit
from .call_step import Method

if TYPE_CHECKING:
    from .grpc import RpcCallStep

__all__ = ["FailedAioUnaryCall", "GuardedAioStreamCall", "GuardedCall", "GuardedStream",
           "Settler"]


#: Serialises the first report of every call (a few instructions under it,
#: so one lock for all calls costs less than one per call).
_SETTLING = threading.Lock()


class Settler:
    """Settles one call exactly once and maps its errors.

    ``own_deadline``: the deadline sent with the call is one the interceptor
    chose itself (a stream's), so running into it is no breaker failure.
    Thread-safe: sync grpc runs done callbacks on its own threads.
    """

    __slots__ = ("_step", "_permit", "_method", "_start", "_own_deadline", "_done", "_task")

    def __init__(self, step: RpcCallStep, permit: Permit | None, method: Method, start: float,
                 own_deadline: bool = False) -> None:
        self._step = step
        self._permit = permit
        self._method = method
        self._start = start
        self._own_deadline = own_deadline
        self._done = False
        self._task: asyncio.Future[None] | None = None

    @property
    def done(self) -> bool:
        """Whether the call's outcome has been recorded."""
        return self._done

    @property
    def method_name(self) -> str:
        return self._method.name

    def _first(self) -> bool:
        if self._done:  # the common second report, without the lock
            return False
        with _SETTLING:
            first, self._done = not self._done, True
            return first

    def succeeded(self) -> None:
        """The call ended OK."""
        if self._first():
            self._step.settle(self._permit, self._method, self._start, "OK", False)

    def cancelled(self) -> None:
        """The caller gave up: no breaker outcome, the slot is freed."""
        if self._first():
            self._step.cancelled(self._permit, self._method, self._start)

    def failed(self, failure: BaseException) -> BaseException:
        """Records a failure (the first time); returns the error to raise for it."""
        error, code, outcome = self._step.outcome_of(self._method, failure, self._own_deadline)
        if self._first():
            self._step.settle(self._permit, self._method, self._start, code, outcome)
            self._step.failed_quota(error)
        return error

    def status(self, status: Any) -> None:
        """Records the call by its final status code alone."""
        if self._first():
            code, outcome = self._step.status_outcome(status, self._own_deadline)
            self._step.settle(self._permit, self._method, self._start, code, outcome)

    # -- sync futures ------------------------------------------------------------------

    def settle_future(self, future: Any) -> BaseException | None:
        """Settles from a finished sync grpc future; returns the mapped error
        (None: success, or the caller's cancellation)."""
        try:
            if future.cancelled():
                self.cancelled()
                return None
            failure = future.exception()
        except grpc.FutureCancelledError:
            self.cancelled()
            return None
        if failure is None:
            self.succeeded()
            return None
        return self.failed(failure)

    # -- grpc.aio calls --------------------------------------------------------------------

    def watch(self, call: Any) -> None:
        """Settles ``call`` when it finishes, even if nobody reads its outcome."""
        if call.done():
            self.on_aio_done(call)
        else:
            call.add_done_callback(self.on_aio_done)

    def on_aio_done(self, call: Any) -> None:
        """Done callback of a grpc.aio call: records its status, unless a
        reader already has."""
        if self._done:
            return
        status = _status_now(call)
        if status is not None:
            self.status(status)
        else:  # not readable without waiting (a call of another interceptor): ask the loop
            self._task = asyncio.ensure_future(self._settle_later(call))

    async def _settle_later(self, call: Any) -> None:
        self.status(await call.code())


def _status_now(call: Any) -> Any:
    """The status code of a finished grpc.aio call, read without waiting
    (``code()`` of a done call completes at once); None if it would wait."""
    reading = call.code()
    try:
        reading.send(None)
    except StopIteration as finished:
        return finished.value
    except Exception:  # a call that cannot say how it ended: as gRPC's UNKNOWN
        return grpc.StatusCode.UNKNOWN
    reading.close()
    return None


def _locally_cancelled(call: Any) -> bool:
    """Whether a sync call or future was cancelled by this process."""
    cancelled = getattr(call, "cancelled", None)
    try:
        return bool(cancelled()) if callable(cancelled) else False
    except Exception:
        return False


# ---------------------------------------------------------------------------
# grpc.aio
# ---------------------------------------------------------------------------


class _AioDelegate:
    """grpc.aio Call methods answered by the wrapped call (``_inner``)."""

    __slots__ = ()
    _inner: Any

    def cancelled(self) -> bool:
        return bool(self._inner.cancelled())

    def done(self) -> bool:
        return bool(self._inner.done())

    def time_remaining(self) -> float | None:
        return self._inner.time_remaining()  # type: ignore[no-any-return]

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._inner.add_done_callback(lambda _: callback(self))

    async def initial_metadata(self) -> Any:
        return await self._inner.initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await self._inner.trailing_metadata()

    async def code(self) -> Any:
        return await self._inner.code()

    async def details(self) -> Any:
        return await self._inner.details()

    async def debug_error_string(self) -> Any:
        return await self._inner.debug_error_string()

    async def wait_for_connection(self) -> None:
        await self._inner.wait_for_connection()


class FailedAioUnaryCall(_AioDelegate, grpc.aio.UnaryUnaryCall):  # type: ignore[misc]
    """A ``grpc.aio`` unary-unary call that failed, already settled: awaiting
    it raises the taxonomy error (from grpc's); everything else is the call's own.

    The unary interceptor returns it instead of raising, so that
    interceptors outside ours still get a call, as from grpc.
    """

    __slots__ = ("_inner", "_error", "_cause")

    def __init__(self, inner: Any, error: BaseException, cause: BaseException) -> None:
        self._inner = inner
        self._error = error
        self._cause = cause

    def cancel(self) -> bool:
        return bool(self._inner.cancel())  # finished: nothing to cancel, nothing to free

    def __await__(self) -> Generator[Any, None, Any]:
        raise self._error from self._cause
        yield  # pragma: no cover - makes this a generator, as grpc's __await__


class GuardedAioStreamCall(_AioDelegate, grpc.aio.UnaryStreamCall):  # type: ignore[misc]
    """A guarded ``grpc.aio`` unary-stream call.

    Each ``__aiter__()`` is a reader of its own (:class:`_Responses`) that
    nothing else holds: when it is closed or collected before the stream's
    end, the call is cancelled and its breaker slot freed at once. (grpc.aio
    keeps a stream's call alive as long as the caller's call object, so this
    is the one place that learns a reader left with ``break``.)
    """

    __slots__ = ("_inner", "_settler", "_reader")

    def __init__(self, inner: Any, settler: Settler) -> None:
        self._inner = inner
        self._settler = settler
        self._reader: _Responses | None = None
        settler.watch(inner)

    def cancel(self) -> bool:
        if self._inner.cancel():
            self._settler.cancelled()
            return True
        return False

    def __aiter__(self) -> AsyncIterator[Any]:
        return _Responses(self._inner, self._settler)

    async def read(self) -> Any:
        if self._reader is None:
            self._reader = _Responses(self._inner, self._settler)
        try:
            return await self._reader.__anext__()
        except StopAsyncIteration:
            return grpc.aio.EOF


class _Responses:
    """One reader of a guarded stream: maps its errors, settles its end."""

    __slots__ = ("_call", "_responses", "_settler")

    def __init__(self, call: Any, settler: Settler) -> None:
        self._call = call
        self._settler = settler
        self._responses = call.__aiter__()

    def __aiter__(self) -> _Responses:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._responses.__anext__()
        except StopAsyncIteration:
            self._settler.succeeded()
            raise
        except asyncio.CancelledError:  # the reader's task was cancelled
            self.stop()
            raise
        except Exception as exc:
            raise self._settler.failed(exc) from exc

    async def aclose(self) -> None:
        self.stop()

    def stop(self) -> None:
        """The reader stopped: an unfinished call is cancelled, its slot freed."""
        if not self._settler.done:
            self._call.cancel()
            self._settler.cancelled()

    def __del__(self) -> None:
        if getattr(self, "_settler", None) is not None:
            self.stop()


# ---------------------------------------------------------------------------
# sync grpc
# ---------------------------------------------------------------------------


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


class GuardedCall(_DelegatedCall, grpc.Future):  # type: ignore[misc]
    """A sync unary call's outcome, with its error mapped to the taxonomy.

    Blocking calls see the mapped error from ``result()``; ``.future()``
    calls keep their semantics (nothing here blocks until asked).
    """

    def __init__(self, inner: Any, settler: Settler) -> None:
        self._inner = inner
        self._settler = settler
        inner.add_done_callback(settler.settle_future)

    def result(self, timeout: float | None = None) -> Any:
        try:
            return self._inner.result(timeout)
        except grpc.FutureTimeoutError:
            raise  # waiting for the result timed out; the call goes on
        except grpc.FutureCancelledError:
            self._settler.cancelled()
            raise
        except Exception as exc:
            error = self._settler.settle_future(self._inner)
            if error is None or error is exc:
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


class GuardedStream(_DelegatedCall):
    """A sync unary-stream call: an iterator of responses whose error is
    mapped; settled when the stream ends, is cancelled, or is dropped."""

    def __init__(self, inner: Any, settler: Settler) -> None:
        self._inner = inner
        self._settler = settler

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._inner)
        except StopIteration:
            self._settler.succeeded()
            raise
        except Exception as exc:
            if _locally_cancelled(self._inner):  # cancel() of ours: the caller's cancellation
                self._settler.cancelled()
                raise grpc.FutureCancelledError(
                    f"{self._settler.method_name}: cancelled") from exc
            raise self._settler.failed(exc) from exc

    def cancel(self) -> bool:
        cancelled = bool(self._inner.cancel())
        self._settler.cancelled()
        return cancelled

    def __del__(self) -> None:
        settler = getattr(self, "_settler", None)
        if settler is not None and not settler.done:  # abandoned mid-stream: free the slot
            try:
                self._inner.cancel()
            finally:
                settler.cancelled()

    def __getattr__(self, name: str) -> Any:  # the rest of the Future API
        return getattr(self._inner, name)
