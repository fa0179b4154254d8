"""The quarantine keeps every failing row: all in Parquet, the first entries in the metadata table."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from loopml.spec.data import Verification
from loopml.validation.profile import profile_table
from loopml.validation.quarantine import list_quarantine, quarantine_counts, store_quarantine
from loopml.validation.schema import infer_schema
from loopml.validation.validator import validate_table
from loopml.workspace import Workspace


def test_all_entries_in_parquet_first_ones_in_the_database(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path)
    ref = pa.table({"k": list(range(100)), "v": [i % 10 for i in range(100)]})
    schema = infer_schema(profile_table(ref), unique_keys=["k"])
    cur = pa.table({"k": list(range(100)), "v": [99 if i % 4 == 0 else i % 10 for i in range(100)]})
    out = validate_table(cur, schema, profile_table(ref), Verification(max_quarantine_rate=1.0))
    n, n_db, path = store_quarantine(ws, out, execution_id="e1", snapshot_id="v1-test", db_limit=10)
    assert n == out.quarantine.num_rows >= 25 and n_db == 10
    assert path is not None and path.exists()
    full = pq.read_table(path)
    assert full.num_rows == n and {"row_index", "check", "reason", "row.k", "row.v"} <= set(full.column_names)
    assert sorted(set(full.column("row.v").to_pylist())) == [99]
    assert sum(c for _, _, c in quarantine_counts(ws, "v1-test")) == 10
    assert list_quarantine(ws, snapshot_id="v1-test", limit=3)[0]["row"]["v"] == 99
    # a clean revalidation empties the snapshot's quarantine
    clean = validate_table(ref, schema, profile_table(ref), Verification())
    assert store_quarantine(ws, clean, execution_id="e2", snapshot_id="v1-test")[0] == 0
    assert not path.exists() and quarantine_counts(ws, "v1-test") == []
