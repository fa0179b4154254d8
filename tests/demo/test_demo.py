"""`loopml demo` end to end (small volumes), the served demo model over HTTP, and the demo's parts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from loopml.demo import Client, ServiceProcess, labels_within_window, request_rows
from loopml.demo.project import MARKER, ensure_hash_key, prepare_project
from loopml.demo.replay import _fill_cold_start
from loopml.errors import WorkspaceError
from loopml.registry import Registry
from loopml.reporting import collect
from loopml.simulator import SimulatorConfig, TrafficSimulator
from loopml.spec import load_spec
from loopml.workspace import Workspace

DEMO_ARGS = ["--no-serve", "--days", "3", "--impressions-per-day", "2500", "--replay-batch", "200"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One `loopml demo --no-serve` with small volumes; its project folder and output."""
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("demo")
    proj = root / "loopml-demo"
    env = {k: v for k, v in os.environ.items() if k != "LOOPML_HASH_KEY"}
    proc = run_cli("demo", "-p", str(proj), *DEMO_ARGS, env={**env, "COLUMNS": "220"}, timeout=900)
    return proj, proc


@pytest.mark.slow
def test_demo_runs_the_whole_loop(demo_run):
    proj, proc = demo_run
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    # every step ran, in order
    for step in ("[1/8]", "[2/8]", "[3/8]", "[4/8]", "[5/8]", "[6/8]", "[7/8]", "[8/8]"):
        assert step in out
    for stage in ("ingest", "validate", "features", "train", "evaluate", "register"):
        assert f"■ {stage}" in out
    assert "leaderboard" in out and "gates:" in out
    assert "drift alert: input-drift" in out
    assert "retrained; the approved candidate v2 is registered" in out
    assert "curl -s http://127.0.0.1:" in out and "/v1/predict" in out
    # the registry: v1 served first; v2 approved and registered by the retraining, then rolled out by the evidence
    ws = Workspace.open(proj)
    reg = Registry(ws)
    versions = {v.version_id: v for v in reg.list()}
    assert versions["v1"].approved and versions["v2"].approved
    demo = json.loads((proj / ".loopml" / "demo.json").read_text())
    rollout = demo["rollout"]
    assert rollout["version_id"] == "v2" and rollout["decision"] in ("promoted", "rolled_back")
    flat = " ".join(out.split())
    moves = [(t.from_state, t.to_state, t.actor) for t in reg.history("v2") if t.from_state]  # after registering
    assert moves[0][1:] == ("shadow", "loopml demo")  # the candidate first only shadows production
    assert "shadow v2:" in flat and "paired predictions, score correlation" in flat
    reasons = " ".join(t.reason for t in reg.history("v2"))
    from loopml.experiments.records import get

    if rollout["decision"] == "promoted":
        assert "rollout: v2 PROMOTED to production by the evidence" in flat
        assert [m[:2] for m in moves] == [("candidate", "shadow"), ("shadow", "canary"), ("canary", "production")]
        assert versions["v2"].state == "production" and versions["v1"].state == "archived"
        assert demo["served_version"] == "v2"
        # every gated step was walked: the canary answered at 25% and then at 100% of the traffic
        assert rollout["steps_reached"] == [0.25, 1.0] and "step 2 of 2, 100% of the traffic" in flat
        assert "every gated step passed" in reasons and "always-valid p" in reasons and "Brier" in reasons
        online = rollout["canary"]["online"]
        assert not (online["significant"] and online["lift"] < 0)  # promoted only when not significantly worse
        assert get(ws, "canary-v2")["status"] == "promoted"  # type: ignore[index]
    else:
        assert "rollout: v2 ROLLED BACK at the" in flat
        assert moves[-1][1] == "archived" and versions["v2"].state == "archived"
        assert versions["v1"].state == "production" and demo["served_version"] == "v1"
        assert rollout["reason"].split(" (by ")[0] in reasons  # the registry says why
    assert get(ws, "shadow-v2")["status"] in ("passed", "rolled_back")  # type: ignore[index]
    # privacy: user ids were hashed before the lake; the key never went into the spec
    facts = collect(ws)
    schema = {f["name"]: f["type"] for f in facts.output_json("ingest", "manifest")["schema"]}
    assert schema["user_id"] == "string"
    key = (proj / ".hash_key").read_text().strip()
    assert key and key not in (proj / "loopml.yaml").read_text()
    assert oct((proj / ".hash_key").stat().st_mode & 0o777) == "0o600"
    # the replay measured real HTTP traffic and sent every label back
    replay = demo["replay"]
    assert replay["errors"] == 0 and replay["rows"] > 1000 and replay["feedback"] == replay["rows"]
    assert demo["decision"]["status"] == "approved" and demo["decision"]["version_id"] == "v2"
    assert "device" in demo["drifted_features"]  # the shifted user population is mobile-heavy
    # monitoring recorded the alert and the retraining decision
    assert any(a["rule"] == "input-drift" for a in facts.alerts)
    assert facts.decisions[0]["status"] == "approved"


