"""The service's prediction and feedback logs, split in two halves over two processes.

The request loop's half (:class:`Journal`) keeps the raw numeric inputs of a model without a
transform (the hot case) column by column: a single row is a few list appends, a many-row
request one block record of its arrays; other records become one JSON line each (orjson). Every
``flush_rows`` records (by the request loop itself), or ``flush_seconds`` seconds (the flusher
thread), the queue is appended to a journal file (one ``writev`` of the columns' own buffers); the
flusher thread ``fdatasync``s it every ``flush_seconds``, like Redis's ``appendfsync everysec``:
a killed service loses at most the rows not yet appended (fewer than ``flush_rows``), a crashed
machine those of the last ``flush_seconds``. Everything expensive (decoding, building Arrow tables, compression,
Parquet, fsync of segments, compaction) happens in a separate, lower-priority writer process
(:class:`JournalWriter`, ``python -m loopml.serving.journal``). The request loop therefore never
waits for the GIL or shares its interpreter with the log, which is what kept the service's p99
above 2 ms when the segments were written by a thread of the serving process.

On disk, beside the Parquet segments monitoring reads::

    <log dir>/.journal/<stamp>-<pid>-<token>-<seq>.jnl        records (below), append-only
    <log dir>/<journal stem>.<start>-<end>.parquet             the rows of bytes [start, end)

A segment's name says which bytes of which journal it holds, so a writer that starts after a
crash (of the service, of the writer, or of both) resumes each journal exactly where the last
durable segment ends: no row is lost (up to the service's last flush) and none is written twice.
A journal is deleted once its service has closed it (the service holds a shared ``flock`` on it
while appending) and every complete record of it is in a segment. A record cut short by a crash
is kept in ``.journal/<stem>.torn`` with the byte offset (a binary block as base64), never
silently dropped; an undecodable one goes to ``.journal/<stem>.bad``.

Journal records (JSON lines, and binary blocks framed by a JSON header line that gives their size)::

    {"schema": k, "fields": [[name, kind, type name, nullable], ...]}       declares schema k
    {"k": k, "i": id, "t": ts_us, "v": version, "o": route, "s": score, "p": prediction,
     "x": {row} | {"__table__": {column: [values]}}   or   "xb": base64 of the raw float64 inputs,
     "c": the client's X-Request-Id (only when sent),
     "e", "q": the experiment and propensity of the route (only for a route in an experiment)}
    (a many-row request: "i" is a list and "sb", "pb" hold the scores and predictions as base64)
    {"blk": rows, "k": k, "v": version, "o": route, "sz": [bytes of each part], "c": [client ids],
     "e": experiment, "q": propensity}  then the raw parts: request ids (UTF-8, concatenated), their
     lengths (int32), ts (int64), scores, predictions (float64), inputs (float64, rows x inputs), "\n"
                                                                          (raw numeric rows: encode_block)
    {"i": id, "t": ts_us, "l": label}                                        (feedback)

The writer decodes a block without Python per row (numpy views of the parts, one Arrow string
array from the id lengths), merging the blocks of one slice that share schema, version and route.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from binascii import a2b_base64, b2a_base64
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from loopml.serving.logs import SegmentStore, block_table, feedback_table, prediction_table
from loopml.serving.schema import Field, InputSchema

JOURNAL_DIR = ".journal"
PREDICTIONS, FEEDBACK = "predictions", "feedback"
_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
_F64 = np.dtype(np.float64)
_time_ns = time.time_ns
_RANGE = re.compile(r"^(?P<stem>.+)\.(?P<a>\d{12})-(?P<b>\d{12})\.parquet$")
_SCHEMA_PREFIX = b'{"schema"'
_BLOCK_PREFIX = b'{"blk":'


def _default(obj: Any) -> Any:
    # what orjson does not serialise natively: non-contiguous arrays, numpy scalars, Arrow values
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def _b64(arr: np.ndarray) -> str:
    if arr.dtype != np.float64 or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr, np.float64)
    return b2a_base64(arr.data, newline=False).decode("ascii")


def encode_prediction(record: Any, k: int) -> bytes:
    """One journal line for a prediction record (see :mod:`loopml.serving.logs` for the tuple).

    Raw numeric inputs, and the scores of a many-row request, travel as base64 of their float64
    bytes (``xb``, ``sb``, ``pb``): exact, and several times cheaper to write and read than
    decimal floats.
    """
    ids, payload, score, pred = record[0], record[6], record[4], record[5]
    line: dict[str, Any] = {"k": k, "i": ids, "t": record[1], "v": record[2], "o": record[3]}
    if len(record) > 8 and record[8] is not None:
        line["c"] = record[8]  # the client's X-Request-Id
    if len(record) > 9 and record[9] is not None:
        line["e"], line["q"] = record[9], record[10]  # experiment and propensity of the route
    if ids.__class__ is list:
        line["sb"], line["pb"] = _b64(np.asarray(score)), _b64(np.asarray(pred))
    else:
        line["s"], line["p"] = score, pred
    if payload.__class__ is np.ndarray:
        line["xb"] = _b64(payload)
    elif isinstance(payload, pa.Table):
        line["x"] = {"__table__": payload.to_pydict()}
    else:
        line["x"] = payload
    return orjson.dumps(line, option=_OPTS, default=_default)


def encode_block(k: int, version: str, route: str, ids: list[str], ts_us: Any, scores: Any, predictions: Any,
                 matrix: Any, client_ids: list[str | None] | None = None, experiment: str | None = None,
                 propensity: float | None = None) -> list[Any]:
    """One block record of raw numeric rows: a JSON header line, the columns' raw bytes, a newline.

    The header ``{"blk": rows, "k": schema, "v": version, "o": route, "sz": [bytes of each part]
    [, "c": client ids][, "e": experiment, "q": propensity]}`` is followed by the parts: the request ids (UTF-8, concatenated), their
    byte lengths (int32), ts (int64 µs), scores, predictions (float64) and the inputs (float64,
    ``rows x inputs``, schema order), then ``\n``. Returned as a list of buffers (written with
    one ``writev``, never copied in Python); ``matrix`` may be one buffer or a list of row buffers.
    """
    n = len(ids)
    idb = "".join(ids).encode()
    lens = np.fromiter(map(len, ids), np.int32, n)
    if len(idb) != int(lens.sum()):  # non-ASCII ids: lengths in bytes
        lens = np.fromiter((len(i.encode()) for i in ids), np.int32, n)
    parts = matrix if matrix.__class__ is list else [matrix]
    xbytes = sum(memoryview(m).nbytes for m in parts)
    ts_us = np.ascontiguousarray(ts_us, np.int64)
    scores = np.ascontiguousarray(scores, np.float64)
    predictions = np.ascontiguousarray(predictions, np.float64)
    head: dict[str, Any] = {"blk": n, "k": k, "v": version, "o": route,
                            "sz": [len(idb), 4 * n, 8 * n, 8 * n, 8 * n, xbytes]}
    if client_ids is not None:
        head["c"] = client_ids
    if experiment is not None:
        head["e"], head["q"] = experiment, propensity
    return [orjson.dumps(head, option=_OPTS), idb, lens, ts_us, scores, predictions, *parts, b"\n"]


class _Rows:
    """Single raw-input rows of one schema, version and route since the last write, column by column.

    The ids, timestamps, scores and predictions are lists of the objects the request already made
    (a list append is a pointer store; an ``array`` append converted each value and regrew its
    buffer by 1/16, which measured about 1 µs per request in the server), the inputs one
    ``bytearray`` of their float64 bytes (a copy of the row buffer's 200 bytes); the rows become
    one block record (:func:`encode_block`, one vectorised conversion per column) when the queue
    is written, the buffers handed to ``writev`` as they are.
    """

    __slots__ = ("cids", "experiment", "ids", "k", "keep", "preds", "propensity", "route", "scores", "src", "ts",
                 "version", "view", "xs")

    def __init__(self, k: int, version: str, route: str, experiment: str | None = None,
                 propensity: float | None = None, keep: Any = None) -> None:
        self.k, self.version, self.route = k, version, route
        self.experiment, self.propensity = experiment, propensity
        self.keep = keep  # (the Route of the fast path: its id is the key, so it must outlive the block)
        self.ids: list[str] = []
        self.ts: list[int] = []  # ns since the epoch
        self.scores: list[float] = []
        self.preds: list[float] = []
        self.xs = bytearray()
        self.cids: list[str | None] | None = None
        self.src: Any = None  # append_row: the row buffer whose bytes ``view`` shows
        self.view: Any = None

    def add_cid(self, cid: str | None) -> None:
        """Record the client id of the row about to be added (the column exists once one row has one)."""
        if self.cids is None:
            self.cids = [None] * len(self.ids)
        self.cids.append(cid)

    def add(self, record: Any) -> None:
        cid = record[8] if len(record) > 8 else None
        if cid is not None or self.cids is not None:
            self.add_cid(cid)
        self.ids.append(record[0])
        self.ts.append(record[1] * 1000)
        self.scores.append(record[4])
        self.preds.append(record[5])
        self.xs += memoryview(record[6]).cast("B")

    def encode(self) -> list[Any]:
        # (ts is kept in ns: one division for the block instead of one per row)
        return encode_block(self.k, self.version, self.route, self.ids, np.array(self.ts, np.int64) // 1000,
                            np.array(self.scores, np.float64), np.array(self.preds, np.float64), self.xs, self.cids,
                            self.experiment, self.propensity)


def _raw(payload: Any, schema: InputSchema, rows: int) -> bool:
    """Is ``payload`` the raw float64 inputs of ``rows`` rows (a vector for one row), in schema order?"""
    if payload.__class__ is not np.ndarray or payload.dtype != np.float64 or not payload.flags.c_contiguous:
        return False
    width = len(schema.names)
    return bool(payload.shape == ((width,) if rows == 0 else (rows, width)))


def encode_feedback(record: Any) -> bytes:
    """One journal line for a feedback record ``(request_id, ts_us, label)``."""
    return orjson.dumps({"i": record[0], "t": record[1], "l": record[2]}, option=_OPTS)


def _write_all(fd: int, buffers: list[Any]) -> int:
    """Append ``buffers`` to ``fd`` with ``writev`` (no copy in Python); returns the bytes written."""
    total = 0
    step = max(1, min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024))
    for i in range(0, len(buffers), step):
        chunk = buffers[i : i + step]
        want = sum(memoryview(b).nbytes for b in chunk)
        done = os.writev(fd, chunk)
        if done < want:  # a short write (a full disk, a signal): write the rest from a copy
            view = memoryview(b"".join(chunk))[done:]
            while view:
                view = view[os.write(fd, view):]
        total += want
    return total


def _schema_line(k: int, schema: InputSchema) -> bytes:
    fields = [[f.name, f.kind, f.type_name, f.nullable] for f in schema.fields]
    return orjson.dumps({"schema": k, "fields": fields}, option=orjson.OPT_APPEND_NEWLINE)


class Journal:
    """The service's half of a log: JSON lines queued by the request loop, appended by a thread.

    Same interface as :class:`loopml.serving.logs.SegmentLog` (``append``, ``flush``, ``close``,
    ``written``, ``dropped``, ``last_error``, ``directory``).

    Parameters
    ----------
    directory
        The log folder (segments); the journal lives in ``directory/.journal``.
    kind
        ``predictions`` or ``feedback``.
    flush_rows, flush_seconds
        The queue is appended to the journal after this many rows, or this long after the last write;
        the journal is ``fdatasync``-ed every ``flush_seconds`` (by the flusher thread, on its timer).
    max_pending
        Beyond this many queued records new ones are dropped and counted (the service never blocks).
    rotate_bytes
        A journal file is closed (and handed to the writer for deletion) past this size.
    writer
        Start and supervise a writer process for this folder (``False``: somebody else runs one,
        e.g. ``python -m loopml.serving.journal``, or tests that drive :class:`JournalWriter`).
    writer_nice, compact_seconds, max_lag_seconds
        Niceness increment (20: ``SCHED_IDLE``), compaction period and longest deferral while the
        service is saturated, of that writer process (see :class:`JournalWriter`).

    Examples
    --------
    >>> import tempfile, duckdb
    >>> from loopml.serving.logs import now_us
    >>> d = Path(tempfile.mkdtemp())
    >>> log = Journal(d, "feedback", flush_rows=10, flush_seconds=60)
    >>> log.append(("r1", now_us(), 1.0))
    >>> log.close()   # flushes, closes the journal and waits for the writer to drain it
    >>> duckdb.sql(f"select request_id, label from read_parquet('{d}/*.parquet')").fetchall()
    [('r1', 1.0)]
    """

    def __init__(
        self,
        directory: Path,
        kind: str,
        *,
        flush_rows: int = 1000,
        flush_seconds: float = 1.0,
        max_pending: int = 1_000_000,
        rotate_bytes: int = 64 << 20,
        writer: bool = True,
        writer_nice: int = 20,
        compact_seconds: float = 60.0,
        max_lag_seconds: float = 60.0,
    ) -> None:
        if kind not in (PREDICTIONS, FEEDBACK):
            raise ValueError(f"journal kind must be {PREDICTIONS!r} or {FEEDBACK!r}, not {kind!r}")
        self.directory = Path(directory)
        self.kind = kind
        self._predictions = kind == PREDICTIONS
        self.journal_dir = self.directory / JOURNAL_DIR
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.flush_rows, self.flush_seconds, self.max_pending = flush_rows, flush_seconds, max_pending
        self.rotate_bytes = rotate_bytes
        self.max_lag_seconds = max_lag_seconds
        self._pending: deque[tuple[list[Any], int]] = deque()  # (buffers of one record, rows)
        # single raw rows by (schema, version, route, experiment, propensity)
        self._rows: dict[tuple[int, str, str, str | None, float | None], _Rows] = {}
        self._by_route: dict[int, _Rows] = {}  # single raw rows of append_row, by id(route)
        self._queued = 0  # records in the queue and in _rows
        # id(schema) -> (k, schema kept alive, its declaration line, the shape of a raw row)
        self._schemas: dict[int, tuple[int, InputSchema, bytes, tuple[int]]] = {}
        self._token = f"{os.getpid()}-{os.urandom(3).hex()}"
        self._seq = itertools.count(1)
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._unsynced = False
        self._io_lock = threading.Lock()  # the file and the queue's writes (held for one write, never a sync)
        self._sync_lock = threading.Lock()  # one fdatasync at a time; rotation and close wait for it
        self.appended = 0  # records queued since start (group-commit tickets)
        self._lock = threading.Lock()  # the queue, _rows and the counts (worker threads append too)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.written = 0
        self.syncs = 0  # fdatasyncs of the journal (one per flush_seconds under steady traffic)
        self.dropped = 0
        self.last_error: str | None = None
        self._writer_args = (writer_nice, compact_seconds, max(0.05, min(flush_seconds, 1.0) / 2))
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        if writer:
            self._start_writer()
        self._thread = threading.Thread(target=self._loop, name=f"journal-{self.directory.name}", daemon=True)
        self._thread.start()

    # -- hot path ------------------------------------------------------------------------------
    def append_row(self, route: Any, rid: str, score: float, pred: float, x: np.ndarray, cid: str | None) -> None:
        """Queue the prediction of one raw-input row answered on ``route`` (the service's hot path).

        Same log row as ``append((rid, now_us(), version, route name, score, pred, x.copy(), schema,
        cid, experiment, propensity))`` for ``route.model``, for a fraction of the cost: the rows of a
        route are kept by the route's identity (its version, name, experiment, propensity and
        schema are the block's), the timestamp is taken here and ``x`` (the model's float64 row
        buffer) is copied into the block's input buffer, so no record, key or array is built per
        row. ``x`` of another type or size goes through :meth:`append`.
        """
        if self._queued >= self.max_pending or self._closed:
            self.dropped += 1
            return
        with self._lock:
            rows = self._by_route.get(id(route))
            if rows is None:
                rows = self._route_rows(route, x)
            if rows is not None and x is rows.src:
                if cid is not None or rows.cids is not None:
                    rows.add_cid(cid)
                rows.ids.append(rid)
                rows.ts.append(_time_ns())
                rows.scores.append(score)
                rows.preds.append(pred)
                rows.xs += rows.view
                self._queued += 1
                self.appended += 1
                full = self._queued >= self.flush_rows
            else:
                rows = None
        if rows is None:  # not the raw float64 row buffer of the route's schema: the general path
            model = route.model
            self.append((rid, _time_ns() // 1000, model.version_id, route.name, score, pred, np.array(x), model.schema,
                         cid, route.experiment, route.propensity))
        elif full:
            self._write_now()

    def _route_rows(self, route: Any, x: Any) -> _Rows | None:
        """The block of ``route``'s single rows (the caller holds the lock); ``None`` if ``x`` does not fit."""
        model = route.model
        schema = model.schema
        known = self._schemas.get(id(schema)) or self._declare_locked(schema)
        if not (x.__class__ is np.ndarray and x.dtype is _F64 and x.shape == known[3] and x.flags.c_contiguous):
            return None
        rows = self._by_route[id(route)] = _Rows(known[0], model.version_id, route.name, route.experiment,
                                                 route.propensity, keep=route)
        rows.src, rows.view = x, x.data.cast("B")  # the row buffer, and its bytes (appended per row)
        return rows

    def append(self, record: Any) -> None:
        """Queue one record; every ``flush_rows`` records append the queue to the file.

        The raw numeric inputs of a model without a transform (the hot case) are kept column by
        column: a single row costs a few C appends, a many-row request one block record of its
        arrays (nothing is encoded per row; :func:`encode_block`). Other payloads (rows of a
        transformed model, as objects) become one JSON line each. (The service's single rows use
        :meth:`append_row`.)

        The append to the file (one ``writev`` into the page cache, a few hundred microseconds per
        thousand rows) runs right here on the request loop's thread: done by another thread of
        this process it would compete for the GIL with the loop on every system call. The
        ``fdatasync`` that follows is left to the flusher thread (it holds no GIL while it waits).
        """
        if self._queued >= self.max_pending or self._closed:
            self.dropped += 1  # (after close: the service answers no request any more; see ServingApp.closing)
            return
        x = record[6] if self._predictions else None
        if x.__class__ is np.ndarray and record[0].__class__ is str:
            # one row's raw inputs (a copy of a servable's row buffer)
            known = self._schemas.get(id(record[7]))
            if (known is not None and x.dtype is _F64 and x.shape == known[3]
                    and x.flags.c_contiguous):
                n = len(record)
                key = (known[0], record[2], record[3], record[9] if n > 9 else None, record[10] if n > 10 else None)
                with self._lock:
                    rows = self._rows.get(key)
                    if rows is None:
                        rows = self._rows[key] = _Rows(*key)
                    rows.add(record)
                    self._queued += 1
                    self.appended += 1
                    full = self._queued >= self.flush_rows
                if full:
                    self._write_now()
                return
        self._append(record)

    def _append(self, record: Any) -> None:
        key: tuple[int, str, str, str | None, float | None] | None = None
        if self.kind == FEEDBACK:
            item: tuple[list[Any], int] | None = ([encode_feedback(record)], 1)
        else:
            schema = record[7]
            known = self._schemas.get(id(schema))
            if known is None:
                known = self._declare(schema)
            ids, payload = record[0], record[6]
            if ids.__class__ is list:
                if _raw(payload, schema, len(ids)):
                    item = (encode_block(known[0], record[2], record[3], ids, np.full(len(ids), record[1], np.int64),
                                         record[4], record[5], payload,
                                         None if len(record) <= 8 or record[8] is None else [record[8]] * len(ids),
                                         record[9] if len(record) > 9 else None, record[10] if len(record) > 10 else None),
                            len(ids))
                else:
                    item = ([encode_prediction(record, known[0])], len(ids))
            elif _raw(payload, schema, 0):
                item, key = None, (known[0], record[2], record[3], record[9] if len(record) > 9 else None,
                                   record[10] if len(record) > 10 else None)
            else:
                item = ([encode_prediction(record, known[0])], 1)
        with self._lock:
            if key is not None:
                rows = self._rows.get(key)
                if rows is None:
                    rows = self._rows[key] = _Rows(*key)
                rows.add(record)
            elif item is not None:
                self._pending.append(item)
            self._queued += 1
            # counted once queued (a sync that starts now covers it)
            self.appended += 1
            full = self._queued >= self.flush_rows
        if full:
            self._write_now()

    def _write_now(self) -> None:
        # the lock is held only for another thread's write, never for a sync: so at most
        # ``flush_rows`` records are ever only in memory (what a killed process loses).
        # The flusher is not woken: it syncs on its own timer. Waking it for every block made it
        # take the GIL from the request loop once per block (measured: +0.9 point of CPU per
        # request, paired runs in benchmarks/bench_serving.py's harness, 8 of 10 pairs).
        with self._io_lock:
            try:
                self._write_pending()
            except OSError as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"

    def _declare(self, schema: InputSchema) -> tuple[int, InputSchema, bytes, tuple[int]]:
        with self._lock:
            return self._schemas.get(id(schema)) or self._declare_locked(schema)

    def _declare_locked(self, schema: InputSchema) -> tuple[int, InputSchema, bytes, tuple[int]]:
        """Declare ``schema`` (a schema line queued before any record that uses it); the caller holds the lock."""
        k = len(self._schemas)
        known = (k, schema, _schema_line(k, schema), (len(schema.names),))
        self._schemas[id(schema)] = known
        self._pending.append(([known[2]], 0))
        return known

    # -- flusher thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
                self._supervise()
            except OSError as exc:  # keep serving; /ready and /metrics show it
                self.last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(min(self.flush_seconds, 1.0))

    def flush(self) -> int:
        """Append everything queued so far to the journal file and sync it; returns the number of rows.

        Everything the request loop queued before the call is on disk when it returns (the group
        commit relies on it). The request loop may keep appending while the sync runs.
        """
        with self._sync_lock:
            with self._io_lock:
                rows = self._write_pending()
                fd = self._fd if self._unsynced else None
                self._unsynced = False
            if fd is not None:
                try:
                    os.fdatasync(fd)
                except OSError:
                    self._unsynced = True
                    raise
                self.syncs += 1
            if self._size >= self.rotate_bytes:
                with self._io_lock:
                    self._close_file()
            return rows

    def _write_pending(self) -> int:
        """Write the queue to the journal file (the caller holds the I/O lock)."""
        with self._lock:
            pending, rows_by_key = self._pending, self._rows
            n = len(pending)
            if n == 0 and not rows_by_key and not self._by_route:
                return 0
            items = [pending.popleft() for _ in range(n)]
            blocks = [*rows_by_key.values(), *self._by_route.values()]
            self._rows, self._by_route = {}, {}
            self._queued = 0
        for block in blocks:
            items.append((block.encode(), len(block.ids)))
        buffers = [b for bufs, _ in items for b in bufs]
        fd = self._fd if self._fd is not None else self._open()
        self._size += _write_all(fd, buffers)
        self._unsynced = True
        rows = sum([r for _, r in items])
        self.written += rows
        self.last_error = None
        return rows

    def _open(self) -> int:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.journal_dir / f"{stamp}-{self._token}-{next(self._seq):04d}.jnl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)  # "still being written": the writer deletes it only once released
        header = b"".join(known[2] for known in sorted(self._schemas.values(), key=lambda s: s[0]))
        if header:  # every journal file declares the schemas it may use (lines may follow in the queue too)
            os.write(fd, header)
        self._fd, self._path, self._size = fd, path, len(header)
        return fd

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock: the writer may now finish and delete this file
            self._fd = None

    # -- the writer process ----------------------------------------------------------------------
    def _start_writer(self) -> None:
        nice, compact, poll = self._writer_args
        cmd = [sys.executable, "-m", "loopml.serving.logwriter", str(self.directory), "--kind", self.kind,
               "--poll", str(poll), "--compact-seconds", str(compact), "--nice", str(nice),
               "--max-lag", str(self.max_lag_seconds)]
        # the writer's stdin is a pipe from this process: closing it (or dying) tells the writer to
        # drain and exit; its own session keeps a terminal's Ctrl-C from cutting a drain short
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, close_fds=True, start_new_session=True)

    def _supervise(self) -> None:
        """Restart a writer process that died (its error is shown until the restart works)."""
        proc = self._proc
        if proc is None or self._closed or proc.poll() is None:
            return
        self.last_error = f"log writer process exited with code {proc.returncode}; restarted"
        self._start_writer()

    @property
    def writer_pid(self) -> int | None:
        """Pid of the writer process (``None`` without one)."""
        return self._proc.pid if self._proc is not None else None

    def close(self, timeout: float = 60.0) -> None:
        """Flush, close the journal, and let the writer turn it into segments before returning (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.flush()
        with self._sync_lock, self._io_lock:
            if self._write_pending() and self._fd is not None:  # an append that raced the flag
                os.fdatasync(self._fd)
            self._close_file()
        proc = self._proc
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()  # end of input: drain what is complete, then exit
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.last_error = f"log writer still draining after {timeout:.0f}s; the next writer resumes it"


class GroupCommit:
    """Answer a request only once its journal lines are on disk; concurrent requests share one sync.

    With ``deployment.log_durability: before_answer`` the HTTP layer holds each response that
    logged something until :meth:`after` calls back: the journals were written and
    ``fdatasync``-ed on a worker thread up to (at least) that request's lines. While one sync
    runs, the requests answered meanwhile wait together for the next one (group commit), so a
    saturated server pays one sync per batch, not per request. Nothing answered is then lost,
    even if the process or the machine dies right after the answer.

    Tickets are counts of records appended (:meth:`ticket`, read on the event loop before and
    after a handler runs).

    Examples
    --------
    >>> import asyncio, tempfile
    >>> from loopml.serving.logs import now_us
    >>> j = Journal(Path(tempfile.mkdtemp()), "feedback", writer=False)
    >>> gc = GroupCommit([j])
    >>> async def answer():
    ...     j.append(("r1", now_us(), 1.0))
    ...     done = asyncio.get_running_loop().create_future()
    ...     gc.after(gc.ticket(), lambda: done.set_result(gc.durable))
    ...     return await done
    >>> asyncio.run(answer()), j.written
    (1, 1)
    >>> j.close()
    """

    def __init__(self, journals: list[Journal | None]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.journals = [j for j in journals if j is not None]
        self.durable = 0  # every record up to this ticket is on disk
        self.failed_upto = 0  # the last failed sync covered the records up to this ticket
        self.commits = 0
        self.last_error: str | None = None
        self._waiters: list[tuple[int, Any]] = []
        self._running = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="group-commit")

    def ticket(self) -> int:
        """Records appended so far (a request's ticket: this number right after its handler ran)."""
        n = 0
        for j in self.journals:
            n += j.appended
        return n

    def after(self, ticket: int, callback: Any) -> None:
        """Call ``callback()`` on the event loop once the sync covering ``ticket`` ended.

        Then ``ticket <= durable`` (on disk), or the sync failed (``ticket <= failed_upto``: the
        caller answers 503, not 200).
        """
        if ticket <= self.durable:
            callback()
            return
        self._waiters.append((ticket, callback))
        if not self._running:
            self._start()

    @property
    def idle(self) -> bool:
        """No sync running and nobody waiting."""
        return not self._running and not self._waiters

    def _start(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        target = self.ticket()
        self._running = True
        fut = loop.run_in_executor(self._executor, self._sync)
        fut.add_done_callback(lambda f: self._done(f, target))

    def _sync(self) -> None:
        for j in self.journals:
            j.flush()

    def _done(self, fut: Any, target: int) -> None:
        self._running = False
        self.commits += 1
        exc = fut.exception()
        if exc is None:
            self.durable = max(self.durable, target)
            self.last_error = None
        else:
            self.failed_upto = target
            self.last_error = f"{type(exc).__name__}: {exc}"
        ready = [cb for t, cb in self._waiters if t <= target]
        self._waiters = [(t, cb) for t, cb in self._waiters if t > target]
        for cb in ready:
            cb()
        if self._waiters:
            self._start()

    def close(self) -> None:
        """Stop the sync thread (after the last waiter was answered)."""
        self._executor.shutdown(wait=True)


class _Segment:
    """A segment being streamed: row groups appended to a temp file, published under its byte range.

    Decoded slices are buffered into row groups of ``row_group_rows``: a Parquet row group costs
    a fixed price per column, so tiny ones would cost more than the rows in them.
    """

    def __init__(self, store: SegmentStore, stem: str, start: int, schema: pa.Schema,
                 row_group_rows: int = 8192) -> None:
        import pyarrow.parquet as pq

        self.store, self.stem, self.start, self.schema = store, stem, start, schema
        self.rows = 0
        self.row_group_rows = row_group_rows
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self.tmp = store.directory / f".{stem}.{start:012d}.parquet.tmp"
        self._writer = pq.ParquetWriter(self.tmp, schema, **SegmentStore.options(schema))

    def write(self, table: pa.Table) -> None:
        self._buffer.append(table)
        self._buffered += table.num_rows
        self.rows += table.num_rows
        if self._buffered >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            # one chunk per column: a Parquet writer fed many small chunks pays per chunk
            self._writer.write_table(pa.concat_tables(self._buffer).combine_chunks())
            self._buffer, self._buffered = [], 0

    def close(self, end: int) -> None:
        self._flush()
        self._writer.close()
        self.store.publish(self.tmp, f"{self.stem}.{self.start:012d}-{end:012d}.parquet", own=True)


#: rows decoded before they become one Arrow table (and, buffered, one Parquet row group)
ROW_GROUP_ROWS = 8192


class _Pending:
    """Rows decoded from consecutive slices of a journal, not yet a table (see ``JournalWriter._convert``)."""

    __slots__ = ("blocks", "end", "feedback", "records", "rows", "schemas", "start")

    def __init__(self, start: int) -> None:
        self.start = self.end = start
        self.rows = 0
        self.records: list[Any] = []
        self.blocks: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        self.feedback: list[Any] = []
        self.schemas: dict[int, InputSchema] = {}


class JournalWriter:
    """Turns the journals of one log folder into Parquet segments (the writer process's work).

    The writer shares the machine with the request loop, often the same pinned core. Two rules
    keep it out of the loop's way (measured in ``benchmarks/bench_serving.py``):

    * it works in slices of ``slice_bytes`` and calls ``sched_yield`` between them: on a kernel
      that preempts lazily, a process busy in user space otherwise keeps the core until the next
      scheduler tick (4 ms at 250 Hz) even after the request loop woke up;
    * while requests flow fast (the journals grow by more than ``busy_bytes_per_s``, about 2,000
      rows a second) conversion waits, as long as the oldest unconverted row is younger than
      ``max_lag_seconds``: the rows are already durable in the journal, only the Parquet copy
      that monitoring reads is late. Past that bound it converts anyway, busy or not.

    Parameters
    ----------
    directory
        The log folder.
    kind
        ``predictions`` or ``feedback``.
    compact_seconds
        Merge the segments written since the last compaction this often (0: never).
    slice_bytes
        Journal bytes decoded between two yields (lines are never split).
    max_lag_seconds, busy_bytes_per_s
        The deferral rule above (``max_lag_seconds=0`` never defers).

    Examples
    --------
    >>> import tempfile
    >>> from loopml.serving.logs import now_us
    >>> d = Path(tempfile.mkdtemp())
    >>> j = Journal(d, "feedback", writer=False)
    >>> j.append(("r1", now_us(), 0.0)); j.append(("r2", now_us(), 1.0))
    >>> j.flush()
    2
    >>> w = JournalWriter(d, "feedback")
    >>> w.pass_once()   # j still holds the journal open: its rows are written, the file stays
    2
    >>> j.close(); w.pass_once(), list((d / ".journal").glob("*.jnl"))
    (0, [])
    """

    def __init__(
        self,
        directory: Path,
        kind: str,
        *,
        compact_seconds: float = 60.0,
        slice_bytes: int = 64 << 10,
        max_lag_seconds: float = 60.0,
        busy_bytes_per_s: float = 1e6,
    ) -> None:
        self.directory = Path(directory)
        self.kind = kind
        self.slice_bytes = slice_bytes
        self.max_lag_seconds, self.busy_bytes_per_s = max_lag_seconds, busy_bytes_per_s
        self.journal_dir = self.directory / JOURNAL_DIR
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.store = SegmentStore(self.directory)
        self.store.recover()
        self.compact_seconds = compact_seconds
        self._last_compact = time.monotonic()
        self._claims: dict[str, int] = {}  # journal stem -> fd holding the claim lock
        self._schemas: dict[str, dict[int, InputSchema]] = {}
        self._waiting_since: dict[str, float] = {}  # journal stem -> when unconverted bytes were first seen
        self._growth_mark: tuple[float, int] | None = None
        self.consumed = consumed_offsets(self.directory)
        self.rows_written = 0
        self.torn_bytes = 0
        self.bad_lines = 0
        self.deferred_passes = 0

    # -- when to work --------------------------------------------------------------------------
    def service_busy(self) -> bool:
        """Are requests flowing fast? (the journals grew by more than ``busy_bytes_per_s`` since the last call)"""
        total = 0
        for p in self.journal_dir.glob("*.jnl"):
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                continue
        now = time.monotonic()
        mark, self._growth_mark = self._growth_mark, (now, total)
        if mark is None or now - mark[0] < 0.05:
            return False
        return (total - mark[1]) / (now - mark[0]) > self.busy_bytes_per_s

    def pass_once(self, *, busy: bool = False) -> int:
        """Write every complete line not yet in a segment; delete finished journals. Returns rows written.

        With ``busy``, journals whose oldest unconverted bytes are younger than
        ``max_lag_seconds`` wait for the next pass.
        """
        rows = 0
        for path in sorted(self.journal_dir.glob("*.jnl")):
            rows += self._one(path, busy)
        if (self.compact_seconds > 0 and time.monotonic() - self._last_compact >= self.compact_seconds
                and (not busy or time.monotonic() - self._last_compact >= self.max_lag_seconds)):
            self._last_compact = time.monotonic()
            self.store.compact()
        return rows

    # -- claims ----------------------------------------------------------------------------------
    def _claim(self, path: Path) -> bool:
        stem = path.stem
        if stem in self._claims:
            return True
        fd = os.open(self.journal_dir / f"{stem}.claim", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False  # another writer process works on it
        self._claims[stem] = fd
        # another writer may have converted part of it since this one last looked: resume after that
        done = consumed_offsets(self.directory).get(stem, 0)
        if done > self.consumed.get(stem, 0):
            self.consumed[stem] = done
        self._schemas.pop(stem, None)
        return True

    def _release(self, stem: str) -> None:
        fd = self._claims.pop(stem, None)
        (self.journal_dir / f"{stem}.claim").unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)

    # -- one journal -------------------------------------------------------------------------------
    def _one(self, path: Path, busy: bool = False) -> int:
        if not self._claim(path):
            return 0
        stem = path.stem
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            self._release(stem)
            return 0
        rows, tail = 0, b""
        try:
            # the service holds a shared lock while it may append: exclusive means it is done
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                finished = True
            except BlockingIOError:
                finished = False
            size = os.fstat(fd).st_size
            if size > self.consumed.get(stem, 0):
                since = self._waiting_since.setdefault(stem, time.monotonic())
                if not busy or time.monotonic() - since >= self.max_lag_seconds:
                    rows = self._convert(fd, path, size)
                else:
                    self.deferred_passes += 1
                    return 0  # converted (and, when finished, deleted) on a later pass
            done = self.consumed.get(stem, 0)
            if done >= size:
                self._waiting_since.pop(stem, None)
            if finished and size > done:
                tail = os.pread(fd, size - done, done)
        finally:
            os.close(fd)
        if finished:
            if tail:  # a line cut short by a crash: kept with its offset, never dropped silently
                with open(self.journal_dir / f"{stem}.torn", "ab") as f:
                    kept: dict[str, Any] = {"offset": self.consumed.get(stem, 0)}
                    if tail.startswith(_BLOCK_PREFIX):  # binary columns: kept exactly
                        kept["bytes_base64"] = b2a_base64(tail, newline=False).decode("ascii")
                    else:
                        kept["bytes"] = tail.decode("utf-8", "replace")
                    f.write(orjson.dumps(kept) + b"\n")
                self.torn_bytes += len(tail)
            path.unlink(missing_ok=True)
            self._schemas.pop(stem, None)
            self._waiting_since.pop(stem, None)
            self._release(stem)
        return rows

    def _convert(self, fd: int, path: Path, size: int) -> int:
        """Stream the complete records after the consumed offset into one segment, slice by slice.

        Slices are decoded as they are read (with yields), but their rows become an Arrow table
        only every ``row_group_rows`` rows: a table costs a fixed price per column, which a
        slice of a few 100-row blocks would otherwise pay every 64 KiB.
        """
        stem = path.stem
        pos = self.consumed.get(stem, 0)
        if stem not in self._schemas and pos > 0:
            self._schemas[stem] = self._declared_before(path, pos)
        seg: _Segment | None = None
        rows = 0
        pending: _Pending | None = None
        while pos < size:
            data = os.pread(fd, min(self.slice_bytes, size - pos), pos)
            items, used, want = split_records(data)
            while used == 0 and pos + len(data) < size:  # one record longer than a slice
                more = max(self.slice_bytes, want - len(data))
                data += os.pread(fd, min(more, size - pos - len(data)), pos + len(data))
                items, used, want = split_records(data)
            if used == 0:
                break  # only a partial record is left
            if pending is None:
                pending = _Pending(pos)
            self._decode_into(pending, stem, items, pos)
            pos += used
            pending.end = pos
            if pending.rows >= ROW_GROUP_ROWS:
                seg, rows = self._take(pending, stem, seg, rows)
                pending = None
            os.sched_yield()
        if pending is not None:
            seg, rows = self._take(pending, stem, seg, rows)
        if seg is not None:
            rows += self._publish(seg, pos)
        return rows

    def _take(self, pending: _Pending, stem: str, seg: _Segment | None, rows: int) -> tuple[_Segment | None, int]:
        """Write the rows decoded since ``pending.start`` into the open segment (or a new one)."""
        table = self._materialize(pending)
        if table is not None and table.num_rows:
            if seg is not None and not seg.schema.equals(table.schema):
                rows += self._publish(seg, pending.start)  # another column set (another version's inputs)
                seg = None
            if seg is None:
                seg = _Segment(self.store, stem, pending.start, table.schema)
            seg.write(table)
        elif seg is None:
            self.consumed[stem] = pending.end  # records without rows (schema declarations, quarantined)
        return seg, rows

    def _publish(self, seg: _Segment, end: int) -> int:
        seg.close(end)
        self.consumed[seg.stem] = end
        self.rows_written += seg.rows
        return seg.rows

    def _declared_before(self, path: Path, offset: int) -> dict[int, InputSchema]:
        """Schemas declared in the part of a journal already in segments (resuming after a crash)."""
        out: dict[int, InputSchema] = {}
        with open(path, "rb") as f:
            head = f.read(offset)
        for _, rec in split_records(head)[0]:
            if rec.__class__ is bytes and rec.startswith(_SCHEMA_PREFIX):
                obj = orjson.loads(rec)
                out[obj["schema"]] = InputSchema([Field(*f) for f in obj["fields"]])
        return out

    def _decode_into(self, pending: _Pending, stem: str, items: list[tuple[int, Any]], offset: int) -> None:
        """Check and decode ``items`` into ``pending`` (undecodable lines are quarantined)."""
        if self.kind == FEEDBACK:
            for at, line in items:
                try:
                    if line.__class__ is not bytes:
                        raise ValueError("a block record in a feedback journal")
                    o = orjson.loads(line)
                    pending.feedback.append((str(o["i"]), int(o["t"]), float(o["l"])))
                    pending.rows += 1
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    self._quarantine(stem, offset + at, _shown(line), f"{type(exc).__name__}: {exc}")
            return
        schemas = self._schemas.setdefault(stem, {})
        pending.schemas = schemas
        records, blocks = pending.records, pending.blocks
        for n, (at, rec) in enumerate(items):
            if n % 64 == 63:
                os.sched_yield()  # a preemption point for the request loop (see the class docstring)
            try:
                if rec.__class__ is bytes:
                    one = self._record(orjson.loads(rec), schemas)
                    if one is not None:
                        records.append(one)
                        pending.rows += 1 if one[0].__class__ is not list else len(one[0])
                else:
                    block = _block(rec[0], rec[1], schemas)
                    blocks.setdefault(block[0], []).append(block)
                    pending.rows += len(block[2])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, pa.ArrowException) as exc:
                self._quarantine(stem, offset + at, _shown(rec), f"{type(exc).__name__}: {exc}")

    def _materialize(self, pending: _Pending) -> pa.Table | None:
        """The decoded rows of ``pending`` as one Arrow table (``None``: no rows)."""
        if self.kind == FEEDBACK:
            return feedback_table(pending.feedback) if pending.feedback else None
        schemas = pending.schemas
        tables = [_blocks_table(group, schemas[key[0]]) for key, group in pending.blocks.items()]
        if pending.records:
            tables.insert(0, prediction_table(self._vectors(pending.records)))
        if not tables:
            return None
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")

    @staticmethod
    def _vectors(records: list[Any]) -> list[Any]:
        """Raw single-row vectors (float64 bytes, lengths checked) to one matrix per schema; rows become views."""
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(records):
            if r[6].__class__ is bytes:
                groups.setdefault(id(r[7]), []).append(i)
        for at in groups.values():
            matrix = np.frombuffer(b"".join([records[i][6] for i in at]), np.float64).reshape(len(at), -1)
            for j, i in enumerate(at):
                records[i] = (*records[i][:6], matrix[j], *records[i][7:])
        return records

    def _quarantine(self, stem: str, offset: int, line: bytes, reason: str) -> None:
        """A line that cannot be decoded goes to ``.journal/<stem>.bad`` with its offset and why."""
        with open(self.journal_dir / f"{stem}.bad", "ab") as f:
            f.write(orjson.dumps({"offset": offset, "reason": reason, "line": line.decode("utf-8", "replace")}) + b"\n")
        self.bad_lines += 1

    @staticmethod
    def _record(o: dict[str, Any], schemas: dict[int, InputSchema]) -> Any:
        if "schema" in o:
            schemas[o["schema"]] = InputSchema([Field(*f) for f in o["fields"]])
            return None
        schema = schemas.get(o["k"])
        if schema is None:
            raise ValueError(f"schema {o['k']} is used but was never declared")
        ids = o["i"]
        xb = o.get("xb")
        x: Any = a2b_base64(xb) if xb is not None else o["x"]
        if ids.__class__ is list:  # a many-row request: one block
            s = np.frombuffer(a2b_base64(o["sb"]), np.float64)
            p = np.frombuffer(a2b_base64(o["pb"]), np.float64)
            if x.__class__ is bytes:
                x = np.frombuffer(x, np.float64).reshape(len(ids), -1)
            elif x.__class__ is dict:
                x = pa.table(x["__table__"])
            else:
                raise ValueError(f"block inputs must be base64 floats or a table, got {type(x).__name__}")
            if len(s) != len(ids) or len(p) != len(ids) or len(x) != len(ids):
                raise ValueError(f"a block of {len(ids)} ids has {len(s)} scores and {len(x)} input rows")
            return (ids, o["t"], o["v"], o["o"], s, p, x, schema, o.get("c"), o.get("e"), o.get("q"))
        if x.__class__ is bytes:  # raw inputs in schema order (one matrix made in _vectors)
            if len(x) != 8 * len(schema.names):
                raise ValueError(f"a raw input row has {len(x)} bytes, expected {8 * len(schema.names)} "
                                 f"(float64 for each of {len(schema.names)} inputs)")
        elif x.__class__ is not dict:
            raise ValueError(f"inputs must be an object or base64 floats, got {type(x).__name__}")
        return (ids, o["t"], o["v"], o["o"], float(o["s"]), float(o["p"]), x, schema, o.get("c"), o.get("e"),
                o.get("q"))

    def close(self) -> None:
        """Release the claims (the journals stay for the next writer)."""
        for stem in list(self._claims):
            fd = self._claims.pop(stem)
            os.close(fd)


def split_records(data: bytes) -> tuple[list[tuple[int, Any]], int, int]:
    r"""The complete records at the start of ``data``: ``(records, bytes used, bytes wanted)``.

    A record is ``(offset, line)`` for a JSON line (without its newline), or ``(offset, (header,
    payload))`` for a block record (:func:`encode_block`; ``header`` is the parsed header, or the
    exception that made it unreadable). Splitting stops before the first incomplete record;
    ``bytes wanted`` is then the length of ``data`` that would complete it, when the header says so
    (else 0). A block whose header cannot be read, or whose payload does not end in a newline, is
    returned with its header line only (quarantined by the caller); splitting resumes after it.

    >>> split_records(b'{"a":1}\n{"b"')
    ([(0, b'{"a":1}')], 8, 0)
    """
    out: list[tuple[int, Any]] = []
    pos, size = 0, len(data)
    view = memoryview(data)
    while pos < size:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return out, pos, 0
        if not data.startswith(_BLOCK_PREFIX, pos):
            out.append((pos, data[pos:nl]))
            pos = nl + 1
            continue
        header_line = data[pos:nl]
        try:
            head = orjson.loads(header_line)
            total = sum(int(x) for x in head["sz"])
            if total < 0:
                raise ValueError("negative part size")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            out.append((pos, (exc, header_line)))
            pos = nl + 1
            continue
        end = nl + 1 + total
        if end + 1 > size:
            return out, pos, end + 1 - pos
        if data[end] != 0x0A:
            out.append((pos, (ValueError(f"a block record of {total} bytes does not end in a newline"), header_line)))
            pos = nl + 1
            continue
        out.append((pos, (head, view[nl + 1 : end])))
        pos = end + 1
    return out, pos, 0


def _shown(rec: Any) -> bytes:
    """What a quarantined record shows: the line, or a block's header line."""
    if rec.__class__ is bytes:
        return rec
    head = rec[0]
    return rec[1] if isinstance(head, Exception) else orjson.dumps(head)


def _block(head: Any, payload: Any, schemas: dict[int, InputSchema]) -> tuple[Any, ...]:
    """The checked columns of one block record (:func:`encode_block`) as numpy views:
    ``((schema k, version, route, experiment, propensity), ids bytes, id lengths, ts, scores, predictions,
    inputs, client ids)``."""
    if isinstance(head, Exception):
        raise ValueError(f"unreadable block header: {head}")
    k = head["k"]
    schema = schemas.get(k)
    if schema is None:
        raise ValueError(f"schema {k} is used but was never declared")
    n, width = int(head["blk"]), len(schema.names)
    sz = [int(x) for x in head["sz"]]
    want = [4 * n, 8 * n, 8 * n, 8 * n, 8 * n * width]
    if len(sz) != 6 or sz[1:] != want:
        raise ValueError(f"a block of {n} rows has parts of {sz[1:]} bytes, expected {want} "
                         f"(float64 for each of {width} inputs)")
    cut = np.cumsum([0, *sz]).tolist()
    part = [payload[cut[i] : cut[i + 1]] for i in range(6)]
    lens = np.frombuffer(part[1], np.int32)
    if (lens < 0).any() or int(lens.sum()) != sz[0]:
        raise ValueError(f"the request id lengths of a block add up to {int(lens.sum())}, not {sz[0]} bytes")
    cids = head.get("c")
    if cids is not None and (cids.__class__ is not list or len(cids) != n):
        raise ValueError(f"a block of {n} rows has {len(cids) if cids.__class__ is list else 'no list of'} client ids")
    experiment, propensity = head.get("e"), head.get("q")
    if experiment is not None:
        experiment, propensity = str(experiment), None if propensity is None else float(propensity)
    return ((k, str(head["v"]), str(head["o"]), experiment, propensity), part[0], lens, np.frombuffer(part[2], np.int64),
            np.frombuffer(part[3], np.float64), np.frombuffer(part[4], np.float64),
            np.frombuffer(part[5], np.float64).reshape(n, width), cids)


def _blocks_table(blocks: list[tuple[Any, ...]], schema: InputSchema) -> pa.Table:
    """One table of the blocks of one schema, version and route (their columns concatenated)."""
    (_, version, route, experiment, propensity) = blocks[0][0]
    lens = np.concatenate([b[2] for b in blocks]) if len(blocks) > 1 else blocks[0][2]
    n = len(lens)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lens, out=offsets[1:])
    ids = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(b"".join([b[1] for b in blocks])))
    ids.validate(full=True)  # UTF-8

    def cat(i: int) -> np.ndarray:
        return np.concatenate([b[i] for b in blocks]) if len(blocks) > 1 else blocks[0][i]

    cids = None
    if any(b[7] is not None for b in blocks):
        cids = [c for b in blocks for c in (b[7] if b[7] is not None else [None] * len(b[2]))]
    return block_table(ids, cat(3), version, route, cat(4), cat(5), cids, cat(6), schema, experiment, propensity)


