"""Lua scripts run with EVALSHA: loaded once, reloaded when the server lost them.

Every script of this package touches exactly one key, so it runs on Redis
Cluster too: the key decides the node, and no key of ours needs to share a
slot with another. Keys are used as given; to keep related keys (a
provider's bucket, and your own keys about it) on one node, put the common
part in braces, Redis Cluster's hash tag: ``"{vsphere-prod}:rate"`` and
``"{vsphere-prod}:inventory"`` land in one slot. Time inside a script comes from the
server (``TIME``), never from a client.

:class:`Script` runs a script on any client. For a plain ``redis.Redis``
(one connection pool, no cluster) :class:`Pipe` also offers a fast path used
by the exact bucket's synchronous decisions: the command is encoded once,
and sent over one pooled connection the pipe keeps checked out (another
thread finding it busy borrows from the pool as usual), which skips
redis-py's per-command bookkeeping (pool checkout, retry wrapper,
instrumentation) but keeps its connection, parser and socket timeouts.
There is one pipe per client (:meth:`Pipe.of`), shared by every bucket on
it: a client's buckets hold one connection of its pool between them, however
many there are, and it is dropped when the client's breaker finds Redis lost, so a
restarted server costs one failed command, not one per bucket.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from typing import Any, cast

import redis
from redis.exceptions import NoScriptError, ResponseError

from .. import _validate
from .clients import AsyncClient, SyncClient, describe
from .failures import key_error

__all__ = ["Script", "Pipe", "pack_command", "check_key", "companion_key", "EPOCH_LUA"]

#: Lua lines that set `now` to the server's time in microseconds since
#: 2020-09-13 (Unix time 1.6e9 s): small enough for a Lua double to hold it
#: to 1/32 us for decades (Unix microseconds would lose a quarter of one).
EPOCH_LUA = """
local clock = redis.call('TIME')
local now = (tonumber(clock[1]) - 1600000000) * 1000000 + tonumber(clock[2])
"""


def check_key(owner: str, key: object) -> str:
    """A Redis key: a non-empty str (TypeError / ValueError naming ``owner``)."""
    key = _validate.string(owner, "key", key)
    if not key:
        raise ValueError(f"{owner} key must be a non-empty str, got {key!r}")
    return key


class Script:
    """A Lua script of this package, run by its SHA1.

    NOSCRIPT (a restarted or flushed server, a failover) is answered by
    loading the script and running it again, once.
    """

    __slots__ = ("source", "sha")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def run(self, client: SyncClient, key: str | tuple[str, ...], *args: object) -> Any:
        """EVALSHA on a sync client (``key``: the key, or the keys, all of one
        slot). An error reply that is the key's problem raises RedisKeyError
        naming it; any other redis-py error propagates."""
        redis_client = cast(Any, client)  # redis-py's own annotations are partial
        keys = _keys(key)
        try:
            try:
                return redis_client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
            except NoScriptError:
                redis_client.script_load(self.source)
                return redis_client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            error = key_error(exc, keys[0], describe(client))
            if error is None:
                raise
            raise error from exc

    async def run_async(self, client: AsyncClient, key: str | tuple[str, ...],
                        *args: object) -> Any:
        """EVALSHA on an asyncio client (keys and errors as :meth:`run`)."""
        redis_client = cast(Any, client)
        keys = _keys(key)
        try:
            try:
                return await redis_client.execute_command("EVALSHA", self.sha, len(keys), *keys,
                                                          *args)
            except NoScriptError:
                await redis_client.script_load(self.source)
                return await redis_client.execute_command("EVALSHA", self.sha, len(keys), *keys,
                                                          *args)
        except ResponseError as exc:
            error = key_error(exc, keys[0], describe(client))
            if error is None:
                raise
            raise error from exc

    def pack(self, key: str | tuple[str, ...], *args: object) -> bytes:
        """This script's EVALSHA, encoded once (for :meth:`Pipe.call`)."""
        keys = _keys(key)
        return pack_command("EVALSHA", self.sha, len(keys), *keys, *args)


def _keys(key: str | tuple[str, ...]) -> tuple[str, ...]:
    return (key,) if isinstance(key, str) else key


