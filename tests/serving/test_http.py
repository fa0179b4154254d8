"""The service over real HTTP: predictions, 422 bodies, OpenAPI, metrics, admin token, feedback."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pyarrow as pa
import pytest
from helpers import rows_of

from conftest import TOKEN, Server
from loopml.training.bundle import load_bundle
from loopml.workspace import Workspace

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+\-]+|\+Inf|NaN)$')


@pytest.fixture(scope="module")
def server(served_project: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from conftest import start_server

    s = start_server(["--project", str(served_project)], tmp_path_factory.mktemp("srv"))
    yield s
    s.stop()


def test_single_row_prediction_equals_the_bundle(server: Server, served_project: Path, click: pa.Table) -> None:
    ws = Workspace.open(served_project)
    from loopml.registry import Registry

    bundle = load_bundle(ws, Registry(ws).get("v1").bundle_digest)
    row = rows_of(click, 3)[2]
    status, body, headers = server.request("POST", "/v1/predict", row)
    assert status == 200, body
    assert body["model_version"] == "v1" and body["route"] == "production"
    assert body["score"] == pytest.approx(float(bundle.predict_row(row)), abs=1e-12)
    assert body["prediction"] in (0.0, 1.0) and body["request_id"]
    assert headers["content-type"] == "application/json"
    status2, body2, _ = server.request("POST", "/v1/predict", row, headers={"x-request-id": "client-42"})
    # the server's id stays the key; the client's is logged beside it (tests/serving/test_strict.py)
    assert status2 == 200 and body2["request_id"] not in ("client-42", body["request_id"])


def test_many_rows_in_one_request(server: Server, click: pa.Table) -> None:
    rows = rows_of(click, 50)
    s1, b1, _ = server.request("POST", "/v1/predict", rows)
    s2, b2, _ = server.request("POST", "/v1/predict", {"rows": rows})
    assert s1 == s2 == 200
    assert len(b1["scores"]) == 50 and b1["scores"] == b2["scores"]
    assert len(set(b1["request_ids"])) == 50
    single = [server.request("POST", "/v1/predict", r)[1]["score"] for r in rows[:5]]
    assert single == pytest.approx(b1["scores"][:5], abs=1e-12)
    s3, b3, _ = server.request("POST", "/v1/predict", rows[:3])  # few rows: the row-wise fast path
    assert s3 == 200 and b3["scores"] == pytest.approx(b1["scores"][:3], abs=1e-12)


def test_invalid_requests_get_422_naming_field_value_and_expectation(server: Server, click: pa.Table) -> None:
    row = rows_of(click, 1)[0]
    bad = {**row, "position": "top", "user_id": None}
    del bad["ad_id"]
    status, body, _ = server.request("POST", "/v1/predict", bad)
    assert status == 422
    detail = {d["field"]: d for d in body["detail"]}
    assert set(detail) == {"position", "ad_id"}  # null is a missing value, not an error
    assert detail["position"]["value"] == "top" and "number" in detail["position"]["expected"]
    assert detail["position"]["loc"] == ["body", "position"]
    assert detail["ad_id"]["msg"] == "field `ad_id` is missing"
    status, body, _ = server.request("POST", "/v1/predict", raw=b'{"impression": 1,')
    assert status == 422 and "not valid JSON" in body["error"]
    status, body, _ = server.request("POST", "/v1/predict", [row, {**row, "depth": "deep"}])
    assert status == 422 and body["detail"][0]["loc"] == ["body", 1, "depth"]
    status, body, _ = server.request("POST", "/v1/predict", 42)
    assert status == 422 and "object" in body["error"]


def test_openapi_describes_the_real_inputs(server: Server, click: pa.Table) -> None:
    status, doc, _ = server.request("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    row = doc["components"]["schemas"]["Row"]
    inputs = set(rows_of(click, 1)[0])
    assert set(row["properties"]) == inputs and set(row["required"]) == inputs
    assert row["properties"]["advertiser_id"]["anyOf"][0] == {"type": "string"}
    assert row["properties"]["impression"]["anyOf"][0] == {"type": "number"}
    assert "422" in doc["paths"]["/v1/predict"]["post"]["responses"]


def test_health_ready_and_unknown_paths(server: Server) -> None:
    assert server.request("GET", "/health")[0] == 200
    status, body, _ = server.request("GET", "/ready")
    assert status == 200 and body["versions"]["v1"] == "production"
    status, body, _ = server.request("GET", "/nope")
    assert status == 404 and "/v1/predict" in body["error"]
    assert server.request("GET", "/v1/predict")[0] == 405


def _parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.setdefault(m.group(1), []).append((labels, float(m.group(4))))
    return out


def test_metrics_are_valid_prometheus_text_per_model_version(server: Server, click: pa.Table) -> None:
    for r in rows_of(click, 5):
        server.request("POST", "/v1/predict", r)
    server.request("POST", "/v1/predict", {"impression": "x"})
    status, text, headers = server.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    m = _parse_metrics(text)
    ok = [v for lab, v in m["loopml_requests_total"] if lab["model_version"] == "v1" and lab["code"] == "200"]
    assert ok and ok[0] >= 5
    assert any(lab["kind"] == "validation" for lab, _ in m["loopml_errors_total"])
    buckets = [(lab["le"], v) for lab, v in m["loopml_request_duration_seconds_bucket"]
               if lab["model_version"] == "v1" and lab["endpoint"] == "/v1/predict"]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and buckets[-1][0] == "+Inf"
    total = [v for lab, v in m["loopml_request_duration_seconds_count"] if lab["model_version"] == "v1"]
    assert total[0] == counts[-1]
    assert m["loopml_model_loaded"][0][0] == {"model_version": "v1", "state": "production"}


def test_admin_actions_need_the_token(server: Server) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {TOKEN}"}):
        status, body, _ = server.request("POST", "/admin/reload", {}, headers=headers)
        assert status == 401, body
        assert "token" in body["error"]
    status, body, _ = server.request("POST", "/admin/reload", {}, headers={"authorization": f"Bearer {TOKEN}"})
    assert status == 200 and body["ok"] is True


def test_feedback_is_validated(server: Server, click: pa.Table) -> None:
    rid = server.request("POST", "/v1/predict", rows_of(click, 1)[0])[1]["request_id"]
    status, body, _ = server.request("POST", "/v1/feedback", {"request_id": rid, "label": 1})
    assert status == 200 and body == {"recorded": 1}
    status, body, _ = server.request("POST", "/v1/feedback", [{"request_id": "", "label": "yes"}])
    assert status == 422
    assert {d["field"] for d in body["detail"]} == {"request_id", "label"}


def test_keep_alive_and_pipelined_requests(server: Server, click: pa.Table) -> None:
    import json

    row = json.dumps(rows_of(click, 1)[0]).encode()
    req = b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(row), row)
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(req * 3)
        data = b""
        while data.count(b"HTTP/1.1 200") < 3:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed early: {data!r}"
            data += chunk
    assert data.count(b'"model_version":"v1"') == 3


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_answers_written_together_keep_request_order_around_refusals_and_interim_replies(
        server: Server, click: pa.Table) -> None:
    """Answers wait in their connection's outbox until the end of the loop iteration; whatever is written
    otherwise (a refusal, a 100 Continue) must still come after the earlier answers."""
    import json

    row = json.dumps(rows_of(click, 1)[0]).encode()
    req = b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(row), row)
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(req * 2 + b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n" + b"NOT HTTP AT ALL\r\n\r\n")
        data = _read_until_closed(sock)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3})", data)
    assert statuses == [b"200", b"200", b"200", b"400"], data[:2000]
    assert data.index(b'"model_version"') < data.index(b'"status"') < data.index(b"malformed HTTP request")

    head = (b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nexpect: 100-continue\r\n"
            b"content-length: %d\r\n\r\n" % len(row))
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(req + head)  # an answer, then the next request's interim reply
        data = b""
        while b"100 Continue" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        sock.sendall(row + b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data += _read_until_closed(sock)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3})", data)
    assert statuses == [b"200", b"100", b"200", b"200"], data[:2000]


def test_server_binds_loopback_by_default(server: Server) -> None:
    assert server.host == "127.0.0.1"


def test_expect_100_continue_is_answered(server: Server, click: pa.Table) -> None:
    import json

    body = json.dumps(rows_of(click, 1)[0]).encode()
    head = (b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nexpect: 100-continue\r\n"
            b"content-length: %d\r\n\r\n" % len(body))
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head)
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        data = b""
        while b'"model_version"' not in data:
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")


def test_one_stalled_loop_iteration_does_not_shed_but_a_queue_that_stays_does() -> None:
    import time

    from loopml.serving.http import HttpLimits, ServerState

    state = ServerState(HttpLimits(queue_delay_seconds=0.1))

    def iteration(seconds: float, requests: int) -> bool:  # what the two probes measure around one iteration
        state._probe_start = time.monotonic() - seconds
        state._handled_a = state.handled
        state.handled += requests
        state._probe_b()
        return state.shedding

    for _ in range(20):
        assert not iteration(0.016, 8)  # 8 requests of 2 ms: 28 ms of wait, inside the 100 ms budget
    assert not iteration(0.2, 8)  # preempted for 200 ms once: a stall, not a queue
    assert not iteration(0.016, 8)
    shed = [iteration(0.2, 64) for _ in range(6)]  # the queue stays: shedding starts within a few iterations
    assert not shed[0] and shed[-1]
    assert not iteration(0.002, 64)  # the queue is gone: the next iteration serves again


def test_an_idle_server_wakes_twice_a_second_and_a_connection_brings_the_fast_timer_back() -> None:
    import asyncio

    from loopml.serving.http import IDLE_TICK_SECONDS, TICK_SECONDS, HttpLimits, ServerState

    async def run() -> None:
        loop = asyncio.get_running_loop()
        state = ServerState(HttpLimits(queue_delay_seconds=0.1))
        state.start(loop)
        assert state.sleeping and state._timer is not None
        assert state._timer.when() - loop.time() > IDLE_TICK_SECONDS / 2  # no connection: the slow timer
        import time

        class Idle:  # an idle keep-alive connection's fields, as the sweep reads them
            _lingering = _wpaused = _busy = False
            _phase, _since = 0, time.monotonic()

        state.connections.add(Idle())  # type: ignore[arg-type]  # (an idle keep-alive connection's fields)
        state.wake()
        assert not state.sleeping and state._timer.when() - loop.time() <= TICK_SECONDS + 1e-3
        await asyncio.sleep(5 * TICK_SECONDS)
        assert not state.sleeping  # the fast timer keeps running while connections are open
        state.connections.clear()
        await asyncio.sleep(3 * TICK_SECONDS)
        assert state.sleeping and state._timer.when() - loop.time() > IDLE_TICK_SECONDS / 2
        state._timer.cancel()

    asyncio.run(run())
