"""Validation of a table read in many row groups (as streaming ingestion writes it): the same profile, checks,
quarantine and accounting as the same table in one piece, without a combined copy of its number columns."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from loopml.spec.data import Verification
from loopml.validation.columnar import Columns
from loopml.validation.profile import profile_table
from loopml.validation.schema import infer_schema
from loopml.validation.validator import validate_table


def _table(n: int, shift: int = 0) -> pa.Table:
    return pa.table({
        "k": pa.array(range(n), pa.int64()),
        "x": pa.array([None if i % 13 == 0 else float((i * 7 + shift) % 50) for i in range(n)]),
        "ts": pa.array([i * 1_000_000 for i in range(n)], pa.timestamp("us", tz="UTC")),
        "s": pa.array([["a", "b", "c"][i % 3] if i % 11 else None for i in range(n)]),
    })


def _chunked(t: pa.Table, rows: int) -> pa.Table:
    return pa.Table.from_batches(t.to_batches(max_chunksize=rows))


def test_many_chunks_validate_as_one() -> None:
    ref = _table(700)
    schema = infer_schema(profile_table(ref), unique_keys=["k"])
    cur = _table(600, shift=3)
    cur = cur.set_column(1, "x", pc.if_else(pc.equal(cur.column("k"), 17), 999.0, cur.column("x")))  # out of range
    cur = cur.set_column(3, "s", pc.if_else(pc.equal(cur.column("k"), 40), "zzz", cur.column("s")))  # new value
    prov = pa.table({"file": pa.array(["f.parquet"] * 600).dictionary_encode(), "line": pa.nulls(600, pa.int64()),
                     "record": pa.array(range(1, 601), pa.int64())})
    settings = Verification(max_quarantine_rate=0.5)
    whole = validate_table(cur, schema, profile_table(ref), settings, provenance=prov)
    split = validate_table(_chunked(cur, 64), schema, profile_table(ref), settings,
                           provenance=_chunked(prov, 64))
    assert _chunked(cur, 64).column("x").num_chunks == 10
    assert whole.report.quarantined_rows >= 2
    assert split.quarantine.equals(whole.quarantine)  # same rows, checks, values and reasons
    assert split.report.profile.to_json() == whole.report.profile.to_json()
    assert [c.to_json() for c in split.report.checks] == [c.to_json() for c in whole.report.checks]
    assert split.report.sources == whole.report.sources == [
        {"file": "f.parquet", "rows": 600, "kept": 600 - whole.report.quarantined_rows,
         "quarantined": whole.report.quarantined_rows}]
    assert split.kept.equals(whole.kept)
    assert "f.parquet row 18" in split.quarantine.column("location").to_pylist()


def test_number_columns_are_read_in_place_text_is_combined() -> None:
    t = _chunked(_table(300), 64)
    cols = Columns(t)
    x, ts, s = cols.get("x"), cols.get("ts"), cols.get("s")
    assert isinstance(x.array, pa.ChunkedArray) and isinstance(ts.array, pa.ChunkedArray)
    # no copy: the chunks are the table's own buffers
    assert x.array.chunk(1).buffers()[1].address == t.column("x").chunk(1).buffers()[1].address
    assert isinstance(s.array, pa.Array) and not isinstance(s.array, pa.ChunkedArray)
    one = Columns(_table(300))
    assert (x.values[x.valid] == one.get("x").values[one.get("x").valid]).all()
    assert x.missing == one.get("x").missing and x.quantiles([0.1, 0.5]) == one.get("x").quantiles([0.1, 0.5])
    assert (ts.values == one.get("ts").values).all()
