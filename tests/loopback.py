"""Real servers on 127.0.0.1 and free ports, for the adapter tests and benchmarks.

- :class:`GrpcServer`: a ``grpc.aio`` server in a thread of its own, with a
  generic handler (bytes in, bytes out: no protoc) for any method of any
  service. Method names starting with ``Watch`` are unary-stream, the rest
  unary-unary. The request is a command: ``"code=NOT_FOUND;retry-after=7"``
  aborts with that status (and trailing metadata: ``retry-after`` and any
  ``ratelimit-*`` / ``x-ratelimit-*`` key given), ``"sleep=0.5"`` answers
  late, ``"meta=v"`` sends initial metadata ``initial: v`` and trailing
  ``trailing: v``, ``"n=3"`` streams three items (then ``code=`` aborts),
  anything else is echoed.
- :class:`HttpServer`: uvicorn serving :func:`asgi_app` in a thread:
  ``/status/503?retry_after=5`` answers that status (and header),
  ``/sleep/0.5`` answers late, ``/flaky/KEY?fail=2&status=429&retry_after=3``
  fails twice per KEY then answers 200, anything else 200 with a small body.
- :class:`DroppingServer`: accepts TCP connections and closes them unanswered.

Each counts the requests it saw (``hits``) so a test can tell a call that was
never sent from one that was.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, unquote

import grpc
import grpc.aio


def identity(data: bytes) -> bytes:
    """The bytes (de)serialiser of the generic handler."""
    return data


def command(request: bytes) -> dict[str, str]:
    """``b"code=NOT_FOUND;sleep=0.1"`` -> ``{"code": "NOT_FOUND", "sleep": "0.1"}``."""
    text = request.decode()
    return dict(part.split("=", 1) for part in text.split(";") if "=" in part)


class _Handler(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, server: GrpcServer) -> None:
        self._server = server

    def service(self, details: Any) -> Any:
        name = details.method.rsplit("/", 1)[-1]
        if name.startswith("Watch"):
            return grpc.unary_stream_rpc_method_handler(self._stream, identity, identity)
        return grpc.unary_unary_rpc_method_handler(self._unary, identity, identity)

    async def _unary(self, request: bytes, context: Any) -> bytes:
        self._server.hits += 1
        cmd = command(request)
        try:
            if "sleep" in cmd:
                await asyncio.sleep(float(cmd["sleep"]))
        except asyncio.CancelledError:
            self._server.cancelled += 1
            raise
        if "meta" in cmd:  # metadata both ways, to tell a call's own answers from a stand-in's
            await context.send_initial_metadata((("initial", cmd["meta"]),))
            context.set_trailing_metadata((("trailing", cmd["meta"]),))
        if "code" in cmd:
            await self._abort(context, cmd)
        return b"ok:" + request

    async def _stream(self, request: bytes, context: Any) -> Any:
        self._server.hits += 1
        cmd = command(request)
        try:
            for i in range(int(cmd.get("n", "3"))):
                if "sleep" in cmd:
                    await asyncio.sleep(float(cmd["sleep"]))
                yield b"item%d" % i
        except (asyncio.CancelledError, GeneratorExit):
            # A cancel that finds the handler suspended at its yield closes the
            # generator (GeneratorExit) instead of cancelling its sleep: both count.
            self._server.cancelled += 1
            raise
        if "code" in cmd:
            await self._abort(context, cmd)

    @staticmethod
    async def _abort(context: Any, cmd: dict[str, str]) -> None:
        quota = tuple((key, unquote(value)) for key, value in cmd.items()
                      if key == "retry-after" or "ratelimit-" in key)
        if quota:
            context.set_trailing_metadata(quota)
        await context.abort(getattr(grpc.StatusCode, cmd["code"]), f"injected {cmd['code']}")


class GrpcServer:
    """A grpc.aio server on 127.0.0.1 in its own thread and event loop."""

    def __init__(self) -> None:
        self.hits = 0
        self.cancelled = 0
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="grpc-loopback", daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> GrpcServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the gRPC test server did not start")
        return self

    def stop(self) -> None:
        """Stops the server (once: again does nothing), cancelling calls in flight."""
        loop, self._loop = self._loop, None
        if loop is not None and self._stop is not None:
            loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_Handler(self),))
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop(None)


class HttpState:
    """What the ASGI app counts and remembers."""

    def __init__(self) -> None:
        self.hits = 0
        self.flaky: collections.Counter[str] = collections.Counter()


def asgi_app(state: HttpState) -> Any:
    """The small ASGI app of :class:`HttpServer` (see the module docstring)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        state.hits += 1
        parts = scope["path"].strip("/").split("/")
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        status = 200
        if parts[0] == "sleep":
            await asyncio.sleep(float(parts[1]))
        elif parts[0] == "status":
            status = int(parts[1])
        elif parts[0] == "flaky":
            state.flaky[parts[1]] += 1
            if state.flaky[parts[1]] <= int(query.get("fail", "1")):
                status = int(query.get("status", "503"))
        headers = [(b"content-type", b"text/plain")]
        if "retry_after" in query and status != 200:
            headers.append((b"retry-after", query["retry_after"].encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"answer to " + scope["path"].encode()})

    return app


class HttpServer:
    """uvicorn serving :func:`asgi_app` (or ``app(state)``) on 127.0.0.1, in a thread."""

    def __init__(self, app: Any = None) -> None:
        import uvicorn

        self.state = HttpState()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # uvicorn sets TCP_NODELAY on sockets it makes, not on one it is given;
        # accepted sockets inherit it from this one (else each answer waits 40 ms
        # for a delayed ACK between its header and body writes).
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config((app or asgi_app)(self.state), log_level="warning", lifespan="off",
                                access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._socket]},
                                        name="http-loopback", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hits(self) -> int:
        return self.state.hits

    def start(self) -> HttpServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the HTTP test server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._server.force_exit = True  # requests still sleeping are not waited for
        self._thread.join(10)
        self._socket.close()


class DroppingServer:
    """Accepts connections on 127.0.0.1 and closes them without a word; with
    ``trickle``, answers with a header line every 30 ms instead, forever (no
    read ever waits long, yet the response never arrives)."""

    def __init__(self, trickle: bool = False) -> None:
        self.trickle = trickle
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self.accepted = 0
        self._running = True
        self._thread = threading.Thread(target=self._run, name="dropping", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DroppingServer:
        self._thread.start()
        return self

    def _run(self) -> None:
        while self._running:
            try:
                conn, _ = self._socket.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            _drain(conn)
            if self.trickle:
                threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()
            else:
                conn.close()

    def _trickle(self, conn: socket.socket) -> None:
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while self._running:
                conn.sendall(b"X-Still-Thinking: yes\r\n")
                time.sleep(0.03)
        except OSError:
            pass  # the client gave up
        finally:
            conn.close()

    def stop(self) -> None:
        self._running = False
        self._thread.join(5)
        self._socket.close()


def _drain(conn: socket.socket) -> None:
    """Reads the whole request (until the client pauses 50 ms for an answer):
    a socket closed with unread data sends a reset, not the end of the
    stream, and the client would see another error than a dropped answer."""
    conn.settimeout(0.05)
    try:
        while conn.recv(65536):
            pass
    except (TimeoutError, OSError):
        pass
    conn.settimeout(None)


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Startable(Protocol):
    def start(self) -> Any: ...

    def stop(self) -> None: ...


_Server = TypeVar("_Server", bound=_Startable)


def serving(server: _Server) -> Iterator[_Server]:
    """A fixture's body: ``server`` started, yielded, and stopped however the
    tests using it end (``yield from serving(HttpServer())``)."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
