"""The two-process prediction log: journal lines in the service, Parquet segments from the writer."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loopml.serving.journal import (
    JOURNAL_DIR,
    Journal,
    JournalWriter,
    consumed_offsets,
    pending_bytes,
    wait_written,
)
from loopml.serving.logs import SegmentStore, feedback_table, now_us, prediction_table
from loopml.serving.schema import InputSchema

NUMERIC = InputSchema.from_mapping({"a": "float64", "b": "int64"})
MIXED = InputSchema.from_mapping({"a": "float64", "city": "string", "flag": "bool"})


def _records() -> list[tuple]:
    """One record of every payload kind the service logs, over two schemas (two model versions)."""
    t = now_us()
    return [
        ("r-dict", t, "v1", "production", 0.25, 0.0, {"a": 1.5, "city": "Oslo", "flag": True}, MIXED),
        ("r-null", t, "v1", "production", 0.5, 1.0, {"a": None, "city": None, "flag": False}, MIXED),
        ("r-vec", t + 1, "v2", "shadow", 0.75, 1.0, np.array([2.0, np.nan]), NUMERIC),
        (["b-0", "b-1"], t + 2, "v2", "production", np.array([0.1, 0.9]), np.array([0.0, 1.0]),
         np.array([[1.0, 2.0], [3.0, np.nan]]), NUMERIC),
        (["t-0", "t-1"], t + 3, "v1", "production", np.array([0.2, 0.8]), np.array([0.0, 1.0]),
         pa.table({"a": [4.0, None], "city": ["Rome", "Bergen"], "flag": [False, True]}), MIXED),
    ]


def _rows(d: Path) -> list[tuple]:
    return duckdb.sql(
        f"select request_id, ts, model_version, route, score, prediction, a, b, city, flag "
        f"from read_parquet('{d}/*.parquet', union_by_name=true) order by request_id"
    ).fetchall()


def test_every_payload_kind_lands_as_the_in_process_log_writes_it(tmp_path: Path) -> None:
    recs = _records()
    j = Journal(tmp_path / "j", "predictions", writer=False)
    for r in recs:
        j.append(r)
    assert j.flush() == 7 and j.written == 7
    w = JournalWriter(tmp_path / "j", "predictions")
    assert w.pass_once() == 7
    # the reference: the same records through the in-process path
    (tmp_path / "ref").mkdir()
    pq.write_table(prediction_table(recs), tmp_path / "ref" / "x.parquet")
    got, want = _rows(tmp_path / "j"), _rows(tmp_path / "ref")
    assert len(got) == 7
    for g, e in zip(got, want):
        assert g[:6] == e[:6]
        for x, y in zip(g[6:], e[6:]):
            assert (x is None and y is None) or (isinstance(x, float) and np.isnan(x) and np.isnan(y)) or x == y
    # NaN of a raw vector stays missing, a JSON null of a dict row is NULL
    by_id = {r[0]: r for r in got}
    assert by_id["r-null"][6] is None and by_id["r-null"][8] is None
    assert by_id["b-1"][7] is None or np.isnan(by_id["b-1"][7])
    j.close()
    w.pass_once()
    assert not list((tmp_path / "j" / JOURNAL_DIR).glob("*.jnl"))  # finished and converted: removed


def test_feedback_round_trip(tmp_path: Path) -> None:
    j = Journal(tmp_path, "feedback", writer=False)
    for i in range(5):
        j.append((f"r{i}", now_us(), float(i % 2)))
    j.close()
    assert JournalWriter(tmp_path, "feedback").pass_once() == 5
    got = duckdb.sql(f"select request_id, label from read_parquet('{tmp_path}/*.parquet') order by 1").fetchall()
    assert got == [(f"r{i}", float(i % 2)) for i in range(5)]
    assert pq.read_schema(next(tmp_path.glob("*.parquet"))).equals(feedback_table([("x", 1, 1.0)]).schema)


def test_conversion_waits_while_busy_but_never_beyond_the_lag(tmp_path: Path) -> None:
    j = Journal(tmp_path, "feedback", writer=False)
    j.append(("r0", now_us(), 1.0))
    j.close()  # a finished journal: it must not be deleted while it waits
    w = JournalWriter(tmp_path, "feedback", max_lag_seconds=0.3)
    assert w.pass_once(busy=True) == 0 and w.deferred_passes == 1
    assert len(list((tmp_path / JOURNAL_DIR).glob("*.jnl"))) == 1 and not list(tmp_path.glob("*.parquet"))
    assert pending_bytes(tmp_path) > 0
    time.sleep(0.35)
    assert w.pass_once(busy=True) == 1  # past the lag: written although still busy
    assert pending_bytes(tmp_path) == 0 and not list((tmp_path / JOURNAL_DIR).glob("*.jnl"))


def test_busy_means_the_journals_grow_fast(tmp_path: Path) -> None:
    j = Journal(tmp_path, "feedback", writer=False)
    w = JournalWriter(tmp_path, "feedback", busy_bytes_per_s=10_000)
    assert w.service_busy() is False  # first look: no rate yet
    time.sleep(0.1)
    for i in range(2_000):
        j.append((f"r{i}", now_us(), 1.0))
    j.flush()  # ~80 kB in ~0.1 s
    assert w.service_busy() is True
    time.sleep(0.1)
    assert w.service_busy() is False  # no growth since
    j.close()


def test_a_new_writer_resumes_exactly_after_the_last_segment(tmp_path: Path) -> None:
    j = Journal(tmp_path, "feedback", writer=False)
    for i in range(10):
        j.append((f"a{i}", now_us(), 0.0))
    j.flush()
    w1 = JournalWriter(tmp_path, "feedback", compact_seconds=0)
    assert w1.pass_once() == 10
    for i in range(5):
        j.append((f"b{i}", now_us(), 1.0))
    j.flush()
    journal = next((tmp_path / JOURNAL_DIR).glob("*.jnl"))
    after_b = journal.stat().st_size
    assert w1.pass_once() == 5
    assert w1.store.compact() == 2  # the ranges survive compaction (in its metadata)
    w1.close()  # the writer "dies": claims released, journal still open in the service
    for i in range(3):
        j.append((f"c{i}", now_us(), 1.0))
    j.close()
    assert consumed_offsets(tmp_path) == {journal.stem: after_b}  # read back from the compacted segment
    w2 = JournalWriter(tmp_path, "feedback", compact_seconds=0)
    assert w2.pass_once() == 3
    ids = [r[0] for r in duckdb.sql(f"select request_id from read_parquet('{tmp_path}/*.parquet')").fetchall()]
    assert sorted(ids) == sorted([f"a{i}" for i in range(10)] + [f"b{i}" for i in range(5)] + [f"c{i}" for i in range(3)])


def test_a_torn_last_line_is_kept_aside_and_bad_lines_quarantined(tmp_path: Path) -> None:
    j = Journal(tmp_path, "feedback", writer=False)
    j.append(("ok-1", now_us(), 1.0))
    j.flush()
    path = next((tmp_path / JOURNAL_DIR).glob("*.jnl"))
    j.close()
    bad_at = path.stat().st_size
    with open(path, "ab") as f:  # as a crash mid-write (and a corrupted line before it) would leave
        f.write(b'{"i": "bad", "t": "not a time", "l": 1}\n{"i": "ok-2", "t": 5, "l": 0.0}\n{"i": "cut", "t"')
    w = JournalWriter(tmp_path, "feedback")
    assert w.pass_once() == 2
    assert w.bad_lines == 1 and w.torn_bytes == len(b'{"i": "cut", "t"')
    bad = [json.loads(x) for x in (tmp_path / JOURNAL_DIR / f"{path.stem}.bad").read_text().splitlines()]
    assert len(bad) == 1 and '"bad"' in bad[0]["line"] and "not a time" in bad[0]["reason"]
    assert bad[0]["offset"] == bad_at  # where to find it in the journal
    torn = (tmp_path / JOURNAL_DIR / f"{path.stem}.torn").read_text()
    assert '"cut' in torn
    assert not path.exists()


def test_a_prediction_line_with_the_wrong_number_of_inputs_is_quarantined(tmp_path: Path) -> None:
    j = Journal(tmp_path, "predictions", writer=False)
    j.append(("good", now_us(), "v1", "production", 0.5, 1.0, np.array([1.0, 2.0]), NUMERIC))
    j.append(("short", now_us(), "v1", "production", 0.5, 1.0, np.array([1.0]), NUMERIC))
    j.close()
    stem = next((tmp_path / JOURNAL_DIR).glob("*.jnl")).stem
    w = JournalWriter(tmp_path, "predictions")
    assert w.pass_once() == 1 and w.bad_lines == 1
    bad = json.loads((tmp_path / JOURNAL_DIR / f"{stem}.bad").read_text())
    assert '"short"' in bad["line"] and "8 bytes, expected 16" in bad["reason"] and "2 inputs" in bad["reason"]
    assert duckdb.sql(f"select request_id from read_parquet('{tmp_path}/*.parquet')").fetchall() == [("good",)]


def test_two_writers_never_convert_the_same_journal(tmp_path: Path) -> None:
    j = Journal(tmp_path, "feedback", writer=False)
    j.append(("r", now_us(), 1.0))
    j.flush()
    w1, w2 = JournalWriter(tmp_path, "feedback"), JournalWriter(tmp_path, "feedback")
    assert w1.pass_once() == 1
    j.append(("s", now_us(), 1.0))
    j.flush()
    assert w2.pass_once() == 0  # w1 holds the claim
    w1.close()
    assert w2.pass_once() == 1
    j.close()


def test_the_writer_process_drains_on_close_and_is_restarted_if_killed(tmp_path: Path) -> None:
    j = Journal(tmp_path, "feedback", flush_rows=10**6, flush_seconds=0.1, max_lag_seconds=0)
    try:
        pid = j.writer_pid
        assert pid is not None
        j.append(("before", now_us(), 1.0))
        assert wait_written([tmp_path], timeout=20)
        deadline = time.monotonic() + 20
        while not list(tmp_path.glob("*.parquet")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while j.writer_pid == pid:  # the flusher notices and starts another
            assert time.monotonic() < deadline, "the writer process was not restarted"
            time.sleep(0.05)
        assert j.last_error is None or "restarted" in j.last_error
        j.append(("after", now_us(), 0.0))
    finally:
        j.close()
    ids = sorted(r[0] for r in duckdb.sql(f"select request_id from read_parquet('{tmp_path}/*.parquet')").fetchall())
    assert ids == ["after", "before"]
    assert not list((tmp_path / JOURNAL_DIR).glob("*.jnl"))


def test_segments_left_by_a_crash_mid_compaction_are_repaired(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path)
    for i in range(3):
        store.write(feedback_table([(f"r{i}", now_us(), 1.0)]), f"s{i}.parquet", own=True)
    saved = {p: p.read_bytes() for p in tmp_path.glob("s*.parquet")}
    assert store.compact() == 3
    for p, data in saved.items():
        p.write_bytes(data)  # as if the process died before unlinking them
    assert store.recover() == 3
    assert duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/*.parquet')").fetchall() == [(3,)]


@pytest.mark.parametrize("kind", ["nonsense", ""])
def test_a_journal_kind_must_be_known(tmp_path: Path, kind: str) -> None:
    with pytest.raises(ValueError, match="predictions"):
        Journal(tmp_path, kind, writer=False)


def _all_rows(d: Path) -> list[tuple]:
    return duckdb.sql(
        f"select request_id, ts, model_version, route, score, prediction, client_request_id, experiment, propensity, a, b "
        f"from read_parquet('{d}/*.parquet', union_by_name=true) order by request_id"
    ).fetchall()


def _same(got: list[tuple], want: list[tuple]) -> None:
    assert len(got) == len(want)
    for g, e in zip(got, want):
        for x, y in zip(g, e):
            assert (x is None and y is None) or (isinstance(x, float) and np.isnan(x) and np.isnan(y)) or x == y, (g, e)


def test_raw_rows_travel_as_binary_blocks_and_land_like_the_in_process_log(tmp_path: Path) -> None:
    """Single raw rows (kept column by column) and many-row requests (one block each) with client ids,
    experiments and NaN inputs; the writer reads them in small slices, and a second writer resumes
    after the first one's last segment (its schemas read back from the binary journal)."""
    rng = np.random.default_rng(0)
    t = now_us()
    recs: list[tuple] = []
    for i in range(2_500):
        x = rng.normal(size=2)
        if i % 7 == 0:
            x[1] = np.nan
        arm = ("v1", "production", None, None) if i % 3 else ("v2", "canary", "exp-1", 0.25)
        recs.append((f"r{i:05d}", t + i, arm[0], arm[1], float(rng.random()), float(i % 2), x, NUMERIC,
                     f"client-{i}" if i % 5 == 0 else None, arm[2], arm[3]))
    for b in range(3):
        m = rng.normal(size=(40, 2))
        m[3, 0] = np.nan
        recs.append(([f"blk{b}-{k:03d}" for k in range(40)], t + 10_000 + b, "v1", "production", rng.random(40),
                     np.ones(40), m, NUMERIC, "batch-7" if b == 1 else None))
    j = Journal(tmp_path / "j", "predictions", writer=False, flush_rows=700)
    for r in recs[:1500]:
        j.append(r)
    j.flush()
    w1 = JournalWriter(tmp_path / "j", "predictions", compact_seconds=0, slice_bytes=4096)
    assert w1.pass_once() == 1500
    w1.close()
    for r in recs[1500:]:
        j.append(r)
    j.close()
    journal_bytes = sum(p.stat().st_size for p in (tmp_path / "j" / JOURNAL_DIR).glob("*.jnl"))
    assert journal_bytes > 0
    w2 = JournalWriter(tmp_path / "j", "predictions", compact_seconds=0, slice_bytes=4096)
    assert w2.pass_once() == 1000 + 120
    assert w2.bad_lines == 0 and w2.torn_bytes == 0
    (tmp_path / "ref").mkdir()
    pq.write_table(prediction_table(recs), tmp_path / "ref" / "x.parquet")
    _same(_all_rows(tmp_path / "j"), _all_rows(tmp_path / "ref"))
    assert not list((tmp_path / "j" / JOURNAL_DIR).glob("*.jnl"))