def companion_key(key: str, suffix: str, *, cluster: bool) -> str | None:
    """A second key named after ``key``: ``key + suffix``, so an ACL key
    pattern that covers the key (``~allowed:*``) covers it too. On Redis
    Cluster (``cluster``) it must share the key's slot: a key with a hash tag
    keeps it (``key + suffix``); any other key becomes the hash tag of its
    companion, ``"rate"`` -> ``"{rate}" + suffix``, whose slot is
    CRC16("rate"), the key's own; None if none can be named so (a key with a
    ``}`` but no hash tag of its own)."""
    start = key.find("{")
    if not cluster or (start >= 0 and key.find("}", start + 1) > start + 1):
        return key + suffix  # untouched, or tagged: the same tag decides both slots
    if "}" in key:
        return None
    return "{" + key + "}" + suffix


def pack_command(*args: object) -> bytes:
    """A command in the Redis protocol (an array of bulk strings).

    Done here rather than by a connection: our commands are packed once,
    before any connection exists. Numbers are sent as redis-py sends them
    (``repr`` of a float, ``str`` of an int).
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


#: Every live Pipe, to forget their connections in a forked child.
_PIPES: weakref.WeakSet[Pipe] = weakref.WeakSet()
#: The pipe of each client (Pipe.of).
_SHARED: weakref.WeakKeyDictionary[Any, Pipe] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


class Pipe:
    """One connection of a plain ``redis.Redis``'s pool, held for fast decisions.

    Thread-safe: the thread that finds the held connection free uses it; any
    other borrows one from the pool for that command. A connection that
    failed (or was interrupted mid-command) is disconnected, so no reply is
    ever read by the wrong command; the next command reconnects it.
    """

    __slots__ = ("_pool", "_lock", "_conn", "_drop", "_name", "__weakref__")

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._name = describe(client)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._drop = False
        _PIPES.add(self)

    @classmethod
    def of(cls, client: redis.Redis) -> Pipe:
        """The pipe shared by every user of ``client`` (made on first use;
        it lives as long as the client)."""
        with _SHARED_LOCK:
            pipe = _SHARED.get(client)
            if pipe is None:
                pipe = _SHARED[client] = cls(client)
            return pipe

    def drop_connection(self) -> None:
        """Gives the held connection back to the pool, disconnected (the
        server it talked to may be gone); the next command takes another.
        Never blocks: a command using it at this moment drops it when done."""
        self._drop = True
        if self._lock.acquire(blocking=False):
            try:
                self._drop_if_asked()
            finally:
                self._lock.release()

    def _drop_if_asked(self) -> None:
        # Under self._lock.
        if self._drop:
            self._drop = False
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.disconnect()
                self._pool.release(conn)

    @staticmethod
    def usable(client: SyncClient) -> bool:
        """Whether ``client`` is a plain pooled ``redis.Redis`` (else use Script.run)."""
        return (type(client) is redis.Redis and getattr(client, "connection", None) is None
                and hasattr(client.connection_pool, "get_connection"))

    def call(self, script: Script, packed: bytes, key: str, *args: object) -> Any:
        """Sends ``packed`` (``script``'s EVALSHA of ``key`` and ``args``) and
        returns the reply; on NOSCRIPT loads the script and runs it again.
        Errors as :meth:`Script.run`."""
        try:
            try:
                return self._send(packed)
            except NoScriptError:
                self._send(pack_command("SCRIPT", "LOAD", script.source))
                return self._send(packed)
        except ResponseError as exc:
            error = key_error(exc, key, self._name)
            if error is None:
                raise
            raise error from exc

    def _send(self, packed: bytes) -> Any:
        if self._lock.acquire(blocking=False):
            try:
                conn = self._conn
                if conn is None:
                    conn = self._conn = self._pool.get_connection()
                return _round_trip(conn, packed)
            finally:
                if self._drop:
                    self._drop_if_asked()
                self._lock.release()
        conn = self._pool.get_connection()
        try:
            return _round_trip(conn, packed)
        finally:
            self._pool.release(conn)

    def _forget(self) -> None:
        # In a forked child: the connection (and the lock's state) belong to
        # the parent; redis-py's pool resets itself in the child likewise.
        self._lock = threading.Lock()
        self._conn = None
        self._drop = False


def _round_trip(conn: Any, packed: bytes) -> Any:
    try:
        conn.send_packed_command((packed,), check_health=False)
        return conn.read_response()
    except ResponseError:
        raise  # an error reply: the connection is in step
    except BaseException:
        conn.disconnect()  # a timeout or an interruption may leave a reply unread
        raise


def _forget_all() -> None:
    for pipe in list(_PIPES):
        pipe._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all)
