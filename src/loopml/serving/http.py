"""A lean HTTP/1.1 server for the prediction service: asyncio Protocol + httptools + uvloop.

No framework runs per request: httptools parses, :meth:`ServingApp.handle` returns bytes and
the response waits in its connection's outbox until the end of the event-loop iteration, when
every connection's outbox goes out with one ``transport.write`` each (see "Coalesced writes"
below). Keep-alive and pipelining are supported; responses go out in request order: while a
request is answered asynchronously (an admin action, a large body scored in a worker thread)
later requests of the same connection wait in a queue and the connection is not read. This is what ``uvicorn`` does underneath, minus the ASGI layer, which
is where a FastAPI app spends most of its time at these request sizes (measured in
``python -m benchmarks serving``, row ``loopml-uvicorn``).

What one client may cost is bounded (``deployment.limits``, :class:`HttpLimits`):

* sizes: request line (414), header bytes and count (431), body (413: a larger
  ``Content-Length`` is refused before any of it is read; a chunked body is counted as it
  arrives); rows per request (413, in the app);
* time: the line and headers, and then the body, must arrive within their timeouts (408 and
  close); an idle keep-alive connection is closed; a client that stops reading its responses is
  disconnected after the write timeout;
* memory: while a connection's unsent responses exceed ``max_unsent_bytes`` (the transport's
  ``pause_writing``/``resume_writing`` protocol), it is not read, and requests already received
  wait parsed (at most one read's worth) instead of being answered into the buffer;
* connections: one more than ``max_connections`` is answered 503 and closed;
* load: while the estimated wait exceeds the latency budget, work requests get 503 +
  ``Retry-After`` at once (:class:`ServerState`).

Coalesced writes: the requests that one event-loop iteration read are answered first and
written after, all together, by one callback. Each write to loopback wakes the client; spread
between the answers, every write found the client asleep and paid a cross-core wake-up (most
of a request's kernel time). Written together, the first wake-up finds the later ones already
running: about a third less CPU per request at c=8 (measured with ``python -m benchmarks
serving``; the answers wait at most the rest of the iteration). An outbox larger than
:data:`OUTBOX_BYTES` is written at once, so the unsent-bytes bound still applies; anything that
closes or half-closes a connection writes its outbox first, so order is kept.

Timeouts cost the hot path nothing but two attribute writes: one timer per server (every 10 ms
while it has connections, every 0.5 s while it has none) keeps a coarse clock, measures how long
one event-loop iteration takes (the queueing delay of inline requests) and, a few times a second, sweeps the connections whose deadline passed.

Shutdown (SIGTERM/SIGINT) drains: the listening socket closes, idle keep-alive connections are
closed, every request already begun is answered (with ``connection: close``) within
``deployment.drain_seconds``, and only then are the logs flushed, synced and closed: no request
is answered after its log closed. With ``deployment.log_durability: before_answer`` a response
that logged rows is held until the group commit (:class:`loopml.serving.journal.GroupCommit`)
reports them on disk; later requests on the same connection queue behind it, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

import httptools

from loopml.serving import compiled
from loopml.serving.app import ServingApp
from loopml.serving.bandit import BanditUpdater
from loopml.serving.canary_guard import CanaryGuard

_REASONS = {
    200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
    405: b"Method Not Allowed", 408: b"Request Timeout", 409: b"Conflict", 412: b"Precondition Failed",
    413: b"Payload Too Large", 414: b"URI Too Long", 415: b"Unsupported Media Type", 422: b"Unprocessable Entity",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error", 503: b"Service Unavailable",
}
_WANTED = frozenset({b"authorization", b"x-request-id", b"expect", b"content-length", b"content-type"})
_TASKS: set[asyncio.Future[Any]] = set()  # keeps admin / offload tasks referenced until done
_JSON = b"application/json"
_IDLE, _HEAD, _BODY, _BUSY = 0, 1, 2, 3
#: endpoints whose requests are work (shed under overload); the operational ones always answer
SHEDDABLE = frozenset({b"/v1/predict", b"/v1/feedback"})
TICK_SECONDS = 0.01
#: the timer's period while the server has no connection (nothing to time out, no load to measure)
IDLE_TICK_SECONDS = 0.5
#: the coarse monotonic clock of the connections (set by the servers' timer every TICK_SECONDS)
_now = time.monotonic()
#: after a refusal, input is discarded this long before the connection is dropped (see HttpProtocol._linger)
LINGER_SECONDS = 2.0
#: a connection's outbox is written at once beyond this many bytes (not at the iteration's end)
OUTBOX_BYTES = 64 << 10


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


def render(code: int, body: bytes, ctype: bytes, keep_alive: bool, extra: bytes = b"") -> bytes:
    """The bytes of one HTTP response (``extra``: more header lines, each ending in CRLF)."""
    return b"".join(
        (
            _STATUS.get(code) or _status_line(code),
            b"server: loopml\r\ndate: ",
            _Clock.value,
            b"\r\ncontent-type: ",
            ctype,
            b"\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\n",
            extra,
            b"\r\n" if keep_alive else b"connection: close\r\n\r\n",
            body,
        )
    )


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The connection-level limits (``deployment.limits``; see :class:`loopml.spec.deployment.Limits`)."""

    max_request_line_bytes: int = 8 * 1024
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    max_body_bytes: int = 32 * 1024 * 1024
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    keep_alive_seconds: float = 5.0
    write_timeout_seconds: float = 30.0
    max_connections: int = 1000
    max_unsent_bytes: int = 256 * 1024
    queue_delay_seconds: float = 0.1  # 0: no load shedding

    @classmethod
    def from_spec(cls, limits: Any, latency_p99_ms: float | None = None) -> HttpLimits:
        """From ``deployment.limits`` (and the requirements' latency budget, the default shedding bound)."""
        delay_ms = limits.max_queue_delay_ms
        if delay_ms is None:
            delay_ms = latency_p99_ms if latency_p99_ms is not None else 100.0
        return cls(
            max_request_line_bytes=limits.max_request_line_bytes, max_header_bytes=limits.max_header_bytes,
            max_headers=limits.max_headers, max_body_bytes=limits.max_body_bytes,
            header_timeout_seconds=limits.header_timeout_seconds, body_timeout_seconds=limits.body_timeout_seconds,
            keep_alive_seconds=limits.keep_alive_seconds, write_timeout_seconds=limits.write_timeout_seconds,
            max_connections=limits.max_connections, max_unsent_bytes=limits.max_unsent_bytes,
            queue_delay_seconds=delay_ms / 1000.0,
        )