@pytest.mark.slow
def test_demo_design_document_holds_the_measured_figures(demo_run):
    proj, proc = demo_run
    assert proc.returncode == 0
    md = (proj / ".loopml" / "reports" / "design.md").read_text()
    page = (proj / ".loopml" / "reports" / "design.html").read_text()
    assert str(proj / ".loopml" / "reports" / "design.html") in proc.stdout.replace("\n", "")
    facts = collect(Workspace.open(proj))
    evaluation = facts.output_json("evaluate", "report")
    m = evaluation["metrics"]["roc_auc"]
    assert f"{m['value']:.4f}" in md and f"[{m['lower']:.4f}, {m['upper']:.4f}]" in md
    demo = json.loads((proj / ".loopml" / "demo.json").read_text())
    assert f"p99 {demo['replay']['p99_ms']:.2f} ms" in md  # measured HTTP latency of the replay
    assert "Simulated traffic" in md and "oracle ROC-AUC" in md
    assert "input-drift" in md and "Retraining decisions" in md and "| v2 |" in md
    assert "Not measured yet" not in md  # every step ran in the demo
    assert "Rollout of v2 (the retrained candidate)" in md and demo["rollout"]["reason"] in md
    import re

    from tests.webui.conftest import assert_self_contained

    assert_self_contained(page)  # the web UI's chart layer inlined: no request
    charts = [json.loads(c) for c in re.findall(r'<script type="application/json" id="design-figure-\d+">(.*?)</script>',
                                                page)]
    assert len(charts) >= 3  # leaderboard, slices, drift per feature
    for c in charts:  # each bar with its interval (PSI has none)
        assert c["kind"] == "bars" and len(c["labels"]) == len(c["series"][0]["values"]) > 0


@pytest.mark.slow
def test_the_served_demo_model_over_http(demo_run, tmp_path, monkeypatch):
    """Start `loopml serve` on the demo project and drive it over real HTTP."""
    proj, proc = demo_run
    assert proc.returncode == 0
    spec = load_spec(proj)
    monkeypatch.setenv("LOOPML_HASH_KEY", (proj / ".hash_key").read_text().strip())  # the demo's ids
    service = ServiceProcess(proj, 0, log_path=tmp_path / "serve.log").start()  # any free port, read back
    try:
        assert service.port > 0 and service.url.endswith(f":{service.port}")
        client = Client(service.host, service.port)
        assert client.get("/health")[0] == 200
        sim = TrafficSimulator(SimulatorConfig(seed=0, impressions_per_day=400).scaled(0.02))
        rows = request_rows(sim.day(2), spec)
        ws = Workspace.open(proj)
        seen = facts_table(ws)
        known_users, known_ads = set(pq_column(seen, "user_id")), set(pq_column(seen, "ad_id"))
        # rows whose user and ad the online store knows (an unknown entity is refused: see the report)
        known = [r for r in rows if r["user_id"] in known_users and r["ad_id"] in known_ads]
        assert len(known) > 21
        row = known[0]
        status, body = client.post("/v1/predict", row)
        assert status == 200, body
        served = json.loads((proj / ".loopml" / "demo.json").read_text())["served_version"]  # v2 when promoted
        assert body["model_version"] == served and 0.0 < body["score"] < 1.0 and body["request_id"]
        # the same rows in one batch request give the same score for that row
        status, many = client.post("/v1/predict", {"rows": [row, *known[1:21]]})
        assert status == 200 and len(many["scores"]) == 21
        assert many["scores"][0] == pytest.approx(body["score"], abs=1e-6)
        # invalid input: 422 naming the field, the value and what was expected
        bad = {**row, "position": "top"}
        status, err = client.post("/v1/predict", bad)
        assert status == 422 and err["detail"][0]["field"] == "position" and err["detail"][0]["value"] == "top"
        # feedback by request id is recorded
        status, fb = client.post("/v1/feedback", {"request_id": body["request_id"], "label": 1})
        assert status == 200 and fb["recorded"] == 1
        # the curl example the demo printed works as printed
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("curl -s http://127.0.0.1:"))
        example = json.loads(line.split(" -d '", 1)[1].rstrip("'"))
        status, out = client.post("/v1/predict", example)
        assert status == 200 and 0.0 < out["score"] < 1.0, out
        status, text = client.get("/metrics")
        assert status == 200 and served in str(text)
        client.close()
    finally:
        service.stop()
    assert service.proc is not None and service.proc.poll() is not None


