"""Retraining triggers (alerts, schedule, new labels, cooldown) and the export of labelled rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loopml.monitoring.alerts import Firing
from loopml.monitoring.records import ensure_tables, insert_row, monitor_decisions, new_id
from loopml.monitoring.retrain import Trigger, export_labelled, export_watermark, retrain, triggers_for
from loopml.spec import parse_spec_text
from loopml.workspace import Workspace
from tests.monitoring.logdata import feedback_segment, prediction_segment

SPEC = """
task: {type: binary, target: clicked, timestamp: event_time}
data:
  sources:
    events: {type: parquet, path: "data/*.parquet"}
monitoring:
  retraining: {schedule: 7d, min_new_labels: 100, export_path: data, cooldown: 1h}
"""


def _ws(project: Path) -> Workspace:
    ws = Workspace.open(project, parse_spec_text(SPEC, "loopml.yaml"))
    ensure_tables(ws)
    return ws


def _log(ws: Workspace, n: int, labelled: int, at: dt.datetime) -> None:
    rng = np.random.default_rng(n)
    inputs = pa.table({"price": rng.uniform(size=n), "country": rng.choice(["fr", "de"], n)})
    rids = prediction_segment(ws.root, inputs, rng.uniform(size=n), [at] * n)
    feedback_segment(ws.root, rids[:labelled], rng.integers(0, 2, labelled).astype(float), at)


def test_schedule_new_labels_alerts_and_cooldown(project: Path) -> None:
    ws = _ws(project)
    now = dt.datetime.now(dt.UTC)
    _log(ws, 300, 150, now - dt.timedelta(minutes=5))
    alert = Firing("drift", "drift.share", ">", 0.2, 0.5, "1d", "warning", True, alert_id="a1")
    triggers, hold = triggers_for(ws, [alert], now)
    assert [t.kind for t in triggers] == ["alert", "schedule", "new_labels"]
    assert triggers[2].evidence["new_labels"] == 150 and hold is None
    # a retraining a minute ago: the schedule and the labels reset, the alert is held by the cooldown
    insert_row(ws, monitor_decisions, decision_id=new_id(), decided_at=now - dt.timedelta(minutes=1), triggers=[],
               action="retrain", status="approved")
    triggers, hold = triggers_for(ws, [alert], now)
    assert [t.kind for t in triggers] == ["alert"] and hold is not None and "cooldown" in hold
    # an hour and a half later new labels arrive: they count, and the cooldown is over
    later = now + dt.timedelta(minutes=90)
    _log(ws, 200, 120, now)
    triggers, hold = triggers_for(ws, [], later)
    assert [t.kind for t in triggers] == ["new_labels"] and hold is None


def test_export_follows_the_source_schema_and_never_exports_twice(project: Path) -> None:
    ws = _ws(project)
    (project / "data").mkdir()
    schema = pa.schema([("price", pa.float32()), ("country", pa.string()), ("campaign", pa.string()),
                        ("event_time", pa.timestamp("us")), ("clicked", pa.int8())])
    pq.write_table(pa.table({"price": pa.array([0.5], pa.float32()), "country": ["fr"], "campaign": ["x"],
                             "event_time": pa.array([dt.datetime(2026, 1, 1)], pa.timestamp("us")),
                             "clicked": pa.array([1], pa.int8())}), project / "data" / "initial.parquet")
    _log(ws, 100, 60, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    first = export_labelled(ws, export_watermark(ws))
    assert first["rows"] == 60
    table = pq.read_table(first["path"])
    assert table.schema.equals(schema)
    assert table.column("campaign").null_count == 60  # not logged by the service: null, never invented
    assert set(table.column("clicked").to_pylist()) <= {0, 1}
    insert_row(ws, monitor_decisions, decision_id=new_id(), decided_at=dt.datetime.now(dt.UTC), triggers=[],
               action="retrain", status="approved", evidence={"exported": first})
    assert export_labelled(ws, export_watermark(ws))["rows"] == 0
    # all the files of the glob read back together as one table
    assert sum(pq.read_metadata(p).num_rows for p in (project / "data").glob("*.parquet")) == 61


def test_a_retraining_finished_while_waiting_for_the_lock_is_not_repeated(project: Path) -> None:
    ws = _ws(project)
    now = dt.datetime.now(dt.UTC)
    # another `loopml monitor` started retraining before this one and ended while it waited for the lock
    insert_row(ws, monitor_decisions, decision_id="other-monitor", decided_at=now - dt.timedelta(minutes=3),
               triggers=[], action="retrain", status="approved", ended_at=now + dt.timedelta(seconds=30))
    decision = retrain(ws, [Trigger("alert", "alert `drift`")], None)
    assert decision.action == "skip" and decision.status == "skipped"
    assert "other-monitor" in decision.evidence["reason"]
    assert not (project / "data").exists()  # nothing exported, nothing run
