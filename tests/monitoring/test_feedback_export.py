"""Exported feedback retrains without a hand edit of the schema.

The source holds columns the service never receives (`instant`, an id; `casual`, a count no feature
reads). serve → predictions → feedback → `loopml monitor` exports the labelled rows with the source's
types, leaves those two columns empty (nullable), records in schema.yaml that they may be missing,
and the retraining run validates and registers; a later plain `loopml run` over the same folder
(the exported file stays there) validates too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ruamel.yaml import YAML

from loopml.monitoring.logs import segments
from tests.conftest import run_cli
from tests.monitoring.logdata import bike
from tests.monitoring.test_closed_loop import INPUTS, _busy, _post, predictions_dir_of

SPEC = """
project: {name: feedback-export}
task: {type: binary, target: busy}
data:
  sources:
    hours: {type: parquet, path: "data/*.parquet"}
features:
  inputs:
FEATURES
training:
  split: {type: stratified}
  candidates:
    - {type: lightgbm, params: {n_estimators: 40, num_leaves: 15}}
evaluation:
  bootstrap_resamples: 50
  gates: ["roc_auc >= 0.8"]
deployment: {log_flush_seconds: 0.2}
monitoring:
  drift: {window: 1d, min_rows: 200}
  retraining: {export_path: data, cooldown: 1h, min_new_labels: 500}
""".replace("FEATURES", "\n".join(f"    - {{column: {c}}}" for c in INPUTS))


def test_exported_feedback_retrains_without_a_hand_edit_of_the_schema(project: Path, datasets: Path) -> None:
    hours = bike(datasets)
    h1 = hours.filter(pc.and_(pc.equal(hours.column("yr"), 0), pc.less_equal(hours.column("mnth"), 6)))
    rng = np.random.default_rng(0)
    held = rng.random(h1.num_rows) < 0.3  # replayed through the service later: same period, no drift
    (project / "data").mkdir()
    table = h1.select(["instant", *INPUTS, "casual"]).append_column("busy", pa.array(_busy(h1)))
    pq.write_table(table.filter(pa.array(~held)), project / "data" / "initial.parquet")
    (project / "loopml.yaml").write_text(SPEC)
    run_cli("run", "--project", str(project), "--quiet", check=True, timeout=300)
    schema_file = project / "schema.yaml"
    before = YAML(typ="safe").load(schema_file.read_text())["columns"]
    assert before["instant"]["nullable"] is False and before["casual"]["nullable"] is False

    ready = project / "ready.txt"
    server = subprocess.Popen(
        [sys.executable, "-m", "loopml.cli.main", "serve", "--project", str(project), "--port", "0",
         "--ready-file", str(ready)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() or not ready.read_text().strip():
            assert server.poll() is None, f"loopml serve exited: {server.stdout.read() if server.stdout else ''}"
            assert time.monotonic() < deadline, "loopml serve did not become ready in 60 s"
            time.sleep(0.1)
        port = int(ready.read_text().split()[1])
        replay = h1.filter(pa.array(held))
        rows = replay.select(INPUTS).to_pylist()  # the service receives the model's inputs only
        ids: list[str] = []
        for i in range(0, len(rows), 100):
            ids += _post(port, "/v1/predict", {"rows": rows[i:i + 100]})["request_ids"]
        labels = _busy(replay)
        for i in range(0, len(ids), 500):
            _post(port, "/v1/feedback", [{"request_id": r, "label": int(y)} for r, y in zip(ids[i:i + 500], labels[i:i + 500])])
        deadline = time.monotonic() + 30
        for folder in (predictions_dir_of(project), predictions_dir_of(project).parent / "feedback"):
            while sum(pq.read_metadata(f).num_rows for f in segments(folder)) < len(rows):
                assert time.monotonic() < deadline, f"{folder.name}: the log did not receive every row"
                time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    res = run_cli("monitor", "--project", str(project), check=True, timeout=300)
    out = " ".join(res.stdout.split())
    assert "registered and APPROVED" in out, res.stdout + res.stderr
    assert "the data schema now allows missing values in `instant`, `casual`" in out, out

    exported = list((project / "data").glob("feedback-*.parquet"))
    assert len(exported) == 1
    got = pq.read_table(exported[0])
    initial = pq.read_schema(project / "data" / "initial.parquet")
    assert got.schema.names == initial.names and got.num_rows == len(rows)
    assert [f.type for f in got.schema] == [f.type for f in initial]  # the source's types, not the log's
    assert got.column("instant").null_count == len(rows) and got.column("casual").null_count == len(rows)
    assert got.column("temp").null_count == 0 and got.column("busy").to_pylist() == labels.tolist()

    after_text = schema_file.read_text()
    after = YAML(typ="safe").load(after_text)["columns"]
    assert after["instant"]["nullable"] is True and "max_missing_rate" not in after["instant"]
    assert after["casual"]["nullable"] is True
    assert after["temp"] == before["temp"]  # every logged column keeps its checks
    assert "not in the prediction log" in after_text and after_text.startswith("# Data schema")  # comments kept

    from loopml.monitoring.records import monitor_decisions
    from loopml.workspace import Workspace

    ws = Workspace.open(project)
    with ws.engine.connect() as conn:
        decision = conn.execute(monitor_decisions.select().where(monitor_decisions.c.action == "retrain")).mappings().one()
    stages = {s["stage"]: s["status"] for s in decision["evidence"]["stages"]}
    assert stages["validate"] == "success" and decision["status"] == "approved"
    assert decision["evidence"]["exported"]["not_logged"] == ["instant", "casual"]

    # the exported file stays in the source folder: the next plain run validates it too
    again = run_cli("run", "--project", str(project), "--quiet", "--force", timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "validate │ success" in again.stdout or "validate: success" in again.stdout
