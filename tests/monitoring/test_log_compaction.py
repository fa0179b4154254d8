"""Monitoring reads the prediction log while the log writer compacts it: never an error, never a row twice."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from loopml.monitoring.logs import log_span, read_labelled, read_predictions, segments
from loopml.serving.logs import TS, SegmentStore, feedback_log_dir, feedback_table, now_us, prediction_log_dir
from loopml.workspace import Workspace


def _predictions(start: int, n: int) -> pa.Table:
    ts = now_us()
    return pa.table({
        "request_id": pa.array([f"r{i}" for i in range(start, start + n)], pa.string()),
        "ts": pa.array([ts] * n, pa.int64()).cast(TS),
        "model_version": pa.array(["v1"] * n), "route": pa.array(["production"] * n),
        "score": pa.array([0.25] * n, pa.float64()), "prediction": pa.array([0.0] * n, pa.float64()),
        "x": pa.array([float(i) for i in range(n)], pa.float64()),
    })


def test_reads_during_compaction_see_every_published_row_once(tmp_path: Path) -> None:
    (tmp_path / "loopml.yaml").write_text("project: {name: c}\ntask: {type: binary, target: y}\n")
    ws = Workspace.open(tmp_path)
    preds, fb = SegmentStore(prediction_log_dir(ws.root)), SegmentStore(feedback_log_dir(ws.root))
    done = threading.Event()
    published = [0]  # rows published so far (read by the reader, written by the compactor thread)
    compactions = [0]
    failures: list[str] = []

    def compactor() -> None:
        n = 0
        try:
            for _ in range(60):
                for _ in range(3):
                    preds.write(_predictions(n, 20), preds.next_name(), own=True)
                    fb.write(feedback_table([(f"r{n}", now_us(), 1.0)]), fb.next_name(), own=True)
                    n += 20
                    published[0] = n
                compactions[0] += preds.compact() > 0
                fb.compact()
        except Exception as exc:  # reported by the main thread
            failures.append(f"compactor: {type(exc).__name__}: {exc}")
        finally:
            done.set()

    t = threading.Thread(target=compactor)
    t.start()
    reads = 0
    try:
        while not done.is_set() or reads < 5:
            before = published[0]
            table = read_predictions(ws)  # raises DataError if a segment vanished under it
            ids = table.column("request_id").to_pylist() if table.num_rows else []
            assert len(ids) == len(set(ids)), "a row was read twice (a compacted segment and its source)"
            assert len(ids) >= before, "a published row was missed"
            first, last, rows = log_span(ws)
            assert rows >= len(ids)
            assert rows == 0 or (first is not None and last is not None and first <= last)
            labelled = read_labelled(ws)
            if labelled.num_rows:
                lids = labelled.column("request_id").to_pylist()
                assert len(lids) == len(set(lids))
            reads += 1
    finally:
        done.wait(120)
        t.join(120)
    assert not failures, failures
    assert compactions[0] == 60 and reads >= 5
    assert read_predictions(ws).num_rows == 60 * 3 * 20
    assert len(segments(prediction_log_dir(ws.root))) == 60  # one compacted segment per round


def test_a_listing_taken_between_publish_and_cleanup_counts_each_row_once(tmp_path: Path) -> None:
    folder = tmp_path / "predictions"
    store = SegmentStore(folder)
    store.write(_predictions(0, 5), store.next_name(), own=True)
    store.write(_predictions(5, 5), store.next_name(), own=True)
    sources = sorted(p.name for p in folder.glob("*.parquet"))
    # what a crash (or a reader's bad timing) sees: the merged segment published, its sources not yet removed
    merged = pa.concat_tables([pq.read_table(folder / n) for n in sources])
    store.write(merged, store.next_name("-compact"), sources=sources)
    listed = segments(folder)
    assert len(listed) == 1 and "-compact-" in listed[0]
