"""The ingest stage: immutable snapshots, incremental globs, cache hits and crash safety."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from loopml.data.snapshots import chain, get_snapshot, list_snapshots, read_snapshot
from loopml.errors import NotFound
from loopml.workspace import sha256_file
from tests.data.helpers import make_ws, run_stages

GLOB_SPEC = """
task: {type: binary, target: label}
data:
  sources:
    events: {type: csv, path: 'logs/*.csv'}
  labels: {type: threshold, column: rating, op: '>=', value: 4}
"""


def _log(project: Path, name: str, rows: list[tuple[int, int]]) -> None:
    d = project / "logs"
    d.mkdir(exist_ok=True)
    (d / name).write_text("id,rating\n" + "".join(f"{i},{r}\n" for i, r in rows))


def test_snapshot_manifest_and_table_output(project: Path) -> None:
    _log(project, "a.csv", [(1, 5), (2, 1), (3, 4)])
    ws = make_ws(project, GLOB_SPEC)
    rep = run_stages(ws, until="ingest")
    assert rep.status == "success"
    out = rep.outcomes[0]
    snap = get_snapshot(ws, out.summary["snapshot"])
    assert snap.kind == "full" and snap.row_count == 3 and snap.version == 1
    m = json.loads((snap.path(ws).parent / "manifest.json").read_text())
    assert m["row_count"] == 3 and m["sha256"] == sha256_file(snap.path(ws)) == snap.sha256
    assert [c["name"] for c in m["schema"]] == ["id", "rating", "label"]
    f = m["sources"]["events"]["files"][0]
    assert f["sha256"] == sha256_file(project / "logs" / "a.csv") and f["size"] > 0
    table = pq.read_table(ws.artifacts.open_verified(out.outputs["table"]))
    assert table.column("label").to_pylist() == [1, 0, 1]
    manifest = json.loads(ws.artifacts.get_bytes(out.outputs["manifest"]))
    assert manifest["snapshot_id"] == snap.snapshot_id


def test_unchanged_sources_are_a_cache_hit_and_new_files_a_delta(project: Path) -> None:
    _log(project, "a.csv", [(1, 5), (2, 1)])
    ws = make_ws(project, GLOB_SPEC)
    first = run_stages(ws, until="ingest")
    second = run_stages(ws, until="ingest")
    assert second.outcomes[0].status == "cached"
    assert len(list_snapshots(ws)) == 1
    _log(project, "b.csv", [(3, 4), (4, 2), (5, 5)])
    third = run_stages(ws, until="ingest")
    assert third.outcomes[0].status == "success"
    snaps = list_snapshots(ws)
    assert [s.kind for s in snaps] == ["delta", "full"]
    delta = snaps[0]
    assert delta.row_count == 3 and delta.total_rows == 5 and delta.parent_id == snaps[1].snapshot_id
    assert pq.read_table(delta.path(ws)).column("id").to_pylist() == [3, 4, 5]  # only the new rows
    assert [s.snapshot_id for s in chain(ws, delta)] == [snaps[1].snapshot_id, delta.snapshot_id]
    full = pq.read_table(ws.artifacts.open_verified(third.outcomes[0].outputs["table"]))
    assert full.column("id").to_pylist() == [1, 2, 3, 4, 5]
    assert third.outcomes[0].summary["new_rows"] == 3
    assert first.outcomes[0].outputs["table"] != third.outcomes[0].outputs["table"]
    # the first snapshot is untouched (immutable)
    assert sha256_file(snaps[1].path(ws)) == snaps[1].sha256


def test_changed_file_gives_a_full_snapshot(project: Path) -> None:
    _log(project, "a.csv", [(1, 5)])
    ws = make_ws(project, GLOB_SPEC)
    run_stages(ws, until="ingest")
    _log(project, "a.csv", [(1, 5), (9, 9)])
    run_stages(ws, until="ingest")
    snaps = list_snapshots(ws)
    assert [s.kind for s in snaps] == ["full", "full"] and snaps[0].row_count == 2


def test_forced_rerun_reuses_identical_snapshot(project: Path) -> None:
    _log(project, "a.csv", [(1, 5)])
    ws = make_ws(project, GLOB_SPEC)
    a = run_stages(ws, until="ingest")
    b = run_stages(ws, until="ingest", force=True)
    assert b.outcomes[0].status == "success"
    assert a.outcomes[0].outputs == b.outcomes[0].outputs
    assert len(list_snapshots(ws)) == 1


def test_failed_ingestion_leaves_no_half_snapshot(project: Path) -> None:
    _log(project, "a.csv", [(1, 5), (2, 3)])
    ws = make_ws(project, GLOB_SPEC)
    run_stages(ws, until="ingest")
    before = sorted(p.name for p in (ws.lake / "snapshots").iterdir())
    (project / "logs" / "b.csv").write_text("id,rating\n3,4\n4\n")  # malformed line
    rep = run_stages(ws, until="ingest")
    assert rep.status == "failed"
    assert "b.csv line 3" in (rep.outcomes[0].error or "")
    assert sorted(p.name for p in (ws.lake / "snapshots").iterdir()) == before
    assert len(list_snapshots(ws)) == 1
    old = list_snapshots(ws)[0]
    assert sha256_file(old.path(ws)) == old.sha256


def test_crash_leftovers_are_cleaned(project: Path) -> None:
    _log(project, "a.csv", [(1, 5)])
    ws = make_ws(project, GLOB_SPEC)
    snaps_dir = ws.lake / "snapshots"
    snaps_dir.mkdir(parents=True, exist_ok=True)
    (snaps_dir / ".tmp-deadbeef").mkdir()
    (snaps_dir / ".tmp-deadbeef" / "data.parquet").write_bytes(b"partial")
    (snaps_dir / "v9-orphan").mkdir()  # renamed but never recorded
    run_stages(ws, until="ingest")
    names = sorted(p.name for p in snaps_dir.iterdir())
    assert names == [list_snapshots(ws)[0].snapshot_id]


def test_privacy_applied_before_the_lake(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "u.csv").write_text("email,age,secret\nzed@example.com,33,s3cr3t\nyan@example.com,47,hunter2\n")
    monkeypatch.setenv("LOOPML_HASH_KEY", "test-key")
    ws = make_ws(
        project,
        "requirements: {privacy: {drop: [secret], hash: [email]}}\n"
        "data: {sources: {u: {type: csv, path: u.csv}}}\n",
    )
    rep = run_stages(ws, until="ingest")
    assert rep.status == "success"
    for p in ws.lake.rglob("*"):
        if p.is_file():
            blob = p.read_bytes()
            assert b"zed@example.com" not in blob and b"hunter2" not in blob and b"s3cr3t" not in blob
    for p in ws.artifacts.root.rglob("*"):
        if p.is_file():
            assert b"zed@example.com" not in p.read_bytes()
    t = read_snapshot(ws, list_snapshots(ws)[0])
    assert t.column_names == ["email", "age"]


def test_key_change_invalidates_the_cache(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "u.csv").write_text("email\na@x\n")
    ws = make_ws(project, "requirements: {privacy: {hash: [email]}}\ndata: {sources: {u: {type: csv, path: u.csv}}}\n")
    monkeypatch.setenv("LOOPML_HASH_KEY", "k1")
    a = run_stages(ws, until="ingest")
    monkeypatch.setenv("LOOPML_HASH_KEY", "k2")
    b = run_stages(ws, until="ingest")
    assert b.outcomes[0].status == "success"
    assert a.outcomes[0].outputs["table"] != b.outcomes[0].outputs["table"]


def test_missing_key_fails_the_stage_clearly(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "u.csv").write_text("email\na@x\n")
    monkeypatch.delenv("LOOPML_HASH_KEY", raising=False)
    ws = make_ws(project, "requirements: {privacy: {hash: [email]}}\ndata: {sources: {u: {type: csv, path: u.csv}}}\n")
    rep = run_stages(ws, until="ingest")
    assert rep.status == "failed" and "$LOOPML_HASH_KEY is not set" in (rep.outcomes[0].error or "")
    assert list_snapshots(ws) == []


def test_snapshot_lookup_and_tamper_detection(project: Path) -> None:
    _log(project, "a.csv", [(1, 5)])
    ws = make_ws(project, GLOB_SPEC)
    run_stages(ws, until="ingest")
    snap = get_snapshot(ws, "latest")
    assert get_snapshot(ws, "v1") == snap == get_snapshot(ws, snap.snapshot_id[:6])
    with pytest.raises(NotFound, match="snapshot `v7` not found"):
        get_snapshot(ws, "v7")
    p = snap.path(ws)
    os.chmod(p, 0o644)
    p.write_bytes(p.read_bytes() + b"x")
    from loopml.errors import IntegrityError

    with pytest.raises(IntegrityError, match="does not match its recorded sha256"):
        read_snapshot(ws, snap)


def test_sql_source_is_reread_but_identical_content_is_not_duplicated(project: Path) -> None:
    import sqlite3

    db = project / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER, v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2, "b")])
    ws = make_ws(project, "data: {sources: {t: {type: sql, url: 'sqlite:///app.db', query: 'SELECT * FROM t ORDER BY id'}}}\n")
    a = run_stages(ws)
    b = run_stages(ws)
    assert b.outcomes[0].outputs == a.outcomes[0].outputs  # same content → same digests
    assert b.outcomes[1].status == "cached"  # so validation downstream is a cache hit
    assert len(list_snapshots(ws)) == 1
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO t VALUES (3, 'c')")
    c = run_stages(ws)
    assert c.outcomes[0].summary["rows"] == 3 and len(list_snapshots(ws)) == 2
