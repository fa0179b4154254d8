"""ETL: named sources → (optional SQL transform) → natural labels → hand labels → privacy.

Everything runs in one in-memory DuckDB connection over Arrow tables: no pandas round trips.
The result is one Arrow table of examples, ready to be written to the lake.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from loopml.data.labels import apply_label_rule, ident, join_hand_labels
from loopml.data.privacy import apply_privacy
from loopml.data.provenance import PROVENANCE_SCHEMA, provenance_table
from loopml.data.sources import SourceRead, duck_connect, read_source_located
from loopml.errors import DataError
from loopml.spec import Spec
from loopml.spec.data import ClickWithinWindow

ROW = "__loopml_row"


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


def _kept_per_file(provenance: pa.Table) -> dict[str, int]:
    import pyarrow.compute as pc

    vc = pc.value_counts(provenance.column("file"))
    return {str(f): int(c) for f, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())}


def describe_schema(table: pa.Table | pa.Schema) -> list[dict[str, Any]]:
    """Plain-data schema (name, Arrow type, nullable) for manifests."""
    schema = table.schema if isinstance(table, pa.Table) else table
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


__all__ = ["EtlResult", "base_source", "build_examples", "describe_schema"]
