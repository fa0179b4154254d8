"""Nothing answered is lost: SIGTERM drains under keep-alive load, SIGKILL loses at most the configured
window, and `log_durability: before_answer` makes that window zero. Real `loopml serve` processes."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow as pa
from helpers import rows_of

from conftest import SPEC, Server, make_project, start_server
from loopml.serving.journal import pending_bytes, wait_written

FLUSH_ROWS = 50


class KeepAliveLoad:
    """Client threads, each on one keep-alive connection (reconnecting after an error), recording every 200."""

    def __init__(self, server: Server, bodies: list[bytes], threads: int = 6) -> None:
        self.server, self.bodies = server, bodies
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answered: list[str] = []
        self.errors = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
        n = i
        while not self.stop.is_set():
            body = self.bodies[n % len(self.bodies)]
            n += 1
            try:
                conn.request("POST", "/v1/predict", body=body, headers={"content-type": "application/json"})
                r = conn.getresponse()
                payload = r.read()
                if r.status == 200:
                    with self.lock:
                        self.answered.append(json.loads(payload)["request_id"])
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.errors += 1
                conn.close()
                time.sleep(0.01)

    def __enter__(self) -> KeepAliveLoad:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answered) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.answered)} answers in {timeout} s")
            time.sleep(0.02)


def _project(tmp_path: Path, click: pa.Table, durability: str = "window") -> Path:
    project = make_project(tmp_path / "proj", click)
    spec = SPEC.replace("  log_flush_rows: 500\n  log_flush_seconds: 0.3\n",
                        f"  log_flush_rows: {FLUSH_ROWS}\n  log_flush_seconds: 3600\n  log_durability: {durability}\n")
    assert spec != SPEC
    (project / "loopml.yaml").write_text(spec)
    return project


def _logged(project: Path) -> Counter[str]:
    pred_dir = _pred_dir(project)
    q = f"select request_id from read_parquet('{pred_dir}/*.parquet', union_by_name=true)"
    return Counter(r[0] for r in duckdb.sql(q).fetchall())


def _pred_dir(project: Path) -> Path:
    from loopml.workspace import Workspace

    return Workspace.open(project).root / "logs" / "predictions"


def _bodies(click: pa.Table) -> list[bytes]:
    return [json.dumps(r).encode() for r in rows_of(click, 50)]


def test_sigterm_under_keep_alive_load_logs_every_answer_once(tmp_path: Path, click: pa.Table) -> None:
    project = _project(tmp_path, click)
    server = start_server(["--project", str(project)], tmp_path)
    with KeepAliveLoad(server, _bodies(click)) as load:
        load.wait_for(600)
        server.proc.send_signal(signal.SIGTERM)  # while the clients keep sending
        err = server.stop()
    assert server.proc.returncode == 0, err
    assert "drained" in err, err
    pred_dir = _pred_dir(project)
    assert pending_bytes(pred_dir) == 0, "rows were left in the journal after a graceful stop"
    logged = _logged(project)
    assert not [i for i, n in logged.items() if n > 1], "a prediction was logged twice"
    answered = Counter(load.answered)
    assert len(answered) == len(load.answered) >= 600
    assert set(answered) == set(logged), (
        f"{len(set(answered) - set(logged))} answered predictions are not in the log; "
        f"{len(set(logged) - set(answered))} logged ones were never answered"
    )


def _killed_under_load(tmp_path: Path, click: pa.Table, durability: str) -> tuple[set[str], Counter[str], Path]:
    project = _project(tmp_path, click, durability)
    server = start_server(["--project", str(project)], tmp_path)
    with KeepAliveLoad(server, _bodies(click)) as load:
        load.wait_for(400)
        server.proc.send_signal(signal.SIGKILL)
        server.stop()
    answered = set(load.answered)
    # a new service (its writers resume the journals a crash left) then a graceful stop
    server2 = start_server(["--project", str(project)], tmp_path)
    server2.stop()
    assert wait_written([_pred_dir(project)], timeout=60)
    return answered, _logged(project), project


def test_sigkill_loses_at_most_the_configured_window(tmp_path: Path, click: pa.Table) -> None:
    answered, logged, _ = _killed_under_load(tmp_path, click, "window")
    assert not [i for i, n in logged.items() if n > 1]
    lost = answered - set(logged)
    assert len(lost) < FLUSH_ROWS, f"{len(lost)} answered predictions lost; the window is {FLUSH_ROWS} records"
    assert len(answered) >= 400


def test_sigkill_loses_nothing_answered_when_answers_wait_for_the_sync(tmp_path: Path, click: pa.Table) -> None:
    answered, logged, _ = _killed_under_load(tmp_path, click, "before_answer")
    assert not [i for i, n in logged.items() if n > 1]
    assert len(answered) >= 400
    assert answered <= set(logged), f"{len(answered - set(logged))} answered predictions lost"
