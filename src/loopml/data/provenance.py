"""Where each row comes from: source file, line (text formats) and record number, vectorised.

Readers return a provenance table aligned with the rows they read (:data:`PROVENANCE_SCHEMA`);
ingestion keeps it beside the snapshot (``provenance.parquet``) so that validation can name the
file and line of a quarantined row and count rows per source file. Line numbers come from one
numpy pass over the file's bytes: record starts are the line breaks outside quotes (quote
characters before a break counted with a binary search), blank lines skipped.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a.csv"
>>> _ = p.write_bytes(b'a,b\\n1,"x\\ny"\\n\\n2,z\\n')
>>> record_lines(p, header=True, quote='"', n=2).tolist()
[2, 5]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

#: one row per table row: source file (as shown to people), line (text formats; null otherwise)
#: and the 1-based record number within the file
PROVENANCE_SCHEMA = pa.schema([("file", pa.string()), ("line", pa.int64()), ("record", pa.int64())])


def _bytes(path: Path) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r")


def line_breaks(path: Path) -> np.ndarray:
    """Byte offsets of every ``\\n`` in a file."""
    return np.flatnonzero(_bytes(path) == 10)


def record_lines(path: Path, *, header: bool, quote: str | None, n: int) -> np.ndarray | None:
    """1-based line on which each of the ``n`` records of a delimited (or JSON lines) file starts.

    None when the file's structure does not give exactly ``n`` records (the caller then names
    records by number only).
    """
    buf = _bytes(path)
    nl = np.flatnonzero(buf == 10)
    size = buf.size
    if quote:
        qpos = np.flatnonzero(buf == ord(quote[0]))
        breaks = nl[np.searchsorted(qpos, nl) % 2 == 0] if qpos.size else nl
    else:
        breaks = nl
    starts = np.concatenate([[0], breaks + 1])
    starts = starts[starts < size]
    if starts.size:  # blank (or whitespace-only CR) lines are not records
        first = buf[starts]
        nxt = buf[np.minimum(starts + 1, size - 1)]
        blank = (first == 10) | ((first == 13) & ((nxt == 10) | (starts + 1 >= size)))
        starts = starts[~blank]
    if header:
        starts = starts[1:]
    if starts.size != n:
        return None
    return np.searchsorted(nl, starts, side="left") + 1


def long_line(path: Path, limit: int) -> tuple[int, int] | None:
    """(1-based line number, length in bytes) of the first line longer than ``limit`` bytes."""
    nl = line_breaks(path)
    size = path.stat().st_size
    ends = np.concatenate([nl, [size]])
    begins = np.concatenate([[0], nl + 1])
    lengths = ends - begins
    over = np.flatnonzero(lengths > limit)
    return (int(over[0]) + 1, int(lengths[over[0]])) if over.size else None


def unclosed_quote(path: Path, quote: str) -> int | None:
    """1-based line where a quote opens that is never closed (odd number of quote characters)."""
    buf = _bytes(path)
    qpos = np.flatnonzero(buf == ord(quote[0]))
    if qpos.size % 2 == 0:
        return None
    opener = qpos[-1]  # quotes pair up in order (a doubled "" escape is two toggles): the last one is unpaired
    return int(np.count_nonzero(buf[:opener] == 10)) + 1


def provenance_table(file: str, n: int, lines: np.ndarray | None) -> pa.Table:
    """Provenance of ``n`` rows from one file."""
    return pa.table(
        {
            "file": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([file])).cast(
                pa.string()),
            "line": pa.array(lines, pa.int64()) if lines is not None else pa.nulls(n, pa.int64()),
            "record": pa.array(np.arange(1, n + 1, dtype=np.int64)),
        },
        schema=PROVENANCE_SCHEMA,
    )


def provenance_from_files(
    files: pa.ChunkedArray | pa.Array, paths: list[str], shown: list[str], lines: list[np.ndarray | None]
) -> pa.Table:
    """Provenance from a reader's per-row file name column: the record number is the row's rank among
    its file's rows (files may interleave), its line looked up in that file's record lines."""
    import pyarrow.compute as pc

    idx = pc.index_in(files, value_set=pa.array(paths, pa.string()))
    codes = np.asarray(pc.fill_null(idx, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    n = codes.size
    counts = np.bincount(codes, minlength=len(paths))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if n == 0 or bool(np.all(codes[1:] >= codes[:-1])):
        rank = np.arange(n, dtype=np.int64) - starts[codes]
    else:
        order = np.argsort(codes, kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n, dtype=np.int64) - starts[codes[order]]
    line = np.zeros(n, dtype=np.int64)
    has_line = np.zeros(n, dtype=bool)
    for k, file_lines in enumerate(lines):
        if file_lines is None:
            continue
        m = codes == k
        line[m] = file_lines[rank[m]]
        has_line |= m
    return pa.table(
        {
            "file": pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(shown, pa.string()))
            .cast(pa.string()),
            "line": pa.array(line, pa.int64(), mask=~has_line),
            "record": pa.array(rank + 1, pa.int64()),
        },
        schema=PROVENANCE_SCHEMA,
    )


def shown_path(path: Path, project_dir: Path) -> str:
    """A file as messages name it: the path the source resolved to (as every reader error does)."""
    return str(path)


__all__ = ["PROVENANCE_SCHEMA", "line_breaks", "long_line", "provenance_from_files", "provenance_table",
           "record_lines", "shown_path", "unclosed_quote"]
