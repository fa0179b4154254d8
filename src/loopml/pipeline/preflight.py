"""The spec checked against its data before any stage runs (``loopml spec check``, ``loopml run``).

A spec can be valid on its own and still not fit its data: a target or an input that is not a
column, a transform that needs numbers on a text column, a binary task on a target with five
values. These surface late (at ``train``, after ingest and validation ran) unless checked first.
:func:`check_against_data` reads only a sample of every source (``LIMIT`` pushed into DuckDB),
runs the same ETL as ``ingest`` on it (transform SQL, label rules, hand labels, privacy) and checks:

- ``task.target``, ``task`` keys, split/sampling columns and every ``features.inputs[].column``
  exist in the example table (or are produced by a feature table), with "did you mean" suggestions;
- each input's values fit its ``kind`` and its transforms (read by the same readers as training);
- the task fits the target's values (encoded by the same code as training).

When the sources cannot be read (a missing file, a broken line), nothing is checked against the
data and a note says why; ``ingest`` then reports the read error with its file, line and value.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from loopml.errors import LoopMLError, SpecError

#: rows read from each source
SAMPLE_ROWS = 10_000


@dataclass
class Problem:
    """One way the spec does not fit the data: the key path in the spec and the message."""

    loc: tuple[str | int, ...]
    message: str

    def render(self, lines: dict[tuple[str | int, ...], int], spec_path: str | None) -> str:
        """``file:line: key.path: message`` (file and line when known)."""
        path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in self.loc).replace(".[", "[")
        line = lines.get(self.loc)
        where = f"{spec_path}:{line}: " if spec_path and line else ""
        return f"{where}{path}: {self.message}"


@dataclass
class DataCheck:
    """What the check found: problems (the spec does not fit), notes, and the sample it looked at."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    rows: int = 0
    checked: bool = False

    def raise_for_problems(self, spec_path: str | None = None) -> None:
        """Raise :class:`SpecError` listing every problem (no-op when there is none)."""
        if not self.problems:
            return
        lines = _spec_lines(spec_path, [p.loc for p in self.problems])
        n = len(self.problems)
        raise SpecError(
            f"{spec_path or 'the spec'}: {n} problem(s) against the data (a sample of {self.rows:,} example rows; "
            "nothing was run)",
            [p.render(lines, spec_path) for p in self.problems],
        )


def _spec_lines(spec_path: str | None, locs: Sequence[tuple[str | int, ...]]) -> dict[tuple[str | int, ...], int]:
    if not spec_path:
        return {}
    from ruamel.yaml import YAML

    from loopml.spec.loader import _line_of

    try:
        root = YAML(typ="rt").load(Path(spec_path).read_text(encoding="utf-8"))
    except Exception:  # the spec loaded already; line numbers are a courtesy
        return {}
    out = {}
    for loc in locs:
        line = _line_of(root, loc)
        if line is not None:
            out[loc] = line
    return out


# -- sampling ------------------------------------------------------------------------------------------


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


