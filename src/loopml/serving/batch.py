"""Batch prediction: score a file or snapshot in chunks, write a predictions table and the online store.

Rows stream through DuckDB as Arrow record batches of ``chunk_rows`` (so data larger than
memory works); each chunk goes through the same transform and model as the online path
(vectorised), and its predictions are appended to a Parquet file written under a temporary name
and renamed when complete. With entity keys, each chunk is also written to the online store so
that the service can answer by key (precomputed mode).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loopml.errors import DataError, NotFound
from loopml.serving.lookup import PRECOMPUTED_TABLE
from loopml.serving.servable import Servable

_READERS = {".parquet": "read_parquet", ".pq": "read_parquet", ".csv": "read_csv_auto", ".tsv": "read_csv_auto",
            ".json": "read_json_auto", ".jsonl": "read_json_auto", ".ndjson": "read_json_auto"}


@dataclass
class BatchResult:
    """What a batch prediction did."""

    rows: int
    seconds: float
    output: Path
    online_rows: int
    model_version: str

    @property
    def rows_per_second(self) -> float:
        """Throughput, transforms and writing included."""
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _sql_source(path: Path) -> str:
    suffix = path.suffix.lower()
    reader = _READERS.get(suffix)
    if reader is None and path.is_dir():
        return f"read_parquet('{_quote(str(path / '**' / '*.parquet'))}', union_by_name=true)"
    if reader is None:
        raise DataError(
            f"{path}: cannot read files of type `{suffix or 'none'}` (expected one of {', '.join(sorted(_READERS))})"
        )
    return f"{reader}('{_quote(str(path))}')"


def _quote(s: str) -> str:
    return s.replace("'", "''")


def resolve_input(ws: Any, ref: str) -> Path | list[Path]:
    """What ``--batch`` names: a file or folder, ``snapshot:REF`` (a lake snapshot: id, ``v3`` or
    ``latest``; delta snapshots read their whole chain), or an artifact digest (prefix) of a table."""
    if ref.startswith("snapshot:"):
        from loopml.data.snapshots import chain, get_snapshot
        from loopml.workspace import sha256_file

        paths = []
        for snap in chain(ws, get_snapshot(ws, ref.split(":", 1)[1])):
            path = snap.path(ws)
            if sha256_file(path) != snap.sha256:
                from loopml.errors import IntegrityError

                raise IntegrityError(f"snapshot {snap.snapshot_id}: {path} does not match its recorded sha256")
            paths.append(path)
        return paths
    p = Path(ref)
    if p.exists():
        return p
    if ws is not None and len(ref) >= 6 and all(c in "0123456789abcdef" for c in ref):
        info = ws.artifact_info(ref)
        artifact: Path = ws.artifacts.open_verified(info["digest"])
        return artifact  # no suffix: read as Parquet
    raise NotFound(f"input `{ref}` is neither a file nor an artifact digest of this workspace")


def _batches(con: duckdb.DuckDBPyConnection, source: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    reader = con.sql(f"SELECT * FROM {source}").to_arrow_reader(chunk_rows)
    yield from reader


def _prefetch(it: Iterator[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """Read the next chunk in a thread while this one is scored (DuckDB releases the GIL)."""
    q: Queue[Any] = Queue(maxsize=depth)
    end = object()

    def work() -> None:
        try:
            for b in it:
                q.put(b)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)
        q.put(end)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    while True:
        item = q.get()
        if item is end:
            break
        if isinstance(item, BaseException):
            raise item
        yield item


def predict_batch(
    servable: Servable,
    input_path: Path | list[Path],
    output: Path,
    *,
    chunk_rows: int = 200_000,
    keys: list[str] | None = None,
    keep_columns: list[str] | None = None,
    online_writer: Callable[[str, list[dict[str, Any]]], Any] | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    executor: str = "inprocess",
    project_dir: Path | None = None,
) -> BatchResult:
    """Score every row of ``input_path`` with ``servable``; write ``output`` (Parquet).

    Parameters
    ----------
    keys
        Entity key columns copied to the output (and used as the online store key).
    keep_columns
        Further input columns copied to the output.
    online_writer
        ``OnlineStore.write``: when given (and ``keys`` too), predictions are written to the
        online store table ``loopml_predictions`` for precomputed serving.
    progress, on_total
        Called with the number of rows done per chunk / the total row count.
    executor
        ``inprocess`` (DuckDB chunks scored here) or ``ray`` (Ray Data ``map_batches`` over the Parquet
        input, scored by actors that load the version from ``project_dir``'s workspace; see
        :mod:`loopml.serving.batch_ray`). The output is the same file either way.
    """
    t0 = time.perf_counter()
    keys = list(keys or [])
    if executor == "ray":
        from loopml.serving.batch_ray import ray_scored_tables

        if project_dir is None:
            raise DataError("batch scoring on Ray needs the project folder (the actors reopen its workspace)")
        total, blocks = ray_scored_tables(servable, project_dir, input_path, chunk_rows=chunk_rows, keys=keys,
                                          keep_columns=list(keep_columns or []))
        if on_total is not None:
            on_total(total)
        return _write_scored(blocks, output, keys, servable.version_id, online_writer, progress, t0)
    con = duckdb.connect()
    if isinstance(input_path, list):  # a snapshot chain: Parquet files read as one table
        files = ", ".join(f"'{_quote(str(p))}'" for p in input_path)
        source = f"read_parquet([{files}], union_by_name=true)"
    elif input_path.suffix or input_path.is_dir():
        source = _sql_source(input_path)
    else:  # an artifact (no suffix): Parquet
        source = f"read_parquet('{_quote(str(input_path))}')"
    try:
        total = int(con.execute(f"SELECT count(*) FROM {source}").fetchone()[0])  # type: ignore[index]
    except duckdb.Error as exc:
        raise DataError(f"{input_path}: cannot be read as a table: {exc}") from None
    if on_total is not None:
        on_total(total)
    cols = [c[0] for c in con.execute(f"SELECT * FROM {source} LIMIT 0").description]
    missing = [k for k in [*keys, *(keep_columns or [])] if k not in cols]
    if missing:
        raise DataError(f"{input_path}: columns {', '.join(missing)} are missing (columns: {', '.join(cols)})")
    copied = [*keys, *(keep_columns or [])]

    def scored() -> Iterator[pa.Table]:
        for batch in _prefetch(_batches(con, source, chunk_rows)):
            yield scored_table(servable, pa.Table.from_batches([batch]), copied)

    try:
        return _write_scored(scored(), output, keys, servable.version_id, online_writer, progress, t0)
    finally:
        con.close()


def scored_table(servable: Servable, table: pa.Table, copied: list[str]) -> pa.Table:
    """The predictions table of one chunk: the ``copied`` input columns, score, prediction, model_version."""
    scores, preds = servable.predict_table_full(table)
    out_cols: dict[str, Any] = {k: table.column(k) for k in copied}
    out_cols["score"] = pa.array(scores, pa.float64())
    out_cols["prediction"] = pa.array(preds, pa.float64())
    out_cols["model_version"] = pa.array(np.full(len(scores), servable.version_id, dtype=object), pa.string())
    return pa.table(out_cols)


def _write_scored(scored: Iterator[pa.Table], output: Path, keys: list[str], vid: str,
                  online_writer: Callable[[str, list[dict[str, Any]]], Any] | None,
                  progress: Callable[[int], None] | None, t0: float) -> BatchResult:
    """Append scored chunks to ``output`` (temp name, fsync, rename) and, with keys, to the online store."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    writer: pq.ParquetWriter | None = None
    done = 0
    online_rows = 0
    try:
        for out in scored:
            if writer is None:
                writer = pq.ParquetWriter(tmp, out.schema, compression="zstd")
            writer.write_table(out)
            if online_writer is not None and keys:
                rows = out.select([*keys, "score", "prediction", "model_version"]).to_pylist()
                online_writer(PRECOMPUTED_TABLE, rows)
                online_rows += len(rows)
            done += out.num_rows
            if progress is not None:
                progress(out.num_rows)
        if writer is None:  # empty input: still a valid, empty table
            empty = pa.table({**{k: pa.array([], pa.string()) for k in keys}, "score": pa.array([], pa.float64()),
                              "prediction": pa.array([], pa.float64()), "model_version": pa.array([], pa.string())})
            writer = pq.ParquetWriter(tmp, empty.schema)
        writer.close()
        writer = None
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, output)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return BatchResult(done, time.perf_counter() - t0, output, online_rows, vid)
