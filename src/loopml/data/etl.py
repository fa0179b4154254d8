"""ETL: named sources → (optional SQL transform) → natural labels → hand labels → privacy.

Everything runs in one DuckDB connection: no pandas round trips. :func:`build_examples` gives one Arrow
table of examples; :func:`stream_examples` (a Parquet base source, no ``data.transform``) never holds the
table: DuckDB scans the base source's files lazily, applies the label rules, and hands the examples over in
record batches that are hashed, coarsened and written to Parquet one row group at a time, so ingestion holds
a bounded number of rows whatever the size of the source (DuckDB itself works within a memory limit and
spills beyond it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from loopml.data.labels import apply_label_rule, columns_of, ident, join_hand_labels
from loopml.data.privacy import apply_privacy
from loopml.data.provenance import PROVENANCE_SCHEMA, provenance_table
from loopml.data.snapshots import WrittenTable
from loopml.data.sources import SCAN_FILE, ParquetReader, SourceRead, duck_connect, read_source_located
from loopml.errors import DataError
from loopml.spec import Spec
from loopml.spec.data import ClickWithinWindow, ParquetSource

ROW = "__loopml_row"

#: rows per record batch DuckDB hands over when ingestion streams (at most) and per Parquet row group (at least; batches
#: are gathered until they reach it, so a row group holds under twice this): what it holds of the examples at once
STREAM_ROWS = 65_536

#: DuckDB's working memory while ingestion streams, in MB, unless the stage's memory cap leaves less: the label
#: rule's join and the sort back into source order spill to a temporary folder beyond it
DUCKDB_MEMORY_MB = 1024


@dataclass
class EtlResult:
    """The example table and facts about how it was built."""

    table: pa.Table
    source_rows: dict[str, int] = field(default_factory=dict)
    base: str = ""
    #: where each example row comes from (aligned with ``table``; PROVENANCE_SCHEMA)
    provenance: pa.Table = field(default_factory=PROVENANCE_SCHEMA.empty_table)
    #: per source file: rows read, rows kept as examples, rows quarantined (none at ingestion)
    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: what the readers noticed and handled (compression, byte-order marks, extra columns)
    notes: list[str] = field(default_factory=list)
    #: the examples already written as Parquet (:func:`stream_examples`; ``table`` is then empty)
    written: WrittenTable | None = None

    @property
    def output(self) -> pa.Table | WrittenTable:
        """The examples: the written file when streamed, else the table."""
        return self.written if self.written is not None else self.table


def base_source(spec: Spec) -> str | None:
    """The source the examples come from when there is no transform (None when a transform builds them)."""
    data = spec.data
    if data.transform:
        return None
    if isinstance(data.labels, ClickWithinWindow):
        return data.labels.impressions
    if len(data.sources) == 1:
        return next(iter(data.sources))
    raise DataError(
        f"data: {len(data.sources)} sources ({', '.join(data.sources)}) and no `transform`; "
        "say how they become one example table",
        hint="add `data.transform: SELECT ... FROM a JOIN b USING (key)` (DuckDB SQL over the source names)",
    )


def build_examples(
    spec: Spec,
    project_dir: Path,
    *,
    files: Mapping[str, Sequence[Path]] | None = None,
    only: Sequence[str] | None = None,
    progress: Callable[[list[tuple[str, Any]]], Iterable[tuple[str, Any]]] | None = None,
    read: Callable[[str, Any, Path, Sequence[Path] | None], SourceRead] = read_source_located,
) -> EtlResult:
    """Read the sources and build the example table.

    Parameters
    ----------
    spec
        The project spec (``data`` and ``requirements.privacy`` are used).
    project_dir
        Folder that relative source paths are resolved against.
    files
        Per source, the subset of its files to read (incremental ingestion reads only new files).
    only
        Read only these sources (the others are not needed, e.g. an incremental delta of the base).
    progress
        Wraps the list of (name, source) being read, e.g. with a progress bar.
    read
        Reads one source with its provenance (``read_source_located``; ``loopml spec check`` passes a
        reader of a sample).
    """
    data = spec.data
    if not data.sources:
        raise DataError("data: no sources declared", hint="declare at least one source under data.sources")
    base = base_source(spec)
    con = duck_connect()
    result = EtlResult(table=pa.table({}), base=base or "transform")
    base_prov: pa.Table | None = None
    base_table: pa.Table | None = None
    t: pa.Table | None = None
    try:
        todo = [(n, s) for n, s in data.sources.items() if only is None or n in only]
        for name, source in progress(todo) if progress is not None else todo:
            got = read(name, source, project_dir, (files or {}).get(name))
            t = got.table
            result.source_rows[name] = t.num_rows
            result.files[name] = got.files
            result.notes.extend(got.notes)
            if name == base:
                base_prov, base_table = got.provenance, t
            con.register(name, t)
        if base is None:
            try:
                examples = con.sql(data.transform or "").to_arrow_table()
            except duckdb.Error as exc:
                raise DataError(
                    f"data.transform failed: {str(exc).splitlines()[0]}",
                    hint=f"the sources are available as tables named {', '.join(data.sources)}",
                ) from None
        else:  # the base source's own table (a DuckDB copy of it would double the memory it takes)
            examples = base_table if base_table is not None else con.sql(f"SELECT * FROM {ident(base)}").to_arrow_table()
        if ROW in examples.column_names:
            raise DataError(f"data: column name `{ROW}` is reserved")
        examples = examples.append_column(ROW, pa.array(np.arange(examples.num_rows, dtype=np.int64)))
        con.register("examples", examples)
        view = "examples"
        if data.labels is not None:
            view = apply_label_rule(con, view, data.labels)
        if data.hand_labels is not None:
            view = join_hand_labels(con, view, data.hand_labels, project_dir)
        table = con.sql(f"SELECT * FROM {view} ORDER BY {ROW}").to_arrow_table()
    finally:
        con.close()
    n_examples = examples.num_rows
    del examples, base_table, t  # the sources: only the examples table goes on
    rows = table.column(ROW).combine_chunks()
    table = table.drop_columns([ROW])
    if base_prov is not None and base_prov.num_rows == n_examples:
        result.provenance = base_prov.take(rows)
    else:  # examples built by data.transform: no file to name, the row of the transform's result
        result.provenance = provenance_table("data.transform", table.num_rows, None)
    kept = _kept_per_file(result.provenance)
    for name, src_files in result.files.items():
        for f in src_files:  # only the base source's rows become examples one to one
            f["kept"] = kept.get(f["file"], 0) if name == base else None
            f["quarantined"] = 0
    result.table = apply_privacy(table, spec.requirements.privacy)
    return result


def streams(spec: Spec) -> bool:
    """Whether :func:`stream_examples` builds this spec's examples (a Parquet base source, no transform)."""
    base = base_source(spec)
    return base is not None and spec.data.sources[base].type == "parquet"