class ServerState:
    """What the connections of one server share: the limits, the open connections, a coarse clock
    and the load estimate.

    ``iteration`` is the duration of an event-loop iteration's I/O work and ``handled`` counts the
    requests answered, both measured by a pair of ``call_soon`` callbacks around one iteration. With
    N requests in an iteration of T seconds, a request that arrives now waits for the rest of the
    current iteration and for the others before it in the next: ``wait = 2 T (N - 1) / N`` (0 for a
    lone request, however slow: nobody queues behind it). While the smoothed wait (a weight of
    1/4 on the newest iteration) and the waits of the last two iterations exceed the latency
    budget ``shedding`` is on and work requests get 503: a sustained queue sheds within a few
    iterations, a single stalled iteration does not.
    """

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.connections: set[HttpProtocol] = set()
        self.iteration = 0.0
        self.wait = 0.0
        self.handled = 0
        self._handled_a = 0
        self.shedding = False
        self.alert = False  # shedding or draining: the one flag the hot path reads
        self.shed = 0
        self.timeouts = 0
        self.refused_connections = 0
        self.draining = False
        self.outboxes: list[HttpProtocol] = []  # connections with answers to write at the iteration's end
        self._probe_start = 0.0
        self._over = False  # the last iteration's wait exceeded the budget
        self._next_sweep = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.sleeping = False  # no connection: the timer runs every IDLE_TICK_SECONDS (see wake)
        self._sweep_every = max(TICK_SECONDS, min(0.25, limits.header_timeout_seconds / 4,
                                                  limits.keep_alive_seconds / 4))

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the server's one timer."""
        self._loop = loop
        self._tick()

    def _tick(self) -> None:
        global _now
        now = _now = time.monotonic()
        loop = self._loop
        if not self.connections:
            # idle: nothing to time out and no load to measure, so no need to wake 100 times a
            # second (on a shared core every wake-up of an idle server delays a busy one)
            self.sleeping = True
            self.wait, self._over, self.shedding = 0.0, False, False
            self.alert = self.draining
            self._timer = loop.call_later(IDLE_TICK_SECONDS, self._tick)
            return
        self.sleeping = False
        if self.limits.queue_delay_seconds > 0:
            loop.call_soon(self._probe_a)
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_every
            self.sweep(now)
        self._timer = loop.call_later(TICK_SECONDS, self._tick)

    def wake(self) -> None:
        """A connection arrived while the timer slept: the clock and the timer resume at once."""
        if self._timer is not None:
            self._timer.cancel()
        self._tick()

    def flush(self) -> None:
        """Write every connection's outbox (the callback at the end of an iteration that answered)."""
        boxes, self.outboxes = self.outboxes, []
        for conn in boxes:
            conn._flush()

    def _probe_a(self) -> None:
        # runs in the idle phase of this iteration, before its I/O; _probe_b runs after it
        self._probe_start = time.monotonic()
        self._handled_a = self.handled
        self._loop.call_soon(self._probe_b)

    def _probe_b(self) -> None:
        self.iteration = it = time.monotonic() - self._probe_start
        n = self.handled - self._handled_a
        now = 2 * it * (n - 1) / n if n > 1 else 0.0
        self.wait = wait = 0.75 * self.wait + 0.25 * now
        # overload is a queue that stays: one long iteration (the process preempted by another on
        # a busy core, a collector pause) raises the smoothed wait by a quarter of its own only
        budget = self.limits.queue_delay_seconds
        over = now > budget
        self.shedding = wait > budget and over and self._over
        self._over = over
        self.alert = self.shedding or self.draining

    def drain(self) -> None:
        """From now on every response closes its connection; idle connections close at once."""
        self.draining = self.alert = True
        for conn in list(self.connections):
            if conn.idle and conn.transport is not None:
                conn._close()

    def sweep(self, now: float) -> None:
        """Close the connections whose time in their current state ran out."""
        limits = self.limits
        header, body, idle = limits.header_timeout_seconds, limits.body_timeout_seconds, limits.keep_alive_seconds
        expired = []
        for c in self.connections:
            if c._lingering:
                over = now - c._since > LINGER_SECONDS
            elif c._wpaused:
                over = now - c._wsince > limits.write_timeout_seconds
            elif c._busy:
                continue  # an answer is being computed: the client waits for us
            else:
                phase = c._phase
                over = now - c._since > (header if phase == _HEAD else body if phase == _BODY else idle)
            if over:
                expired.append(c)
        for c in expired:
            self.timeouts += 1
            c.timed_out()


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "_body", "_busy", "_dead", "_head", "_headers", "_hold", "_lim_body", "_lim_hbytes", "_lim_headers",
        "_lim_url", "_lingering", "_maxcl", "_nheaders", "_out", "_out_bytes", "_pending",
        "_phase", "_queue", "_since", "_size", "_url", "_wpaused", "_wsince", "app", "limits", "parser",
        "server", "transport",
    )

    def __init__(self, app: ServingApp, server: ServerState) -> None:
        self.app = app
        self.server = server
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._head = 0  # bytes of the current request's headers seen so far
        self._pending = 0  # bytes received in reads that ended inside the current request's head
        self._nheaders = 0
        self._phase = _IDLE
        self._since = _now  # when the current phase began (the sweep compares it with the phase's timeout)
        self._wsince = _now  # when writing was paused
        limits = self.limits
        self._lim_url, self._lim_headers = limits.max_request_line_bytes, limits.max_headers
        self._lim_hbytes, self._lim_body = limits.max_header_bytes, limits.max_body_bytes
        self._maxcl = len(str(limits.max_body_bytes))  # digits of the largest acceptable Content-Length
        self._hold = False  # answers wait: busy, write-paused, or requests queued
        self._busy = False  # an answer is being computed asynchronously
        self._wpaused = False
        self._dead = False
        self._lingering = False
        self._queue: deque[tuple[Any, ...]] = deque()
        self._out: list[bytes] = []  # answers not yet handed to the transport (see "Coalesced writes")
        self._out_bytes = 0

    @property
    def idle(self) -> bool:
        """Between requests: nothing begun, nothing waiting to be answered or sent."""
        return self._phase == _IDLE and not self._hold

    # -- asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        server = self.server
        if server.draining:
            transport.close()
            self.transport = None
            self._dead = True
            return
        if len(server.connections) >= self.limits.max_connections:
            server.refused_connections += 1
            transport.write(render(503, b'{"error":"too many connections; retry later"}', _JSON, False,
                                   b"retry-after: 1\r\n"))
            transport.close()
            self.transport = None
            self._dead = True
            return
        server.connections.add(self)
        if server.sleeping:
            server.wake()
        transport.set_write_buffer_limits(high=self.limits.max_unsent_bytes)
        self._since = _now

    def data_received(self, data: bytes) -> None:
        if self._dead:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if not self._dead:  # a bug in a callback, not a limit: answer 500 rather than hang
                self._fail(500, b'{"error":"internal error while reading the request"}')
            return
        except httptools.HttpParserUpgrade:
            self._fail(400, b'{"error":"protocol upgrade is not supported"}')
            return
        except httptools.HttpParserError as exc:
            self._fail(400, b'{"error":"malformed HTTP request: %s"}' % str(exc).encode().replace(b'"', b"'"))
            return
        if self._phase == _HEAD:
            # the read ended inside a request's head. httptools buffers a header until it is complete,
            # so count the reads that come after the one where the request began (all head bytes: a
            # lower bound of its size, so no false refusal; at most one read too late)
            if self._pending < 0:
                self._pending = 0
                return
            self._pending += len(data)
            if self._pending > self.limits.max_request_line_bytes + self.limits.max_header_bytes:
                self._fail(431, b'{"error":"request headers larger than %d bytes"}' % self.limits.max_header_bytes)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._dead = True
        self._queue.clear()
        self._out.clear()
        self.server.connections.discard(self)

    def pause_writing(self) -> None:
        # the transport holds more than max_unsent_bytes for this client: stop answering and reading
        self._wpaused = True
        self._hold = True
        self._wsince = _now
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._wpaused = False
        if self._phase == _BUSY and not self._busy:
            self._phase = _IDLE
        self._since = _now
        self._drain()

    # -- httptools callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._size = 0
        self._head = 0
        self._pending = -1  # "began in this read" (see data_received)
        self._nheaders = 0
        self._phase = _HEAD
        self._since = _now

    def on_url(self, url: bytes) -> None:
        u = self._url = self._url + url
        if len(u) > self._lim_url:
            self._reject(414, b'{"error":"request line longer than %d bytes"}' % self._lim_url)

    def on_header(self, name: bytes, value: bytes) -> None:
        k = self._nheaders = self._nheaders + 1
        h = self._head = self._head + len(name) + len(value) + 4
        if k > self._lim_headers or h > self._lim_hbytes:
            if k > self._lim_headers:
                self._reject(431, b'{"error":"more than %d request headers"}' % self._lim_headers)
            self._reject(431, b'{"error":"request headers larger than %d bytes"}' % self._lim_hbytes)
        n = name.lower()
        if n in _WANTED:
            self._headers[n] = value

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self._since = _now
        cl = self._headers.get(b"content-length")
        # (llhttp has checked it is digits; only a number as long as the limit needs converting)
        if cl is not None and len(cl) >= self._maxcl and (len(cl) > self._maxcl or int(cl) > self._lim_body):
            self._reject(413, b'{"error":"request body of %s bytes is larger than the limit of %d bytes"}'
                         % (cl[:40], self._lim_body))
        # curl and others wait for this before sending a large body
        if self._headers.get(b"expect", b"").lower() == b"100-continue" and self.transport is not None:
            self._send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        size = self._size = self._size + len(body)
        if size > self._lim_body:
            self._body = []
            self._reject(413, b'{"error":"request body larger than the limit of %d bytes"}' % self._lim_body)
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._dead:
            return
        parser = self.parser
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        if self._hold:  # an earlier answer is pending: keep order, stop reading
            self._phase = _BUSY
            self._queue.append((parser.get_method(), self._url, self._headers, body, parser.should_keep_alive()))
            self.transport.pause_reading()
            return
        self._dispatch(parser.get_method(), self._url, self._headers, body, parser.should_keep_alive())

    # -- answering -----------------------------------------------------------------------------
    def _dispatch(self, method: bytes, url: bytes, headers: dict[bytes, bytes], body: bytes, keep_alive: bool) -> None:
        app = self.app
        server = self.server
        server.handled += 1
        if server.alert:  # draining, or shedding load
            if server.draining:
                keep_alive = False
            if server.shedding and url.split(b"?", 1)[0] in SHEDDABLE:
                server.shed += 1
                app.metrics.error(url.split(b"?", 1)[0].decode(), "overloaded")
                self._write(render(503, b'{"error":"overloaded: the queued work exceeds the latency budget; retry '
                                        b'later"}', _JSON, keep_alive, b"retry-after: 1\r\n"), keep_alive)
                return
        commit = app.commit
        if commit is not None:
            before = commit.ticket()
        try:
            result: Any = app.handle(method, url, headers, body)
        except Exception as exc:  # a bug must not kill the connection loop; it is counted and logged
            app.metrics.error(url.decode(errors="replace"), "internal")
            sys.stderr.write(f"loopml serve: internal error on {url!r}: {type(exc).__name__}: {exc}\n")
            result = (500, b'{"error":"internal error; see the server log"}', _JSON)
        committed = False
        if commit is not None and result.__class__ is tuple and commit.ticket() != before:
            result = self._after_commit(commit, result)  # answered once its log rows are on disk
            committed = True
        if result.__class__ is tuple:
            if len(result) == 3:
                code, payload, ctype = result
                data = render(code, payload, ctype, keep_alive)
            else:  # (status, body, content type, extra header lines)
                code, payload, ctype, extra = result
                data = render(code, payload, ctype, keep_alive, extra)
            if method == b"HEAD":  # the head only (its content-length still says what GET would send)
                data = data[: len(data) - len(payload)]
            self._send(data)
            if not keep_alive:  # (also while draining: see above)
                self._close()
            elif not self._hold:
                self._phase = _IDLE
                self._since = _now
            return
        # answered later (admin action, or a large body scored in a worker thread)
        self._busy = self._hold = True
        self.transport.pause_reading()
        if result is None:
            path = url.split(b"?", 1)[0]
            result = self.app.handle_admin(path, dict(headers), body)
        task = asyncio.ensure_future(self._later(result, keep_alive, committed))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    async def _later(self, pending: Any, keep_alive: bool, committed: bool) -> None:
        try:
            result = await pending
            commit = self.app.commit
            if not committed and commit is not None and commit.ticket() > commit.durable:  # it may have logged
                result = await self._after_commit(commit, result)
        except Exception as exc:
            sys.stderr.write(f"loopml serve: request handler crashed: {type(exc).__name__}: {exc}\n")
            result = 500, b'{"error":"internal error; see the server log"}', _JSON
        self._busy = False
        if self.transport is None:
            return
        if self.server.draining:
            keep_alive = False
        self._write(render(result[0], result[1], result[2], keep_alive, result[3] if len(result) > 3 else b""),
                    keep_alive)
        self._drain()

    async def _after_commit(self, commit: Any, result: Any) -> Any:
        """``result`` once the group commit has the log rows appended so far on disk (503 if its sync failed)."""
        ticket = commit.ticket()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def synced() -> None:
            if not done.done():
                done.set_result(None)

        commit.after(ticket, synced)
        await done
        if ticket > commit.durable:
            return 503, b'{"error":"the prediction could not be written to the log; retry"}', _JSON
        return result

    def _send(self, data: bytes) -> None:
        """Queue ``data`` in the outbox: written at the end of this event-loop iteration (at once when
        the outbox is large: :meth:`_flush` may then call :meth:`pause_writing`)."""
        out = self._out
        if not out:
            boxes = self.server.outboxes
            if not boxes:
                asyncio.get_running_loop().call_soon(self.server.flush)
            boxes.append(self)
        out.append(data)
        size = self._out_bytes = self._out_bytes + len(data)
        if size > OUTBOX_BYTES:
            self._flush()

    def _flush(self) -> None:
        """Hand the outbox to the transport (may call :meth:`pause_writing`)."""
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._out_bytes = 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _write(self, data: bytes, keep_alive: bool) -> None:
        self._send(data)
        if not keep_alive or (self.server.draining and not self._hold and not self._queue):
            self._close()
            return
        if not self._hold:
            self._phase = _IDLE
            self._since = _now

    def _drain(self) -> None:
        """Answer queued requests while nothing holds them; read again once the queue is empty."""
        queue = self._queue
        while queue and not self._busy and not self._wpaused and self.transport is not None:
            item = queue.popleft()
            if item[0] is None:  # a refusal queued behind earlier answers
                self._send_failure(item[1], item[2])
                return
            self._dispatch(*item)
        if self.transport is None or self._busy or self._wpaused:
            return
        self._hold = False
        if self._phase == _BUSY:
            self._phase = _IDLE
        if self.server.draining and self._phase == _IDLE:
            self._close()
            return
        self._since = _now
        if not self._dead:
            self.transport.resume_reading()

    # -- refusals ------------------------------------------------------------------------------
    def _reject(self, code: int, body: bytes) -> None:
        """Refuse the request being read: answer ``code`` (after earlier answers) and close."""
        self._fail(code, body)
        raise _Refused

    def _fail(self, code: int, body: bytes) -> None:
        if self._dead:
            return
        self._dead = True  # nothing more is parsed from this connection
        self._body = []
        if self._hold:
            self._queue.append((None, code, body))
            return
        self._send_failure(code, body)

    def _send_failure(self, code: int, body: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        self._send(render(code, body, _JSON, False))
        self._linger()

    def _linger(self) -> None:
        """Close after a refusal without losing it: closing a socket with unread input makes the kernel
        reset the connection, and a client still sending (a body we refused) may never see the answer.
        So: send the answer and FIN, discard what still arrives, and close when the client does or
        after ``LINGER_SECONDS``."""
        self._flush()
        transport = self.transport
        self._dead = True
        self._queue.clear()
        self._hold = True
        self._lingering = True
        self._since = _now
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()

    def _close(self) -> None:
        self._flush()  # close() sends what the transport holds, then the FIN
        transport = self.transport
        if transport is not None:
            transport.close()
        self._dead = True
        self._queue.clear()
        self.server.connections.discard(self)

    def timed_out(self) -> None:
        """The deadline passed: 408 while a request is being received, else close."""
        transport = self.transport
        if transport is None:
            self.server.connections.discard(self)
            return
        if self._wpaused or self._lingering:  # the client reads nothing (or keeps sending): drop the connection
            self._dead = True
            transport.abort()
            return
        if self._phase in (_HEAD, _BODY) and not self._hold:
            what = b"headers" if self._phase == _HEAD else b"body"
            self._dead = True
            self._send(render(408, b'{"error":"the request %s did not arrive in time"}' % what, _JSON, False))
            self._linger()
            return
        self._close()


class _Refused(Exception):
    """Raised inside an httptools callback to stop parsing a refused request."""


def install_uvloop() -> bool:
    """Use uvloop's event loop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def return_freed_memory() -> None:
    """Make glibc give large freed buffers back to the system.

    A request body or a response of several MB is allocated with ``malloc``; glibc raises its
    ``mmap`` threshold after such a buffer is freed, so the next ones come from the heap and stay
    in the process when freed. A fixed threshold keeps buffers of 256 KiB and more in their own
    mappings, returned to the system as soon as they are freed.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 256 * 1024)
        libc.mallopt(m_trim_threshold, 1024 * 1024)


