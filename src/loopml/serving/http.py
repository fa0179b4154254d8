"""A lean HTTP/1.1 server for the prediction service: asyncio Protocol + httptools + uvloop.

No framework runs per request: httptools parses, :meth:`ServingApp.handle` returns bytes and
one ``transport.write`` sends the response. Keep-alive and pipelining are supported (responses
go out in request order because handlers run synchronously; admin handlers, which await, pause
reading until they answer). This is what ``uvicorn`` does underneath, minus the ASGI layer,
which is where a FastAPI app spends most of its time at these request sizes.

Shutdown (SIGTERM/SIGINT) drains: the listening socket closes, idle keep-alive connections are
closed, every request already begun is answered (with ``connection: close``) within
``deployment.drain_seconds``, and only then are the logs flushed, synced and closed: no request
is answered after its log closed. With ``deployment.log_durability: before_answer`` a response
that logged rows is held until the group commit (:class:`loopml.serving.journal.GroupCommit`)
reports them on disk; later responses on the same connection queue behind it, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import deque
from email.utils import formatdate
from typing import Any

import httptools

from loopml.serving.app import ServingApp

_REASONS = {
    200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 405: b"Method Not Allowed",
    409: b"Conflict", 412: b"Precondition Failed", 413: b"Payload Too Large", 422: b"Unprocessable Entity",
    500: b"Internal Server Error", 503: b"Service Unavailable",
}
_WANTED = frozenset({b"authorization", b"x-request-id", b"expect", b"content-type"})
MAX_BODY = 64 * 1024 * 1024
_TASKS: set[asyncio.Future[None]] = set()  # keeps admin tasks referenced until done


class _Clock:
    """The Date header, refreshed once a second by the loop (not per request)."""

    value = formatdate(usegmt=True).encode()

    @classmethod
    def tick(cls, loop: asyncio.AbstractEventLoop) -> None:
        cls.value = formatdate(usegmt=True).encode()
        loop.call_later(1.0, cls.tick, loop)


def _status_line(code: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (code, _REASONS.get(code, b"Error"))


_STATUS = {c: _status_line(c) for c in _REASONS}


def render(code: int, body: bytes, ctype: bytes, keep_alive: bool) -> bytes:
    """The bytes of one HTTP response."""
    return b"".join(
        (
            _STATUS.get(code) or _status_line(code),
            b"server: loopml\r\ndate: ",
            _Clock.value,
            b"\r\ncontent-type: ",
            ctype,
            b"\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n",
            body,
        )
    )


class Connections:
    """The open connections of a server, so that a shutdown can drain them."""

    def __init__(self) -> None:
        self.open: set[HttpProtocol] = set()
        self.draining = False

    def drain(self) -> None:
        """From now on every response closes its connection; idle connections close at once."""
        self.draining = True
        for conn in list(self.open):
            if conn.idle and conn.transport is not None:
                conn.transport.close()


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    __slots__ = ("_body", "_busy", "_headers", "_held", "_size", "_url", "app", "conns", "parser", "transport")

    def __init__(self, app: ServingApp, conns: Connections | None = None) -> None:
        self.app = app
        self.conns = conns if conns is not None else Connections()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._busy = False  # a request begun and not yet answered
        self._held: deque[tuple[int, int, bytes, bytes, bool]] | None = None  # responses waiting for the group commit

    @property
    def idle(self) -> bool:
        """Between requests: nothing begun, nothing waiting to be sent."""
        return not self._busy and self._held is None

    # -- asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.conns.open.add(self)
        if self.conns.draining:
            transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b'{"error":"protocol upgrade is not supported"}')
        except httptools.HttpParserError as exc:
            self._fail(400, b'{"error":"malformed HTTP request: %s"}' % str(exc).encode().replace(b'"', b"'"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._held = None
        self.conns.open.discard(self)

    # -- httptools callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._busy = True
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n in _WANTED:
            self._headers[n] = value

    def on_headers_complete(self) -> None:
        # curl and others wait for this before sending a large body
        if self._headers.get(b"expect", b"").lower() == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY:
            self._fail(413, b'{"error":"request body larger than 64 MiB"}')
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or (self._held and not self._held[-1][4]):
            return  # (pipelined requests behind a closing response are not handled: never answered, never logged)
        parser = self.parser
        method = parser.get_method()
        keep_alive = parser.should_keep_alive() and not self.conns.draining
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        commit = self.app.commit
        before = commit.ticket() if commit is not None else 0
        try:
            result = self.app.handle(method, self._url, self._headers, body)
        except Exception as exc:  # a bug must not kill the connection loop; it is counted and logged
            self.app.metrics.error(self._url.decode(errors="replace"), "internal")
            sys.stderr.write(f"loopml serve: internal error on {self._url!r}: {type(exc).__name__}: {exc}\n")
            result = (500, b'{"error":"internal error; see the server log"}', b"application/json")
        if result is None:
            transport.pause_reading()
            task = asyncio.ensure_future(self._admin(self._url, dict(self._headers), body, keep_alive))
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)
            return
        code, payload, ctype = result
        if commit is not None:
            ticket = commit.ticket()
            if ticket != before or self._held is not None:
                self._hold(commit, ticket if ticket != before else 0, code, payload, ctype, keep_alive)
                return
        self._send(render(code, payload, ctype, keep_alive), keep_alive)

    def _send(self, data: bytes, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(data)
        if not keep_alive or (self.conns.draining and self._held is None):
            transport.close()
        self._busy = False

    def _hold(self, commit: Any, ticket: int, code: int, payload: bytes, ctype: bytes, keep_alive: bool) -> None:
        """Queue a response until the group commit has its log rows on disk (in order with the ones before)."""
        if self._held is None:
            self._held = deque()
            self.transport.pause_reading()  # a client cannot pile up held responses
        self._held.append((ticket, code, payload, ctype, keep_alive))
        if ticket:
            commit.after(ticket, self._release)

    def _release(self) -> None:
        """Send the held responses whose rows are on disk, in order (a failed sync turns a 200 into 503)."""
        held, commit = self._held, self.app.commit
        if held is None or commit is None:
            return
        while held:
            ticket, code, payload, ctype, keep_alive = held[0]
            if ticket and ticket > commit.durable:
                if ticket > commit.failed_upto:
                    break  # its sync has not ended yet
                code, payload, ctype = 503, b'{"error":"the prediction could not be written to the log; retry"}', \
                    b"application/json"
            held.popleft()
            if not held:
                self._held = None
            self._send(render(code, payload, ctype, keep_alive), keep_alive)
        transport = self.transport
        if self._held is None and transport is not None and not transport.is_closing():
            transport.resume_reading()

    async def _admin(self, url: bytes, headers: dict[bytes, bytes], body: bytes, keep_alive: bool) -> None:
        path = url.split(b"?", 1)[0]
        try:
            code, payload, ctype = await self.app.handle_admin(path, headers, body)
        except Exception as exc:
            sys.stderr.write(f"loopml serve: admin action crashed: {type(exc).__name__}: {exc}\n")
            code, payload, ctype = 500, b'{"error":"internal error; see the server log"}', b"application/json"
        transport = self.transport
        if transport is None:
            return
        keep_alive = keep_alive and not self.conns.draining
        self._send(render(code, payload, ctype, keep_alive), keep_alive)
        if keep_alive:
            transport.resume_reading()

    def _fail(self, code: int, body: bytes) -> None:
        if self.transport is not None:
            self.transport.write(render(code, body, b"application/json", False))
            self.transport.close()
            self.transport = None


def install_uvloop() -> bool:
    """Use uvloop's event loop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


