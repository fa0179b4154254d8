"""The closed loop end to end, with every real part: `loopml run` trains and registers v1 on the first half of
2011; `loopml serve` serves it over HTTP; a shifted stream (summer 2012) is replayed through the service and
its outcomes sent as feedback; `loopml monitor` sees the drift alert, exports the labelled rows, retrains
from ingest, evaluates the candidate against production with the gates, and registers an approved candidate
without promoting it; `loopml monitor history|ops|quality` show the evidence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from loopml.monitoring.logs import predictions_dir, segments
from tests.monitoring.logdata import bike

INPUTS = ["season", "hr", "holiday", "weekday", "workingday", "weathersit", "temp", "atemp", "hum", "windspeed"]

SPEC = """
project: {name: bike-loop}
task: {type: binary, target: busy}
data:
  sources:
    hours: {type: parquet, path: "data/*.parquet"}
training:
  split: {type: stratified}
  candidates:
    - {type: lightgbm, params: {n_estimators: 60, num_leaves: 15}}
evaluation:
  bootstrap_resamples: 50
  gates: ["roc_auc >= 0.8", "roc_auc >= production - 0.01"]
deployment: {log_flush_seconds: 0.2}
monitoring:
  ops: {metrics_url: "http://127.0.0.1:PORT/metrics"}
  drift: {window: 1d, min_rows: 200}
  retraining: {export_path: data, cooldown: 1h}
  alerts:
    - {name: inputs-drifted, metric: drift.share, op: ">", threshold: 0.2, severity: critical, retrain: true}
    - {name: slow, metric: ops.latency_p99_ms, op: ">", threshold: 1000}
