"""The demo's HTTP client resends requests the service shed (503 + Retry-After), and only those."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from loopml.demo.service import Client


def _server(answers: list[tuple[int, dict[str, str]]]) -> tuple[ThreadingHTTPServer, list[bytes]]:
    seen: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            seen.append(self.rfile.read(int(self.headers["Content-Length"])))
            status, headers = answers.pop(0) if answers else (200, {})
            body = json.dumps({"n": len(seen)}).encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, seen


def test_shed_requests_are_resent_after_retry_after() -> None:
    srv, seen = _server([(503, {"Retry-After": "0"}), (503, {"Retry-After": "0"})])
    try:
        client = Client("127.0.0.1", srv.server_address[1])
        status, body = client.post("/v1/feedback", {"x": 1})
        client.close()
    finally:
        srv.shutdown()
    assert status == 200 and body == {"n": 3}
    assert client.retries == 2 and seen == [b'{"x": 1}'] * 3


@pytest.mark.parametrize("headers", [{}, {"Retry-After": "0"}])
def test_other_errors_and_exhausted_retries_are_returned(headers: dict[str, str]) -> None:
    # a 503 without Retry-After is not load shedding: returned at once; with it, at most max_retries resends
    srv, seen = _server([(503, headers)] * 5)
    try:
        client = Client("127.0.0.1", srv.server_address[1], max_retries=2)
        status, _ = client.post("/v1/predict", {"rows": []})
        client.close()
    finally:
        srv.shutdown()
    assert status == 503
    assert len(seen) == (3 if headers else 1) and client.retries == (2 if headers else 0)