def test_a_corrupted_block_is_quarantined_and_a_torn_one_kept_exactly(tmp_path: Path) -> None:
    from binascii import a2b_base64

    from loopml.serving.journal import encode_block

    j = Journal(tmp_path, "predictions", writer=False)
    j.append(("good", now_us(), "v1", "production", 0.5, 1.0, np.array([1.0, 2.0]), NUMERIC))
    j.flush()
    path = next((tmp_path / JOURNAL_DIR).glob("*.jnl"))
    j.close()
    ts, s = np.array([now_us()], np.int64), np.array([0.5])
    # a block whose parts do not match its schema (3 inputs per row for a 2-input schema)
    bad = b"".join(bytes(memoryview(b)) for b in encode_block(0, "v1", "production", ["bad"], ts, s, s,
                                                              np.zeros(3)))
    # then a good one, then one cut short by a crash
    ok = b"".join(bytes(memoryview(b)) for b in encode_block(0, "v1", "production", ["ok-2"], ts, s, s,
                                                             np.array([3.0, 4.0])))
    torn = ok.replace(b"ok-2", b"cut!")[:-9]
    with open(path, "ab") as f:
        f.write(bad + ok + torn)
    w = JournalWriter(tmp_path, "predictions")
    assert w.pass_once() == 2
    assert w.bad_lines == 1 and w.torn_bytes == len(torn)
    quarantined = json.loads((tmp_path / JOURNAL_DIR / f"{path.stem}.bad").read_text())
    assert "expected [4, 8, 8, 8, 16]" in quarantined["reason"] and '"blk":1' in quarantined["line"]
    kept = json.loads((tmp_path / JOURNAL_DIR / f"{path.stem}.torn").read_text())
    assert a2b_base64(kept["bytes_base64"]) == torn
    assert sorted(r[0] for r in duckdb.sql(f"select request_id from read_parquet('{tmp_path}/*.parquet')").fetchall()) \
        == ["good", "ok-2"]
    assert not path.exists()


