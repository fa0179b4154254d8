"""The ``features`` stage: point-in-time join of the entity feature tables, then materialisation.

Reads the validated examples (``validate.table``); rows missing a column declared
``impute: drop`` are quarantined (with the reason) and removed; every table of
``features.tables`` is computed from its source with window SQL, stored as Parquet, joined
point-in-time onto the examples (``table`` output) and materialised to the online store.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loopml.errors import LoopMLError, SpecError
from loopml.features.offline import (
    DUCKDB_MEMORY_MB,
    compute_feature_table,
    connect,
    feature_columns,
    write_point_in_time_join,
)
from loopml.pipeline.resources import MemoryFloor, spare_memory_mb
from loopml.pipeline.stage import BaseStage, StageContext, StageResult, register_stage
from loopml.spec import Spec
from loopml.spec.data import ClickWithinWindow
from loopml.spec.features import FeatureTable
from loopml.workspace import Workspace


def _drop_columns(spec: Spec) -> list[tuple[str, str]]:
    """(column, kind) of declared inputs whose imputation strategy is ``drop``."""
    out: list[tuple[str, str]] = []
    for f in spec.features.inputs:
        if any(getattr(t, "type", "") == "impute" and getattr(t, "strategy", "") == "drop" for t in f.transforms):
            out.append((f.column, f.kind))
    return out


def quarantine_missing(table: pa.Table, spec: Spec) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Split off rows missing a column declared ``impute: drop``; returns (kept rows, quarantine entries)."""
    from loopml.features import values as V

    keep = np.ones(table.num_rows, dtype=bool)
    reasons: dict[int, str] = {}
    for col, kind in _drop_columns(spec):
        if kind == "numeric":
            miss = np.isnan(V.numeric_batch(table, col))
        else:
            miss = ~V.categorical_batch(table, col).map(lambda k: k is not None, dtype=bool)
        for i in np.flatnonzero(miss & keep).tolist():
            reasons[i] = col
        keep &= ~miss
    if keep.all():
        return table, []
    bad_idx = np.flatnonzero(~keep)
    bad_rows = table.take(pa.array(bad_idx)).to_pylist()
    entries = [
        {"row_index": int(i), "check": "features.impute_drop", "column": reasons[int(i)], "value": None,
         "reason": f"`{reasons[int(i)]}` is missing and features.inputs declares impute strategy `drop`",
         "row": row}
        for i, row in zip(bad_idx.tolist(), bad_rows)
    ]
    return table.filter(pa.array(keep)), entries


def effective_delay(spec: Spec, table: FeatureTable) -> float:
    """Seconds after its event a source row is known: declared, or the natural label's window (see the spec)."""
    if table.delay_seconds is not None:
        return table.delay_seconds
    rule = spec.data.labels
    if table.source is None and isinstance(rule, ClickWithinWindow):
        uses_label = (table.sql is not None and rule.label in table.sql) or any(
            a.column == rule.label for a in table.aggregations)
        if uses_label:
            return float(rule.window_seconds)
    return 0.0


def read_table_source(ws: Workspace, name: str, spec: FeatureTable, examples: pa.Table) -> pa.Table:
    """Source rows of a feature table: the examples, a named data source, or a Parquet/CSV path."""
    if spec.source is None:
        return examples
    sources = ws.spec.data.sources
    if spec.source in sources:
        from loopml.data.sources import read_source

        return read_source(spec.source, sources[spec.source], ws.project_dir)
    path = ws.resolve(spec.source)
    con = connect()
    fn = "read_parquet" if str(path).endswith(".parquet") else "read_csv_auto"
    try:
        out = con.sql(f"SELECT * FROM {fn}(?)", params=[str(path)]).arrow()
    except Exception as exc:
        raise SpecError(f"features.tables.{name}.source `{spec.source}` is neither a data source "
                        f"({', '.join(sources) or 'none declared'}) nor a readable file: {exc}") from None
    return out.read_all() if hasattr(out, "read_all") else out


def _write_parquet(ctx: StageContext, table: pa.Table, name: str, kind: str = "table",
                   meta: dict[str, Any] | None = None) -> str:
    tmp = ctx.temp_path(".parquet")
    pq.write_table(table, tmp, compression="zstd")
    return ctx.put_file(tmp, kind=kind, name=name, meta=meta, move=True)


