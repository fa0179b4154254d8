"""End to end: train real models, register, serve over HTTP, predict, feed back, promote under load
with zero failed requests, roll back from the CLI, and find every prediction in the durable log."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from helpers import rows_of

from conftest import TOKEN, Server, make_project, start_server
from loopml.registry import Registry
from loopml.workspace import Workspace


class Load:
    """Client threads sending predictions on keep-alive connections, recording every outcome."""

    def __init__(self, server: Server, bodies: list[bytes], threads: int = 4) -> None:
        self.server = server
        self.bodies = bodies
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok: list[tuple[float, str, str]] = []  # (time the request was sent, version, request id)
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
        n = i
        while not self.stop.is_set():
            body = self.bodies[n % len(self.bodies)]
            n += 1
            sent = time.monotonic()
            try:
                conn.request("POST", "/v1/predict", body=body, headers={"content-type": "application/json"})
                r = conn.getresponse()
                payload = r.read()
                if r.status != 200:
                    with self.lock:
                        self.failures.append(f"{r.status}: {payload[:200]!r}")
                    continue
                d = json.loads(payload)
                with self.lock:
                    self.ok.append((sent, d["model_version"], d["request_id"]))
            except Exception as exc:  # a dropped connection is a failure too
                with self.lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
        conn.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=20)


def _wait_for(cond, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_train_register_serve_feedback_promote_under_load(tmp_path: Path, click: pa.Table, cli) -> None:  # type: ignore[no-untyped-def]
    project = make_project(tmp_path / "proj", click)
    server = start_server(["--project", str(project)], tmp_path)
    try:
        rows = rows_of(click, 200)
        status, first, _ = server.request("POST", "/v1/predict", rows[0])
        assert status == 200 and first["model_version"] == "v1"
        status, fb, _ = server.request("POST", "/v1/feedback", {"request_id": first["request_id"], "label": 1})
        assert status == 200 and fb == {"recorded": 1}

        bodies = [json.dumps(r).encode() for r in rows]
        with Load(server, bodies) as load:
            _wait_for(lambda: len(load.ok) > 200)
            status, body, _ = server.request(
                "POST", "/admin/promote", {"version": "v2", "reason": "better offline auc"},
                headers={"authorization": f"Bearer {TOKEN}"},
            )
            assert status == 200, body
            assert body == {"ok": True, "serving": "v2", "previous": "v1", "actor": "admin-api"}
            t_promoted = time.monotonic()
            n_at_promotion = len(load.ok)
            _wait_for(lambda: len(load.ok) > n_at_promotion + 200)
            # roll back through the CLI: the server follows the registry within its poll interval
            t_cli = time.monotonic()
            cli("models", "rollback", "--reason", "drill", "-p", str(project), check=True)
            t_rollback = time.monotonic()
            _wait_for(lambda: any(t > t_rollback and v == "v1" for t, v, _ in list(load.ok)))
            n_after_rollback = len(load.ok)
            _wait_for(lambda: len(load.ok) > n_after_rollback + 100)
        assert load.failures == []
        versions = [v for _, v, _ in load.ok]
        # a request sent after the admin call returned is answered by v2 (until the rollback)
        after_promote = [v for t, v, _ in load.ok if t_promoted < t < t_cli]
        assert "v1" in versions and "v2" in versions
        assert after_promote and set(after_promote) == {"v2"}
        assert load.ok[-1][1] == "v1"
        served_ids = {rid for _, _, rid in load.ok} | {first["request_id"]}
    finally:
        err = server.stop()
    assert "logs flushed" in err

    ws = Workspace.open(project)
    hist = [(t.version_id, t.to_state) for t in Registry(ws).history()]
    assert ("v2", "production") in hist and hist[-1] == ("v1", "production")
    logs = ws.root / "logs"
    con = duckdb.connect()
    logged = con.execute(
        f"select request_id, model_version, route, score, prediction, advertiser_id, impression "
        f"from read_parquet('{logs}/predictions/*.parquet', union_by_name=true)"
    ).fetchall()
    ids = {r[0] for r in logged}
    assert served_ids <= ids  # every answered prediction is in the log after a clean stop
    assert {r[1] for r in logged} == {"v1", "v2"} and {r[2] for r in logged} == {"production"}
    assert isinstance(logged[0][5], str) and isinstance(logged[0][6], float)
    types = {r[0]: r[1] for r in con.execute(f"describe select * from read_parquet('{logs}/predictions/*.parquet')").fetchall()}
    assert types["ts"] == "TIMESTAMP WITH TIME ZONE" and types["score"] == "DOUBLE"
    fbrows = con.execute(f"select request_id, label from read_parquet('{logs}/feedback/*.parquet')").fetchall()
    assert (first["request_id"], 1.0) in fbrows
    # the feedback joins its prediction
    joined = con.execute(
        f"select count(*) from read_parquet('{logs}/feedback/*.parquet') f "
        f"join read_parquet('{logs}/predictions/*.parquet', union_by_name=true) p using (request_id)"
    ).fetchone()
    assert joined == (1,)


def test_prediction_log_survives_a_crash_and_a_restart(tmp_path: Path, click: pa.Table) -> None:
    project = make_project(tmp_path / "proj", click)
    rows = rows_of(click, 30)
    server = start_server(["--project", str(project)], tmp_path)
    ids1 = [server.request("POST", "/v1/predict", r)[1]["request_id"] for r in rows]
    time.sleep(1.2)  # > log_flush_seconds (0.3 s): the rows are on disk
    server.stop(signal.SIGKILL)  # crash: no shutdown handler runs
    pred_dir = Workspace.open(project).root / "logs" / "predictions"
    con = duckdb.connect()
    q = f"select request_id from read_parquet('{pred_dir}/*.parquet', union_by_name=true)"
    assert {r[0] for r in con.execute(q).fetchall()} == set(ids1)

    server2 = start_server(["--project", str(project)], tmp_path)
    try:
        assert not list(pred_dir.glob(".*.tmp"))  # restart cleans partial segments
        ids2 = [server2.request("POST", "/v1/predict", r)[1]["request_id"] for r in rows[:10]]
    finally:
        server2.stop()
    got = [r[0] for r in con.execute(q).fetchall()]
    assert sorted(got) == sorted(ids1 + ids2)  # appended, nothing lost, nothing duplicated
    assert not set(ids1) & set(ids2)


@pytest.mark.parametrize("bad_token", [None, "wrong"])
def test_promotion_through_the_api_needs_the_token(tmp_path: Path, click: pa.Table, bad_token: str | None) -> None:
    project = make_project(tmp_path / "proj", click)
    server = start_server(["--project", str(project), "--no-log"], tmp_path)
    try:
        headers = {"authorization": f"Bearer {bad_token}"} if bad_token else {}
        status, body, _ = server.request("POST", "/admin/promote", {"version": "v2", "reason": "x"}, headers=headers)
        assert status == 401 and "token" in body["error"]
        assert Registry(Workspace.open(project)).production().version_id == "v1"  # type: ignore[union-attr]
    finally:
        server.stop()


def test_server_without_production_is_not_ready_until_a_promotion(tmp_path: Path, click: pa.Table, cli) -> None:  # type: ignore[no-untyped-def]
    from helpers import train_bundle

    from conftest import PASSED, SPEC

    project = tmp_path / "proj"
    project.mkdir()
    (project / "loopml.yaml").write_text(SPEC)
    ws = Workspace.open(project)
    Registry(ws).register(train_bundle(ws, click, n_estimators=5), verdict=PASSED, lineage={})
    server = start_server(["--project", str(project), "--no-log"], tmp_path)
    try:
        status, body, _ = server.request("GET", "/ready")
        assert status == 503 and "promote" in body["error"]
        status, body, _ = server.request("POST", "/v1/predict", rows_of(click, 1)[0])
        assert status == 503 and "no model is loaded" in body["error"]
        cli("models", "promote", "v1", "--reason", "go live", "-p", str(project), check=True)
        _wait_for(lambda: server.request("GET", "/ready")[0] == 200)
        status, body, _ = server.request("POST", "/v1/predict", rows_of(click, 1)[0])
        assert status == 200 and body["model_version"] == "v1"
    finally:
        server.stop()
