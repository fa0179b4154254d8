"""The ``validate`` stage: profile the ingested table, check it, quarantine bad rows.

Outputs ``table`` (Parquet: rows failing row-level checks removed; they are in the
quarantine), ``report`` (JSON) and ``html``. The first run infers the schema file
(``data.verification.schema_path``) from the snapshot; later runs validate against it.
Error-level failures raise :class:`~loopml.errors.ValidationFailed` naming the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from loopml.errors import ValidationFailed
from loopml.pipeline import BaseStage, StageContext, StageResult, register_stage
from loopml.pipeline.resources import MemoryFloor
from loopml.spec import Spec
from loopml.validation.quarantine import store_quarantine
from loopml.validation.report import accounting_table, checks_table, write_reports
from loopml.validation.schema import (
    infer_from_table,
    load_reference,
    load_schema,
    open_range_columns,
    profile_path,
    save_schema,
)
from loopml.validation.validator import validate_table
from loopml.workspace import Workspace, sha256_bytes, sha256_file


def _auto_record(ws: Workspace) -> Path:
    return ws.root / "validation" / "inferred.json"


def _schema_hashes(path: Path) -> dict[str, str | None]:
    pp = profile_path(path)
    return {
        "schema": sha256_file(path) if path.exists() else None,
        "profile": sha256_file(pp) if pp.exists() else None,
    }


def schema_fingerprint(ws: Workspace) -> dict[str, Any]:
    """``auto`` while the schema file is absent or exactly as this stage inferred it; else its hashes.

    Inference is a function of the input snapshot (already part of the cache key), so an
    untouched inferred schema does not invalidate the cache; an edited one does.
    """
    path = ws.resolve(ws.spec.data.verification.schema_path)
    hashes = _schema_hashes(path)
    if hashes["schema"] is None:
        return {"schema": "auto"}
    rec = _auto_record(ws)
    if rec.exists():
        try:
            recorded = json.loads(rec.read_text()).get(str(path))
        except (OSError, ValueError):
            recorded = None
        if recorded == hashes:
            return {"schema": "auto"}
    return hashes


@register_stage
class ValidateStage(BaseStage):
    """Profile the snapshot, validate it against the schema and reference, quarantine failing rows."""

    name = "validate"
    order = 20
    requires = ("ingest",)
    description = "profile → schema + reference checks → quarantine → verified table"

    @classmethod
    def enabled(cls, spec: Spec) -> bool:
        return bool(spec.data.sources)

    def config(self, spec: Spec) -> Any:
        return {
            "verification": spec.data.verification.model_dump(mode="json"),
            "timestamp": spec.task.timestamp,
        }

    def fingerprint(self, ws: Workspace) -> Any:
        return schema_fingerprint(ws)

    def memory_floor(self, ctx: StageContext) -> MemoryFloor:
        """It reads its input table whole."""
        return ctx.input_table_floor("ingest", "table")

    def run(self, ctx: StageContext) -> StageResult:
        ws, spec = ctx.workspace, ctx.spec
        settings = spec.data.verification
        snapshot = ctx.upstream_summaries.get("ingest", {}).get("snapshot")
        table = pq.read_table(ws.artifacts.open_verified(ctx.input("ingest", "table")))
        prov_digest = ctx.inputs.get("ingest", {}).get("provenance")
        # the file of each row as dictionary codes (4 bytes a row, not its path's text): the same locations and
        # per-file accounting, a fraction of the memory
        provenance = (pq.read_table(ws.artifacts.open_verified(prov_digest), read_dictionary=["file"])
                      if prov_digest else None)
        if provenance is not None and provenance.num_rows != table.num_rows:
            provenance = None
        path = ws.resolve(settings.schema_path)
        inferred = False
        if not path.exists():
            schema, ref_profile = infer_from_table(
                table, settings, timestamp=settings.timestamp or spec.task.timestamp,
                open_range=open_range_columns(spec), reference_snapshot=snapshot,
            )
            save_schema(schema, path, ref_profile)
            rec = _auto_record(ws)
            rec.parent.mkdir(parents=True, exist_ok=True)
            data = json.loads(rec.read_text()) if rec.exists() else {}
            data[str(path)] = _schema_hashes(path)
            rec.write_text(json.dumps(data, indent=2))
            inferred = True
        schema = load_schema(path)
        reference = load_reference(path)
        outcome = validate_table(table, schema, reference, settings, snapshot=snapshot, provenance=provenance)
        report = outcome.report
        report.schema_path = str(path)
        report.schema_inferred = inferred
        n_q, n_db, q_path = store_quarantine(ws, outcome, execution_id=ctx.execution_id, snapshot_id=snapshot)
        stem = f"validation-{snapshot or ctx.execution_id}"
        json_path, html_path = write_reports(report, ws.reports, stem)
        for written in (json_path, html_path):  # a copy kept with the run's other reports
            ws.publish_report(written.name, written.read_bytes(), execution_id=ctx.execution_id)
        failed_checks = [c for c in report.checks if not c.passed]
        if ctx.show_progress:  # the terminal report: failing checks first, then rows per source file
            from rich.console import Console

            console = Console(stderr=True)
            if failed_checks:
                console.print(checks_table(report, limit=len(failed_checks)))
            console.print(accounting_table(report))
        if not report.passed:
            failing = report.failing()
            listed = "; ".join(f"{c.check}[{c.column or '*'}]: {c.message}" for c in failing[:5])
            counted = "; ".join(f"{s['file']}: {s['rows']:,} rows read = {s['kept']:,} kept + {s['quarantined']:,} "
                                "quarantined" for s in report.sources[:3])
            raise ValidationFailed(
                f"snapshot {snapshot or '?'} failed {len(failing)} check(s) at severity ≥ {settings.fail_on}: "
                f"{listed}{' …' if len(failing) > 5 else ''}; {counted}; report: {html_path}",
                hint=f"see {json_path}; `loopml data quarantine` lists quarantined rows; edit {path} if the "
                "change is expected",
            )
        tmp = ctx.temp_path(".parquet")
        pq.write_table(outcome.kept, tmp, compression="zstd")
        table_digest = ctx.put_file(tmp, kind="table", name="validated", meta={"snapshot": snapshot}, move=True)
        report_bytes = json.dumps(report.to_json(), indent=2, sort_keys=True, default=str).encode()
        report_digest = ctx.put_bytes(report_bytes, kind="report", name="validation")
        html_digest = ctx.put_file(html_path, kind="html", name="validation")
        return StageResult(
            outputs={"table": table_digest, "report": report_digest, "html": html_digest},
            summary={
                "snapshot": snapshot,
                "rows": report.rows,
                "kept_rows": report.kept_rows,
                "quarantined_rows": report.quarantined_rows,
                "quarantine_entries": n_q,
                "quarantine_entries_in_db": n_db,
                "quarantine_file": str(q_path) if q_path else None,
                "failed_checks": sum(not c.passed for c in report.checks),
                "warnings": sum(not c.passed and c.severity == "warning" for c in report.checks),
                "schema_inferred": inferred,
                "files": report.sources,
                "report_sha256": sha256_bytes(report_bytes),
            },
        )


__all__ = ["ValidateStage", "schema_fingerprint"]
