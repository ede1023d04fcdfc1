"""The httpx conventions kept by the clients and transports, against real servers on 127.0.0.1.

- httpx auth flows (digest, a session re-login) and response event hooks see
  every response, 401 included: the taxonomy error comes after them;
- nothing unclassified escapes (table-driven, sync and async, with and
  without raise_for_status): bodies cut or stalled mid-read, connections
  accepted and closed, refusals, timeouts, our breaker and limiter; each
  error is a taxonomy error *and* its httpx error;
- at most 64 KiB of an error body is read;
- non-idempotent requests (POST, PATCH) are retried only when they never left;
- 501 is NotSupported and no breaker failure.

uvicorn serves the well-behaved answers; :class:`BrokenServer`, a raw
asyncio server, the broken ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import http
import itertools
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience.providers import never_sent  # noqa: E402
from virtrigaud_resilience.providers import http as vrh  # noqa: E402

from loopback import (  # noqa: E402
    DroppingServer,
    HttpServer,
    HttpState,
    asgi_app,
    closed_port,
    serving,
)

_labels = itertools.count()

#: A short read timeout only (a loaded machine may take longer to connect).
READ_SLOW = httpx.Timeout(5.0, read=0.3)


# -- servers ------------------------------------------------------------------------------------


class BrokenServer:
    """A raw asyncio HTTP/1.1 server on 127.0.0.1 (own thread and loop) whose
    answers break by path: ``/cut/404`` sends that status and 12 of the 1000
    bytes its Content-Length promises, then closes; ``/stall/500`` sends them
    and then nothing; ``/close`` reads the request and closes unanswered;
    ``/endless/500`` sends 8 MiB of a chunked body, then cuts it; ``/badgzip/200`` a
    gzip body that is not gzip; ``/redirect`` redirects to itself."""

    def __init__(self) -> None:
        self.hits = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()),
                                        name="broken-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BrokenServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the broken HTTP server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        handlers: set[asyncio.Task[None]] = set()

        def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.ensure_future(self._answer(reader, writer))
            handlers.add(task)
            task.add_done_callback(handlers.discard)

        server = await asyncio.start_server(track, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if length:
                await reader.readexactly(int(length.group(1)))
            self.hits += 1
            parts = head.split(b" ", 2)[1].decode().strip("/").split("/")
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 200
            await getattr(self, f"_{parts[0]}")(writer, status)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up
        finally:
            writer.close()

    @staticmethod
    async def _head(writer: asyncio.StreamWriter, status: int, *headers: str) -> None:
        lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", *headers,
                 "Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode())
        await writer.drain()

    async def _close(self, writer: asyncio.StreamWriter, status: int) -> None:
        pass

    async def _cut(self, writer: asyncio.StreamWriter, status: int) -> None:
        await self._head(writer, status, "Content-Length: 1000")
        writer.write(b"partial body")
        await writer.drain()

    async def _stall(self, writer: asyncio.StreamWriter, status: int) -> None:
        await self._cut(writer, status)
        await asyncio.sleep(60)  # cancelled when the server stops

    async def _endless(self, writer: asyncio.StreamWriter, status: int) -> None:
        await self._head(writer, status, "Transfer-Encoding: chunked")
        chunk = b"%x\r\n%s\r\n" % (8192, b"x" * 8192)
        for _ in range(1024):  # 8 MiB, then cut: a client reading it all fails, slowly
            writer.write(chunk)
            await writer.drain()

    async def _badgzip(self, writer: asyncio.StreamWriter, status: int) -> None:
        await self._head(writer, status, "Content-Encoding: gzip", "Content-Length: 10")
        writer.write(b"not gzip!!")
        await writer.drain()

    async def _redirect(self, writer: asyncio.StreamWriter, status: int) -> None:
        await self._head(writer, 302, "Location: /redirect", "Content-Length: 0")


USER, PASSWORD, REALM, NONCE = "admin", "s3cret", "vr", "f00dfeed"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - RFC 7616's MD5 digest


def _digest_ok(header: str, method: str) -> bool:
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', header))
    ha1 = _md5(f"{USER}:{REALM}:{PASSWORD}")
    ha2 = _md5(f"{method}:{fields.get('uri', '')}")
    expected = _md5(f"{ha1}:{NONCE}:{fields.get('nc')}:{fields.get('cnonce')}:"
                    f"{fields.get('qop')}:{ha2}")
    return fields.get("username") == USER and fields.get("response") == expected


def auth_app(state: HttpState) -> Any:
    """:func:`loopback.asgi_app` plus ``/digest/*`` (HTTP digest auth, RFC 7616)
    and ``/session/*`` (a header token from ``POST /login``; 401 without one)."""
    plain = asgi_app(state)
    sessions: set[str] = set()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(("/digest", "/session", "/login")):
            await plain(scope, receive, send)
            return
        state.hits += 1
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, extra, body = 200, [], f"hello {path}".encode()
        if path == "/login":
            token = f"token{len(sessions)}"
            sessions.add(token)
            body = token.encode()
        elif path.startswith("/digest"):
            if not _digest_ok(headers.get("authorization", ""), scope["method"]):
                status, body = 401, b"who are you?"
                extra = [(b"www-authenticate",
                          f'Digest realm="{REALM}", nonce="{NONCE}", qop="auth", '
                          f'algorithm=MD5'.encode())]
        elif headers.get("x-session") not in sessions:
            status, body = 401, b"session expired"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain"), *extra]})
        await send({"type": "http.response.body", "body": body})

    return app


class Relogin(httpx.Auth):
    """A session re-login flow: on 401, log in again and resend."""

    requires_response_body = True

    def __init__(self) -> None:
        self.token = "stale"
        self.logins = 0

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["X-Session"] = self.token
        response = yield request
        if response.status_code == 401:
            login = yield httpx.Request("POST", request.url.join("/login"))
            self.logins += 1
            self.token = login.text
            request.headers["X-Session"] = self.token
            yield request


@pytest.fixture(scope="module")
def server() -> Iterator[HttpServer]:
    srv = HttpServer(auth_app).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def broken() -> Iterator[BrokenServer]:
    yield from serving(BrokenServer())


# -- helpers -------------------------------------------------------------------------------------


def breaker(threshold: int = 100) -> vr.CircuitBreaker:
    return vr.CircuitBreaker("http-conventions", "http", f"c{next(_labels)}",
                             vr.BreakerConfig(failure_threshold=threshold, reset_timeout=60))


def options(**extra: Any) -> dict[str, Any]:
    extra.setdefault("limiter", None)
    extra.setdefault("breaker", breaker())
    return extra


class Mode:
    """Runs a request through the sync or the async client, the same way."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def request(self, base: str, method: str, path: str, client: dict[str, Any],
                      **kwargs: Any) -> httpx.Response:
        if self.name == "async":
            async with vrh.AsyncResilientClient("http", f"a{next(_labels)}", base_url=base,
                                                **client) as aclient:
                return await aclient.request(method, path, **kwargs)
        with vrh.ResilientClient("http", f"s{next(_labels)}", base_url=base,
                                 **client) as sclient:
            return sclient.request(method, path, **kwargs)

    def __repr__(self) -> str:
        return self.name


MODES = [Mode("async"), Mode("sync")]


# -- auth flows and event hooks -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES, ids=repr)
async def test_digest_auth_sees_the_401_and_succeeds(server: HttpServer, mode: Mode) -> None:
    cb = breaker()
    response = await mode.request(server.url, "GET", "/digest/vms/1",
                                  options(breaker=cb, auth=httpx.DigestAuth(USER, PASSWORD)))
    assert response.status_code == 200 and response.text == "hello /digest/vms/1"
    assert [r.status_code for r in response.history] == [401]
    assert (cb.failures, cb.successes) == (0, 2)  # the challenge is an answer
    with pytest.raises(vr.UnauthorizedError) as info:  # a wrong password still raises, after
        await mode.request(server.url, "GET", "/digest/vms/1",
                           options(auth=httpx.DigestAuth(USER, "wrong")))
    assert isinstance(info.value, httpx.HTTPStatusError)
    assert info.value.response.text == "who are you?"


@pytest.mark.parametrize("mode", MODES, ids=repr)
async def test_a_relogin_flow_sees_the_401_and_succeeds(server: HttpServer, mode: Mode) -> None:
    auth = Relogin()
    response = await mode.request(server.url, "GET", "/session/vms/1", options(auth=auth))
    assert response.status_code == 200 and response.text == "hello /session/vms/1"
    assert auth.logins == 1


@pytest.mark.parametrize("mode", MODES, ids=repr)
@pytest.mark.parametrize("status", [401, 404, 407, 503])
async def test_event_hooks_see_the_error_response_before_it_raises(
        server: HttpServer, mode: Mode, status: int) -> None:
    seen: list[tuple[int, bool]] = []

    def on_response(response: httpx.Response) -> None:
        seen.append((response.status_code, response.is_closed))

    async def on_response_async(response: httpx.Response) -> None:
        on_response(response)

    hooks = {"response": [on_response_async if mode.name == "async" else on_response]}
    with pytest.raises(vr.ProviderError) as info:
        await mode.request(server.url, "GET", f"/status/{status}",
                           options(event_hooks=hooks))
    assert seen == [(status, False)]  # the hook saw it open, before the error
    assert isinstance(info.value, httpx.HTTPStatusError)
    assert info.value.response.text == f"answer to /status/{status}"


@pytest.mark.parametrize("mode", MODES, ids=repr)
async def test_a_hooks_own_raise_for_status_is_classified(server: HttpServer,
                                                          mode: Mode) -> None:
    def strict(response: httpx.Response) -> None:
        response.raise_for_status()

    async def strict_async(response: httpx.Response) -> None:
        strict(response)

    hooks = {"response": [strict_async if mode.name == "async" else strict]}
    with pytest.raises(vr.UnavailableError) as info:
        await mode.request(server.url, "GET", "/status/503", options(event_hooks=hooks))
    assert isinstance(info.value, httpx.HTTPStatusError) and info.value.retryable


# -- nothing unclassified escapes ---------------------------------------------------------------

#: case -> (server, method, path, request kwargs, taxonomy class, httpx class, retryable,
#: breaker failures, never sent)
FAILURES: dict[str, tuple[str, str, str, dict[str, Any], type[vr.ProviderError], type[Exception],
                          bool, int, bool]] = {
    "error body cut": ("broken", "GET", "/cut/404", {}, vr.UnavailableError,
                       httpx.RemoteProtocolError, True, 1, False),
    "ok body cut": ("broken", "GET", "/cut/200", {}, vr.UnavailableError,
                    httpx.RemoteProtocolError, True, 1, False),
    "error body stalls": ("broken", "GET", "/stall/500", {"timeout": READ_SLOW},
                          vr.OperationTimeoutError, httpx.ReadTimeout, True, 1, False),
    "ok body stalls": ("broken", "GET", "/stall/200", {"timeout": READ_SLOW},
                       vr.OperationTimeoutError, httpx.ReadTimeout, True, 1, False),
    "accepted and closed": ("broken", "GET", "/close", {}, vr.UnavailableError,
                            httpx.RemoteProtocolError, True, 1, False),
    "POST body cut": ("broken", "POST", "/cut/201", {"content": b"{}"}, vr.UnavailableError,
                      httpx.RemoteProtocolError, False, 1, False),
    "refused": ("closed", "GET", "/x", {}, vr.UnavailableError, httpx.ConnectError, True, 1,
                True),
    "POST refused": ("closed", "POST", "/x", {}, vr.UnavailableError, httpx.ConnectError, True,
                     1, True),
    "headers time out": ("uvicorn", "GET", "/sleep/2", {"timeout": READ_SLOW},
                         vr.OperationTimeoutError, httpx.ReadTimeout, True, 1, False),
    "body not gzip": ("broken", "GET", "/badgzip/200", {}, vr.RetryableError,
                      httpx.DecodingError, True, 0, False),
    "redirect loop": ("broken", "GET", "/redirect", {"follow_redirects": True},
                      vr.InvalidSpecError, httpx.TooManyRedirects, False, 0, False),
    "unsupported scheme": ("uvicorn", "GET", "ftp://127.0.0.1/file", {}, vr.NotSupportedError,
                           httpx.UnsupportedProtocol, False, 0, False),
}


@pytest.mark.parametrize("raise_for_status", [True, False], ids=["raising", "passing"])
@pytest.mark.parametrize("mode", MODES, ids=repr)
@pytest.mark.parametrize("case", list(FAILURES))
async def test_nothing_unclassified_escapes(server: HttpServer, broken: BrokenServer,
                                            case: str, mode: Mode,
                                            raise_for_status: bool) -> None:
    where, method, path, kwargs, expected, raw, retryable, failures, unsent = FAILURES[case]
    base = {"broken": broken.url, "uvicorn": server.url,
            "closed": f"http://127.0.0.1:{closed_port()}"}[where]
    cb = breaker()
    with pytest.raises(httpx.HTTPError) as info:  # `except httpx.HTTPError` keeps working
        await mode.request(base, method, path,
                           options(breaker=cb, raise_for_status=raise_for_status), **kwargs)
    error = info.value
    assert isinstance(error, expected) and isinstance(error, raw), type(error).__mro__
    assert error.retryable is retryable and never_sent(error) is unsent
    assert isinstance(error.__cause__, raw) and not isinstance(error.__cause__, vr.ProviderError)
    assert error.request.method == method
    assert cb.failures == failures and cb.half_open_calls == 0


@pytest.mark.parametrize("mode", MODES, ids=repr)
async def test_our_rejections_are_httpx_transport_errors(server: HttpServer, mode: Mode) -> None:
    cb = breaker()
    cb.force_open()
    hits = server.hits
    with pytest.raises(httpx.TransportError) as opened:
        await mode.request(server.url, "GET", "/vms/1", options(breaker=cb,
                                                                raise_for_status=False))
    bucket = vr.TokenBucket(qps=0.01, burst=1)
    bucket.try_acquire()
    with pytest.raises(httpx.TransportError) as limited:
        await mode.request(server.url, "POST", "/vms", options(limiter=bucket))
    assert isinstance(opened.value, vr.CircuitOpenError) and never_sent(opened.value)
    assert isinstance(limited.value, vr.RateLimitError) and never_sent(limited.value)
    assert limited.value.retryable  # never sent: a POST may be retried
    assert opened.value.request.url.path == "/vms/1" and server.hits == hits


async def test_the_async_deadline_is_an_httpx_timeout() -> None:
    trickling = DroppingServer(trickle=True).start()  # headers that never end
    try:
        cb = breaker()
        async with vrh.AsyncResilientClient("http", "deadline", base_url=trickling.url,
                                            **options(breaker=cb,
                                                      timeouts={"Describe": 0.2})) as client:
            with pytest.raises(httpx.TimeoutException, match="deadline of 0.2s") as info:
                await asyncio.wait_for(client.get("/slow-headers"), 10)
        assert isinstance(info.value, vr.OperationTimeoutError) and cb.failures == 1
        assert info.value.request.url.path == "/slow-headers"
    finally:
        trickling.stop()


@pytest.mark.parametrize("mode", MODES, ids=repr)
async def test_at_most_64_kib_of_an_error_body_is_read(broken: BrokenServer,
                                                       mode: Mode) -> None:
    cb = breaker()
    with pytest.raises(vr.RetryableError) as info:  # not the error of the cut at 8 MiB
        await mode.request(broken.url, "GET", "/endless/500", options(breaker=cb))
    content = info.value.response.content
    assert len(content) == vrh.ERROR_BODY_LIMIT and set(content) == {ord("x")}
    assert info.value.response.is_closed and cb.failures == 1
    assert "xxxx..." in str(info.value)  # the message quotes its start


def test_a_bare_transport_reads_at_most_64_kib_too(broken: BrokenServer) -> None:
    with httpx.Client(base_url=broken.url,
                      transport=vrh.ResilientTransport("http", "bare", **options())) as client:
        with pytest.raises(vr.UnavailableError) as info:
            client.get("/endless/503")
    assert len(info.value.response.content) == vrh.ERROR_BODY_LIMIT


async def half_open(name: str) -> vr.CircuitBreaker:
    """A breaker whose reset timeout has passed: the next call is its one probe."""
    cb = vr.CircuitBreaker("http-conventions", "http", name,
                           vr.BreakerConfig(failure_threshold=1, reset_timeout=0.01,
                                            half_open_max_calls=1))
    permit = cb.try_acquire()
    assert permit is not None
    permit.failure()
    await asyncio.sleep(0.02)
    return cb


async def test_a_stream_holds_its_probe_until_closed(server: HttpServer) -> None:
    cb = await half_open("probe")
    async with vrh.AsyncResilientClient("http", "stream", base_url=server.url,
                                        **options(breaker=cb)) as client:
        async with client.stream("GET", "/vms/1") as response:
            assert cb.half_open_calls == 1  # the answer is not whole yet
            assert await response.aread() == b"answer to /vms/1"
        assert cb.state is vr.BreakerState.CLOSED and cb.half_open_calls == 0


async def test_a_reader_cancelled_mid_body_records_nothing(broken: BrokenServer) -> None:
    cb = await half_open("cancel-body")
    async with vrh.AsyncResilientClient("http", "cancel-body", base_url=broken.url,
                                        **options(breaker=cb)) as client:
        task = asyncio.ensure_future(client.get("/stall/200"))  # the body never completes
        while cb.half_open_calls == 0 and not task.done():
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the headers are in, the body stalls
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert cb.half_open_calls == 0 and cb.state is vr.BreakerState.HALF_OPEN
    assert cb.failures_total == 1  # only the failure that opened it


# -- idempotency --------------------------------------------------------------------------------


def retrying(attempts: list[BaseException]) -> vr.Policy:
    return (vr.PolicyBuilder(f"http-idempotency-{next(_labels)}")
            .with_retry(vr.RetryConfig(max_attempts=3, base_delay=0.01),
                        on_retry=lambda attempt, exc, delay: attempts.append(exc))
            .with_clock(vr.ManualClock()).build())


@pytest.mark.parametrize("mode", MODES, ids=repr)
@pytest.mark.parametrize(("method", "kwargs", "retried"), [
    ("POST", {}, False),
    ("PATCH", {}, False),
    ("POST", {"headers": {"Idempotency-Key": "k-1"}}, True),
    ("POST", {"extensions": {vrh.IDEMPOTENT_EXTENSION: True}}, True),
    ("PUT", {}, True),
    ("DELETE", {}, True),
    ("GET", {}, True),
    ("GET", {"extensions": {vrh.IDEMPOTENT_EXTENSION: False}}, False),
], ids=["POST", "PATCH", "POST+Idempotency-Key", "POST+extension", "PUT", "DELETE", "GET",
        "GET+not-idempotent"])
async def test_a_sent_request_is_retried_only_when_idempotent(
        server: HttpServer, mode: Mode, method: str, kwargs: dict[str, Any],
        retried: bool) -> None:
    key = f"idem{next(_labels)}"
    attempts: list[BaseException] = []
    policy = retrying(attempts)
    path = f"/flaky/{key}"
    params = {"fail": "1", "status": "503"}
    if mode.name == "async":
        async with vrh.AsyncResilientClient("http", "idem-a", base_url=server.url,
                                            **options()) as aclient:
            call: Any = policy.execute_async(aclient.request, method, path, params=params,
                                             **kwargs)
            outcome = await _outcome(call)
    else:
        with vrh.ResilientClient("http", "idem-s", base_url=server.url, **options()) as client:
            try:
                outcome = policy.execute(client.request, method, path, params=params, **kwargs)
            except vr.ProviderError as exc:
                outcome = exc
    if retried:
        assert isinstance(outcome, httpx.Response) and outcome.status_code == 200
        assert server.state.flaky[key] == 2 and len(attempts) == 1
    else:
        assert isinstance(outcome, vr.UnavailableError) and not outcome.retryable
        assert outcome.response.status_code == 503  # the taxonomy type is kept
        assert server.state.flaky[key] == 1 and attempts == []


async def _outcome(call: Any) -> Any:
    try:
        return await call
    except vr.ProviderError as exc:
        return exc


@pytest.mark.parametrize("mode", MODES, ids=repr)
async def test_a_post_that_never_left_is_retried(mode: Mode) -> None:
    attempts: list[BaseException] = []
    policy = retrying(attempts)
    base = f"http://127.0.0.1:{closed_port()}"
    if mode.name == "async":
        async with vrh.AsyncResilientClient("http", "refused-a", base_url=base,
                                            **options()) as aclient:
            outcome = await _outcome(policy.execute_async(aclient.post, "/vms", content=b"{}"))
    else:
        with vrh.ResilientClient("http", "refused-s", base_url=base, **options()) as client:
            with pytest.raises(vr.UnavailableError) as info:
                policy.execute(client.post, "/vms", content=b"{}")
            outcome = info.value
    assert isinstance(outcome, vr.UnavailableError) and outcome.retryable
    assert len(attempts) == 2 and all(never_sent(exc) for exc in attempts)


async def test_a_post_that_timed_out_is_not_retried_but_counts(server: HttpServer) -> None:
    attempts: list[BaseException] = []
    cb = breaker()
    async with vrh.AsyncResilientClient("http", "post-timeout", base_url=server.url,
                                        **options(breaker=cb)) as client:
        with pytest.raises(vr.OperationTimeoutError) as info:
            await retrying(attempts).execute_async(client.post, "/sleep/2", timeout=READ_SLOW)
    assert not info.value.retryable and attempts == [] and cb.failures == 1


def test_a_bad_idempotent_extension_is_named(server: HttpServer) -> None:
    with vrh.ResilientClient("http", "bad-ext", base_url=server.url, **options()) as client:
        with pytest.raises(TypeError, match="virtrigaud.idempotent.*str 'yes'"):
            client.post("/vms", extensions={vrh.IDEMPOTENT_EXTENSION: "yes"})


# -- 501 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES, ids=repr)
@pytest.mark.parametrize("raise_for_status", [True, False], ids=["raising", "passing"])
async def test_501_is_not_supported_and_no_breaker_failure(server: HttpServer, mode: Mode,
                                                           raise_for_status: bool) -> None:
    cb = breaker(threshold=1)
    client = options(breaker=cb, raise_for_status=raise_for_status)
    for _ in range(3):
        if raise_for_status:
            with pytest.raises(vr.NotSupportedError) as info:
                await mode.request(server.url, "GET", "/status/501", client)
            assert not info.value.retryable
        else:
            assert (await mode.request(server.url, "GET", "/status/501", client)
                    ).status_code == 501
    assert cb.state is vr.BreakerState.CLOSED and (cb.failures, cb.successes) == (0, 3)


async def test_501_through_a_policy_leaves_its_breaker_closed(server: HttpServer) -> None:
    outer = breaker(threshold=1)  # the policy's and the transport's, as composed
    policy = vr.PolicyBuilder("http-501").with_circuit_breaker(outer).build()
    async with vrh.AsyncResilientClient("http", "501", base_url=server.url,
                                        **options(breaker=outer)) as client:
        for _ in range(2):
            with pytest.raises(vr.NotSupportedError):
                await policy.execute_async(client.get, "/status/501")
    assert outer.state is vr.BreakerState.CLOSED


# -- the clients' own arguments -------------------------------------------------------------------


def test_the_clients_check_their_arguments() -> None:
    with pytest.raises(TypeError, match="ResilientClient raise_for_status"):
        vrh.ResilientClient("http", "bad", raise_for_status="yes")
    with pytest.raises(TypeError, match="AsyncResilientClient raise_for_status"):
        vrh.AsyncResilientClient("http", "bad", raise_for_status=1)
    with pytest.raises(TypeError, match="AsyncResilientTransport transport"):
        vrh.AsyncResilientClient("http", "bad", transport=httpx.HTTPTransport())
    with pytest.raises(TypeError, match="wait"):
        vrh.ResilientClient("http", "bad", wait="no")