def test_the_service_single_row_path_logs_what_append_would(tmp_path: Path) -> None:
    """``Journal.append_row`` (the request loop's path: the route's identity, the model's row buffer copied
    per row) gives the same log rows as ``append`` of the equivalent records, across routes, an experiment,
    client ids and flushes; a buffer that is not the route's float64 raw row falls back to ``append``."""
    import lightgbm as lgb

    from loopml.serving.routing import Route
    from loopml.serving.servable import Servable

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 2))
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1},
                        lgb.Dataset(X, (X[:, 0] > 0).astype(float)), 3)
    v1, v2 = Servable.from_booster("v1", booster, NUMERIC), Servable.from_booster("v2", booster, NUMERIC)
    prod, canary = Route("production", v1), Route("canary", v2, (), "exp-1", 0.25)
    j = Journal(tmp_path / "j", "predictions", writer=False, flush_rows=300)
    recs: list[tuple] = []
    t0 = now_us()
    for i in range(1_000):
        route = canary if i % 3 == 0 else prod
        score, pred = route.model.predict_one({"a": float(rng.normal()), "b": int(i)})
        cid = f"client-{i}" if i % 5 == 0 else None
        buf = route.model.row_buffer
        if i == 999:  # not the route's row buffer (a float32 copy): logged through append, as given
            buf = buf.astype(np.float32)
        j.append_row(route, f"r{i:05d}", score, pred, buf, cid)
        recs.append((f"r{i:05d}", 0, route.model.version_id, route.name, score, pred,
                     buf.astype(np.float64), NUMERIC, cid, route.experiment, route.propensity))
    j.close()
    t1 = now_us()
    w = JournalWriter(tmp_path / "j", "predictions", compact_seconds=0)
    assert w.pass_once() == 1_000 and w.bad_lines == 0
    (tmp_path / "ref").mkdir()
    pq.write_table(prediction_table(recs), tmp_path / "ref" / "x.parquet")
    got, want = _all_rows(tmp_path / "j"), _all_rows(tmp_path / "ref")
    _same([g[:1] + g[2:] for g in got], [e[:1] + e[2:] for e in want])  # everything but the time
    stamps = [g[1].timestamp() * 1e6 for g in got]
    assert all(t0 - 1 <= s <= t1 + 1 for s in stamps)
    assert sum(1 for g in got if g[3] == "canary" and g[7] == "exp-1" and g[8] == 0.25) == 334


