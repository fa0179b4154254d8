"""The quarantine: rows that failed row-level checks, with the check, column, value and reason.

Rows are never silently dropped: every failing (row, check) pair, with the whole row, is
written to ``.loopml/lake/quarantine/<snapshot>.parquet`` (columnar, complete), and the first
``DB_LIMIT`` of them also to the ``data_quarantine`` table of the metadata database (the row as
JSON) for ``loopml data quarantine``. A very bad batch therefore costs seconds, not a bloated
metadata database.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    delete,
    desc,
    func,
    insert,
    select,
)

from loopml.validation.validator import ValidationOutcome
from loopml.workspace import Workspace, utcnow
from loopml.workspace.metadata import METADATA

data_quarantine = Table(
    "data_quarantine",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("execution_id", String(40), index=True),
    Column("snapshot_id", String(40), index=True),
    Column("row_index", Integer, nullable=False),
    Column("check", String(40), nullable=False),
    Column("column", String(200)),
    Column("value", Text),
    Column("reason", Text, nullable=False),
    Column("row", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def write_quarantine(ws: Workspace, entries: list[dict[str, Any]], *, execution_id: str | None,
                     snapshot_id: str | None, batch: int = 5000) -> int:
    """Record quarantined rows (dicts with row_index, check, column, value, reason, row); returns the count.

    A snapshot's quarantine is replaced as a whole: validating it again (an edited schema, a
    forced rerun) supersedes the earlier entries instead of counting rows twice.
    """
    now = utcnow()
    rows = [
        {
            "execution_id": execution_id,
            "snapshot_id": snapshot_id,
            "row_index": int(e["row_index"]),
            "check": e["check"],
            "column": e.get("column"),
            "value": None if e.get("value") is None else str(e["value"])[:1000],
            "reason": e["reason"],
            "row": json.loads(json.dumps(e["row"], default=str)),
            "created_at": now,
        }
        for e in entries
    ]
    with ws.engine.begin() as conn:
        if snapshot_id is not None:
            conn.execute(delete(data_quarantine).where(data_quarantine.c.snapshot_id == snapshot_id))
        for i in range(0, len(rows), batch):
            conn.execute(insert(data_quarantine), rows[i : i + batch])
    return len(rows)


DB_LIMIT = 100_000


def quarantine_file(ws: Workspace, snapshot_id: str) -> Path:
    """Where the complete quarantine of a snapshot is kept."""
    return ws.lake / "quarantine" / f"{snapshot_id}.parquet"


def store_quarantine(
    ws: Workspace, outcome: ValidationOutcome, *, execution_id: str | None, snapshot_id: str | None,
    db_limit: int = DB_LIMIT,
) -> tuple[int, int, Path | None]:
    """Keep a validation's quarantine: all of it in Parquet, the first ``db_limit`` entries in the database.

    Returns (entries, entries in the database, Parquet path or None when nothing failed).
    """
    q = outcome.quarantine
    path: Path | None = None
    if q.num_rows and snapshot_id is not None:
        rows = outcome.failed_rows.rename_columns([f"row.{c}" if c != "__row" else "row_index"
                                                   for c in outcome.failed_rows.column_names])
        full = q.join(rows, "row_index", join_type="left outer").sort_by([("row_index", "ascending")])
        path = quarantine_file(ws, snapshot_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(full, tmp, compression="zstd")
        os.replace(tmp, path)
    elif snapshot_id is not None:
        quarantine_file(ws, snapshot_id).unlink(missing_ok=True)
    limited = ValidationOutcome(outcome.report, outcome.table, outcome.keep, q.slice(0, db_limit),
                                outcome.failed_rows)
    n_db = write_quarantine(ws, limited.entries(), execution_id=execution_id, snapshot_id=snapshot_id)
    return q.num_rows, n_db, path


def list_quarantine(
    ws: Workspace, *, snapshot_id: str | None = None, check: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Quarantined rows, newest first, optionally for one snapshot and/or one check."""
    q = select(data_quarantine).order_by(desc(data_quarantine.c.id)).limit(limit)
    if snapshot_id:
        q = q.where(data_quarantine.c.snapshot_id.like(f"{snapshot_id}%"))
    if check:
        q = q.where(data_quarantine.c.check == check)
    with ws.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings().all()]


def quarantine_counts(ws: Workspace, snapshot_id: str | None = None) -> list[tuple[str, str | None, int]]:
    """(check, column, rows) counts."""
    q = select(data_quarantine.c.check, data_quarantine.c.column, func.count()).group_by(
        data_quarantine.c.check, data_quarantine.c.column
    )
    if snapshot_id:
        q = q.where(data_quarantine.c.snapshot_id.like(f"{snapshot_id}%"))
    with ws.engine.connect() as conn:
        return [(r[0], r[1], int(r[2])) for r in conn.execute(q).all()]


__all__ = [
    "DB_LIMIT",
    "data_quarantine",
    "list_quarantine",
    "quarantine_counts",
    "quarantine_file",
    "store_quarantine",
    "write_quarantine",
]