def consumed_offsets(directory: Path) -> dict[str, int]:
    """Per journal stem, the end of the bytes already in segments (from segment names, compacted ones included)."""
    out: dict[str, int] = {}

    def see(name: str) -> None:
        m = _RANGE.match(name)
        if m:
            stem, b = m.group("stem"), int(m.group("b"))
            if b > out.get(stem, 0):
                out[stem] = b

    for p in directory.glob("*.parquet"):
        see(p.name)
        if "-compact-" in p.name:
            for name in SegmentStore.sources_of(p):
                see(name)
    return out


def pending_bytes(directory: Path) -> int:
    """Complete-or-not journal bytes of ``directory`` not yet in a segment (0: the log is fully written)."""
    jdir = Path(directory) / JOURNAL_DIR
    if not jdir.is_dir():
        return 0
    done = consumed_offsets(Path(directory))
    total = 0
    for p in jdir.glob("*.jnl"):
        try:
            total += max(0, p.stat().st_size - done.get(p.stem, 0))
        except FileNotFoundError:
            continue
    return total


def wait_written(directories: list[Path], timeout: float = 30.0, poll: float = 0.05) -> bool:
    """Wait until every journaled row of these log folders is in a segment; ``False`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if all(pending_bytes(d) == 0 for d in directories):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)


def yield_cpu(nice: int) -> None:
    """Lower every thread of this process (Linux sets priorities per thread; Arrow and BLAS start their own).

    ``nice`` ≥ 20 asks for ``SCHED_IDLE``: run only when the core has nothing else to do.
    """
    tids = [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]
    for tid in tids:
        try:
            if nice >= 20 and hasattr(os, "SCHED_IDLE"):
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            else:
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        except OSError:
            continue


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of returning it to the kernel.

    The writer allocates and frees the same few megabytes every slice (decoded columns, Arrow
    buffers, Parquet pages). By default glibc serves blocks above 128 KiB with ``mmap`` and trims
    its heap when the top is free, so each slice faulted its memory in again: about 100 page
    faults per 1,000 rows, a quarter of the writer's CPU on a VM that hands freed pages back to
    its host. The process's memory is bounded by its largest slice either way. Returns whether
    the settings took (only glibc has ``mallopt``).
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 256 << 20))


def run_writer(directory: Path, kind: str, *, poll: float, compact_seconds: float, nice: int = 20,
               stop: threading.Event | None = None, max_lag_seconds: float = 60.0) -> int:
    """The writer process's loop: a pass every ``poll`` seconds until ``stop``, then a last full pass.

    Run as a process (:func:`main`), ``stop`` is set when standard input closes: the service
    closed it, or died.
    """
    if nice:
        yield_cpu(nice)
    keep_freed_memory()
    stop = stop or threading.Event()
    writer = JournalWriter(directory, kind, compact_seconds=compact_seconds, max_lag_seconds=max_lag_seconds)
    try:
        while True:
            last = stop.is_set()
            writer.pass_once(busy=not last and writer.service_busy())
            if last:
                if writer.compact_seconds > 0:
                    writer.store.compact()
                return 0
            stop.wait(poll)
    finally:
        writer.close()


def _stop_on_eof(stop: threading.Event) -> None:
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        stop.set()


def main(argv: list[str] | None = None) -> int:
    """``python -m loopml.serving.journal DIR --kind predictions``: the log writer process."""
    ap = argparse.ArgumentParser(prog="python -m loopml.serving.logwriter",
                                 description="Turn a log folder's journals into Parquet segments.")
    ap.add_argument("directory", type=Path, help="The log folder (its journals are in DIR/.journal).")
    ap.add_argument("--kind", choices=[PREDICTIONS, FEEDBACK], required=True, help="Which log it is.")
    ap.add_argument("--poll", type=float, default=0.5, help="Seconds between passes.")
    ap.add_argument("--compact-seconds", type=float, default=60.0, help="Compaction period (0: never).")
    ap.add_argument("--nice", type=int, default=20,
                    help="Niceness increment; 20 or more: SCHED_IDLE (run only when the core is otherwise idle).")
    ap.add_argument("--max-lag", type=float, default=60.0,
                    help="While requests flow fast, conversion waits at most this many seconds (0: never waits).")
    args = ap.parse_args(argv)
    stop = threading.Event()  # set when standard input closes (the service closed it or died)
    threading.Thread(target=_stop_on_eof, args=(stop,), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return run_writer(args.directory, args.kind, poll=args.poll, compact_seconds=args.compact_seconds,
                      nice=args.nice, stop=stop, max_lag_seconds=args.max_lag)