def test_small_blocks_from_many_slices_become_few_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """100-row requests (one block each, a few per 64 KiB slice) are decoded slice by slice but
    become an Arrow table (and a row group) only every few thousand rows: a table costs a fixed
    price per column, which one per slice would pay again and again. Every row lands once, in order."""
    import loopml.serving.journal as journal

    built: list[int] = []
    real = journal._blocks_table

    def counting(blocks, schema):  # the real function, counted
        built.append(sum(len(b[2]) for b in blocks))
        return real(blocks, schema)

    monkeypatch.setattr(journal, "_blocks_table", counting)
    rng = np.random.default_rng(1)
    j = Journal(tmp_path / "j", "predictions", writer=False)
    t = now_us()
    for b in range(120):
        m = rng.normal(size=(100, 2))
        j.append(([f"q{b:03d}-{k:02d}" for k in range(100)], t + b, "v1", "production", rng.random(100),
                  np.zeros(100), m, NUMERIC))
    j.close()
    w = JournalWriter(tmp_path / "j", "predictions", compact_seconds=0, slice_bytes=8192)
    assert w.pass_once() == 12_000
    assert built == [8200, 3800]  # slices of 8 KiB hold one or two blocks: two tables, not one per slice
    files = sorted((tmp_path / "j").glob("*.parquet"))
    groups = [pq.ParquetFile(f).metadata.row_group(i).num_rows for f in files
              for i in range(pq.ParquetFile(f).metadata.num_row_groups)]
    assert sum(groups) == 12_000
    assert min(groups[:-1] or groups) >= 8192 and len(groups) <= 2, groups
    ids = duckdb.sql(f"select request_id from read_parquet('{tmp_path / 'j'}/*.parquet')").fetchall()
    assert [i[0] for i in ids] == [f"q{b:03d}-{k:02d}" for b in range(120) for k in range(100)]


