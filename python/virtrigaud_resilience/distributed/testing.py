"""A throwaway ``redis-server`` for tests: on a free loopback port, stopped when done.

::

    from virtrigaud_resilience.distributed.testing import RedisServer

    with RedisServer() as server:               # needs redis-server on PATH
        bucket = RedisTokenBucket.from_url(server.url, "key", qps=10, burst=20)
        server.pause()                          # SIGSTOP: a hung server
        server.resume()
        server.kill()                           # SIGKILL: a dead one
        server.restart()                        # the same port, empty

The server binds 127.0.0.1 only, keeps nothing on disk and starts with
``--save ""`` and no append-only file. ``cluster=True`` starts a one-node
Redis Cluster that owns every slot, for ``redis.RedisCluster`` clients.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from types import TracebackType

__all__ = ["RedisServer", "redis_server_path"]

_LIVE: weakref.WeakSet[RedisServer] = weakref.WeakSet()


def redis_server_path() -> str | None:
    """The ``redis-server`` executable on PATH (or in /usr/sbin, /usr/bin), or None."""
    return shutil.which("redis-server") or shutil.which(
        "redis-server", path="/usr/sbin:/usr/bin:/usr/local/bin")


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, for tests and benchmarks.

    Args:
        executable: the redis-server to run (default: :func:`redis_server_path`).
        cluster: start a one-node cluster owning all 16384 slots.
        start_timeout: seconds to wait for the server to answer PING.

    Raises:
        FileNotFoundError: no redis-server.
        RuntimeError: it did not start (its output is in the message).
    """

    def __init__(self, executable: str | None = None, *, cluster: bool = False,
                 start_timeout: float = 10.0) -> None:
        found = executable or redis_server_path()
        if found is None:
            raise FileNotFoundError("redis-server is not installed (Debian: apt install "
                                    "redis-server)")
        self.executable = found
        self.cluster = cluster
        self.start_timeout = start_timeout
        self.port = 0
        self._dir = tempfile.mkdtemp(prefix="virtrigaud-redis-")
        self._log = os.path.join(self._dir, "redis.log")
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._process is None else self._process.pid

    def start(self) -> RedisServer:
        """Starts the server (on a new free port the first time, then the same one)."""
        if self._process is not None:
            raise RuntimeError("this RedisServer is already running")
        for _ in range(5):  # a free port can be taken before the server binds it
            port = self.port or _free_port()
            with open(self._log, "ab") as log:  # the child keeps its own descriptor
                process = subprocess.Popen(self._command(port), cwd=self._dir, stdout=log,
                                           stderr=subprocess.STDOUT)
            if _wait_for_pong(port, process, self.start_timeout):
                self.port, self._process = port, process
                _LIVE.add(self)
                if self.cluster:
                    self._own_all_slots()
                return self
            _stop(process)
            output = self.log_tail()
            if self.port:
                raise RuntimeError(f"redis-server did not start on port {port}: {output}")
        raise RuntimeError(f"redis-server did not start: {output}")

    def stop(self) -> None:
        """Stops the server (SIGTERM, then SIGKILL) and waits for it."""
        process, self._process = self._process, None
        if process is not None:
            if self._paused:
                process.send_signal(signal.SIGCONT)
                self._paused = False
            _stop(process)

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a crash."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()
            self._paused = False

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections stay open, nothing answers)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)
            self._paused = False

    def restart(self) -> RedisServer:
        """Kills the server if it runs and starts a new, empty one on the same port."""
        self.kill()
        return self.start()

    def log_tail(self, size: int = 2000) -> str:
        """The end of the server's output (for failure messages)."""
        try:
            with open(self._log, "rb") as log:
                return log.read()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Stops the server and removes its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _command(self, port: int) -> list[str]:
        command = [self.executable, "--port", str(port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", self._dir,
                   "--logfile", ""]
        if self.cluster:
            command += ["--cluster-enabled", "yes", "--cluster-config-file",
                        os.path.join(self._dir, f"nodes-{port}.conf")]
        return command

    def _own_all_slots(self) -> None:
        _command_reply(self.port, b"CLUSTER ADDSLOTSRANGE 0 16383\r\n")
        deadline = time.monotonic() + self.start_timeout
        while b"cluster_state:ok" not in _command_reply(self.port, b"CLUSTER INFO\r\n"):
            if time.monotonic() > deadline:
                raise RuntimeError("the one-node Redis cluster did not become ready")
            time.sleep(0.05)

    def __repr__(self) -> str:
        state = "running" if self._process is not None else "stopped"
        return f"RedisServer(port={self.port}, {state}{', cluster' if self.cluster else ''})"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _command_reply(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        sock.sendall(command)
        return sock.recv(65536)


def _wait_for_pong(port: int, process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if _command_reply(port, b"PING\r\n").startswith(b"+PONG"):
                return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stops a server process and waits for it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()
