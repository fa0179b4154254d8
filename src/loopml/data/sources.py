"""Source readers: CSV/TSV, Parquet, JSON lines and SQL, read through DuckDB into Arrow.

Each reader is registered by the ``type`` of its spec model (``loopml.spec.data``) and
implements two methods: :meth:`SourceReader.files` (the files a source covers, empty for
SQL) and :meth:`SourceReader.read` (an Arrow table). Errors name the file, the line, the
column, the offending value and the expected type.

>>> import tempfile, pathlib
>>> from loopml.spec.data import CsvSource
>>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.csv").write_text("x,y\\n1,a\\n2,b\\n")
>>> read_source("a", CsvSource(type="csv", path="a.csv"), d).num_rows
2
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import duckdb
import pyarrow as pa

from loopml.data.provenance import (
    long_line,
    provenance_from_files,
    provenance_table,
    record_lines,
    shown_path,
    unclosed_quote,
)
from loopml.errors import DataError, NotFound
from loopml.spec.data import CsvSource, JsonlSource, ParquetSource, SqlSource

log = logging.getLogger("loopml.data")

#: encodings DuckDB's CSV reader decodes natively (Python codec name -> DuckDB name)
_DUCKDB_ENCODINGS = {"utf-8": "utf-8", "iso8859-1": "latin-1", "utf-16": "utf-16"}


def duck_connect(path: str | None = None, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection without its terminal progress bar (loopml shows its own progress)."""
    con = duckdb.connect(path or ":memory:", read_only=read_only)
    con.execute("SET enable_progress_bar = false")
    return con


def _q(s: str) -> str:
    """A SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def resolve_files(pattern: str, project_dir: Path, *, source: str) -> list[Path]:
    """Files matching a path or glob (relative to the project folder), sorted; an error when none match."""
    full = pattern if os.path.isabs(pattern) else str(project_dir / pattern)
    if glob.has_magic(full):
        files = sorted(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())
    else:
        files = [Path(full)] if Path(full).is_file() else []
    if not files:
        kind = "no file matches the glob" if glob.has_magic(full) else "file not found"
        raise DataError(
            f"source `{source}`: {kind} {pattern!r} (looked for {full})",
            hint="paths are relative to the project folder (the one holding loopml.yaml)",
        )
    return files


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Cheap identity of a file: path, size and modification time (ns)."""
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class SourceReader(Protocol):
    """Reads one kind of source into Arrow. Required: ``files`` and ``read``."""

    type: ClassVar[str]
    #: whether new files can be read on their own (a glob over files): enables incremental snapshots
    supports_incremental: ClassVar[bool]

    def files(self, name: str, source: Any, project_dir: Path) -> list[Path]:
        """The files this source covers (empty when it is not file based)."""
        ...

    def read(self, name: str, source: Any, project_dir: Path, files: Sequence[Path] | None = None) -> pa.Table:
        """The source as an Arrow table; ``files`` restricts a file source to some of its files."""
        ...


READERS: dict[str, SourceReader] = {}


def register_reader(reader: SourceReader) -> SourceReader:
    """Make a reader available for sources whose ``type`` is ``reader.type``."""
    READERS[reader.type] = reader
    return reader


def reader_for(source: Any) -> SourceReader:
    """The reader of a source spec, by its ``type``."""
    try:
        return READERS[source.type]
    except KeyError:
        raise NotFound(f"no reader for source type `{source.type}` (registered: {', '.join(sorted(READERS))})") from None


@dataclass
class SourceRead:
    """A source read with where each row comes from.

    ``provenance`` is aligned with ``table`` (:data:`loopml.data.provenance.PROVENANCE_SCHEMA`);
    ``files`` holds per file the path shown to people and the rows read; ``notes`` what the
    reader noticed and handled (compression, encoding, extra columns).
    """

    table: pa.Table
    provenance: pa.Table
    files: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


#: the column of a :class:`ParquetScan` naming each row's file
SCAN_FILE = "__loopml_file"


@dataclass
class ParquetScan:
    """Parquet files as a lazy DuckDB table expression (``sql``), with what their footers say.

    ``files`` are the paths as the scan's :data:`SCAN_FILE` column names them, ``shown`` as messages name
    them, ``rows`` the row count of each file and ``columns`` the union of their column names.
    """

    sql: str
    files: list[str]
    shown: list[str]
    rows: list[int]
    columns: list[str]
    notes: list[str] = field(default_factory=list)


