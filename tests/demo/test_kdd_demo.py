"""`loopml demo --data`: the same ad_clicks spec, unchanged, on the real KDD Cup 2012 click log."""

from __future__ import annotations

import json
import os
import sqlite3

import pyarrow.parquet as pq
import pytest

from loopml.demo.project import template_text
from loopml.registry import Registry
from loopml.reporting import collect
from loopml.reporting.sections import fmt
from loopml.workspace import Workspace

KDD_FILE = "kdd2012_click_small/Click_prediction_small.csv"
ROWS = 39_948
DAYS = 7  # the default: 7 training days + 1 held-out day
HELD_OUT = ROWS - ROWS * DAYS // (DAYS + 1)  # the rows of the last of 8 equal slices


@pytest.fixture(scope="module")
def kdd_demo(tmp_path_factory, datasets):
    """One `loopml demo --no-serve --data <the real csv>` over the whole file."""
    from tests.conftest import run_cli

    proj = tmp_path_factory.mktemp("kdd") / "loopml-demo"
    env = {k: v for k, v in os.environ.items() if k != "LOOPML_HASH_KEY"}
    proc = run_cli("demo", "-p", str(proj), "--no-serve", "--data", str(datasets / KDD_FILE), "--replay-batch", "500",
                   env={**env, "COLUMNS": "220"}, timeout=600)
    return proj, proc


@pytest.mark.slow
def test_the_template_spec_runs_unchanged_on_the_real_log(kdd_demo):
    proj, proc = kdd_demo
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    assert (proj / "loopml.yaml").read_text() == template_text().replace("port: 8700", f"port: {_port(proj)}")
    assert "importing the real KDD Cup 2012 click log" in out and "simulating" not in out
    assert f"{HELD_OUT:,} held out for the replay" in out
    # the first training ingested the 7 training days of real rows, with the file's labels
    first = _ingests(proj)[0]
    assert first["rows"] == ROWS - HELD_OUT
    imp = pq.read_table(proj / "data" / "impressions")  # after the replay the held-out day landed too
    assert imp.num_rows == ROWS and pq.read_table(proj / "data" / "clicks").num_rows == 6_728
    # a model passed the gates, was registered and served
    versions = {v.version_id: v for v in Registry(Workspace.open(proj)).list()}
    promoted = (json.loads((proj / ".loopml" / "demo.json").read_text()).get("rollout") or {}).get("decision")
    assert versions["v1"].approved and versions["v1"].state == ("archived" if promoted == "promoted" else "production")


@pytest.mark.slow
def test_the_held_out_day_went_through_the_service_and_monitoring_told_the_truth(kdd_demo):
    proj, proc = kdd_demo
    assert proc.returncode == 0
    demo = json.loads((proj / ".loopml" / "demo.json").read_text())
    assert demo["source"] == "kdd"
    replay = demo["replay"]
    assert replay["rows"] == HELD_OUT and replay["errors"] == 0 and replay["feedback"] == HELD_OUT
    manifest = json.loads((proj / "data" / "import.json").read_text())
    held = manifest["days"][-1]
    assert held["held_out"] and held["first_row"] == ROWS - HELD_OUT + 1 and held["last_row"] == ROWS
    assert replay["positives"] == held["clicks"]  # the real clicks went back as feedback
    assert replay["model_versions"] == ["v1"] and 0.05 < replay["mean_score"] < 0.4
    out = proc.stdout
    facts = collect(Workspace.open(proj))
    if demo["firings"]:  # whatever monitoring found is what the demo reports, and only then it retrains
        assert "drift alert: " in out and demo["decision"] is not None
        assert any(a["rule"] == demo["firings"][0]["rule"] for a in facts.alerts)
        for col in set(demo["drifted_features"]) & {"ad_id", "advertiser_id"}:
            shares = demo["unseen_ids"][col]
            assert f"{col}: {shares['replayed']:.1%} of the replayed day's values never occur" in out
    else:
        assert "monitoring found no drift" in out or "but no alert rule fired" in out
        assert demo["decision"] is None and "no retraining was triggered" in out


