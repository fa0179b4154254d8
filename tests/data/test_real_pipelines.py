"""Ingest + validate on real datasets through the pipeline stages (small, fast, real)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from loopml.data.snapshots import list_snapshots
from tests.data.helpers import make_ws, run_stages


def test_kdd2012_clicks_with_hashed_user_ids(project: Path, datasets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPML_HASH_KEY", "kdd-test-key")
    csv = datasets / "kdd2012_click_small" / "Click_prediction_small.csv"
    ws = make_ws(
        project,
        "task: {type: binary, target: click}\n"
        "requirements: {privacy: {hash: [user_id], drop: [url_hash]}}\n"
        f"data:\n  sources:\n    clicks: {{type: csv, path: '{csv}'}}\n",
    )
    rep = run_stages(ws)
    assert rep.status == "success", rep.outcomes[-1].error
    t = pq.read_table(ws.artifacts.open_verified(rep.outcomes[1].outputs["table"]))
    assert t.num_rows == 39_948 and "url_hash" not in t.column_names
    users = t.column("user_id").to_pylist()
    assert all(isinstance(u, str) and len(u) == 32 for u in users[:100])
    assert len(set(users)) == 30_114  # hashing keeps distinct users distinct
    assert sum(t.column("click").to_pylist()) == 6_728
    schema = (project / "schema.yaml").read_text()
    assert "click: {type: int64, nullable: false, max_missing_rate: 0.0, min: 0, max: 1, domain: [0, 1]}" in schema


def test_davidson_transform_derives_binary_label(project: Path, datasets: Path) -> None:
    csv = datasets / "davidson_hate_speech" / "labeled_data.csv"
    ws = make_ws(
        project,
        "task: {type: binary, target: harmful}\n"
        f"data:\n  sources:\n    tweets: {{type: csv, path: '{csv}'}}\n"
        "  transform: SELECT column0 AS tweet_id, tweet, \"count\" AS annotators, CAST(class <> 2 AS INTEGER) AS harmful"
        " FROM tweets ORDER BY tweet_id\n"
        "  verification: {unique_keys: [tweet_id]}\n",
    )
    rep = run_stages(ws)
    assert rep.status == "success", rep.outcomes[-1].error
    assert rep.outcomes[1].summary["kept_rows"] == 24_783
    t = pq.read_table(ws.artifacts.open_verified(rep.outcomes[0].outputs["table"]))
    assert sum(t.column("harmful").to_pylist()) == 20_620
    assert list_snapshots(ws)[0].manifest["transform"].startswith("SELECT column0")
