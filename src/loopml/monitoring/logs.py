"""Reading what serving writes: the prediction log, the feedback log, and the training reference.

The prediction log is append-only Parquet segments under ``<workspace>/logs/predictions/``
(columns ``request_id, ts, model_version, route, score, prediction`` then one column per raw
input); feedback is ``<workspace>/logs/feedback/`` (``request_id, ts, label``). Segments are
written under a temporary name and renamed, so only complete ``*.parquet`` files are read.

The log writer compacts segments while monitoring reads them: it publishes the merged segment
(which names its sources in its metadata) and then deletes the sources. A reader therefore
(1) lists and opens the segments under the folder's shared segment lock, which compaction holds
exclusively only while it swaps segments, so no listed file is gone before it is opened; DuckDB
then reads the open descriptors (``/proc/self/fd/N``), which stay readable after the name is
removed; (2) drops every listed segment that a listed compacted segment already holds, so a listing
taken by a reader that could not lock counts no row twice; (3) without ``/proc`` (not Linux) lists
again and retries when a file it listed is gone by the time DuckDB opens it (:func:`_consistent`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import desc, select

from loopml.errors import DataError, NotFound
from loopml.serving.logs import SegmentStore, segment_lock
from loopml.workspace import Workspace
from loopml.workspace.metadata import executions

LOG_COLUMNS = ("request_id", "ts", "model_version", "route", "score", "prediction", "client_request_id", "experiment",
               "propensity")
_RETRIES = 8


def predictions_dir(ws: Workspace) -> Path:
    """Folder of the prediction log segments."""
    return ws.root / "logs" / "predictions"


def feedback_dir(ws: Workspace) -> Path:
    """Folder of the feedback log segments."""
    return ws.root / "logs" / "feedback"


def segments(folder: Path) -> list[str]:
    """Complete segment files of a log folder, oldest name first: one consistent set.

    Temporary files are excluded, and so is every segment that a compacted segment of the same
    listing already holds (it is deleted right after the compacted one is published).
    """
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("*.parquet") if not p.name.startswith(".") and ".tmp" not in p.name]
    replaced: set[str] = set()
    for p in found:
        if "-compact-" in p.name:
            replaced.update(SegmentStore.sources_of(p))
    return sorted(str(p) for p in found if p.name not in replaced)


_FD_DIR = Path("/proc/self/fd")


def _vanished(exc: duckdb.Error) -> bool:
    """Did a query fail because a listed segment was removed (compacted) before DuckDB opened it?"""
    msg = str(exc)
    return isinstance(exc, duckdb.IOException) or "No files found" in msg or "No such file" in msg


def _pin(lists: list[list[str]]) -> tuple[list[list[str]], list[int]] | None:
    """Open every listed segment; ``None`` if one is already gone. DuckDB then reads ``/proc/self/fd/N``,
    which stays readable after the writer deletes the name: the set read is the set listed."""
    fds: list[int] = []
    pinned: list[list[str]] = []
    try:
        for files in lists:
            out = []
            for f in files:
                fd = os.open(f, os.O_RDONLY)
                fds.append(fd)
                out.append(str(_FD_DIR / str(fd)))
            pinned.append(out)
    except FileNotFoundError:
        for fd in fds:
            os.close(fd)
        return None
    return pinned, fds


def _complete(folders: list[Path], lists: list[list[str]]) -> bool:
    """Is no listed set missing a row? A compacted segment that appeared since the listing must have
    had all its sources listed (a directory read concurrent with compaction may see neither)."""
    for folder, files in zip(folders, lists, strict=True):
        names = {Path(f).name for f in files}
        for p in folder.glob("*-compact-*.parquet"):
            if p.name not in names and not set(SegmentStore.sources_of(p)) <= names:
                return False
    return True


def _consistent(folders: list[Path], run: Callable[[list[list[str]]], Any]) -> Any:
    """``run(segment lists)`` over one consistent set of segments per folder, whatever compaction does meanwhile.

    Where ``/proc/self/fd`` exists the listed segments are opened first (pinned); elsewhere a
    query that meets a removed file lists again and retries.
    """
    pinning = _FD_DIR.is_dir()
    for attempt in range(_RETRIES):
        last = attempt == _RETRIES - 1
        with contextlib.ExitStack() as locks:
            if pinning:
                for f in folders:
                    if f.is_dir():
                        locks.enter_context(segment_lock(f, shared=True))
            lists = [segments(f) for f in folders]
            pinned = _pin(lists) if pinning else (lists, [])
        if pinned is None or (pinning and not last and not _complete(folders, lists)):
            if pinned is not None:
                for fd in pinned[1]:
                    os.close(fd)
            time.sleep(0.005 * (attempt + 1))
            continue
        paths, fds = pinned
        try:
            return run(paths)
        except duckdb.Error as exc:
            if last or pinning or not _vanished(exc):
                msg = str(exc)
                for files, real in zip(paths, lists, strict=True):
                    for fd_path, name in zip(files, real, strict=True):
                        msg = msg.replace(fd_path, name)  # name the segment, not the descriptor
                raise type(exc)(msg) from None
            time.sleep(0.005 * (attempt + 1))
        finally:
            for fd in fds:
                os.close(fd)
    raise DataError(f"log folders {', '.join(map(str, folders))}: no consistent set of segments after "
                    f"{_RETRIES} attempts (segments are being compacted); try again")


def _read(files: list[str], positions: bool = False) -> str:
    quoted = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    extra = ", filename=true, file_row_number=true" if positions else ""
    return f"read_parquet([{quoted}], union_by_name=true{extra})"


#: rows of one many-row request share their ts: the file position keeps them in the order they were logged
_ORDER = "ts, filename, file_row_number"
_HIDDEN = "EXCLUDE (filename, file_row_number)"


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    return con


def _where(start: dt.datetime | None, end: dt.datetime | None, col: str = "ts",
           shadows: bool = True) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if not shadows:  # a shadow's scores answered nobody: not the served model's predictions
        clauses.append(f"{col.rsplit('.', 1)[0] + '.' if '.' in col else ''}route IS DISTINCT FROM 'shadow'")
    if start is not None:
        clauses.append(f"{col} >= ?")
        params.append(start)
    if end is not None:
        clauses.append(f"{col} < ?")
        params.append(end)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _select(columns: list[str] | None, alias: str = "") -> str:
    if columns is None:
        return f"{alias}* {_HIDDEN}"
    return ", ".join(alias + '"' + c.replace('"', '""') + '"' for c in columns)


def read_predictions(ws: Workspace, start: dt.datetime | None = None, end: dt.datetime | None = None, *,
                     shadows: bool = False, columns: list[str] | None = None) -> pa.Table:
    """Logged predictions with ``start <= ts < end`` (an empty table with no columns when there is no log).

    Rows of shadow arms (route ``shadow``: scored, never answered) only with ``shadows``; only ``columns``
    when given (e.g. the canary guard reads no inputs).
    """
    where, params = _where(start, end, shadows=shadows)

    def run(lists: list[list[str]]) -> pa.Table:
        if not lists[0]:
            return pa.table({})
        with _connect() as con:
            return con.sql(f"SELECT {_select(columns)} FROM {_read(lists[0], True)} {where} ORDER BY {_ORDER}",
                           params=params).to_arrow_table()

    try:
        table: pa.Table = _consistent([predictions_dir(ws)], run)
        return table
    except duckdb.Error as exc:
        raise DataError(f"prediction log {predictions_dir(ws)}: cannot read its segments: {exc}") from None


def read_labelled(ws: Workspace, start: dt.datetime | None = None, end: dt.datetime | None = None, *,
                  shadows: bool = False, columns: list[str] | None = None) -> pa.Table:
    """Predictions joined by ``request_id`` with their latest feedback label (column ``label``, ``label_ts``).

    The window filters on the prediction time, so a window's quality is that of the
    predictions made in it, whenever their labels arrived. Feedback sent more than once for a
    request id is all kept in the feedback log; the latest label wins here. Shadow rows only with ``shadows``;
    only ``columns`` of the predictions when given.
    """
    where, params = _where(start, end, "p.ts", shadows=shadows)

    def run(lists: list[list[str]]) -> pa.Table:
        preds, fb = lists
        if not preds or not fb:
            return pa.table({})
        sql = f"""
            WITH f AS (
                SELECT request_id, arg_max(label, ts) AS label, max(ts) AS label_ts
                FROM {_read(fb)} GROUP BY request_id
            )
            SELECT {_select(columns, "p.")}, f.label, f.label_ts FROM {_read(preds, True)} p JOIN f USING (request_id) {where}
            ORDER BY p.ts, p.filename, p.file_row_number
        """
        with _connect() as con:
            return con.sql(sql, params=params).to_arrow_table()

    try:
        table: pa.Table = _consistent([predictions_dir(ws), feedback_dir(ws)], run)
        return table
    except duckdb.Error as exc:
        raise DataError(f"feedback log {feedback_dir(ws)}: cannot join it with the predictions: {exc}") from None


def count_labels(ws: Workspace, since: dt.datetime | None = None) -> int:
    """Feedback rows matching a logged prediction whose label arrived at or after ``since``."""
    where, params = _where(since, None, "f.ts")

    def run(lists: list[list[str]]) -> int:
        preds, fb = lists
        if not preds or not fb:
            return 0
        sql = (
            f"SELECT count(DISTINCT f.request_id) FROM {_read(fb)} f "
            f"JOIN (SELECT DISTINCT request_id FROM {_read(preds)}) p USING (request_id) {where}"
        )
        with _connect() as con:
            row = con.execute(sql, params).fetchone()
        return int(row[0]) if row else 0

    return int(_consistent([predictions_dir(ws), feedback_dir(ws)], run))


def log_span(ws: Workspace) -> tuple[dt.datetime | None, dt.datetime | None, int]:
    """(first ts, last ts, rows) of the prediction log."""

    def run(lists: list[list[str]]) -> Any:
        if not lists[0]:
            return None
        with _connect() as con:
            return con.execute(f"SELECT min(ts), max(ts), count(*) FROM {_read(lists[0])}").fetchone()

    row = _consistent([predictions_dir(ws)], run)
    if row is None:
        return None, None, 0
    return _aware(row[0]), _aware(row[1]), int(row[2])


def _aware(ts: Any) -> dt.datetime | None:
    if ts is None:
        return None
    if isinstance(ts, dt.datetime) and ts.tzinfo is None:
        return ts.replace(tzinfo=dt.UTC)
    return ts if isinstance(ts, dt.datetime) else None


def input_columns(table: pa.Table) -> list[str]:
    """The raw input columns of a prediction-log table (everything after the fixed columns)."""
    return [c for c in table.column_names if c not in (*LOG_COLUMNS, "label", "label_ts")]


def latest_output(ws: Workspace, stage: str, name: str) -> tuple[str, str] | None:
    """(digest, execution id) of the newest successful or cached ``stage`` output ``name``."""
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(executions.c.execution_id, executions.c.outputs)
            .where(executions.c.stage == stage, executions.c.status.in_(["success", "cached"]))
            .order_by(desc(executions.c.ended_at))
            .limit(20)
        ).all()
    for exec_id, outputs in rows:
        digest = (outputs or {}).get(name)
        if digest and ws.artifacts.exists(digest):
            return str(digest), str(exec_id)
    return None


def production_output(ws: Workspace, name: str) -> tuple[str, str] | None:
    """(digest, version id) of output ``name`` (``train``, ``test``) of the training that made the production model."""
    try:
        from loopml.registry import Registry
    except ImportError:
        return None
    prod = Registry(ws).production()
    if prod is None:
        return None
    # the execution that wrote the production bundle is the training that made the model
    exec_id = (prod.lineage or {}).get("training_execution")
    with contextlib.suppress(NotFound):
        exec_id = ws.artifact_info(prod.bundle_digest).get("producer") or exec_id
    if not exec_id:
        return None
    with ws.engine.connect() as conn:
        row = conn.execute(select(executions.c.outputs).where(executions.c.execution_id == exec_id)).first()
    digest = ((row[0] if row else None) or {}).get(name)
    if digest and ws.artifacts.exists(digest):
        return str(digest), prod.version_id
    return None


@dataclass
class ReferenceSource:
    """Where the drift reference is, without reading it: a label, a cache key and the file."""

    label: str
    key: str  # changes whenever the content may have changed (artifact digest, or path + size + mtime)
    path: Path
    digest: str | None = None  # artifact digest, verified when read

    def read(self, ws: Workspace) -> pa.Table:
        """The reference table (an artifact's sha256 is verified first)."""
        p = ws.artifacts.open_verified(self.digest) if self.digest else self.path
        try:
            if p.suffix.lower() in (".csv", ".tsv", ".txt"):
                with _connect() as con:
                    return con.sql("SELECT * FROM read_csv_auto(?)", params=[str(p)]).to_arrow_table()
            return pq.read_table(p)
        except (duckdb.Error, pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"drift reference {p}: cannot be read: {exc}") from None

    def column_names(self, ws: Workspace) -> list[str]:
        """Column names (from the Parquet footer; CSV files are read)."""
        if self.path.suffix.lower() in (".csv", ".tsv", ".txt"):
            return list(self.read(ws).column_names)
        try:
            return list(pq.read_schema(self.path).names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"drift reference {self.path}: cannot be read: {exc}") from None


def reference_source(ws: Workspace) -> ReferenceSource:
    """The drift reference: ``monitoring.drift.reference`` when set (Parquet or CSV), else the ``train``
    split the production model was trained on, else the ``train`` split of the latest training."""
    path = ws.spec.monitoring.drift.reference
    if path:
        p = ws.resolve(path)
        if not p.exists():
            raise NotFound(f"monitoring.drift.reference: file {p} does not exist")
        st = p.stat()
        return ReferenceSource(str(p), f"{p}:{st.st_size}:{st.st_mtime_ns}", p)
    prod = production_output(ws, "train")
    if prod is not None:
        return ReferenceSource(
            f"train split {prod[0][:12]} of {prod[1]}", prod[0], ws.artifacts.path_of(prod[0]), prod[0]
        )
    found = latest_output(ws, "train", "train")
    if found is None:
        raise NotFound(
            "no drift reference: no training has produced a `train` split yet",
            hint="run `loopml run` first, or set monitoring.drift.reference to a Parquet/CSV file",
        )
    digest = found[0]
    return ReferenceSource(f"train split {digest[:12]}", digest, ws.artifacts.path_of(digest), digest)


def load_reference(ws: Workspace) -> tuple[pa.Table, str]:
    """The drift reference table and a label saying where it came from (see :func:`reference_source`)."""
    src = reference_source(ws)
    return src.read(ws), src.label