"""


def _busy(t: pa.Table) -> np.ndarray:
    return (t.column("cnt").to_numpy() >= 100).astype(np.int64)


def _post(port: int, path: str, body: Any) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else {}


@pytest.fixture
def loop_project(project: Path, datasets: Path) -> Path:
    hours = bike(datasets)
    first_half_2011 = hours.filter(pc.and_(pc.equal(hours.column("yr"), 0), pc.less_equal(hours.column("mnth"), 6)))
    (project / "data").mkdir()
    pq.write_table(first_half_2011.select(INPUTS).append_column("busy", pa.array(_busy(first_half_2011))),
                   project / "data" / "initial.parquet")
    return project


def test_shifted_stream_through_the_service_alerts_retrains_and_registers_an_approved_candidate(
    cli, loop_project: Path, datasets: Path
) -> None:
    project = loop_project
    (project / "loopml.yaml").write_text(SPEC.replace("PORT", "1"))
    cli("run", "--project", str(project), "--quiet", check=True, timeout=300)

    ready = project / "ready.txt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "loopml.cli.main", "serve", "--project", str(project), "--port", "0",
         "--ready-file", str(ready)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() or not ready.read_text().strip():
            assert server.poll() is None, f"loopml serve exited: {server.stdout.read() if server.stdout else ''}"
            assert time.monotonic() < deadline, "loopml serve did not become ready in 60 s"
            time.sleep(0.1)
        port = int(ready.read_text().split()[1])
        (project / "loopml.yaml").write_text(SPEC.replace("PORT", str(port)))

        # replay summer 2012 through the service, 100 rows per request, then send the outcomes
        hours = bike(datasets)
        summer = hours.filter(pc.and_(pc.equal(hours.column("yr"), 1),
                                      pc.and_(pc.greater_equal(hours.column("mnth"), 7), pc.less_equal(hours.column("mnth"), 8))))
        rows = summer.select(INPUTS).to_pylist()
        ids: list[str] = []
        for i in range(0, len(rows), 100):
            resp = _post(port, "/v1/predict", {"rows": rows[i:i + 100]})
            assert resp["model_version"] == "v1"
            ids += resp["request_ids"]
        labels = _busy(summer)
        for i in range(0, len(ids), 500):
            _post(port, "/v1/feedback", [{"request_id": r, "label": int(y)} for r, y in zip(ids[i:i + 500], labels[i:i + 500])])
        deadline = time.monotonic() + 30
        for folder in (predictions_dir_of(project), predictions_dir_of(project).parent / "feedback"):
            while sum(pq.read_metadata(f).num_rows for f in segments(folder)) < len(rows):
                assert time.monotonic() < deadline, f"{folder.name}: the log did not receive every row"
                time.sleep(0.1)

        res = cli("monitor", "--project", str(project), check=True, timeout=300)
        out = res.stdout
        assert "ALERT" in out and "inputs-drifted" in out, out
        assert "temp" in out and "season" in out
        assert "registered and APPROVED" in out, out
        assert "loopml models promote v2" in out  # the next step is a person's decision
        assert "CBPE calibrated on test split" in out  # the production model's own held-out rows

        from loopml.registry import Registry
        from loopml.workspace import Workspace

        ws = Workspace.open(project)
        versions = {v.version_id: v for v in Registry(ws).list()}
        assert set(versions) == {"v1", "v2"}
        assert versions["v2"].state == "candidate" and versions["v2"].approved
        assert Registry(ws).production().version_id == "v1"  # nothing promoted without a person deciding
        # the drift that triggered retraining is accepted by that run's verification, and recorded
        from loopml.monitoring.records import monitor_decisions

        with ws.engine.connect() as conn:
            decision = conn.execute(monitor_decisions.select().where(monitor_decisions.c.action == "retrain")).mappings().one()
        assert "inputs-drifted" in decision["evidence"]["accepted_drift"]
        assert {s["stage"]: s["status"] for s in decision["evidence"]["stages"]}["validate"] == "success"
        # the retraining pipeline ran in its own child process: the run record names it, every stage peaked in it
        from sqlalchemy import select

        from loopml.lineage import list_executions
        from loopml.workspace.metadata import runs

        child = decision["evidence"]["process"]
        with ws.engine.connect() as conn:
            run_pid = conn.execute(select(runs.c.pid).where(runs.c.run_id == decision["run_id"])).scalar_one()
        assert run_pid == child["pid"] and child["exit_code"] == 0
        peaks = [e["peak_rss_mb"] for e in list_executions(ws, decision["run_id"], 20)]
        assert len(peaks) == 6 and all(p is not None and 20 < p <= child["peak_rss_mb"] + 0.1 for p in peaks), peaks
        exported = list((project / "data").glob("feedback-*.parquet"))
        assert len(exported) == 1 and pq.read_metadata(exported[0]).num_rows == len(rows)
        assert pq.read_schema(exported[0]).equals(pq.read_schema(project / "data" / "initial.parquet"))

        history = cli("monitor", "history", "--project", str(project), check=True).stdout
        assert "approved" in history and "v2" in history and "inputs-drifted" in history
        assert f"{len(rows)} new labelled rows exported" in history and "gates 3/3 passed" in history  # the two declared + the baseline gate

        ops = cli("monitor", "ops", "--project", str(project), check=True).stdout
        assert "latency_p99_ms" in ops and "v1" in ops

        quality = cli("monitor", "quality", "--project", str(project), check=True).stdout
        assert "v1" in quality and "CBPE roc_auc" in quality

        cli("monitor", "report", "--project", str(project), "--window", "1h", check=True)
        html = (project / ".loopml" / "reports" / "monitoring.html").read_text()
        assert "prediction (score)" in html and "inputs-drifted" in html and "approved" in html
        assert "Service operations between checks" in html  # scraped by `monitor` and `monitor ops`

        # within the cooldown the alert keeps firing but does not retrain again
        again = cli("monitor", "--project", str(project), check=True).stdout
        assert "still firing" in again and "retraining skipped" in again and "cooldown" in again
        assert {v.version_id for v in Registry(ws).list()} == {"v1", "v2"}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def predictions_dir_of(project: Path) -> Path:
    from loopml.workspace import Workspace

    return predictions_dir(Workspace.open(project))