@register_stage
class FeaturesStage(BaseStage):
    """Point-in-time join of entity feature tables onto the examples, and online materialisation."""

    name = "features"
    order = 30
    requires = ("validate",)
    description = "entity feature tables (window SQL) → point-in-time join → online store"

    @classmethod
    def enabled(cls, spec: Spec) -> bool:
        return bool(spec.data.sources)

    def config(self, spec: Spec) -> Any:
        return {
            "tables": {k: v.model_dump(mode="json") for k, v in spec.features.tables.items()},
            "drop": _drop_columns(spec),
            "online_store": spec.features.online_store.model_dump(mode="json"),
            "timestamp": spec.task.timestamp,
            "delays": {k: effective_delay(spec, v) for k, v in spec.features.tables.items()},
        }

    def fingerprint(self, ws: Workspace) -> Any:
        fp: dict[str, Any] = {}
        try:
            from loopml.data.sources import source_fingerprint

            for name, t in ws.spec.features.tables.items():
                if t.source is not None and t.source in ws.spec.data.sources:
                    fp[name] = source_fingerprint(t.source, ws.spec.data.sources[t.source], ws.project_dir)
                elif t.source is not None:
                    p = ws.resolve(t.source)
                    fp[name] = [p.stat().st_size, p.stat().st_mtime_ns] if p.exists() else None
        except LoopMLError as exc:
            fp["__error"] = str(exc)
        return fp

    def memory_floor(self, ctx: StageContext) -> MemoryFloor:
        """It reads its input table whole."""
        return ctx.input_table_floor("validate", "table")

    def run(self, ctx: StageContext) -> StageResult:
        ws, spec = ctx.workspace, ctx.spec
        examples = pq.read_table(ws.artifacts.open_verified(ctx.input("validate", "table")))
        examples, quarantined = quarantine_missing(examples, spec)
        if quarantined:
            from loopml.validation.quarantine import write_quarantine

            write_quarantine(ws, quarantined, execution_id=ctx.execution_id,
                             snapshot_id=ctx.upstream_summaries.get("ingest", {}).get("snapshot"))
        summary: dict[str, Any] = {"rows": examples.num_rows, "quarantined_rows": len(quarantined), "tables": {}}
        outputs: dict[str, str] = {}
        if not spec.features.tables:
            outputs["table"] = _write_parquet(ctx, examples, "features")
            return StageResult(outputs=outputs, summary=summary)
        if spec.task.timestamp is None:
            raise SpecError("features.tables needs task.timestamp: the point-in-time join must know when "
                            "each example happened")
        # DuckDB spills beyond its share of the stage's memory cap (or beyond its default budget when uncapped)
        spare = spare_memory_mb(spec, self.name)
        con = connect(min(spare, DUCKDB_MEMORY_MB) if spare is not None else None)
        computed: dict[str, tuple[FeatureTable, pa.Table]] = {}
        manifest: dict[str, Any] = {"tables": {}, "timestamp": spec.task.timestamp}
        for name, tspec in ctx.progress(spec.features.tables.items(), total=len(spec.features.tables),
                                        description="feature tables"):
            source = read_table_source(ws, name, tspec, examples)
            delay = effective_delay(spec, tspec)
            ft = compute_feature_table(name, tspec, source, con=con, delay_seconds=delay)
            computed[name] = (tspec, ft)
            src_digest = (ctx.input("validate", "table") if tspec.source is None and not quarantined
                          else _write_parquet(ctx, source, f"features.source.{name}", kind="source"))
            ft_digest = _write_parquet(ctx, ft, f"features.table.{name}", kind="feature_table")
            manifest["tables"][name] = {
                "source_digest": src_digest, "table_digest": ft_digest, "rows": ft.num_rows,
                "entity": tspec.entity, "features": feature_columns(tspec, ft), "ttl_seconds": tspec.ttl_seconds,
                "definition": {**tspec.model_dump(mode="json"), "delay_seconds": delay},
            }
            summary["tables"][name] = {"rows": ft.num_rows, "features": len(feature_columns(tspec, ft))}
        # streamed from DuckDB into the Parquet file: the joined table is never held whole here
        joined_path = ctx.temp_path(".parquet")
        joined_schema = write_point_in_time_join(joined_path, examples, spec.task.timestamp, computed, con=con)
        del examples
        con.close()
        outputs["table"] = ctx.put_file(joined_path, kind="table", name="features", move=True)
        from loopml.features.materialize import materialize
        from loopml.features.store import open_online_store

        store = open_online_store(spec.features.online_store, ws.project_dir)
        try:
            written = materialize(store, computed)
        finally:
            store.close()
        manifest["materialized_at"] = dt.datetime.now(dt.UTC).isoformat()
        manifest["online_store"] = spec.features.online_store.model_dump(mode="json")
        manifest["materialized"] = written
        outputs["feature_tables"] = ctx.put_bytes(json.dumps(manifest, indent=2, default=str).encode(),
                                                  kind="manifest", name="feature_tables")
        summary["materialized"] = written
        summary["columns"] = len(joined_schema)
        return StageResult(outputs=outputs, summary=summary)


__all__ = ["FeaturesStage", "quarantine_missing", "read_table_source"]