def _duck_streaming(memory_mb: float | None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for streaming ingestion: bounded working memory, spilling to a folder of its own
    (removed when the connection closes). The session time zone is left as :func:`duck_connect` leaves it, so the
    examples' Arrow types are those :func:`build_examples` gives."""
    import os
    import tempfile
    import uuid

    con = duck_connect()
    limit = max(64, int(min(memory_mb, DUCKDB_MEMORY_MB) if memory_mb is not None else DUCKDB_MEMORY_MB))
    con.execute(f"SET memory_limit = '{limit}MB'")
    spill = Path(tempfile.gettempdir()) / f"loopml-ingest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    con.execute("SET temp_directory = '" + str(spill).replace("'", "''") + "'")
    return con


def _unreadable(name: str, source: Any, files: Sequence[str], exc: Exception) -> DataError:
    """The error the Parquet reader gives for a file DuckDB cannot read: the first such file named."""
    from loopml.data.sources import _first_unreadable

    con = duck_connect()
    try:
        bad = _first_unreadable(con, [Path(f) for f in files], "read_parquet({})")
    finally:
        con.close()
    return DataError(
        f"source `{name}`: {bad or source.path} is not a readable Parquet file: {str(exc).splitlines()[0]}"
    )


def _is_range(rows: pa.ChunkedArray | pa.Array, start: int) -> bool:
    """Whether row ids are exactly ``start, start + 1, ...``."""
    r = np.asarray(rows.to_numpy(), dtype=np.int64)
    return r.size == 0 or (int(r[0]) == start and bool(np.all(np.diff(r) == 1)))


def stream_examples(
    spec: Spec,
    project_dir: Path,
    out: Path,
    *,
    provenance_out: Path | None = None,
    files: Mapping[str, Sequence[Path]] | None = None,
    only: Sequence[str] | None = None,
    progress: Callable[[list[tuple[str, Any]]], Iterable[tuple[str, Any]]] | None = None,
    memory_mb: float | None = None,
    batch_rows: int | None = None,
) -> EtlResult:
    """Build the example table as :func:`build_examples` does, written to ``out`` (Parquet) batch by batch.

    The same rows, in the same order, with the same types and values as :func:`build_examples`; the provenance
    of each row (file and record) is written to ``provenance_out`` (default: beside ``out``). The base
    source is never read whole: DuckDB computes the label columns (the only columns the label rules make) and
    sorts them with the row id back into source order, while every other column streams from the scan of the
    files in their order, ``batch_rows`` rows at a time; privacy is applied per batch (row-wise, so batches give the rows the whole table
    gives); batches are gathered into Parquet row groups of ``batch_rows`` to ``2 * batch_rows`` rows. Other sources (the events of a label
    rule) are read as :func:`build_examples` reads them. Only for :func:`streams` specs.

    Parameters
    ----------
    out, provenance_out
        The Parquet files to write: the examples and the provenance of their rows.
    memory_mb
        DuckDB's working memory (default :data:`DUCKDB_MEMORY_MB`); beyond it DuckDB spills to disk.
    batch_rows
        Rows per record batch, at most, and per row group, at least (default :data:`STREAM_ROWS`).
    files, only, progress
        As :func:`build_examples`.
    """
    import pyarrow.parquet as pq

    data = spec.data
    if not data.sources:
        raise DataError("data: no sources declared", hint="declare at least one source under data.sources")
    base = base_source(spec)
    if base is None or data.sources[base].type != "parquet":
        raise DataError("data: streaming ingestion needs a Parquet base source and no `data.transform`")
    batch_rows = batch_rows or STREAM_ROWS
    result = EtlResult(table=pa.table({}), base=base)
    con = _duck_streaming(memory_mb)
    prov_path = provenance_out or out.with_name(out.stem + ".provenance.parquet")
    writer: pq.ParquetWriter | None = None
    prov_writer: pq.ParquetWriter | None = None
    try:
        todo = [(n, s) for n, s in data.sources.items() if only is None or n in only]
        scan = None
        for name, source in progress(todo) if progress is not None else todo:
            if name == base and isinstance(source, ParquetSource):
                scan = ParquetReader().scan(name, source, project_dir, (files or {}).get(name))
                result.source_rows[name] = sum(scan.rows)
                result.files[name] = [{"file": f, "rows": n} for f, n in zip(scan.shown, scan.rows)]
                result.notes.extend(scan.notes)
                continue
            got = read_source_located(name, source, project_dir, (files or {}).get(name))
            result.source_rows[name] = got.table.num_rows
            result.files[name] = got.files
            result.notes.extend(got.notes)
            con.register(name, got.table)
        if scan is None:
            raise DataError(f"data: the base source `{base}` was not read")
        for reserved in (ROW, SCAN_FILE, "file_row_number"):
            if reserved in scan.columns:
                raise DataError(f"data: column name `{reserved}` is reserved")
        starts = np.concatenate([[0], np.cumsum(scan.rows, dtype=np.int64)]).astype(np.int64)
        offset = "CASE " + SCAN_FILE + " " + " ".join(
            f"WHEN '{f.replace(chr(39), chr(39) * 2)}' THEN {int(s)}" for f, s in zip(scan.files, starts[:-1])) + " END"
        try:
            con.sql(f"CREATE OR REPLACE TEMP VIEW examples AS SELECT * EXCLUDE ({SCAN_FILE}, file_row_number), "
                    f"CAST({offset} + file_row_number AS BIGINT) AS {ROW} FROM {scan.sql}")
            view = "examples"
            if data.labels is not None:
                view = apply_label_rule(con, view, data.labels)
            if data.hand_labels is not None:
                view = join_hand_labels(con, view, data.hand_labels, project_dir)
            order = [c for c in columns_of(con, view) if c != ROW]
            # only the label columns go through the join and the sort back into source order (12 bytes a row);
            # every other column streams from the scan, which keeps the files' order
            made = list(dict.fromkeys(r.label for r in (data.labels, data.hand_labels) if r is not None))
            labels = (con.sql(f"SELECT {ROW}, {', '.join(ident(c) for c in made)} FROM {view} ORDER BY {ROW}")
                      .to_arrow_table() if made else None)
            reader = con.sql("SELECT * FROM examples").to_arrow_reader(batch_rows)
        except duckdb.Error as exc:
            raise _unreadable(base, data.sources[base], scan.files, exc) from None
        n_rows = int(starts[-1])
        if labels is not None and (labels.num_rows != n_rows or not _is_range(labels.column(ROW), 0)):
            raise DataError(f"data: the label rules gave {labels.num_rows:,} rows for {n_rows:,} examples of "
                            f"`{base}`; each example must get exactly one label")
        shown = pa.array(scan.shown, pa.string())
        kept = np.zeros(len(scan.files), dtype=np.int64)
        pending: list[pa.Table] = []
        pending_rows = 0
        total = 0

        def flush() -> None:
            nonlocal writer, pending, pending_rows
            if not pending:
                return
            chunk = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
            if writer is None:
                writer = pq.ParquetWriter(out, chunk.schema, compression="zstd")
            writer.write_table(chunk, row_group_size=max(batch_rows, chunk.num_rows))
            pending, pending_rows = [], 0

        batches = iter(reader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (duckdb.Error, pa.ArrowException) as exc:  # a file found corrupt while scanning
                raise _unreadable(base, data.sources[base], scan.files, exc) from None
            if batch.num_rows == 0:
                continue
            if not _is_range(batch.column(ROW), total):  # DuckDB keeps a scan's order; never assumed silently
                raise DataError(f"data: rows of `{base}` came out of their files' order while streaming "
                                f"(at row {total:,})")
            rows = batch.column(ROW).to_numpy()
            which = np.searchsorted(starts, rows, side="right") - 1
            kept += np.bincount(which, minlength=len(scan.files))
            prov = pa.table({"file": shown.take(pa.array(which)), "line": pa.nulls(batch.num_rows, pa.int64()),
                             "record": pa.array(rows - starts[which] + 1, pa.int64())}, schema=PROVENANCE_SCHEMA)
            if prov_writer is None:
                prov_writer = pq.ParquetWriter(prov_path, PROVENANCE_SCHEMA, compression="zstd")
            prov_writer.write_table(prov)
            part = pa.Table.from_batches([batch])
            if labels is not None:
                lab = labels.slice(total, batch.num_rows)
                part = pa.table({c: lab.column(c) if c in made else part.column(c) for c in order})
            else:
                part = part.select(order)
            part = apply_privacy(part, spec.requirements.privacy)
            pending.append(part)
            pending_rows += part.num_rows
            total += part.num_rows
            if pending_rows >= batch_rows:
                flush()
        flush()
        if writer is None:  # no rows: an empty file with the examples' schema
            types = {f.name: f.type for f in reader.schema}
            if labels is not None:
                types.update({f.name: f.type for f in labels.schema})
            empty = apply_privacy(pa.schema([(c, types[c]) for c in order]).empty_table(), spec.requirements.privacy)
            writer = pq.ParquetWriter(out, empty.schema, compression="zstd")
            writer.write_table(empty)
        if prov_writer is None:
            prov_writer = pq.ParquetWriter(prov_path, PROVENANCE_SCHEMA, compression="zstd")
            prov_writer.write_table(PROVENANCE_SCHEMA.empty_table())
        schema = writer.schema
    finally:
        con.close()
        for w in (writer, prov_writer):
            if w is not None:
                w.close()
    for f, k in zip(result.files[base], kept):
        f["kept"], f["quarantined"] = int(k), 0
    for name, src_files in result.files.items():
        if name != base:
            for f in src_files:
                f["kept"], f["quarantined"] = None, 0
    result.written = WrittenTable(data=out, rows=total, schema=schema, provenance=prov_path)
    return result


def _kept_per_file(provenance: pa.Table) -> dict[str, int]:
    import pyarrow.compute as pc

    vc = pc.value_counts(provenance.column("file"))
    return {str(f): int(c) for f, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())}


def describe_schema(table: pa.Table | pa.Schema | WrittenTable) -> list[dict[str, Any]]:
    """Plain-data schema (name, Arrow type, nullable) for manifests."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


__all__ = ["STREAM_ROWS", "EtlResult", "base_source", "build_examples", "describe_schema", "stream_examples", "streams"]