def facts_table(ws: Workspace):
    import pyarrow.parquet as pq

    facts = collect(ws)
    return pq.read_table(ws.artifacts.open_verified(facts.stages["features"].outputs["table"]))


def pq_column(table, name: str) -> list:
    return table.column(name).to_pylist()


def test_cli_demo_rejects_an_unknown_drift(cli, tmp_path):
    proc = cli("demo", "-p", str(tmp_path / "d"), "--drift", "winter", "--no-serve")
    assert proc.returncode == 2 and "winter" in proc.stderr and "user_shift" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_prepare_project_never_overwrites_a_foreign_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(WorkspaceError, match="not a loopml demo project"):
        prepare_project(foreign, fresh=True, port=8123)
    assert (foreign / "notes.txt").read_text() == "keep me"
    demo = prepare_project(tmp_path / "demo", fresh=True, port=8123)
    assert (demo / MARKER).exists()
    assert load_spec(demo).deployment.port == 8123
    (demo / "data").mkdir()
    prepare_project(demo, fresh=True, port=8124)  # a previous demo's folder is replaced
    assert not (demo / "data").exists() and load_spec(demo).deployment.port == 8124


def test_hash_key_comes_from_the_environment_or_a_private_file(tmp_path, monkeypatch):
    monkeypatch.delenv("DEMO_TEST_KEY", raising=False)
    note = ensure_hash_key(tmp_path, "DEMO_TEST_KEY")
    assert "generated" in note and len(os.environ["DEMO_TEST_KEY"]) == 32
    assert (tmp_path / ".hash_key").stat().st_mode & 0o077 == 0
    first = os.environ["DEMO_TEST_KEY"]
    monkeypatch.delenv("DEMO_TEST_KEY")
    ensure_hash_key(tmp_path, "DEMO_TEST_KEY")
    assert os.environ["DEMO_TEST_KEY"] == first  # the same key on a rerun: hashed ids stay joinable
    monkeypatch.setenv("DEMO_TEST_KEY", "mine")
    assert ensure_hash_key(tmp_path, "DEMO_TEST_KEY") == "from the environment"


def test_replay_labels_follow_the_click_window(tmp_path):
    sim = TrafficSimulator(SimulatorConfig(impressions_per_day=3000, seed=9))
    day = sim.day(0)
    y = labels_within_window(day, 600)
    clicked = day.truth.column("clicked").to_numpy().astype(bool)
    assert y.shape[0] == day.impressions.num_rows
    assert not np.any(y[~clicked])  # no label without a click
    late = day.stats["clicks_later_than_10min"]
    assert int(y.sum()) == int(clicked.sum()) - late  # clicks after the window are negatives, as at ingestion
    assert int(labels_within_window(day, 1e9).sum()) == int(clicked.sum())


def test_request_rows_apply_the_spec_privacy(monkeypatch):
    from loopml.demo.project import template_text
    from loopml.spec import parse_spec_text

    monkeypatch.setenv("LOOPML_HASH_KEY", "k1")
    spec = parse_spec_text(template_text(), "ad_clicks.yaml")
    day = TrafficSimulator(SimulatorConfig(impressions_per_day=500, seed=1)).day(0)
    rows = request_rows(day, spec)
    assert len(rows) == day.impressions.num_rows
    assert "impression_id" not in rows[0]
    raw = day.impressions.column("user_id").to_pylist()
    assert all(isinstance(r["user_id"], str) and len(r["user_id"]) == 32 for r in rows)
    assert rows[0]["user_id"] != str(raw[0])
    assert rows[0]["ts"].startswith(day.date.isoformat())


