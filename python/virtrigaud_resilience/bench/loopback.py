"""The loopback servers of the ``adapters`` bench section, in a child process.

A ``grpc.aio`` server with a generic handler (bytes in, the same bytes out:
no protoc) and a minimal HTTP/1.1 keep-alive server on raw asyncio (every
request answered ``200 ok``), both on 127.0.0.1 and free ports, in one
event loop of a process of their own: the client being measured does not
share its interpreter lock with them. Only grpc is needed here (httpx is the
client's); the HTTP server is the standard library's asyncio.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

__all__ = ["METHOD", "serve"]

#: The unary-unary method the bench calls (any name works with the generic handler).
METHOD = "/provider.v1.Provider/Describe"

_ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n"
           b"\r\nok")


def serve(ports: Any, stop: Any) -> None:
    """The child process: puts ``(grpc_port, http_port)`` on the queue
    ``ports``, then serves until the event ``stop`` is set."""
    asyncio.run(_serve(ports, stop))


async def _serve(ports: Any, stop: Any) -> None:
    import grpc
    import grpc.aio

    def echo(request: bytes, context: Any) -> bytes:
        return request

    class Handler(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, details: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(echo, _same, _same)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Handler(),))
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    http = await asyncio.start_server(_http_connection, "127.0.0.1", 0)
    http_port = http.sockets[0].getsockname()[1]
    ports.put((grpc_port, http_port))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, stop.wait)
    http.close()
    await server.stop(None)


def _same(data: bytes) -> bytes:
    return data


async def _http_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request of a keep-alive connection (GETs: no body to read)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:  # else each answer waits for a delayed ACK
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(_ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the client closed the connection
    finally:
        writer.close()