async def serve_app(
    app: ServingApp,
    host: str,
    port: int,
    *,
    poll_seconds: float = 2.0,
    ready_file: str | None = None,
    on_ready: Any = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain (see the module docstring), flush and sync the logs, and return."""
    loop = asyncio.get_running_loop()
    _Clock.tick(loop)
    conns = Connections()
    server = await loop.create_server(lambda: HttpProtocol(app, conns), host, port, reuse_address=True, backlog=1024)
    bound = server.sockets[0].getsockname()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # non-Unix
            loop.add_signal_handler(sig, stop.set)
    poller = asyncio.ensure_future(app.poll_forever(poll_seconds)) if poll_seconds > 0 else None
    if on_ready is not None:
        on_ready(bound)
    if ready_file:
        with open(ready_file, "w") as f:
            f.write(f"{bound[0]} {bound[1]}\n")
    try:
        await stop.wait()
    finally:
        if poller is not None:
            poller.cancel()
        await drain(app, server, conns)


async def drain(app: ServingApp, server: Any, conns: Connections) -> None:
    """Stop accepting, answer what has begun, then close the logs (no answer after they close)."""
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    server.close()
    conns.drain()
    deadline = time.monotonic() + app.drain_seconds
    while (conns.open or _TASKS or (app.commit is not None and not app.commit.idle)) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    left = len(conns.open)
    app.closing = True  # from here on no handler answers (or logs) anything
    for conn in list(conns.open):
        if conn.transport is not None:
            conn.transport.abort()
    t1 = time.perf_counter()
    await loop.run_in_executor(None, app.close)
    sys.stderr.write(
        f"loopml serve: stopped; drained in {t1 - t0:.2f}s"
        + (f" ({left} connection(s) still mid-request were cut)" if left else "")
        + f", logs flushed, synced and written in {time.perf_counter() - t1:.2f}s\n"
    )