_MAGIC = [(b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\x28\xb5\x2f\xfd", "zstd")]
_BOMS = [(b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"),
         (b"\xfe\xff", "utf-16"), (b"\xef\xbb\xbf", "utf-8-sig")]


def _head(path: Path, n: int = 4) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _note(notes: list[str], text: str) -> None:
    log.info(text)
    notes.append(text)


class _Prepared:
    """Text files made readable by DuckDB: decompressed, transcoded to UTF-8, trailing blank lines cut.

    Each step writes a temporary copy only when the file needs it; ``original`` maps every
    prepared path back to the user's file (for messages).
    """

    def __init__(self, name: str, files: Sequence[Path], codec: str, tmpdir: Path, notes: list[str],
                 project_dir: Path) -> None:
        self.name, self.tmp, self.notes, self.project_dir = name, tmpdir, notes, project_dir
        self.original: dict[str, Path] = {}
        self.paths = [self._one(i, f, codec) for i, f in enumerate(files)]

    def shown(self, path: Path | str) -> str:
        return shown_path(self.original.get(str(path), Path(path)), self.project_dir)

    def _one(self, i: int, f: Path, codec: str) -> Path:
        path = f
        head = _head(path)
        for magic, kind in _MAGIC:
            if head.startswith(magic):
                path = self._decompress(i, f, path, kind)
                _note(self.notes, f"source `{self.name}`: {shown_path(f, self.project_dir)} is {kind}-compressed "
                      f"(magic bytes {magic.hex(' ')}): read decompressed")
                head = _head(path)
                break
        for bom, enc in _BOMS:
            if head.startswith(bom):
                if enc != "utf-8-sig":
                    _note(self.notes, f"source `{self.name}`: {shown_path(f, self.project_dir)} starts with a "
                          f"{enc.upper()} byte-order mark ({bom.hex(' ')}): decoded as {enc.upper()}")
                codec = enc
                break
        if _DUCKDB_ENCODINGS.get(codec) != "utf-8":
            path = self._transcode(i, f, path, codec)
        path = self._cut_blank_tail(i, path)
        self.original[str(path)] = f
        return path

    def _decompress(self, i: int, original: Path, path: Path, kind: str) -> Path:
        target = self.tmp / f"{i:05d}-z-{original.name}"
        try:
            with pa.input_stream(str(path), compression=kind) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(
                f"source `{self.name}`: {shown_path(original, self.project_dir)} starts like a {kind} file but "
                f"cannot be decompressed: {exc}"
            ) from None
        return target

    def _transcode(self, i: int, original: Path, path: Path, codec: str) -> Path:
        """Re-encode into UTF-8 (streamed); undecodable bytes are named with their line."""
        target = self.tmp / f"{i:05d}-t-{original.name}"
        decoder = codecs.getincrementaldecoder(codec)()
        lineno = 1
        with open(path, "rb") as src, open(target, "w", encoding="utf-8", newline="") as dst:
            while chunk := src.read(1 << 20):
                try:
                    text = decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    before = exc.object[: exc.start].decode(codec, errors="ignore")
                    raise DataError(
                        f"source `{self.name}`: {shown_path(original, self.project_dir)} line "
                        f"{lineno + before.count(chr(10))}: bytes {exc.object[exc.start:exc.end]!r} are not valid "
                        f"{codec}",
                        hint="set `encoding` of the source to the file's real encoding",
                    ) from None
                lineno += text.count("\n")
                dst.write(text)
            dst.write(decoder.decode(b"", final=True))
        return target

    def _cut_blank_tail(self, i: int, path: Path) -> Path:
        """Drop whitespace-only lines at the end of a file (a copy, only when there are some)."""
        size = path.stat().st_size
        if size == 0:
            return path
        with open(path, "rb") as f:
            f.seek(max(0, size - 65536))
            tail = f.read()
        body = tail.rstrip(b" \t\r\n")
        rest = tail[len(body):]
        if rest in (b"", b"\n", b"\r\n") or not body:
            return path
        keep = size - len(rest)
        target = self.tmp / f"{i:05d}-b-{path.name}"
        with open(path, "rb") as src, open(target, "wb") as dst:
            left = keep
            while left > 0:
                chunk = src.read(min(1 << 20, left))
                if not chunk:
                    break
                dst.write(chunk)
                left -= len(chunk)
            dst.write(b"\n")
        return target


def _rows_per_file(column: pa.ChunkedArray | pa.Array, order: Sequence[str]) -> dict[str, int]:
    """Rows per value of a filename column (DuckDB keeps each file's rows together, in order)."""
    import pyarrow.compute as pc

    vc = pc.value_counts(column)
    counts = dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()))
    return {f: int(counts.get(f, 0)) for f in order}


# -- CSV ----------------------------------------------------------------------------------------------


_FILE = SCAN_FILE


def _quote_error(name: str, shown: str, line: int, quote: str) -> DataError:
    return DataError(
        f"source `{name}`: {shown} line {line}: a quote ({quote}) opens here and is never closed",
        hint=f"close the quoted field on line {line}, or double a {quote} inside it",
    )


_CONVERT_RE = re.compile(r'Could not convert string "(?P<value>.*?)" to \'(?P<type>[A-Z0-9_]+)\'', re.S)


class CsvReader:
    """Delimited text (CSV/TSV) with explicit dialect; bad lines raise :class:`DataError` with details."""

    type: ClassVar[str] = "csv"
    supports_incremental: ClassVar[bool] = True

    def files(self, name: str, source: CsvSource, project_dir: Path) -> list[Path]:
        return resolve_files(source.path, project_dir, source=name)

    def _options(self, source: CsvSource, encoding: str) -> str:
        delim = source.delimiter.encode().decode("unicode_escape") if "\\" in source.delimiter else source.delimiter
        opts = [
            f"delim={_q(delim)}",
            f"header={'true' if source.header else 'false'}",
            f"quote={_q(source.quote)}",
            f"escape={_q(source.quote)}",
            f"encoding={_q(encoding)}",
            "skip=0",
            "strict_mode=true",
            "union_by_name=true",
        ]
        if source.columns:
            opts.append("names=[" + ", ".join(_q(c) for c in source.columns) + "]")
        if source.null_values:
            opts.append("nullstr=[" + ", ".join(_q(v) for v in ["", *source.null_values]) + "]")
        if source.types:
            opts.append("types={" + ", ".join(f"{_q(k)}: {_q(v)}" for k, v in source.types.items()) + "}")
        return ", ".join(opts)

    def _encoding(self, name: str, source: CsvSource) -> str:
        try:
            canonical = codecs.lookup(source.encoding).name
        except LookupError:
            raise DataError(
                f"source `{name}` ({source.path}): unknown encoding {source.encoding!r}",
                hint="use a Python codec name such as utf-8, latin-1, cp1252 or utf-16",
            ) from None
        return canonical

    def read(self, name: str, source: CsvSource, project_dir: Path, files: Sequence[Path] | None = None) -> pa.Table:
        return self.read_located(name, source, project_dir, files).table

    def read_located(
        self, name: str, source: CsvSource, project_dir: Path, files: Sequence[Path] | None = None
    ) -> SourceRead:
        """The source with the file and line of every row (see :class:`SourceRead`)."""
        files = list(files) if files is not None else self.files(name, source, project_dir)
        for f in files:
            if f.stat().st_size == 0:
                raise DataError(f"source `{name}`: {f} is empty (0 bytes); expected a header and data lines")
        codec = self._encoding(name, source)
        notes: list[str] = []
        with tempfile.TemporaryDirectory(prefix="loopml-csv-") as tmp:
            prep = _Prepared(name, files, codec, Path(tmp), notes, project_dir)
            headers = self._check_headers(name, source, prep) if source.header else []
            table = self._read_duckdb(name, source, prep.paths, "utf-8", originals=files, prep=prep)
            per_file = _rows_per_file(table.column(_FILE), [str(p) for p in prep.paths])
            prov = provenance_from_files(
                table.column(_FILE), [str(p) for p in prep.paths], [prep.shown(p) for p in prep.paths],
                [record_lines(p, header=source.header, quote=source.quote or None, n=per_file[str(p)])
                 for p in prep.paths])
            table = table.drop_columns([_FILE])
        if len(headers) > 1:
            first = headers[0][1]
            for shown, names in headers[1:]:
                extra = [c for c in names if c not in first]
                if extra:
                    _note(notes, f"source `{name}`: {shown} has column(s) {', '.join(extra)} that "
                          f"{headers[0][0]} lacks (rows of the other files get missing values)")
        if source.columns and table.column_names != list(source.columns):
            raise DataError(
                f"source `{name}`: `columns` names {len(source.columns)} column(s) ({', '.join(source.columns)}) "
                f"but {files[0] if len(files) == 1 else source.path} has {table.num_columns} field(s) per line",
                hint="list exactly one name per field (check `delimiter` too)",
            )
        if table.num_rows == 0:
            raise DataError(
                f"source `{name}`: {', '.join(map(str, files[:3]))} holds no data rows "
                f"(columns: {', '.join(table.column_names)})"
            )
        shown_files = [{"file": prep.shown(p), "rows": per_file[str(p)]} for p in prep.paths]
        return SourceRead(table, prov, shown_files, notes)

    def _check_headers(self, name: str, source: CsvSource, prep: _Prepared) -> list[tuple[str, list[str]]]:
        """Each file's header: duplicate names and a delimiter that looks wrong are refused here."""
        delim = source.delimiter.encode().decode("unicode_escape") if "\\" in source.delimiter else source.delimiter
        out = []
        for p in prep.paths:
            with open(p, encoding="utf-8", errors="replace", newline="") as fh:
                first = fh.readline(1 << 20)
            try:
                names = next(csv.reader([first], delimiter=delim, quotechar=source.quote or '"',
                                        quoting=csv.QUOTE_MINIMAL if source.quote else csv.QUOTE_NONE), [])
            except csv.Error:
                continue
            names = [n.strip() for n in names]
            shown = prep.shown(p)
            seen: dict[str, int] = {}
            for i, n in enumerate(names, start=1):
                if n in seen and n:
                    raise DataError(
                        f"source `{name}`: {shown} line 1: the header names column `{n}` twice (columns {seen[n]} "
                        f"and {i})",
                        hint="rename one of them in the file: loopml does not guess which one is meant",
                    )
                seen[n] = i
            if len(names) == 1:
                for cand, label in ((";", ";"), ("|", "|"), ("\t", "tab"), (",", ",")):
                    if cand != delim and cand in names[0]:
                        raise DataError(
                            f"source `{name}`: {shown} line 1: one column named {names[0][:80]!r} (delimiter "
                            f"{delim!r}): the delimiter looks like `{label}`",
                            hint=f"set `delimiter: {chr(39) + cand + chr(39) if cand != chr(9) else chr(39) + chr(92) + 't' + chr(39)}` "
                            f"on source `{name}`",
                        )
            out.append((shown, names))
        return out

    def _read_duckdb(
        self, name: str, source: CsvSource, files: Sequence[Path], encoding: str, originals: Sequence[Path],
        prep: _Prepared | None = None,
    ) -> pa.Table:
        file_list = "[" + ", ".join(_q(str(f)) for f in files) + "]"
        opts = self._options(source, encoding)
        con = duck_connect()
        try:
            return con.sql(f"SELECT * FROM read_csv({file_list}, {opts}, filename={_q(_FILE)})").to_arrow_table()
        except duckdb.Error as exc:
            early = self._structure_error(name, source, exc, files, prep)
            if early is not None:
                raise early from None
            raise self._diagnose(con, name, source, file_list, opts, exc, files, originals) from None
        finally:
            con.close()

    def _structure_error(
        self, name: str, source: CsvSource, exc: duckdb.Error, files: Sequence[Path], prep: _Prepared | None
    ) -> DataError | None:
        """Errors DuckDB reports without a usable line: an over-long line, an unclosed quote."""
        text = str(exc)
        shown = prep.shown if prep is not None else str
        m = re.search(r"Maximum line size of (\d+) bytes exceeded", text)
        if m:
            limit = int(m.group(1))
            for f in files:
                hit = long_line(f, limit)
                if hit is not None:
                    if source.quote:
                        opened = unclosed_quote(f, source.quote)
                        if opened is not None:
                            return _quote_error(name, shown(f), opened, source.quote)
                    return DataError(
                        f"source `{name}`: {shown(f)} line {hit[0]} is {hit[1]:,} bytes long (the longest line the "
                        f"CSV reader accepts is {limit:,} bytes)",
                        hint="a missing line break or a runaway quote? split the line, or shorten the field",
                    )
        if source.quote and ("sniff" in text.lower() or "quote" in text.lower() or "Unterminated" in text):
            for f in files:
                opened = unclosed_quote(f, source.quote)
                if opened is not None:
                    return _quote_error(name, shown(f), opened, source.quote)
        return None

    def _diagnose(
        self,
        con: duckdb.DuckDBPyConnection,
        name: str,
        source: CsvSource,
        file_list: str,
        opts: str,
        exc: duckdb.Error,
        files: Sequence[Path],
        originals: Sequence[Path],
    ) -> DataError:
        """Turn a DuckDB CSV error into a DataError naming file, line, column, value and expected type."""
        text = str(exc)
        if "encoding" in text.lower() and "not support" in text.lower():
            return DataError(f"source `{name}`: unsupported encoding {source.encoding!r}")
        if isinstance(exc, duckdb.BinderException) and "COLUMN_TYPES" in text:
            missing = re.findall(r'"([^"]+)"', text)
            return DataError(
                f"source `{name}` ({source.path}): column(s) {', '.join(missing) or '?'} declared in `types` "
                "do not exist in the file",
                hint="check the header, or `columns` when the file has no header",
            )
        row: tuple[Any, ...] | None = None
        single_opts = opts.replace(", union_by_name=true", "")
        for i, f in enumerate(files):  # the rejects table needs one schema: scan file by file
            try:
                con.sql(
                    f"SELECT * FROM read_csv({_q(str(f))}, {single_opts}, store_rejects=true, "
                    f"rejects_table='loopml_rej{i}', rejects_scan='loopml_scan{i}')"
                ).fetchall()
                rejects = con.execute(
                    "SELECT s.file_path, r.line, r.column_name, r.error_type, r.csv_line, r.error_message "
                    f"FROM loopml_rej{i} r JOIN loopml_scan{i} s USING (scan_id, file_id) ORDER BY r.line LIMIT 1"
                ).fetchall()
            except duckdb.Error:
                continue
            if rejects:
                row = rejects[0]
                break
        if row is None:
            line_m = re.search(r"Line: (\d+)", text)
            where = f" line {line_m.group(1)}" if line_m else ""
            first = text.split("\n")[0]
            if "unicode" in text.lower():
                return DataError(
                    f"source `{name}`: {files[0] if len(files) == 1 else source.path}{where}: bytes are not valid "
                    f"{source.encoding}",
                    hint="set `encoding` of the source to the file's real encoding (e.g. latin-1)",
                )
            return DataError(f"source `{name}` ({source.path}){where}: cannot parse the file: {first}")
        file_path, line, column, error_type, csv_line, message = (str(v) if v is not None else "" for v in row)
        try:
            shown = str(originals[list(map(str, files)).index(file_path)])
        except ValueError:
            shown = file_path
        raw = (csv_line or "")[:200]
        if error_type == "CAST":
            m = _CONVERT_RE.search(message or "")
            value = m.group("value") if m else raw
            expected = m.group("type") if m else "the column type"
            declared = column in source.types
            why = (
                f"declared as {expected} in `types`"
                if declared
                else f"earlier values made the column {expected} (mixed types in one column)"
            )
            return DataError(
                f"source `{name}`: {shown} line {line}, column `{column}`: value {value!r} is not {expected} ({why})",
                hint=f"fix the line, or declare `types: {{{column}: VARCHAR}}` to keep the column as text",
            )
        if error_type in ("MISSING COLUMNS", "TOO MANY COLUMNS"):
            return DataError(
                f"source `{name}`: {shown} line {line}: malformed line {raw!r}: {message} "
                f"(column `{column}`, delimiter {source.delimiter!r})",
                hint="every line must have the same number of fields as the header",
            )
        if error_type == "INVALID UNICODE" or "unicode" in (message or "").lower():
            return DataError(
                f"source `{name}`: {shown} line {line}: bytes are not valid {source.encoding}",
                hint="set `encoding` of the source to the file's real encoding (e.g. latin-1)",
            )
        return DataError(
            f"source `{name}`: {shown} line {line}, column `{column}`: {error_type.lower()}: {message} (line {raw!r})"
        )


# -- Parquet / JSON lines ---------------------------------------------------------------------------------


class ParquetReader:
    """Parquet files (a path or a glob); schemas are unified by column name."""

    type: ClassVar[str] = "parquet"
    supports_incremental: ClassVar[bool] = True

    def files(self, name: str, source: ParquetSource, project_dir: Path) -> list[Path]:
        return resolve_files(source.path, project_dir, source=name)

    def read(self, name: str, source: ParquetSource, project_dir: Path, files: Sequence[Path] | None = None) -> pa.Table:
        return self.read_located(name, source, project_dir, files).table

    def _checked_names(self, name: str, files: Sequence[Path], project_dir: Path, notes: list[str]) -> list[str]:
        """Column names of the files in order of first appearance; duplicate names raise, extra columns are noted."""
        import pyarrow.parquet as pq

        first_names: list[str] | None = None
        union: list[str] = []
        for f in files:
            try:
                names = pq.read_schema(f).names
            except (OSError, pa.ArrowException):
                continue  # DuckDB names the unreadable file
            seen: dict[str, int] = {}
            for i, n in enumerate(names, start=1):
                if n in seen:
                    raise DataError(
                        f"source `{name}`: {shown_path(f, project_dir)}: the schema names column `{n}` twice "
                        f"(columns {seen[n]} and {i})",
                        hint="write the file with unique column names",
                    )
                seen[n] = i
            union.extend(n for n in names if n not in union)
            if first_names is None:
                first_names = names
            elif extra := [c for c in names if c not in first_names]:
                _note(notes, f"source `{name}`: {shown_path(f, project_dir)} has column(s) {', '.join(extra)} that "
                      f"{shown_path(files[0], project_dir)} lacks (rows of the other files get missing values)")
        return union

    def scan(
        self, name: str, source: ParquetSource, project_dir: Path, files: Sequence[Path] | None = None
    ) -> ParquetScan:
        """The source as a lazy DuckDB scan (nothing read but the files' footers), for streaming ingestion.

        Its rows are those :meth:`read_located` gives, in the same order and with the same types; the scan adds
        ``file_row_number`` (0-based row within its file) and :data:`SCAN_FILE` (the file's path as listed).
        """
        import pyarrow.parquet as pq

        files = list(files) if files is not None else self.files(name, source, project_dir)
        notes: list[str] = []
        names = self._checked_names(name, files, project_dir, notes)
        rows = []
        for f in files:
            try:
                rows.append(pq.ParquetFile(f).metadata.num_rows)
            except (OSError, pa.ArrowException) as exc:  # named as the reader names it: DuckDB's own message
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                con = duck_connect()
                try:
                    con.sql(f"SELECT count(*) FROM read_parquet({_q(str(f))})").fetchall()
                except duckdb.Error as dexc:
                    why = str(dexc).splitlines()[0]
                finally:
                    con.close()
                raise DataError(f"source `{name}`: {f} is not a readable Parquet file: {why}") from None
        file_list = "[" + ", ".join(_q(str(f)) for f in files) + "]"
        sql = f"read_parquet({file_list}, union_by_name=true, filename={_q(_FILE)}, file_row_number=true)"
        return ParquetScan(sql=sql, files=[str(f) for f in files], shown=[shown_path(f, project_dir) for f in files],
                           rows=rows, columns=names, notes=notes)

    def read_located(
        self, name: str, source: ParquetSource, project_dir: Path, files: Sequence[Path] | None = None
    ) -> SourceRead:
        """The source with the file and row number of every row."""
        files = list(files) if files is not None else self.files(name, source, project_dir)
        notes: list[str] = []
        self._checked_names(name, files, project_dir, notes)
        file_list = "[" + ", ".join(_q(str(f)) for f in files) + "]"
        con = duck_connect()
        try:
            table = con.sql(
                f"SELECT * FROM read_parquet({file_list}, union_by_name=true, filename={_q(_FILE)})"
            ).to_arrow_table()
        except duckdb.Error as exc:
            bad = _first_unreadable(con, files, "read_parquet({})")
            raise DataError(
                f"source `{name}`: {bad or source.path} is not a readable Parquet file: {str(exc).splitlines()[0]}"
            ) from None
        finally:
            con.close()
        per_file = _rows_per_file(table.column(_FILE), [str(f) for f in files])
        prov = provenance_from_files(table.column(_FILE), [str(f) for f in files],
                                     [shown_path(f, project_dir) for f in files], [None] * len(files))
        table = table.drop_columns([_FILE])
        return SourceRead(table, prov, [{"file": shown_path(f, project_dir), "rows": per_file[str(f)]} for f in files],
                          notes)


class JsonlReader:
    """JSON lines files (one object per line; a path or a glob)."""

    type: ClassVar[str] = "jsonl"
    supports_incremental: ClassVar[bool] = True

    def files(self, name: str, source: JsonlSource, project_dir: Path) -> list[Path]:
        return resolve_files(source.path, project_dir, source=name)

    def read(self, name: str, source: JsonlSource, project_dir: Path, files: Sequence[Path] | None = None) -> pa.Table:
        return self.read_located(name, source, project_dir, files).table

    def read_located(
        self, name: str, source: JsonlSource, project_dir: Path, files: Sequence[Path] | None = None
    ) -> SourceRead:
        """The source with the file and line of every row."""
        files = list(files) if files is not None else self.files(name, source, project_dir)
        for f in files:
            if f.stat().st_size == 0:
                raise DataError(f"source `{name}`: {f} is empty (0 bytes); expected one JSON object per line")
        notes: list[str] = []
        with tempfile.TemporaryDirectory(prefix="loopml-jsonl-") as tmp:
            prep = _Prepared(name, files, "utf-8", Path(tmp), notes, project_dir)
            file_list = "[" + ", ".join(_q(str(f)) for f in prep.paths) + "]"
            scan = f"read_json({file_list}, format='newline_delimited', union_by_name=true, filename='__file')"
            con = duck_connect()
            try:
                rel = con.sql(f"SELECT * FROM {scan}")
                mixed = [c for c, t in zip(rel.columns, rel.types) if str(t) == "JSON"]
                as_text = []
                for c in mixed:
                    if not _json_scalars(con, scan, c):
                        raise _json_mixed(con, name, scan, c, prep)
                    as_text.append(c)
                if as_text:  # numbers and strings in one field: text, so that validation types it and
                    # quarantines the odd values with their line (`39`, `41`, `"n/a"`)
                    _note(notes, f"source `{name}`: field(s) {', '.join(as_text)} mix JSON numbers and strings: "
                          "read as text (validation types a field of almost only numbers as numeric)")
                    rel = con.sql("SELECT " + ", ".join(
                        f"json_extract_string({_ident(c)}, '$') AS {_ident(c)}" if c in as_text else _ident(c)
                        for c in rel.columns) + f" FROM {scan}")
                table = rel.to_arrow_table()
            except duckdb.Error as exc:
                bad = _first_bad_json_line(prep.paths)
                if bad is not None:
                    raise DataError(
                        f"source `{name}`: {prep.shown(bad[0])} line {bad[1]}: not valid JSON lines: {bad[2]}",
                        hint="each line must be one JSON object",
                    ) from None
                raise DataError(
                    f"source `{name}`: {prep.shown(prep.paths[0]) if len(files) == 1 else source.path}"
                    f": not valid JSON lines: {str(exc).splitlines()[0]}",
                    hint="each line must be one JSON object",
                ) from None
            finally:
                con.close()
            per_file = _rows_per_file(table.column("__file"), [str(p) for p in prep.paths])
            if len(prep.paths) > 1:
                _note_extra_fields(name, table, prep, notes)
            prov = provenance_from_files(
                table.column("__file"), [str(p) for p in prep.paths], [prep.shown(p) for p in prep.paths],
                [record_lines(p, header=False, quote=None, n=per_file[str(p)]) for p in prep.paths])
            table = table.drop_columns(["__file"])
            shown_files = [{"file": prep.shown(p), "rows": per_file[str(p)]} for p in prep.paths]
        return SourceRead(table, prov, shown_files, notes)


def _note_extra_fields(name: str, table: pa.Table, prep: _Prepared, notes: list[str]) -> None:
    """Note the fields a later file has that the first file never sets (one grouped count, vectorised)."""
    cols = [c for c in table.column_names if c != "__file"]
    counts = table.group_by("__file", use_threads=False).aggregate([(c, "count") for c in cols]).to_pylist()
    by_file = {r["__file"]: {c for c in cols if r[f"{c}_count"]} for r in counts}
    first = by_file.get(str(prep.paths[0]), set())
    for p in prep.paths[1:]:
        extra = sorted(by_file.get(str(p), set()) - first)
        if extra:
            _note(notes, f"source `{name}`: {prep.shown(p)} has field(s) {', '.join(extra)} that "
                  f"{prep.shown(prep.paths[0])} lacks (rows of the other files get missing values)")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _json_scalars(con: duckdb.DuckDBPyConnection, scan: str, column: str) -> bool:
    """Whether a mixed JSON field holds only numbers, strings, booleans and nulls (no objects or arrays)."""
    kinds = {r[0] for r in con.execute(
        f"SELECT DISTINCT json_type({_ident(column)}) FROM {scan} WHERE {_ident(column)} IS NOT NULL").fetchall()}
    return kinds <= {"UBIGINT", "BIGINT", "DOUBLE", "VARCHAR", "BOOLEAN", "NULL"}


def _first_bad_json_line(paths: Sequence[Path]) -> tuple[Path, int, str] | None:
    """(file, 1-based line, problem) of the first line that is not one JSON object (the error path only:
    DuckDB's own line numbers are one off)."""
    import json

    for p in paths:
        with open(p, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                text = raw.decode("utf-8", "replace")
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    return p, lineno, f"{exc.msg.removesuffix(' at')} at column {exc.colno} in {text[:120].strip()!r}"
                if not isinstance(value, dict):
                    return p, lineno, f"a JSON {type(value).__name__}, not an object"
    return None


_JSON_FAMILY = {"UBIGINT": "number", "BIGINT": "number", "DOUBLE": "number", "VARCHAR": "string",
                "BOOLEAN": "boolean", "OBJECT": "object", "ARRAY": "array"}


def _json_mixed(con: duckdb.DuckDBPyConnection, name: str, scan: str, column: str, prep: _Prepared) -> DataError:
    """A DataError naming the first line whose JSON value type differs from the column's first value."""
    c = '"' + column.replace('"', '""') + '"'
    rows = con.execute(
        f"SELECT __file, line, json_type(v) AS t, CAST(v AS VARCHAR) FROM (SELECT __file, "
        f"row_number() OVER (PARTITION BY __file) AS line, {c} AS v FROM {scan}) "
        "WHERE v IS NOT NULL AND json_type(v) <> 'NULL' ORDER BY __file, line"
    ).fetchall()
    first = _JSON_FAMILY.get(rows[0][2], rows[0][2]) if rows else None
    for file, line, t, value in rows:
        if _JSON_FAMILY.get(t, t) != first:
            return DataError(
                f"source `{name}`: {prep.shown(file)} line {line}, column `{column}`: value {value} is a {_JSON_FAMILY.get(t, t)}, "
                f"but earlier values are {first}s (mixed types in one column)",
                hint="write one JSON type per field",
            )
    return DataError(f"source `{name}`: column `{column}` mixes JSON types")


def _first_unreadable(con: duckdb.DuckDBPyConnection, files: Sequence[Path], fn: str) -> Path | None:
    for f in files:
        try:
            con.sql(f"SELECT count(*) FROM {fn.format(_q(str(f)))}").fetchall()
        except duckdb.Error:
            return f
    return None


# -- SQL ----------------------------------------------------------------------------------------------


def _sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1] if ":///" in url else url.split("://", 1)[1]


class SqlReader:
    """A query against SQLite, PostgreSQL (SQLAlchemy URL) or DuckDB."""

    type: ClassVar[str] = "sql"
    supports_incremental: ClassVar[bool] = False

    def files(self, name: str, source: SqlSource, project_dir: Path) -> list[Path]:
        if source.url.startswith(("sqlite", "duckdb")):
            p = Path(_sqlite_path(source.url))
            p = p if p.is_absolute() else project_dir / p
            if not p.is_file():
                raise DataError(f"source `{name}`: database file {p} not found (url {source.url!r})")
            return [p]
        return []

    def read(self, name: str, source: SqlSource, project_dir: Path, files: Sequence[Path] | None = None) -> pa.Table:
        if source.url.startswith("duckdb"):
            path = self.files(name, source, project_dir)[0]
            try:
                con = duck_connect(str(path), read_only=True)
            except duckdb.Error as exc:
                raise DataError(f"source `{name}`: cannot open DuckDB database {path}: {exc}") from None
            try:
                return con.sql(source.query).to_arrow_table()
            except duckdb.Error as exc:
                raise DataError(f"source `{name}`: query failed on {path}: {str(exc).splitlines()[0]}") from None
            finally:
                con.close()
        return self._read_sqlalchemy(name, source, project_dir)

    def _read_sqlalchemy(self, name: str, source: SqlSource, project_dir: Path) -> pa.Table:
        from sqlalchemy import create_engine, text
        from sqlalchemy.exc import SQLAlchemyError

        url = source.url
        if url.startswith("sqlite"):
            self.files(name, source, project_dir)
            p = Path(_sqlite_path(url))
            url = f"sqlite:///{p if p.is_absolute() else project_dir / p}"
        elif url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        engine = create_engine(url)
        shown = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", source.url)
        try:
            with engine.connect() as conn:
                result = conn.execute(text(source.query))
                names = list(result.keys())
                rows = result.fetchall()
        except SQLAlchemyError as exc:
            raise DataError(
                f"source `{name}`: query failed against {shown}: {str(exc.__cause__ or exc).splitlines()[0]}"
            ) from None
        finally:
            engine.dispose()
        columns = list(zip(*rows)) if rows else [() for _ in names]
        arrays = []
        for col, values in zip(names, columns):
            try:
                arrays.append(pa.array(list(values)))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise _mixed_types(name, col, list(values)) from None
        return pa.table(dict(zip(names, arrays))) if names else pa.table({})


def _mixed_types(source: str, column: str, values: list[Any]) -> DataError:
    """A DataError naming the first row whose value's type differs from the column's first value."""
    first = next((v for v in values if v is not None), None)
    for i, v in enumerate(values):
        if v is not None and first is not None and not isinstance(v, type(first)) and not (
            isinstance(v, int | float) and isinstance(first, int | float)
        ):
            return DataError(
                f"source `{source}`: row {i + 1}, column `{column}`: value {v!r} is {type(v).__name__}, but earlier "
                f"values are {type(first).__name__} (mixed types in one column)",
                hint=f"CAST `{column}` to one type in the query",
            )
    return DataError(f"source `{source}`: column `{column}` holds values Arrow cannot put in one column")


for _reader in (CsvReader(), ParquetReader(), JsonlReader(), SqlReader()):
    register_reader(_reader)


def read_source(name: str, source: Any, project_dir: Path, files: Sequence[Path] | None = None) -> pa.Table:
    """Read one named source into Arrow."""
    return reader_for(source).read(name, source, project_dir, files)


def read_source_located(name: str, source: Any, project_dir: Path, files: Sequence[Path] | None = None) -> SourceRead:
    """Read one named source with the provenance of every row (readers without it: record numbers only)."""
    reader = reader_for(source)
    located = getattr(reader, "read_located", None)
    if located is not None:
        out: SourceRead = located(name, source, project_dir, files)
        return out
    table = reader.read(name, source, project_dir, files)
    label = f"source `{name}`" if not files else shown_path(Path(files[0]), project_dir)
    return SourceRead(table, provenance_table(label, table.num_rows, None),
                      [{"file": label, "rows": table.num_rows}])


def source_fingerprint(name: str, source: Any, project_dir: Path) -> dict[str, Any]:
    """Identity of a source's current content: file stats, or for a remote database a per-call token.

    Remote SQL databases cannot be fingerprinted cheaply, so they are re-read every run; the
    content hash of the snapshot still deduplicates identical results.
    """
    files = reader_for(source).files(name, source, project_dir)
    if files:
        return {"files": [file_fingerprint(f) for f in files]}
    return {"remote": hashlib.sha256(os.urandom(16)).hexdigest()}


__all__ = [
    "READERS",
    "SCAN_FILE",
    "CsvReader",
    "JsonlReader",
    "ParquetReader",
    "ParquetScan",
    "SourceRead",
    "SourceReader",
    "SqlReader",
    "file_fingerprint",
    "read_source",
    "read_source_located",
    "reader_for",
    "register_reader",
    "resolve_files",
    "source_fingerprint",
]
