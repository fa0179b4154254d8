"""`loopml monitor` end to end on a prediction log in the serving contract's format: rules, alerts with their
evidence, command and webhook hooks (once per firing), history, drift, quality with CBPE, and the report."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.monitoring.logdata import bike, feedback_segment, prediction_segment
from tests.services import free_port

FEATURES = ["season", "mnth", "hr", "weekday", "workingday", "weathersit", "temp", "atemp", "hum", "windspeed"]


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A real local HTTP server recording the JSON bodies POSTed to it."""
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def _project(project: Path, datasets: Path, hook_url: str) -> Path:
    hours = bike(datasets)
    y2011 = hours.filter(pc.equal(hours.column("yr"), 0))
    pq.write_table(y2011.select([*FEATURES, "cnt"]), project / "reference.parquet")
    (project / "loopml.yaml").write_text(
        f"""
project: {{name: bikes}}
task: {{type: binary, target: busy}}
deployment: {{port: {free_port()}}}
monitoring:
  drift: {{reference: reference.parquet, window: 1d}}
  alerts:
    - name: inputs-drifted
      metric: drift.share
      op: ">"
      threshold: 0.2
      severity: critical
      command: "cat >> alert-hook.jsonl && echo >> alert-hook.jsonl"
      webhook: {hook_url}
      retrain: true
    - {{name: auc-low, metric: quality.roc_auc, op: "<", threshold: 0.99, severity: info}}
    - {{name: cbpe-auc, metric: cbpe.roc_auc, op: "<", threshold: 0.5}}
"""
    )
    # yesterday (labelled: the CBPE reference period) and today, 2012 traffic through a "busy hour" model
    y2012 = hours.filter(pc.equal(hours.column("yr"), 1)).slice(0, 6000)
    rng = np.random.default_rng(0)
    temp = y2012.column("temp").to_numpy()
    hr = y2012.column("hr").to_numpy()
    score = 1 / (1 + np.exp(-(4 * (temp - 0.5) + np.where((hr >= 7) & (hr <= 19), 1.5, -1.5))))
    labels = (rng.uniform(size=len(score)) < score).astype(float)
    now = dt.datetime.now(dt.UTC)
    ts = [now - dt.timedelta(minutes=int(m)) for m in rng.integers(1, 600, y2012.num_rows)]
    ts[:2000] = [t - dt.timedelta(days=1) for t in ts[:2000]]
    ws_root = project / ".loopml"
    x = y2012.select(FEATURES)
    old = prediction_segment(ws_root, x.slice(0, 2000), score[:2000], ts[:2000], model_version="v1")
    feedback_segment(ws_root, old, labels[:2000], now - dt.timedelta(hours=20))
    v1 = prediction_segment(ws_root, x.slice(2000, 2000), score[2000:4000], ts[2000:4000], model_version="v1")
    v2 = prediction_segment(ws_root, x.slice(4000), score[4000:], ts[4000:], model_version="v2")
    feedback_segment(ws_root, v1[:1500] + v2[:1500], np.concatenate([labels[2000:3500], labels[4000:5500]]), now)
    return project


def test_monitor_alerts_hooks_history_and_report(cli, project: Path, datasets: Path, webhook) -> None:
    url, received = webhook
    _project(project, datasets, url)

    first = cli("monitor", "--project", str(project), "--no-retrain", check=True)
    assert "ALERT" in first.stdout and "inputs-drifted" in first.stdout
    assert "drifted:" in first.stdout and "temp" in first.stdout
    assert "auc-low" in first.stdout and "cbpe-auc" in first.stdout
    hook_lines = [json.loads(x) for x in (project / "alert-hook.jsonl").read_text().splitlines() if x.strip()]
    assert [h["rule"] for h in hook_lines] == ["inputs-drifted"]
    assert hook_lines[0]["value"] > 0.2 and "temp" in hook_lines[0]["evidence"]["drifted"]
    assert len(received) == 1 and received[0]["rule"] == "inputs-drifted" and received[0]["project"] == "bikes"

    second = cli("monitor", "--project", str(project), "--no-retrain", "--json", check=True)
    check = json.loads(second.stdout.strip().splitlines()[-1])
    assert any("still firing" in f for f in check["firings"])
    assert check["windows"]["1d"]["volume.predictions"] == 4000
    assert "cbpe.roc_auc" in check["windows"]["1d"] and "CBPE calibrated on 2000 labelled" in " ".join(check["notes"])
    # hooks run when a rule starts firing, not on every check while it keeps firing
    assert len([x for x in (project / "alert-hook.jsonl").read_text().splitlines() if x.strip()]) == 1
    assert len(received) == 1

    failing = cli("monitor", "--project", str(project), "--no-retrain", "--fail-on", "critical")
    assert failing.returncode == 1 and "inputs-drifted" in failing.stdout
    assert cli("monitor", "--project", str(project), "--no-retrain", "--fail-on", "nope").returncode == 2

    history = cli("monitor", "history", "--project", str(project), check=True)
    assert "inputs-drifted" in history.stdout and "skipped" in history.stdout and "--no-retrain" in history.stdout

    drift = cli("monitor", "drift", "--project", str(project), check=True)
    assert "temp" in drift.stdout and "drifted" in drift.stdout
    same = cli("monitor", "drift", "--project", str(project), "--current", str(project / "reference.parquet"), check=True)
    assert "reference.parquet: 0 of 11 drifted" in same.stdout

    quality = cli("monitor", "quality", "--project", str(project), "--window", "1d", check=True)
    assert "CBPE roc_auc" in quality.stdout and "v1" in quality.stdout and "v2" in quality.stdout

    report = cli("monitor", "report", "--project", str(project), "--window", "1h", check=True)
    html = (project / ".loopml" / "reports" / "monitoring.html").read_text()
    assert html.count('class="chart"') >= len(FEATURES) and "Drift, latest window" in html and "inputs-drifted" in html
    assert "http://" not in html.replace(url, "").replace("http://www.w3.org/2000/svg", "")  # self-contained
    data = json.loads((project / ".loopml" / "reports" / "monitoring.json").read_text())
    assert data["log_rows"] == 6000 and data["windows"] and data["quality"] and data["cbpe"]
    assert {q["model_version"] for q in data["quality"]} == {"v1", "v2"}
    assert data["drift_latest"][0]["drifted"]
    assert "monitoring.html" in report.stdout


def test_monitor_without_a_reference_explains_itself(cli, project: Path) -> None:
    (project / "loopml.yaml").write_text("monitoring:\n  alerts:\n    - {name: d, metric: drift.share, threshold: 0.1}\n")
    res = cli("monitor", "--project", str(project), "--no-retrain", check=True)
    assert "no data" in res.stdout
    twice = cli("monitor", "--project", str(project), "--no-retrain", "--every", "1s", "--cycles", "2", check=True)
    assert twice.stdout.count("check ") == 2
    bad = cli("monitor", "--project", str(project), "--every", "5 parsecs")
    assert bad.returncode != 0 and "--every" in bad.stderr and "not a duration" in bad.stderr