_FAULTS = """
import resource, sys
from pathlib import Path
import numpy as np
from loopml.serving.journal import Journal, JournalWriter, keep_freed_memory
from loopml.serving.logs import now_us
from loopml.serving.schema import InputSchema
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
schema = InputSchema.from_mapping({f"f{i}": "float64" for i in range(25)})
x = np.random.default_rng(0).normal(size=(20_000, 25))
d = Path(sys.argv[2])
j = Journal(d, "predictions", writer=False, flush_rows=1000)
w = JournalWriter(d, "predictions", compact_seconds=0, max_lag_seconds=0)
faults = []
for p in range(4):  # a writer's passes over a service's journal, as behind `loopml serve`
    for i in range(20_000):
        j.append((f"r{p}-{i}", now_us(), "v1", "production", 0.5, 1.0, x[i].copy(), schema))
    j.flush()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    assert w.pass_once() == 20_000
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
j.close()
print(kept, max(faults[1:]))
"""


def test_the_writer_keeps_its_freed_memory_instead_of_faulting_it_in_every_pass(tmp_path: Path) -> None:
    """After its first pass the writer's decoding, Arrow and Parquet buffers reuse memory it freed:
    glibc's default would hand blocks back to the kernel and fault them in again every slice (≈ 100
    page faults per 1,000 rows measured, a quarter of the writer's CPU here)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FAULTS, "keep", str(tmp_path / "keep")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    kept, faults = out.stdout.split()
    assert kept == "True"  # glibc: the settings took
    assert int(faults) < 100, f"{faults} page faults in a 20,000-row pass after the first"
    out = subprocess.run([sys.executable, "-c", _FAULTS, "default", str(tmp_path / "default")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    default = int(out.stdout.split()[1])
    assert int(faults) * 10 < default, f"kept {faults} vs glibc's defaults {default} page faults per pass"


def test_full_blocks_are_appended_at_once_and_synced_on_the_flushers_timer(tmp_path: Path) -> None:
    """What a killed service leaves is on file after every block; the sync runs every flush_seconds, not
    per block (waking the flusher per block cost the request loop a GIL handoff each time)."""
    j = Journal(tmp_path, "feedback", flush_rows=10, flush_seconds=2.0, writer=False)
    try:
        for i in range(1000):  # 100 full blocks, appended by the caller's thread as they fill
            j.append((f"r{i}", now_us(), 1.0))
            if i % 10 == 9:
                time.sleep(0.002)  # (a flusher woken per block would get the GIL and sync here)
        on_file = sum(p.stat().st_size for p in (tmp_path / JOURNAL_DIR).glob("*.jnl"))
        assert j.written == 1000
        assert on_file >= 1000 * len(b'{"i":"r0","t":0,"l":1.0}')
        assert j.syncs <= 1, f"{j.syncs} syncs for 100 blocks appended within one flush period"
        deadline = time.monotonic() + 10
        while j.syncs < 1:  # the flusher's timer syncs them
            assert time.monotonic() < deadline, "the flusher never synced the journal"
            time.sleep(0.02)
        j.append(("late", now_us(), 0.0))  # less than a block: the flusher appends and syncs it
        deadline = time.monotonic() + 10
        while j.written < 1001:
            assert time.monotonic() < deadline, "the flusher never appended a partial block"
            time.sleep(0.02)
    finally:
        j.close()
    w = JournalWriter(tmp_path, "feedback")
    assert w.pass_once() == 1001