def test_cold_start_fill_only_accepts_missing_store_fields():
    store = {"user_ctr_7d", "ad_ctr_7d"}
    rows = [{"a": 1}, {"a": 2}]
    body = {"detail": [{"loc": ["body", 1, "user_ctr_7d"], "field": "user_ctr_7d", "msg": "field `user_ctr_7d` is missing"}]}
    assert _fill_cold_start(rows, body, store) and rows[1] == {"a": 2, "user_ctr_7d": None}
    other = {"detail": [{"loc": ["body", 0, "position"], "field": "position", "msg": "field `position` got str"}]}
    assert not _fill_cold_start(rows, other, store)


def test_inferred_schema_of_the_demo_has_no_range_on_ids_or_event_time(demo_run):
    """Every new day of logs brings new ids and later timestamps: the inferred schema must not quarantine them."""
    from loopml.validation.schema import load_schema

    proj, proc = demo_run
    assert proc.returncode == 0
    spec = load_spec(proj)
    schema = load_schema(proj / spec.data.verification.schema_path)
    for name in ("impression_id", "ts", "ad_id", "advertiser_id", "query_id", "keyword_id"):
        col = schema.columns.get(name)
        assert col is not None and col.min is None and col.max is None, name
    assert schema.columns["depth"].domain or schema.columns["depth"].max is not None


@pytest.mark.slow
def test_a_normal_day_through_the_demo_service_raises_no_alert(demo_run, tmp_path, monkeypatch):
    """The false-alarm side of the demo's drift alert: an undrifted day replayed the same way stays quiet."""
    import shutil

    from loopml.demo import replay_day
    from loopml.monitoring.loop import run_cycle

    proj, proc = demo_run
    assert proc.returncode == 0
    copy = tmp_path / "quiet"
    shutil.copytree(proj, copy, ignore=shutil.ignore_patterns("logs", "run.lock", "serve.ready"))
    monkeypatch.setenv("LOOPML_HASH_KEY", (copy / ".hash_key").read_text().strip())
    spec = load_spec(copy)
    sim = TrafficSimulator(SimulatorConfig(seed=0, impressions_per_day=2500).scaled(0.02))
    service = ServiceProcess(copy, 0, log_path=tmp_path / "serve.log").start()
    try:
        stats = replay_day(sim.day(4), spec, service.host, service.port, batch=200)
    finally:
        service.stop()  # stopping flushes the prediction log
    assert stats.errors == 0
    cycle = run_cycle(Workspace.open(copy), retraining=False)
    sig = cycle.windows[spec.monitoring.drift.window]
    assert sig.drift is not None and sig.metrics["drift.rows"] >= stats.rows * 0.9
    assert sig.drift.drifted in ([], ["score"]), sig.drift.drifted
    assert cycle.firings == [], [(f.rule, f.value) for f in cycle.firings]


@pytest.mark.slow
def test_a_service_that_dies_while_answering_is_named_with_its_signal_and_log(demo_run, tmp_path, monkeypatch):
    """The 10M-row demo once lost its service to SIGSEGV mid-replay and said only `RemoteDisconnected`."""
    import http.client
    import signal

    proj, _ = demo_run
    monkeypatch.setenv("LOOPML_HASH_KEY", (proj / ".hash_key").read_text().strip())
    service = ServiceProcess(proj, 0, log_path=tmp_path / "serve.log").start()
    try:
        client = Client(service.host, service.port)
        assert client.get("/health")[0] == 200
        os.kill(service.proc.pid, signal.SIGSEGV)
        service.proc.wait(timeout=30)  # dead before the next request goes out on the kept-alive connection
        with pytest.raises((http.client.HTTPException, ConnectionError)) as caught:
            client.get("/health")
        err = service.lost(caught.value)
        assert "died of SIGSEGV" in str(err) and str(tmp_path / "serve.log") in str(err)
        assert service.url in str(err)
    finally:
        service.stop()
