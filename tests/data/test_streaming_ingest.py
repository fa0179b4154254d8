"""Streaming ingestion: a Parquet base source goes to the lake in record batches, never whole, with the rows,
order, types, labels, privacy and provenance that building the table whole gives."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import loopml.data.etl as etl
from loopml.data.etl import build_examples, stream_examples, streams
from loopml.data.snapshots import get_snapshot, provenance_path
from loopml.errors import DataError
from loopml.spec import parse_spec_text
from loopml.validation.quarantine import quarantine_file
from tests.data.helpers import make_ws, run_stages

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

SPEC = """
task: {type: binary, target: clicked}
data:
  sources:
    imp: {type: parquet, path: 'imp/*.parquet'}
    clk: {type: parquet, path: clk.parquet}
  labels: {type: event_within_window, impressions: imp, events: clk, keys: [imp_id],
           impression_time: ts, event_time: click_ts, window_seconds: 60, label: clicked}
  verification: {max_quarantine_rate: 0.5}
requirements:
  privacy:
    hash: [user]
    hash_key_env: STREAM_TEST_KEY
    coarsen: [{column: price, method: round, step: 0.5}]
"""


def _write(project: Path, days: int = 3, per_day: int = 23) -> None:
    """Impressions over ``days`` files (the last one with a column the first lacks) and their clicks."""
    (project / "imp").mkdir(exist_ok=True)
    clicks: list[dict[str, object]] = []
    n = 0
    for d in range(days):
        rows = []
        for i in range(per_day):
            ts = T0 + dt.timedelta(days=d, seconds=37 * i)
            rows.append({"imp_id": n, "user": f"u{(n * 7) % 11}", "ad": ["a", "b", "c"][n % 3],
                         "price": 0.1 * n, "ts": ts, **({"extra": n} if d == days - 1 else {})})
            if n % 4 == 0:  # every 4th clicked within the window, every 10th too late
                clicks.append({"imp_id": n, "click_ts": ts + dt.timedelta(seconds=30 if n % 10 else 600)})
            n += 1
        pq.write_table(pa.Table.from_pylist(rows), project / "imp" / f"day{d}.parquet")
    pq.write_table(pa.Table.from_pylist(clicks), project / "clk.parquet")


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_TEST_KEY", "k3y")


def test_streamed_examples_equal_the_whole_table_built_in_several_batches(project: Path, key: None) -> None:
    _write(project)
    spec = parse_spec_text(SPEC)
    assert streams(spec)
    whole = build_examples(spec, project)
    out = project / "out.parquet"
    streamed = stream_examples(spec, project, out, batch_rows=10)
    assert streamed.written is not None and streamed.written.rows == 69
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups == 7  # 69 rows in row groups of 10: the table was never written in one piece
    got = pq.read_table(out)
    assert got.schema == whole.table.schema  # same types (timestamps, hashed strings, coarsened numbers)
    assert got.equals(whole.table)  # same rows, order, labels, hashes and coarsened values
    assert got.column("clicked").to_pylist().count(1) == len([n for n in range(69) if n % 4 == 0 and n % 10])
    assert pq.read_table(streamed.written.provenance).equals(whole.provenance)  # file and record of every row
    assert streamed.files == whole.files and streamed.source_rows == whole.source_rows
    assert streamed.notes == whole.notes and any("extra" in n for n in streamed.notes)


def test_the_ingest_stage_streams_and_validation_quarantines_as_before(
    project: Path, key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(project)
    monkeypatch.setattr(etl, "STREAM_ROWS", 16)
    ws = make_ws(project, SPEC)
    first = run_stages(ws)
    assert first.status == "success", first.outcomes[-1].error
    snap = get_snapshot(ws, first.outcomes[0].summary["snapshot"])
    meta = pq.ParquetFile(snap.path(ws)).metadata  # 69 rows in row groups of 16 to 31 rows
    assert meta.num_row_groups >= 3 and all(16 <= meta.row_group(i).num_rows < 32
                                            for i in range(meta.num_row_groups - 1))
    assert pq.read_table(snap.path(ws)).equals(build_examples(ws.spec, project).table)
    assert pq.read_table(provenance_path(ws, snap)).num_rows == 69
    assert [(f["rows"], f["kept"]) for f in first.outcomes[0].summary["files"]["imp"]] == [(23, 23)] * 3
    # a new day whose `extra` is text, two values not numbers: the schema inferred by the first run (int64)
    # quarantines them, naming file and row
    rows = [{"imp_id": 100 + i, "user": "u1", "ad": "a", "price": 1.0, "ts": T0 + dt.timedelta(days=1, seconds=i),
             "extra": "n/a" if i in (2, 5) else str(i)} for i in range(8)]
    pq.write_table(pa.Table.from_pylist(rows), project / "imp" / "day9.parquet")
    second = run_stages(ws)
    assert second.status == "success", second.outcomes[-1].error
    validate = second.outcomes[1]
    assert validate.summary["quarantined_rows"] == 2
    q = pq.read_table(quarantine_file(ws, validate.summary["snapshot"])).to_pylist()
    day9 = project / "imp" / "day9.parquet"
    assert sorted((e["check"], e["column"], e["value"], e["location"]) for e in q) == [
        ("type", "extra", "n/a", f"{day9} row 3"), ("type", "extra", "n/a", f"{day9} row 6")]
    assert all(e["reason"].startswith(f"{day9} row ") for e in q)


def test_an_unreadable_file_is_named(project: Path, key: None) -> None:
    _write(project)
    (project / "imp" / "day1.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match=r"day1\.parquet is not a readable Parquet file"):
        stream_examples(parse_spec_text(SPEC), project, project / "out.parquet")


def test_a_new_file_of_a_parquet_glob_is_streamed_into_a_delta_snapshot(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loopml.data.snapshots import read_snapshot

    monkeypatch.setattr(etl, "STREAM_ROWS", 4)
    (project / "logs").mkdir()
    for d in range(2):
        pq.write_table(pa.table({"id": list(range(10 * d, 10 * d + 10)), "rating": [i % 5 for i in range(10)]}),
                       project / "logs" / f"d{d}.parquet")
    spec = ("task: {type: binary, target: label}\ndata:\n  sources:\n    events: {type: parquet, path: 'logs/*.parquet'}\n"
            "  labels: {type: threshold, column: rating, op: '>=', value: 4}\n")
    ws = make_ws(project, spec)
    assert run_stages(ws, until="ingest").status == "success"
    pq.write_table(pa.table({"id": [20, 21, 22], "rating": [5, 1, 4]}), project / "logs" / "d2.parquet")
    rep = run_stages(ws, until="ingest")
    summary = rep.outcomes[0].summary
    assert (summary["kind"], summary["new_rows"], summary["rows"]) == ("delta", 3, 23)
    snap = get_snapshot(ws, summary["snapshot"])
    assert pq.read_table(snap.path(ws)).column("label").to_pylist() == [1, 0, 1]
    assert read_snapshot(ws, snap).equals(build_examples(ws.spec, project).table)
    prov = pq.read_table(provenance_path(ws, snap)).to_pylist()
    assert [(Path(r["file"]).name, r["record"]) for r in prov] == [("d2.parquet", 1), ("d2.parquet", 2),
                                                                   ("d2.parquet", 3)]


def test_hand_labels_and_a_replaced_label_column_stream_like_the_whole_table(project: Path) -> None:
    (project / "r").mkdir()
    for d in range(3):
        pq.write_table(pa.table({"id": list(range(10 * d, 10 * d + 10)), "label": [0] * 10,
                                 "score": [i % 6 for i in range(10)]}), project / "r" / f"d{d}.parquet")
    pq.write_table(pa.table({"id": [3, 14, 25], "label": [1, 0, 1]}), project / "hand.parquet")
    spec = parse_spec_text(
        "data:\n  sources:\n    r: {type: parquet, path: 'r/*.parquet'}\n"
        "  labels: {type: threshold, column: score, op: '>=', value: 4}\n"
        "  hand_labels: {path: hand.parquet, keys: [id]}\n")
    whole = build_examples(spec, project).table
    out = project / "out.parquet"
    stream_examples(spec, project, out, batch_rows=4)
    got = pq.read_table(out)
    assert pq.ParquetFile(out).metadata.num_row_groups > 3
    assert got.equals(whole) and got.column_names == ["id", "score", "label"]  # the rule's label comes last
    assert got.column("label").to_pylist()[:6] == [0, 0, 0, 1, 1, 1]  # id 3: the hand label beats score 3