async def serve_app(
    app: ServingApp,
    host: str,
    port: int,
    *,
    poll_seconds: float = 2.0,
    ready_file: str | None = None,
    on_ready: Any = None,
    limits: HttpLimits | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting, flush the logs and return."""
    loop = asyncio.get_running_loop()
    _Clock.tick(loop)
    state = ServerState(limits or HttpLimits())
    state.start(loop)
    app.server_state = state
    server = await loop.create_server(lambda: HttpProtocol(app, state), host, port, reuse_address=True, backlog=1024)
    bound = server.sockets[0].getsockname()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # non-Unix
            loop.add_signal_handler(sig, stop.set)
    poller = asyncio.ensure_future(app.poll_forever(poll_seconds)) if poll_seconds > 0 else None
    guard = asyncio.ensure_future(CanaryGuard(app).run_forever())  # gates and rolls back a canary by itself
    bandit = asyncio.ensure_future(BanditUpdater(app).run_forever())  # moves a bandit's share by its rewards
    compiler = None
    if app.compile_after_rows is not None and compiled.available():  # hot LightGBM versions get compiled trees
        compiler = asyncio.ensure_future(compiled.TreeCompiler(app, app.compile_after_rows).run_forever())
    if on_ready is not None:
        on_ready(bound)
    if ready_file:  # written whole, then renamed: a reader that sees the file never sees it empty
        tmp = f"{ready_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{bound[0]} {bound[1]}\n")
        os.replace(tmp, ready_file)
    try:
        await stop.wait()
    finally:
        if poller is not None:
            poller.cancel()
        guard.cancel()
        bandit.cancel()
        if compiler is not None:
            compiler.cancel()
        await drain(app, server, state)


async def drain(app: ServingApp, server: Any, state: ServerState) -> None:
    """Stop accepting, answer what has begun, then close the logs (no answer after they close)."""
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    server.close()
    state.drain()
    deadline = time.monotonic() + app.drain_seconds
    while (state.connections or _TASKS or (app.commit is not None and not app.commit.idle)) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    left = len(state.connections)
    app.closing = True  # from here on no handler answers (or logs) anything
    for conn in list(state.connections):
        if conn.transport is not None:
            conn.transport.abort()
    t1 = time.perf_counter()
    await loop.run_in_executor(None, app.close)
    sys.stderr.write(
        f"loopml serve: stopped; drained in {t1 - t0:.2f}s"
        + (f" ({left} connection(s) still mid-request were cut)" if left else "")
        + f", logs flushed, synced and written in {time.perf_counter() - t1:.2f}s\n"
    )