#: text sources up to this size are read whole by their reader (its checks and fixes apply to the sample)
FULL_READ_BYTES = 32 << 20
_MAGIC = (b"\x1f\x8b", b"BZh", b"\x28\xb5\x2f\xfd", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def _plain_text(files: Sequence[Path]) -> bool:
    """No compression magic and no byte-order mark: DuckDB can scan the head of the files as they are."""
    for f in files:
        with open(f, "rb") as fh:
            head = fh.read(4)
        if any(head.startswith(m) for m in _MAGIC):
            return False
    return True


def sample_source(name: str, source: Any, project_dir: Path, files: Sequence[Path] | None = None,
                  rows: int = SAMPLE_ROWS) -> Any:
    """The first ``rows`` rows of a source (a :class:`~loopml.data.sources.SourceRead`).

    Parquet (and large plain CSV / JSON lines) is scanned with the source's options and a ``LIMIT``
    DuckDB pushes into the scan; SQL gets the ``LIMIT`` around its query; anything else is read by
    its reader (with its checks: duplicate headers, compression, byte-order marks) and cut.
    """
    from loopml.data import sources as S
    from loopml.data.provenance import provenance_table

    if source.type == "sql":
        limited = source.model_copy(update={"query": f"SELECT * FROM ({source.query}) AS loopml_sample LIMIT {rows}"})
        return S.read_source_located(name, limited, project_dir)
    reader = S.reader_for(source)
    files = list(files) if files is not None else reader.files(name, source, project_dir)
    large = sum(f.stat().st_size for f in files) > FULL_READ_BYTES
    file_list = "[" + ", ".join(_q(str(f)) for f in files) + "]"
    scan: str | None = None
    if source.type == "parquet":
        scan = f"read_parquet({file_list}, union_by_name=true)"
    elif large and source.type == "jsonl" and _plain_text(files):
        scan = f"read_json({file_list}, format='newline_delimited', union_by_name=true)"
    elif large and source.type == "csv" and _plain_text(files):
        with contextlib.suppress(Exception):  # the reader's options; anything unusual: read it the reader's way
            encoding = S._DUCKDB_ENCODINGS.get(S.CsvReader()._encoding(name, source))
            if encoding is not None:
                scan = f"read_csv({file_list}, {S.CsvReader()._options(source, encoding)})"
    if scan is not None:
        con = S.duck_connect()
        try:
            table = con.sql(f"SELECT * FROM {scan} LIMIT {rows}").to_arrow_table()
            if table.num_rows:
                label = f"source `{name}` (sample)"
                return S.SourceRead(table, provenance_table(label, table.num_rows, None),
                                    [{"file": label, "rows": table.num_rows}])
        except duckdb.Error:
            pass  # the reader diagnoses it (file, line, value)
        finally:
            con.close()
    got = S.read_source_located(name, source, project_dir, files)
    return S.SourceRead(got.table.slice(0, rows), got.provenance.slice(0, rows), got.files, got.notes)


def sample_examples(spec: Any, project_dir: Path, rows: int = SAMPLE_ROWS) -> pa.Table:
    """The example table ``ingest`` would build, from a sample of each source."""
    from loopml.data.etl import build_examples

    def read(name: str, source: Any, pdir: Path, files: Sequence[Path] | None = None) -> Any:
        return sample_source(name, source, pdir, files, rows)

    return build_examples(spec, project_dir, read=read).table


# -- checks ------------------------------------------------------------------------------------------


def _suggest(name: str, columns: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(columns), n=3, cutoff=0.6)
    if not close:
        lower = {c.lower(): c for c in columns}
        close = [lower[name.lower()]] if name.lower() in lower else []
    return f" (did you mean {' or '.join(f'`{c}`' for c in close)}?)" if close else ""


def _listing(columns: Sequence[str], must: Sequence[str] = ()) -> str:
    shown = list(columns[:40])
    shown += [c for c in must if c not in shown]
    more = len(columns) - len([c for c in shown if c in columns])
    return ", ".join(shown) + (f", … and {more} more" if more > 0 else "")


def _missing(what: str, name: str, columns: Sequence[str], target: str | None) -> str:
    must = [target] if target and target in columns else []
    return (f"{what} `{name}` is not a column of the example table{_suggest(name, columns)}; "
            f"columns: {_listing(columns, must)}")


def _example(arr: pa.ChunkedArray) -> str:
    for v in arr.to_pylist():
        if v is not None:
            shown = repr(v)
            return shown if len(shown) <= 40 else shown[:37] + "..."
    return "no value"


def _type_word(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return f"numbers ({t})"
    return str(t)


def _check_inputs(spec: Any, table: pa.Table, provided: set[str], open_tables: bool, out: list[Problem]) -> None:
    from loopml.features.pipeline import _BATCH_READERS, KIND_STATE, Chain

    columns = table.column_names
    target = spec.task.target
    for i, feat in enumerate(spec.features.inputs):
        loc: tuple[str | int, ...] = ("features", "inputs", i, "column")
        if feat.column not in columns:
            if feat.column not in provided and not open_tables:
                out.append(Problem(loc, _missing("input", feat.column, [*columns, *sorted(provided)], target)))
            continue
        for j, tr in enumerate(feat.transforms):
            for other in getattr(tr, "with_columns", None) or []:
                if other not in columns and other not in provided and not open_tables:
                    out.append(Problem(("features", "inputs", i, "transforms", j, "with_columns"),
                                       _missing("crossed column", other, columns, target)))
        try:
            chain = Chain(feat)
        except SpecError as exc:
            col = table.column(feat.column)
            out.append(Problem(("features", "inputs", i, "transforms"),
                               f"{exc.message} (column `{feat.column}` holds {_type_word(col.type)}, e.g. {_example(col)})"))
            continue
        col = table.column(feat.column)
        if col.null_count == len(col):
            continue  # no value in the sample to judge the kind by
        reader = _BATCH_READERS[KIND_STATE[feat.kind]]
        try:
            reader(table, feat.column)
        except LoopMLError:
            if feat.kind == "numeric" and _mostly_numbers(col):
                continue  # numbers with a few odd values: ingest and validation quarantine those rows
            first = chain.transforms[0].name if chain.transforms else None
            using = f" with transform `{first}`" if first else ""
            out.append(Problem(
                ("features", "inputs", i),
                f"column `{feat.column}` holds {_type_word(col.type)} (e.g. {_example(col)}), but the feature is "
                f"kind `{feat.kind}`{using}, which needs {_KIND_NEEDS[feat.kind]}; "
                f"{_KIND_HINT.get((feat.kind, _family(col.type)), 'set its `kind` to what the column holds')}",
            ))


_KIND_NEEDS = {
    "numeric": "numbers", "categorical": "categories (text or numbers)", "text": "text",
    "timestamp": "timestamps, dates or ISO 8601 text", "image": "pixel arrays",
}

_KIND_HINT = {
    ("numeric", "text"): "declare `kind: categorical` (onehot, ordinal, target_encode) or `kind: text` (tfidf)",
    ("text", "number"): "text transforms (tfidf, sentence_embedding) need text: use `kind: numeric` "
    "(scale, log, clip, discretize) or `kind: categorical` for codes",
    ("timestamp", "text"): "the values must be ISO 8601 timestamps (2024-05-01T12:00:00)",
}


def _mostly_numbers(col: pa.ChunkedArray, share: float = 0.9) -> bool:
    """Whether at least ``share`` of the non-missing values of a text column read as numbers."""
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return False
    values = [v for v in col.to_pylist() if v is not None and v.strip() != ""]
    ok = 0
    for v in values:
        with contextlib.suppress(ValueError):
            float(v)
            ok += 1
    return bool(values) and ok >= share * len(values)


def _family(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t):
        return "number"
    return "other"


def _check_target(spec: Any, table: pa.Table, out: list[Problem]) -> None:
    from loopml.training.labels import encode_labels

    task = spec.task
    col = table.column(task.target)
    labelled = len(col) - col.null_count
    if labelled == 0:
        return  # labels may arrive later (feedback); training reports unlabelled rows
    try:
        encode_labels(table, task)
    except LoopMLError as exc:
        out.append(Problem(("task", "type"), f"task `{task.type}` does not fit target `{task.target}`: {exc.message}"
                           + (f" (hint: {exc.hint})" if exc.hint else "")))
        return
    if task.type == "multiclass" and pa.types.is_floating(col.type):
        distinct = len(set(v for v in col.to_pylist() if v is not None))
        if distinct > max(50, labelled // 2):
            out.append(Problem(("task", "type"),
                               f"task `multiclass` on target `{task.target}` with {distinct:,} distinct float values "
                               f"in {labelled:,} rows: that is a regression target (task.type: regression)"))


def _named_columns(spec: Any) -> list[tuple[tuple[str | int, ...], str, str]]:
    """(spec key path, what, column) of every column the spec names besides the target and the inputs."""
    task, tr = spec.task, spec.training
    out: list[tuple[tuple[str | int, ...], str, str]] = []
    for i, k in enumerate(task.entity_keys):
        out.append((("task", "entity_keys", i), "entity key", k))
    for key in ("item_key", "group_key", "timestamp"):
        if getattr(task, key):
            out.append((("task", key), key.replace("_", " "), getattr(task, key)))
    for key in ("time_column", "group_column", "column"):
        if getattr(tr.split, key, None):
            out.append((("training", "split", key), f"split {key.replace('_', ' ')}", getattr(tr.split, key)))
    if tr.sampling.weight_column:
        out.append((("training", "sampling", "weight_column"), "weight column", tr.sampling.weight_column))
    for i, k in enumerate(spec.data.verification.unique_keys):
        out.append((("data", "verification", "unique_keys", i), "unique key", k))
    return out


def check_table(spec: Any, table: pa.Table, *, model: bool = True) -> list[Problem]:
    """Every way ``spec`` does not fit ``table`` (a sample of the example table).

    ``model=False`` (a run that stops before ``features``) checks only the data's own keys: the
    target, the inputs and the task matter only to the stages that build a model.
    """
    problems: list[Problem] = []
    columns = table.column_names
    target = spec.task.target
    if not model:
        for i, k in enumerate(spec.data.verification.unique_keys):
            if k not in columns:
                problems.append(Problem(("data", "verification", "unique_keys", i), _missing("unique key", k, columns, None)))
        return problems
    tables = spec.features.tables
    provided = {a.name for t in tables.values() for a in t.aggregations}
    open_tables = any(t.sql for t in tables.values())  # custom SQL: its output columns are unknown here
    if target not in columns:
        problems.append(Problem(("task", "target"), _missing("target", target, columns, None)))
    else:
        _check_target(spec, table, problems)
    for loc, what, name in _named_columns(spec):
        if name not in columns:
            problems.append(Problem(loc, _missing(what, name, columns, target)))
    _check_inputs(spec, table, provided, open_tables, problems)
    return problems


def check_against_data(spec: Any, project_dir: Path, rows: int = SAMPLE_ROWS, *, model: bool = True) -> DataCheck:
    """Check ``spec`` against a sample of its data; sources that cannot be read leave a note, not a problem.

    ``model``: whether the model stages (``features``, ``train``) will run (see :func:`check_table`).
    """
    result = DataCheck()
    if not spec.data.sources:
        result.notes.append("no data sources declared: nothing to check against")
        return result
    try:
        table = sample_examples(spec, project_dir, rows)
    except LoopMLError as exc:
        result.notes.append(f"the data was not checked: {str(exc).splitlines()[0]}")
        return result
    result.checked = True
    result.rows = table.num_rows
    result.columns = table.column_names
    result.problems = check_table(spec, table, model=model)
    return result


__all__ = ["DataCheck", "Problem", "check_against_data", "check_table", "sample_examples", "sample_source"]
