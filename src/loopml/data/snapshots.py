"""Immutable, versioned snapshots of the example table in the lake (``.loopml/lake/snapshots/``).

A snapshot is a folder ``<id>/`` holding ``data.parquet`` and ``manifest.json`` (row count,
schema, sha256, source fingerprints). It is written under a temporary name and renamed into
place, then recorded in the ``data_snapshots`` table; a failed ingestion leaves nothing behind.
A ``delta`` snapshot holds only the rows of new files and names its ``parent``; the full
table of a snapshot is the concatenation of its chain.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import JSON, Column, DateTime, Integer, String, Table, Text, desc, insert, select

from loopml.errors import NotFound
from loopml.workspace import Workspace, sha256_file, utcnow
from loopml.workspace.metadata import METADATA

data_snapshots = Table(
    "data_snapshots",
    METADATA,
    Column("snapshot_id", String(40), primary_key=True),
    Column("version", Integer, nullable=False, index=True),
    Column("kind", String(10), nullable=False),  # full | delta
    Column("parent_id", String(40)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("total_rows", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("relpath", Text, nullable=False),
    Column("config_hash", String(64), nullable=False, index=True),
    Column("execution_id", String(40)),
    Column("manifest", JSON, nullable=False),
)


@dataclass(frozen=True)
class WrittenTable:
    """A table already written as Parquet (streamed batch by batch), with the provenance of its rows beside it.

    ``write_snapshot`` moves both files into the snapshot instead of writing a table it would have to hold.
    """

    data: Path
    rows: int
    schema: pa.Schema
    provenance: Path | None = None

    @property
    def num_rows(self) -> int:
        """Rows written (as ``pa.Table.num_rows``)."""
        return self.rows

    @property
    def num_columns(self) -> int:
        """Columns written (as ``pa.Table.num_columns``)."""
        return len(self.schema)


@dataclass(frozen=True)
class Snapshot:
    """One snapshot row."""

    snapshot_id: str
    version: int
    kind: str
    parent_id: str | None
    created_at: Any
    row_count: int
    total_rows: int
    sha256: str
    relpath: str
    config_hash: str
    execution_id: str | None
    manifest: dict[str, Any]

    def path(self, ws: Workspace) -> Path:
        """The snapshot's Parquet file."""
        return ws.lake / self.relpath


def snapshots_dir(ws: Workspace) -> Path:
    """The lake folder holding snapshot folders."""
    d = ws.lake / "snapshots"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _row(r: Any) -> Snapshot:
    return Snapshot(**{k: r[k] for k in Snapshot.__dataclass_fields__})


def list_snapshots(ws: Workspace, limit: int | None = None) -> list[Snapshot]:
    """Snapshots, newest first."""
    q = select(data_snapshots).order_by(desc(data_snapshots.c.version))
    if limit:
        q = q.limit(limit)
    with ws.engine.connect() as conn:
        return [_row(r) for r in conn.execute(q).mappings().all()]


def get_snapshot(ws: Workspace, ref: str) -> Snapshot:
    """A snapshot by id, unique id prefix, version number (``3``/``v3``) or ``latest``."""
    with ws.engine.connect() as conn:
        if ref == "latest":
            q = select(data_snapshots).order_by(desc(data_snapshots.c.version)).limit(1)
        elif ref.lstrip("v").isdigit():
            q = select(data_snapshots).where(data_snapshots.c.version == int(ref.lstrip("v")))
        else:
            q = select(data_snapshots).where(data_snapshots.c.snapshot_id.like(f"{ref}%"))
        rows = conn.execute(q).mappings().all()
    if not rows:
        raise NotFound(f"snapshot `{ref}` not found", hint="`loopml data snapshots` lists them")
    if len(rows) > 1:
        raise NotFound(f"snapshot prefix `{ref}` is ambiguous ({len(rows)} matches)")
    return _row(rows[0])


def latest_for_config(ws: Workspace, config_hash: str) -> Snapshot | None:
    """The newest snapshot built with this data configuration."""
    with ws.engine.connect() as conn:
        r = (
            conn.execute(
                select(data_snapshots)
                .where(data_snapshots.c.config_hash == config_hash)
                .order_by(desc(data_snapshots.c.version))
                .limit(1)
            )
            .mappings()
            .first()
        )
    return _row(r) if r is not None else None


def chain(ws: Workspace, snap: Snapshot) -> list[Snapshot]:
    """The snapshot and its parents, oldest first (a full snapshot is a chain of one)."""
    out = [snap]
    while out[-1].parent_id:
        out.append(get_snapshot(ws, out[-1].parent_id))
    return out[::-1]


