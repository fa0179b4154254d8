"""The service under abuse, over real sockets to a real `loopml serve`: limits, timeouts,
backpressure, no head-of-line blocking, load shedding.

Every test is bounded in time; the one latency bound (``/health`` while a 100,000-row request is
scored) is a correctness property (the loop is not blocked), not a benchmark figure.
"""

from __future__ import annotations

import json
import select
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from helpers import rows_of

from conftest import SPEC, Server, make_project, start_server

LIMITS = """\
  limits:
    header_timeout_seconds: 1.0
    body_timeout_seconds: 1.0
    keep_alive_seconds: 3.0
    write_timeout_seconds: 5.0
    max_rows_per_request: 100000
    max_body_bytes: 33554432
    max_queue_delay_ms: 50
"""

pytestmark = pytest.mark.timeout(300)


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (``VmRSS`` in ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, click: pa.Table) -> Iterator[Server]:
    root = make_project(tmp_path_factory.mktemp("abuse") / "proj", click)
    (root / "loopml.yaml").write_text(SPEC + LIMITS)
    s = start_server(["--project", str(root)], tmp_path_factory.mktemp("srv"))
    yield s
    s.stop()


def connect(server: Server) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10)


def read_status(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes]:
    """The status code and head of the next response on ``sock`` (0 when the server closed first)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    if not data.startswith(b"HTTP/1.1 "):
        return 0, data
    return int(data[9:12]), data.split(b"\r\n\r\n", 1)[0]


def send_until_answered(sock: socket.socket, head: bytes, chunk: bytes, total: int) -> tuple[int, bytes, int]:
    """Send ``head`` then ``chunk`` repeatedly up to ``total`` bytes, stopping as soon as the server
    answers; returns (status, response head, bytes sent)."""
    sock.sendall(head)
    sent = len(head)
    while sent < total:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            break
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    status, resp = read_status(sock)
    return status, resp, sent


def test_limits_answer_with_their_status_codes(server: Server, click: pa.Table) -> None:
    row = rows_of(click, 1)[0]
    # request line too long: 414
    with connect(server) as s:
        s.sendall(b"GET /health?" + b"a" * 10_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_status(s)[0] == 414
    # too many headers / too large headers: 431
    with connect(server) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n" + b"".join(b"x-h%d: 1\r\n" % i for i in range(150)) + b"\r\n")
        assert read_status(s)[0] == 431
    with connect(server) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nx-big: " + b"b" * 40_000 + b"\r\n\r\n")
        assert read_status(s)[0] == 431
    # body larger than the limit by Content-Length: 413 before any of it is sent
    with connect(server) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 40000000\r\n\r\n")
        status, head = read_status(s)
        assert status == 413 and b"connection: close" in head
    # too many rows: 413 naming the limit
    status, body, _ = server.request("POST", "/v1/predict", [row] * 100_001)
    assert status == 413 and "max_rows_per_request" in body["error"]
    # a body that stops arriving: 408 after the body timeout (1 s here)
    with connect(server) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        t0 = time.monotonic()
        status, _ = read_status(s, timeout=10)
        assert status == 408 and time.monotonic() - t0 < 8
    # a keep-alive connection left idle is closed (keep_alive_seconds: 3)
    with connect(server) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n\r\n")
        assert read_status(s)[0] == 200
        s.settimeout(10)
        assert s.recv(100) == b""  # closed by the server, no response
    # and the server still answers
    assert server.request("GET", "/health")[0] == 200


def test_slow_header_connections_are_closed_while_a_normal_client_is_served(server: Server, click: pa.Table) -> None:
    row = rows_of(click, 1)[0]
    slow = []
    for _ in range(200):
        s = connect(server)
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nhost: x\r\n")
        slow.append(s)
    answered: list[int] = []
    stop = threading.Event()

    def normal_client() -> None:
        while not stop.is_set():
            answered.append(server.request("POST", "/v1/predict", row)[0])
            time.sleep(0.02)

    t = threading.Thread(target=normal_client)
    t.start()
    closed: dict[int, float] = {}
    statuses: dict[int, int] = {}
    t0 = time.monotonic()
    try:
        while len(closed) < len(slow) and time.monotonic() - t0 < 20:
            for i, s in enumerate(slow):  # trickle one header line every 0.3 s (the timeout is 1 s)
                if i in closed:
                    continue
                try:
                    s.sendall(b"x-slow: 1\r\n")
                except OSError:
                    closed[i] = time.monotonic() - t0
                    continue
                readable, _, _ = select.select([s], [], [], 0)
                if readable:
                    statuses[i] = read_status(s, timeout=2)[0]
                    closed[i] = time.monotonic() - t0
            time.sleep(0.3)
    finally:
        stop.set()
        t.join(timeout=30)
        for s in slow:
            s.close()
    assert len(closed) == 200, f"{200 - len(closed)} slow connections still open after 20 s"
    assert max(closed.values()) < 15
    assert statuses and set(statuses.values()) <= {408, 0}
    assert sum(1 for c in statuses.values() if c == 408) >= 150  # the timeout answers 408 before closing
    assert answered and set(answered) == {200}, set(answered)
    assert len(answered) >= 10


def test_unread_pipelined_responses_do_not_grow_memory(server: Server) -> None:
    pid = server.proc.pid
    server.request("GET", "/metrics")
    before = rss_mb(pid)
    socks = [connect(server) for _ in range(4)]
    request = b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n" * 2000
    peak = before
    t0 = time.monotonic()
    for s in socks:
        s.setblocking(False)
    sent = 0
    dropped: dict[int, float] = {}
    while time.monotonic() - t0 < 8:
        for i, s in enumerate(socks):
            if i in dropped:
                continue
            try:
                sent += s.send(request)
            except BlockingIOError:
                pass  # the server stopped reading this connection: backpressure
            except (ConnectionResetError, BrokenPipeError):
                dropped[i] = time.monotonic() - t0
        peak = max(peak, rss_mb(pid))
        time.sleep(0.01)
    assert sent > len(request) * 4  # the clients did send more than one batch each
    assert server.request("GET", "/health")[0] == 200  # others are still served meanwhile
    for s in socks:
        s.close()
    print(f"pipelined, unread: sent {sent / 1e6:.0f} MB of requests, RSS {before:.0f} -> peak {peak:.0f} MB")
    assert peak - before < 50, f"RSS grew from {before:.0f} MB to {peak:.0f} MB"
    # clients that read nothing for write_timeout_seconds (5 s here) are disconnected
    assert len(dropped) == 4 and min(dropped.values()) >= 4, dropped


def test_huge_request_line_and_body_are_refused_without_memory(server: Server) -> None:
    pid = server.proc.pid
    before = rss_mb(pid)
    peak = before
    for _ in range(3):
        with connect(server) as s:  # a 40 MB request line
            status, _, sent = send_until_answered(s, b"GET /", b"a" * (1 << 20), 40 << 20)
            assert status == 414
            assert sent < 40 << 20  # refused long before the line ended
        peak = max(peak, rss_mb(pid))
        with connect(server) as s:  # a 60 MB body announced by Content-Length
            head = b"POST /v1/predict HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (60 << 20)
            status, _, sent = send_until_answered(s, head, b" " * (1 << 20), 60 << 20)
            assert status == 413
        peak = max(peak, rss_mb(pid))
        with connect(server) as s:  # a 60 MB chunked body: counted as it arrives
            head = b"POST /v1/predict HTTP/1.1\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            chunk = b"100000\r\n" + b" " * (1 << 20) + b"\r\n"
            status, _, sent = send_until_answered(s, head, chunk, 60 << 20)
            assert status == 413
            assert sent < 60 << 20
        peak = max(peak, rss_mb(pid))
    time.sleep(0.5)
    after = rss_mb(pid)
    print(f"refused 40 MB lines and 60 MB bodies: RSS {before:.0f} -> peak {peak:.0f} -> {after:.0f} MB")
    assert peak - before < 50, f"RSS grew from {before:.0f} MB to {peak:.0f} MB"
    assert after - before < 50
    assert server.request("GET", "/health")[0] == 200


def test_health_answers_while_a_large_request_is_scored(server: Server, click: pa.Table) -> None:
    rows = rows_of(click, 5000)
    big = json.dumps((rows * 20)[:100_000]).encode()
    result: dict[str, object] = {}

    def send_big() -> None:
        t0 = time.monotonic()
        result["status"], result["body"], _ = server.request("POST", "/v1/predict", raw=big)
        result["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=send_big)
    t.start()
    latencies: list[float] = []
    c = server.conn()
    try:
        while t.is_alive():
            t0 = time.perf_counter()
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            if t.is_alive():
                latencies.append(time.perf_counter() - t0)
            assert r.status == 200
            time.sleep(0.01)
    finally:
        c.close()
        t.join(timeout=120)
    assert result["status"] == 200
    body = result["body"]
    assert isinstance(body, dict) and len(body["scores"]) == 100_000
    print(f"100k rows in {result['seconds']:.2f} s; /health meanwhile: {len(latencies)} answers, median "
          f"{1000 * statistics.median(latencies):.1f} ms, max {1000 * max(latencies):.1f} ms")
    # /health kept answering while the big request was being scored (it used to wait for all of it)
    assert len(latencies) >= 10, (len(latencies), result["seconds"])
    assert statistics.median(latencies) < 0.05, latencies
    assert sum(1 for x in latencies if x < 0.05) >= 0.9 * len(latencies), sorted(latencies)[-5:]
    # the answers are the same as when the rows are sent in small requests
    small = server.request("POST", "/v1/predict", rows[:50])[1]
    assert body["scores"][:50] == pytest.approx(small["scores"], abs=1e-12)


def test_overload_sheds_with_503_and_recovers(server: Server, click: pa.Table) -> None:
    rows = rows_of(click, 5000)
    payload = json.dumps(rows).encode()  # ~0.7 MB: scored in the worker thread
    t0 = time.perf_counter()
    assert server.request("POST", "/v1/predict", raw=payload)[0] == 200
    alone = time.perf_counter() - t0
    outcomes: list[tuple[int, float, str | None]] = []
    lock = threading.Lock()
    stop = time.monotonic() + max(4.0, 6 * alone)

    def client() -> None:  # 6 clients, 1 worker thread: about 3x what fits in the budget
        c = server.conn()
        try:
            while time.monotonic() < stop:
                t1 = time.perf_counter()
                c.request("POST", "/v1/predict", body=payload, headers={"content-type": "application/json"})
                r = c.getresponse()
                r.read()
                with lock:
                    outcomes.append((r.status, time.perf_counter() - t1, r.getheader("retry-after")))
        finally:
            c.close()

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    codes = [o[0] for o in outcomes]
    print(f"overload: {codes.count(200)} x 200, {codes.count(503)} x 503 (one request alone: {alone:.2f} s)")
    assert set(codes) <= {200, 503}, set(codes)
    shed = [o for o in outcomes if o[0] == 503]
    ok = [o for o in outcomes if o[0] == 200]
    assert shed and ok, codes
    assert all(o[2] == "1" for o in shed)  # Retry-After
    # refused at once: faster than scoring the request
    assert statistics.median(o[1] for o in shed) < statistics.median(o[1] for o in ok)
    # and the server recovers
    assert server.request("POST", "/v1/predict", raw=payload)[0] == 200
    assert server.request("POST", "/v1/predict", rows[0])[0] == 200
    status, text, _ = server.request("GET", "/metrics")
    assert status == 200 and 'kind="overloaded"' in text


def test_connections_beyond_the_limit_get_503(tmp_path_factory: pytest.TempPathFactory, click: pa.Table) -> None:
    root = make_project(tmp_path_factory.mktemp("conns") / "proj", click)
    (root / "loopml.yaml").write_text(SPEC + "  limits: {max_connections: 20}\n")
    server = start_server(["--project", str(root), "--no-log"], tmp_path_factory.mktemp("srv"))
    held = []
    try:
        for _ in range(20):
            s = connect(server)
            s.sendall(b"GET /health HTTP/1.1\r\n\r\n")
            assert read_status(s)[0] == 200  # kept alive: each holds a slot
            held.append(s)
        with connect(server) as extra:
            status, head = read_status(extra)
            assert status == 503 and b"retry-after: 1" in head.lower()
        held.pop().close()
        time.sleep(0.3)
        assert server.request("GET", "/health")[0] == 200  # a freed slot is usable again
    finally:
        for s in held:
            s.close()
        server.stop()
