"""The segment log: durable flushes, compaction, and recovery from a crash in the middle of one."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from loopml.serving.logs import COMPACT_BELOW_ROWS, LOCK_NAME, SegmentLog, feedback_table, now_us


def _ids(d: Path) -> list[str]:
    return sorted(r[0] for r in duckdb.sql(f"select request_id from read_parquet('{d}/*.parquet')").fetchall())


def test_flushes_then_compaction_keep_every_row_once(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, feedback_table, flush_rows=10**6, flush_seconds=3600, compact_seconds=0)
    want = []
    for k in range(5):
        for i in range(3):
            rid = f"r{k}-{i}"
            want.append(rid)
            log.append((rid, now_us(), float(i)))
        assert log.flush() == 3
    assert len(list(tmp_path.glob("*.parquet"))) == 5
    assert log.compact() == 5
    files = list(tmp_path.glob("*.parquet"))
    assert len(files) == 1 and "-compact-" in files[0].name
    assert _ids(tmp_path) == sorted(want)
    log.append(("late", now_us(), 1.0))
    log.close()
    assert _ids(tmp_path) == sorted([*want, "late"])
    assert not [p for p in tmp_path.glob(".*") if p.name != LOCK_NAME]  # no temp file left (the lock file stays)


def test_compaction_merges_small_segments_and_leaves_full_row_groups_alone(tmp_path: Path) -> None:
    """A segment of a full row group or more is final: merging it would encode its rows a second time."""
    log = SegmentLog(tmp_path, feedback_table, flush_rows=10**7, flush_seconds=3600, compact_seconds=0)
    now = now_us()
    for i in range(COMPACT_BELOW_ROWS):  # one large segment
        log.append((f"big-{i}", now, 1.0))
    assert log.flush() == COMPACT_BELOW_ROWS
    big = {p.name for p in tmp_path.glob("*.parquet")}
    for k in range(3):  # three small ones
        log.append((f"small-{k}", now, 0.0))
        log.flush()
    assert log.compact() == 3
    names = {p.name for p in tmp_path.glob("*.parquet")}
    assert big <= names and len(names) == 2  # the large one untouched, the small ones merged into one
    assert len(_ids(tmp_path)) == COMPACT_BELOW_ROWS + 3
    assert log.compact() == 0  # nothing small is left to merge
    log.close()


def test_a_crash_between_compaction_and_cleanup_is_repaired_on_start(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, feedback_table, flush_rows=10**6, flush_seconds=3600, compact_seconds=0)
    for i in range(4):
        log.append((f"r{i}", now_us(), 0.0))
        log.flush()
    sources = sorted(tmp_path.glob("*.parquet"))
    saved = {p: p.read_bytes() for p in sources}
    log.compact()
    log.close()
    for p, data in saved.items():  # as if the process died before unlinking the small segments
        p.write_bytes(data)
    assert len(_ids(tmp_path)) == 8  # duplicates are visible until a writer starts
    SegmentLog(tmp_path, feedback_table, compact_seconds=0).close()
    assert _ids(tmp_path) == ["r0", "r1", "r2", "r3"]
    compacted = next(tmp_path.glob("*-compact-*.parquet"))
    assert pq.read_table(compacted).num_rows == 4


def test_partial_files_of_a_crash_are_invisible_and_cleaned(tmp_path: Path) -> None:
    (tmp_path / ".20260101T000000-1-x-000001.parquet.tmp").write_bytes(b"PAR1 half a file")
    log = SegmentLog(tmp_path, feedback_table, compact_seconds=0)
    log.append(("a", now_us(), 1.0))
    log.close()
    assert _ids(tmp_path) == ["a"]  # readers glob *.parquet: the temp file is never read
    assert SegmentLog.clean_partial(tmp_path) == 1
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