@pytest.mark.slow
def test_the_design_document_holds_the_measured_figures_and_the_import_note(kdd_demo):
    proj, proc = kdd_demo
    assert proc.returncode == 0
    md = (proj / ".loopml" / "reports" / "design.md").read_text()
    facts = collect(Workspace.open(proj))
    m = facts.output_json("evaluate", "report")["metrics"]["roc_auc"]
    assert f"{m['value']:.4f}" in md and f"[{m['lower']:.4f}, {m['upper']:.4f}]" in md
    demo = json.loads((proj / ".loopml" / "demo.json").read_text())
    # the document's own number format (thousands separators, no decimals from 1,000 ms on)
    assert f"p99 {fmt(demo['replay']['p99_ms'], 2)} ms" in md
    assert "imported from the real KDD Cup 2012 click log" in md and "sha256 2d95fded9f897852" in md
    assert "in effect a random split" in md and "| held out, replayed |" in md
    assert f"{ROWS - HELD_OUT + 1:,}–{ROWS:,}" in md  # the file rows of the replayed day
    assert "Simulated traffic" not in md and "oracle" not in md  # no simulator figures for real data
    assert "Not measured yet" not in md


def test_demo_with_a_bad_data_file_fails_before_making_a_project(cli, tmp_path):
    bad = tmp_path / "log.csv"
    bad.write_text('"click","ad_id"\n\n1,7\n')
    proc = cli("demo", "-p", str(tmp_path / "d"), "--no-serve", "--data", str(bad))
    assert proc.returncode != 0
    assert f"{bad}: the click log lacks the column(s) `advertiser_id`" in proc.stderr
    assert not (tmp_path / "d").exists()


def _port(proj) -> int:
    from loopml.spec import load_spec

    return load_spec(proj).deployment.port


def _ingests(proj) -> list[dict]:
    con = sqlite3.connect(proj / ".loopml" / "metadata.sqlite")
    try:
        rows = con.execute(
            "SELECT summary FROM executions WHERE stage = 'ingest' AND status = 'success' ORDER BY started_at"
        ).fetchall()
    finally:
        con.close()
    return [json.loads(r[0]) for r in rows]


def test_rows_without_data_is_a_usage_error(cli, tmp_path):
    proc = cli("demo", "-p", str(tmp_path / "d"), "--no-serve", "--rows", "100")
    assert proc.returncode == 2 and "--rows" in proc.stderr and "--data" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_a_kept_project_never_trains_on_the_day_it_replays(datasets, tmp_path):
    """A `--keep` rerun: the previous run's landed replay day and simulated logs are cleared, nothing else."""
    from loopml.demo import DemoSettings
    from loopml.demo.traffic import imported_traffic
    from loopml.simulator import read_kdd_log

    data = tmp_path / "data"
    for name in ("impressions", "clicks", "truth"):
        (data / name).mkdir(parents=True)
        (data / name / "2026-11-05.parquet").write_bytes(b"old")  # the previous run's landed replay day
    (data / "simulation.json").write_text("{}")
    (data / "notes.txt").write_text("mine")
    log = read_kdd_log(datasets / KDD_FILE, rows=400)
    traffic = imported_traffic(DemoSettings(days=3), log, data)
    assert sorted(p.name for p in (data / "impressions").iterdir()) == [
        "2026-11-02.parquet", "2026-11-03.parquet", "2026-11-04.parquet"]
    assert traffic.replay.date.isoformat() == "2026-11-05" and traffic.replay.impressions.num_rows == 100
    assert not (data / "truth").exists() and not (data / "simulation.json").exists()
    assert (data / "notes.txt").read_text() == "mine" and (data / "import.json").exists()
    traffic.land(data)
    assert pq.read_table(data / "impressions").num_rows == 400 and not (data / "truth").exists()
