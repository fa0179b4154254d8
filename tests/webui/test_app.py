"""`loopml ui` without a browser: admin actions need the token, report paths stay in their folder, runs page."""

from __future__ import annotations

import datetime as dt
import html
import inspect

from starlette.testclient import TestClient

from loopml.registry import Registry
from loopml.serving.auth import AdminAuth
from loopml.webui import create_app
from loopml.workspace import Workspace
from loopml.workspace.metadata import runs


def _workspace_with_a_version(tmp_path):
    ws = Workspace.open(tmp_path)
    digest = ws.put_artifact_bytes(b"not a model bundle", kind="bundle", name="bundle")
    Registry(ws).register(digest, verdict={"approved": True, "gates": []}, lineage={})
    return ws


def test_the_ui_binds_this_machine_only_by_default():
    from loopml.cli.webui_cmd import ui

    assert inspect.signature(ui).parameters["host"].default.default == "127.0.0.1"


def test_promotion_needs_the_token_and_a_servable_version(tmp_path):
    ws = _workspace_with_a_version(tmp_path)
    read_only = TestClient(create_app(tmp_path, auth=AdminAuth("UNSET_UI_TEST_TOKEN", token=None), warm=False))
    page = read_only.get("/models/v1/promote")
    assert page.status_code == 200 and 'id="read-only"' in page.text and "promote-form" not in page.text
    refused = read_only.post("/models/v1/promote", data={"reason": "r", "token": "anything"})
    assert refused.status_code == 401 and "disabled" in refused.text

    client = TestClient(create_app(tmp_path, auth=AdminAuth("X", token="s3cret"), warm=False))
    assert 'id="promote-form"' in client.get("/models/v1/promote").text
    for token, expected in (("", "token required"), ("wrong", "token rejected")):
        r = client.post("/models/v1/promote", data={"reason": "r", "token": token})
        assert r.status_code == 401 and expected in r.text
    # the right token, but the bundle cannot be loaded: refused before the registry records anything
    r = client.post("/models/v1/promote", data={"reason": "r", "token": "s3cret"})
    assert r.status_code >= 400 and "cannot be served" in r.text
    assert Registry(ws).get("v1").state == "candidate" and Registry(ws).production() is None


def test_report_paths_stay_in_the_runs_folder(tmp_path):
    ws = Workspace.open(tmp_path)
    (ws.reports / "abc").mkdir()
    (ws.reports / "abc" / "evaluation.html").write_text("<!doctype html><title>r</title>")
    client = TestClient(create_app(tmp_path, auth=AdminAuth("X", token=None), warm=False))
    assert client.get("/runs/abc/reports/evaluation.html").status_code == 200
    for path in ("/runs/abc/reports/..%2F..%2Fmetadata.sqlite", "/runs/..%2F/reports/metadata.sqlite",
                 "/runs/abc/reports/.hidden", "/runs/zzz/reports/evaluation.html"):
        assert client.get(path).status_code == 404, path


def test_runs_are_paginated_newest_first(tmp_path):
    ws = Workspace.open(tmp_path)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with ws.engine.begin() as conn:
        conn.execute(runs.insert(), [
            {"run_id": f"run{i:04d}", "command": "loopml run", "status": "success",
             "started_at": t0 + dt.timedelta(minutes=i), "ended_at": t0 + dt.timedelta(minutes=i, seconds=3)}
            for i in range(120)])
    client = TestClient(create_app(tmp_path, auth=AdminAuth("X", token=None), warm=False))
    first = client.get("/runs").text
    assert "120 runs" in first and "page 1 of 3" in first and first.index("run0119") < first.index("run0118")
    assert 'href="/runs?page=2"' in first and "run0069" not in first
    last = client.get("/runs?page=3").text
    assert "run0000" in last and "run0020" not in last and 'href="/runs?page=2"' in last


def test_the_quarantine_browser_shows_each_row_with_its_reason(tmp_path):
    import pyarrow as pa

    from loopml.data.snapshots import write_snapshot
    from loopml.spec.data import Verification
    from loopml.validation.profile import profile_table
    from loopml.validation.quarantine import store_quarantine
    from loopml.validation.schema import infer_schema
    from loopml.validation.validator import validate_table

    ws = Workspace.open(tmp_path)
    ref = pa.table({"k": list(range(100)), "v": [i % 10 for i in range(100)]})
    cur = pa.table({"k": list(range(100)), "v": [99 if i % 4 == 0 else i % 10 for i in range(100)]})
    snap = write_snapshot(ws, cur, kind="full", parent=None, config_hash="c" * 64, execution_id=None, manifest_extra={})
    out = validate_table(cur, infer_schema(profile_table(ref), unique_keys=["k"]), profile_table(ref),
                         Verification(max_quarantine_rate=1.0))
    n, _, _ = store_quarantine(ws, out, execution_id="e1", snapshot_id=snap.snapshot_id)
    client = TestClient(create_app(tmp_path, auth=AdminAuth("X", token=None), warm=False))
    listing = client.get("/data").text
    assert snap.snapshot_id in listing and f">{n}<" in listing  # quarantined rows counted per snapshot
    page = client.get(f"/data/{snap.snapshot_id}?tab=quarantine").text
    rows = page.split('id="quarantine"')[1]
    assert rows.count("<tr>") == n + 1 and "99" in rows  # every row (header + n), its value and reason
    for reason in set(out.quarantine.column("reason").to_pylist()):
        assert html.escape(reason) in rows
