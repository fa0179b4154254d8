"""Rollout health in monitoring: `loopml monitor` over a real served canary shows each arm's traffic, errors,
latency and quality, and an alert on the challenger's arm fires while the incumbent's stays quiet; the HTML
report has the per-arm table.

The canary needs an input field 5% of the requests lack (it refuses them with 422; production answers them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from helpers import rows_of, train_bundle

from conftest import PASSED, make_project, start_server
from loopml.registry import Registry
from loopml.serving.journal import wait_written
from loopml.serving.logs import feedback_log_dir, prediction_log_dir
from loopml.workspace import Workspace

SPEC_MORE = """\
  routing: {type: canary, fraction: 0.5, gate: {check_seconds: 3600}}
monitoring:
  alerts:
    - {name: canary-refusals, metric: arm.challenger.client_error_rate_increase, op: ">", threshold: 0.01,
       window: 1h, severity: critical}
    - {name: production-refusals, metric: arm.incumbent.client_error_rate, op: ">", threshold: 0.01, window: 1h}
    - {name: canary-quality, metric: arm.challenger.quality.roc_auc_delta, op: "<", threshold: -0.99, window: 1h}
"""


def test_monitor_shows_rollout_health_per_arm_and_alerts_on_the_challenger(tmp_path: Path, click: pa.Table,
                                                                            cli) -> None:  # type: ignore[no-untyped-def]
    project = make_project(tmp_path / "proj", click)
    (project / "loopml.yaml").write_text((project / "loopml.yaml").read_text() + SPEC_MORE)
    ws = Workspace.open(project)
    reg = Registry(ws)
    wider = click.append_column("session_depth", pc.cast(click.column("depth"), pa.float64()))
    v3 = reg.register(train_bundle(ws, wider, n_estimators=20, seed=0), verdict=PASSED, lineage={"note": "wider"})
    reg.transition(v3.version_id, "canary", actor="test", reason="canary")
    rows = rows_of(click, 600)
    labels = click.column("click").to_pylist()[:600]
    server = start_server(["--project", str(project)], tmp_path)
    try:
        refused = 0
        for i, row in enumerate(rows):
            if i % 20:
                row["session_depth"] = float(row["depth"])
            status, body, _ = server.request("POST", "/v1/predict", row)
            if status == 422:
                refused += 1
                continue
            assert status == 200, body
            assert server.request("POST", "/v1/feedback", {"request_id": body["request_id"], "label": labels[i]})[0] == 200
        assert wait_written([prediction_log_dir(project / ".loopml"), feedback_log_dir(project / ".loopml")])
        out = cli("monitor", "-p", str(project), "--json", "--no-retrain", check=True).stdout
        table_out = cli("monitor", "-p", str(project), "--no-retrain", check=True).stdout
    finally:
        server.stop()
    check = json.loads(out)
    arms = {a["arm"]: a for a in check["arms"]["1h"]}
    assert set(arms) == {"production", "canary"}
    prod, canary = arms["production"], arms["canary"]
    assert (prod["model_version"], canary["model_version"]) == ("v1", "v3")
    assert canary["experiment"] == "canary-v3" and prod["experiment"] == "canary-v3"
    assert prod["predictions"] + canary["predictions"] == 600 - refused and canary["predictions_per_s"] > 0
    assert 0.01 < canary["client_error_rate"] < 0.2 and prod["client_error_rate"] == 0  # refusals on the canary only
    assert canary["requests"] == canary["predictions"] + refused and canary["latency_p99_ms"] > 0
    assert canary["labelled"] == canary["predictions"] and 0.0 <= canary["quality"]["roc_auc"] <= 1.0
    metrics = check["windows"]["1h"]
    assert metrics["arm.canary.client_error_rate"] == canary["client_error_rate"]
    assert metrics["arm.challenger.client_error_rate_increase"] == canary["client_error_rate"]
    assert metrics["arm.challenger.quality.roc_auc_delta"] == canary["quality"]["roc_auc"] - prod["quality"]["roc_auc"]
    fired = " ".join(check["firings"])
    assert "canary-refusals" in fired and "production-refusals" not in fired and "canary-quality" not in fired
    assert "rollout health per arm" in table_out and "canary-v3" in table_out
    alert = Workspace.open(project)
    from loopml.monitoring.records import monitor_alerts, recent

    stored = recent(alert, monitor_alerts, "fired_at", 10, rule="canary-refusals")
    assert stored and {a["arm"] for a in stored[0]["evidence"]["arms"]} == {"production", "canary"}
    html = cli("monitor", "report", "-p", str(project), "-w", "1h", check=True)
    page = (project / ".loopml" / "reports" / "monitoring.html").read_text()
    assert "Rollout health per arm" in page and "<td>canary</td><td>v3</td><td>canary-v3</td>" in page, html.stdout
    data = json.loads((project / ".loopml" / "reports" / "monitoring.json").read_text())
    assert {a["arm"] for a in data["rollout"]} == {"production", "canary"}