def read_snapshot(ws: Workspace, snap: Snapshot, *, full: bool = True, verify: bool = True) -> pa.Table:
    """The rows of a snapshot (its whole chain when ``full``), checksums verified."""
    parts = chain(ws, snap) if full else [snap]
    tables = []
    for s in parts:
        p = s.path(ws)
        if not p.exists():
            raise NotFound(f"snapshot `{s.snapshot_id}`: file {p} is missing from the lake")
        if verify and sha256_file(p) != s.sha256:
            from loopml.errors import IntegrityError

            raise IntegrityError(f"snapshot `{s.snapshot_id}`: {p} does not match its recorded sha256")
        tables.append(pq.read_table(p))
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def provenance_path(ws: Workspace, snap: Snapshot) -> Path:
    """Where a snapshot keeps the provenance of its rows (file, line, record), beside its data."""
    return snap.path(ws).with_name("provenance.parquet")


def read_provenance(ws: Workspace, snap: Snapshot) -> pa.Table | None:
    """The provenance of a snapshot's rows (its whole chain), or None when a part has none."""
    tables = []
    for s in chain(ws, snap):
        p = provenance_path(ws, s)
        if not p.exists():
            return None
        tables.append(pq.read_table(p))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def clean_lake(ws: Workspace) -> int:
    """Remove temporary folders and snapshot folders that no metadata row names (left by a crash)."""
    d = snapshots_dir(ws)
    with ws.engine.connect() as conn:
        known = {r[0] for r in conn.execute(select(data_snapshots.c.snapshot_id)).all()}
    n = 0
    for p in d.iterdir():
        if p.name.startswith(".tmp-") or (p.is_dir() and p.name not in known):
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n


def write_snapshot(
    ws: Workspace,
    table: pa.Table | WrittenTable,
    *,
    kind: str,
    parent: Snapshot | None,
    config_hash: str,
    execution_id: str | None,
    manifest_extra: dict[str, Any],
    same_as: Snapshot | None = None,
    provenance: pa.Table | None = None,
) -> Snapshot:
    """Write a new immutable snapshot atomically and record it; returns it.

    When ``same_as`` (a full snapshot) holds exactly the same bytes, nothing new is recorded
    and ``same_as`` is returned: re-reading an unchanged database gives no duplicate snapshot.
    ``provenance`` (file, line and record of each row) is kept beside the data as
    ``provenance.parquet``. A :class:`WrittenTable` (and its provenance file) is moved in as it is.
    """
    from loopml.data.etl import describe_schema

    d = snapshots_dir(ws)
    tmp = d / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        data_path = tmp / "data.parquet"
        if isinstance(table, WrittenTable):
            shutil.move(table.data, data_path)
        else:
            pq.write_table(table, data_path, compression="zstd")
        with open(data_path, "rb") as f:
            os.fsync(f.fileno())
        digest = sha256_file(data_path)
        if same_as is not None and same_as.kind == "full" and same_as.sha256 == digest and kind == "full":
            shutil.rmtree(tmp, ignore_errors=True)
            return same_as
        with ws.engine.connect() as conn:
            last = conn.execute(select(data_snapshots.c.version).order_by(desc(data_snapshots.c.version))).first()
        version = (last[0] if last else 0) + 1
        snapshot_id = f"v{version}-{digest[:10]}"
        total = table.num_rows + (parent.total_rows if parent is not None and kind == "delta" else 0)
        created = utcnow()
        manifest = {
            "snapshot_id": snapshot_id,
            "version": version,
            "kind": kind,
            "parent": parent.snapshot_id if parent is not None and kind == "delta" else None,
            "created_at": created.isoformat(),
            "row_count": table.num_rows,
            "total_rows": total,
            "columns": table.num_columns,
            "schema": describe_schema(table.schema),
            "sha256": digest,
            "bytes": data_path.stat().st_size,
            "config_hash": config_hash,
            **manifest_extra,
        }
        if isinstance(table, WrittenTable):
            if table.provenance is not None:
                shutil.move(table.provenance, tmp / "provenance.parquet")
        elif provenance is not None and provenance.num_rows == table.num_rows:
            pq.write_table(provenance, tmp / "provenance.parquet", compression="zstd")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        final = d / snapshot_id
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        with ws.engine.begin() as conn:
            conn.execute(
                insert(data_snapshots).values(
                    snapshot_id=snapshot_id,
                    version=version,
                    kind=kind,
                    parent_id=manifest["parent"],
                    created_at=created,
                    row_count=table.num_rows,
                    total_rows=total,
                    sha256=digest,
                    relpath=str((final / "data.parquet").relative_to(ws.lake)),
                    config_hash=config_hash,
                    execution_id=execution_id,
                    manifest=manifest,
                )
            )
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    return get_snapshot(ws, snapshot_id)


__all__ = [
    "Snapshot",
    "WrittenTable",
    "chain",
    "clean_lake",
    "data_snapshots",
    "get_snapshot",
    "latest_for_config",
    "list_snapshots",
    "provenance_path",
    "read_provenance",
    "read_snapshot",
    "write_snapshot",
]
