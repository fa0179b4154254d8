"""Retraining: export the newly labelled rows, rerun the pipeline from ``ingest``, read the verdict.

The decision and all its evidence (triggers, exported rows, stage outcomes, gate verdicts,
the registered version) are stored in ``monitor_decisions``. Retraining never promotes:
the ``register`` stage records an approved candidate, and promotion stays a separate,
gated step (``loopml models promote``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loopml.errors import LoopMLError, NotFound
from loopml.monitoring import logs
from loopml.monitoring.records import monitor_decisions, new_id, recent, update_row
from loopml.monitoring.windows import parse_duration, utcnow
from loopml.workspace import Workspace


@dataclass
class Trigger:
    """Why retraining starts: an alert, the schedule, or enough new labels."""

    kind: str  # alert, schedule, new_labels
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decision:
    """What the loop decided and what came of it."""

    decision_id: str
    action: str  # retrain, skip
    status: str  # approved, rejected, failed, skipped
    triggers: list[Trigger]
    run_id: str | None = None
    version_id: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def message(self) -> str:
        """One line for the terminal (and a note when the export changed the data schema)."""
        why = "; ".join(t.detail for t in self.triggers) or "no trigger"
        relaxed = (self.evidence.get("exported") or {}).get("schema_allows_missing") or []
        note = (
            f"\n  note: the data schema now allows missing values in {', '.join(f'`{c}`' for c in relaxed)} "
            "(not in the prediction log; the exported feedback rows leave them empty)"
        ) if relaxed else ""
        return self._message(why) + note

    def _message(self, why: str) -> str:
        if self.action == "skip":
            return f"retraining skipped ({self.evidence.get('reason', why)})"
        if self.status == "approved":
            return f"retrained (run {self.run_id}): candidate {self.version_id} registered and APPROVED by the gates — {why}"
        if self.status == "rejected":
            failed = [g.get("gate") for g in self.evidence.get("gates", []) if not g.get("passed")]
            return (
                f"retrained (run {self.run_id}): candidate {self.version_id or '-'} REJECTED by the gates "
                f"({', '.join(map(str, failed)) or 'not approved'}) — {why}"
            )
        hint = self.evidence.get("hint")
        return f"retraining failed: {self.error} — {why}" + (f"\n  hint: {hint}" if hint else "")


def last_retrain(ws: Workspace) -> dict[str, Any] | None:
    """The newest retraining decision that actually retrained."""
    rows = recent(ws, monitor_decisions, "decided_at", 50)
    return next((r for r in rows if r["action"] == "retrain"), None)


def _aware(ts: dt.datetime) -> dt.datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def last_training_time(ws: Workspace) -> dt.datetime | None:
    """When the newest successful `train` execution ended."""
    from sqlalchemy import desc, select

    from loopml.workspace.metadata import executions

    with ws.engine.connect() as conn:
        row = conn.execute(
            select(executions.c.ended_at)
            .where(executions.c.stage == "train", executions.c.status == "success")
            .order_by(desc(executions.c.ended_at))
            .limit(1)
        ).first()
    return _aware(row[0]) if row and row[0] else None


def triggers_for(ws: Workspace, retrain_alerts: list[Any], now: dt.datetime) -> tuple[list[Trigger], str | None]:
    """Triggers that hold now, and the reason to hold back (cooldown) if any."""
    spec = ws.spec.monitoring.retraining
    out: list[Trigger] = []
    if spec.on_alerts:
        for f in retrain_alerts:
            out.append(Trigger("alert", f"alert `{f.rule}`: {f.metric}={f.value:.4g} {f.op} {f.threshold:g}",
                               {"alert_id": f.alert_id, "rule": f.rule, "metric": f.metric}))
    last = last_retrain(ws)
    since = _aware(last["decided_at"]) if last else None
    if spec.schedule:
        trained = last_training_time(ws)
        ref = max(t for t in (trained, since) if t is not None) if (trained or since) else None
        every = parse_duration(spec.schedule, field="monitoring.retraining.schedule")
        if ref is None or now - ref >= every:
            out.append(Trigger("schedule", f"schedule {spec.schedule}: last training {ref.isoformat() if ref else 'never'}"))
    if spec.min_new_labels:
        n = logs.count_labels(ws, since)
        if n >= spec.min_new_labels:
            out.append(Trigger("new_labels", f"{n} new labelled rows >= {spec.min_new_labels}", {"new_labels": n}))
    hold = None
    if out and since is not None:
        cooldown = parse_duration(spec.cooldown, field="monitoring.retraining.cooldown")
        if now - since < cooldown:
            hold = f"cooldown: last retraining {since.isoformat()} is less than {spec.cooldown} ago"
    return out, hold


def _source_schema(ws: Workspace, folder: Path) -> pa.Schema | None:
    """Schema of the Parquet source whose glob reads ``folder`` (taken from one of its original files)."""
    import fnmatch
    import glob

    probe = str(folder.resolve() / "feedback-probe.parquet")
    for src in ws.spec.data.sources.values():
        if getattr(src, "type", None) != "parquet":
            continue
        pattern = str(ws.resolve(str(getattr(src, "path", ""))).resolve())
        if not fnmatch.fnmatch(probe, pattern):
            continue
        files = sorted(glob.glob(pattern, recursive=True))
        originals = [f for f in files if not Path(f).name.startswith("feedback-")] or files
        if originals:
            return pq.read_schema(originals[0])
    return None


def allow_missing(ws: Workspace, columns: list[str]) -> list[str]:
    """Let the data schema file accept missing values in ``columns`` (those the prediction log does not carry).

    Exported feedback rows stay in the source folder, so every later run validates them: a column
    the service never receives (an id, a column no feature reads) is missing in those rows by
    construction, not by a broken feed. The file is edited in place (round trip: the user's comments
    and other edits stay); each changed column gets ``nullable: true``, no missing-rate limit and a
    comment saying why. Returns the columns changed (empty when there is no schema file yet: the first
    validation infers it from the rows as they are).
    """
    from ruamel.yaml import YAML

    path = ws.resolve(ws.spec.data.verification.schema_path)
    if not columns or not path.exists():
        return []
    y = YAML(typ="rt")
    y.width = 4096
    doc = y.load(path.read_text(encoding="utf-8"))
    entries = doc.get("columns") if hasattr(doc, "get") else None
    if entries is None:
        return []
    changed = []
    for name in columns:
        entry = entries.get(name)
        if entry is None or (entry.get("nullable", True) and entry.get("max_missing_rate") is None):
            continue
        entry["nullable"] = True
        if "max_missing_rate" in entry:
            del entry["max_missing_rate"]
        entries.yaml_add_eol_comment("not in the prediction log: exported feedback rows leave it empty", name)
        changed.append(name)
    if changed:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            y.dump(doc, fh)
        os.replace(tmp, path)
    return changed


def export_labelled(ws: Workspace, since: dt.datetime | None) -> dict[str, Any]:
    """Write the predictions labelled since ``since`` as training rows into ``retraining.export_path``.

    Columns follow the Parquet source that globs the folder when there is one: its names and types
    (the logged inputs cast to them; the label becomes the target, the prediction time the task's
    timestamp), so the file reads back as one more file of that source; else the logged inputs plus
    the target. A source column the prediction log does not carry (one the model does not read, such
    as an id) cannot be recovered: it is left empty (a nullable field), and :func:`allow_missing`
    records in the data schema that it may be missing, so that the retraining run (and every later
    run over the same folder) validates without a hand edit.
    """
    target = ws.spec.monitoring.retraining.export_path
    if not target:
        return {"rows": 0, "note": "monitoring.retraining.export_path is unset: nothing exported"}
    labelled = logs.read_labelled(ws)
    if labelled.num_rows and since is not None:
        lts = pc.cast(labelled.column("label_ts"), pa.timestamp("us", tz="UTC"))
        labelled = labelled.filter(pc.greater(lts, pa.scalar(since, pa.timestamp("us", tz="UTC"))))
    if labelled.num_rows == 0:
        return {"rows": 0, "note": "no labels newer than the last export" if since else "no labelled predictions"}
    watermark = pc.max(pc.cast(labelled.column("label_ts"), pa.timestamp("us", tz="UTC"))).as_py()
    folder = ws.resolve(target)
    folder.mkdir(parents=True, exist_ok=True)
    task = ws.spec.task
    schema = _source_schema(ws, folder)
    cols: dict[str, pa.Array | pa.ChunkedArray] = {}
    not_logged: list[str] = []
    if schema is None:
        for c in logs.input_columns(labelled):
            cols[c] = labelled.column(c)
        cols[task.target] = _label(labelled, task.type, None)
        if task.timestamp and task.timestamp not in cols:
            cols[task.timestamp] = labelled.column("ts")
    else:
        for fld in schema:
            if fld.name == task.target:
                cols[fld.name] = _label(labelled, task.type, fld.type)
            elif fld.name in labelled.column_names and fld.name not in logs.LOG_COLUMNS:
                cols[fld.name] = pc.cast(labelled.column(fld.name), fld.type, safe=False)
            elif task.timestamp and fld.name == task.timestamp:
                cols[fld.name] = pc.cast(labelled.column("ts"), fld.type, safe=False)
            else:
                cols[fld.name] = pa.nulls(labelled.num_rows, fld.type)
                not_logged.append(fld.name)
    if schema is not None:
        # the source's own field types; a field that holds missing values here is nullable
        fields = [f.with_nullable(True) if cols[f.name].null_count else f for f in schema]
        table = pa.table(cols, schema=pa.schema(fields))
    else:
        table = pa.table(cols)
    name = f"feedback-{utcnow().strftime('%Y%m%dT%H%M%S%f')}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, folder / name)
    return {
        "rows": table.num_rows, "path": str(folder / name), "columns": table.column_names,
        "max_label_ts": watermark.isoformat() if watermark else None,
        "not_logged": not_logged, "schema_allows_missing": allow_missing(ws, not_logged),
    }


def _label(labelled: pa.Table, task: str, typ: pa.DataType | None) -> pa.Array:
    y = np.asarray(pc.cast(labelled.column("label"), pa.float64()).to_numpy(zero_copy_only=False))
    if typ is not None:
        if pa.types.is_integer(typ) or pa.types.is_boolean(typ):
            return pa.array(np.round(y).astype(np.int64)).cast(typ)
        return pa.array(y).cast(typ)
    if task in ("binary", "multiclass") and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return pa.array(y.astype(np.int64))
    return pa.array(y)


def _json_artifact(ws: Workspace, digest: str) -> dict[str, Any]:
    data = json.loads(ws.artifacts.get_bytes(digest))
    return data if isinstance(data, dict) else {"value": data}


def _retraining_workspace(ws: Workspace, triggers: list[Trigger]) -> tuple[Workspace, str | None]:
    """The workspace the retraining runs in, and what drift it accepts (``None``: the spec as written).

    A drift alert means the data changed on purpose of the world, not by a broken feed: with
    ``monitoring.retraining.accept_drift`` the retraining run's distribution check (``psi``) warns
    instead of stopping the very retraining the drift asked for. A severity the user set for
    ``psi`` explicitly is kept.
    """
    drift = [t for t in triggers if t.kind == "alert" and str(t.evidence.get("metric", "")).startswith("drift")]
    verification = ws.spec.data.verification
    if not drift or not ws.spec.monitoring.retraining.accept_drift or "psi" in verification.severities:
        return ws, None
    spec = ws.spec.model_copy(deep=True)
    spec.data.verification.severities = {**verification.severities, "psi": "warning"}
    rules = ", ".join(f"`{r}`" for r in sorted({str(t.evidence.get("rule")) for t in drift}))
    return (
        Workspace(ws.project_dir, spec, ws.engine),
        f"distribution changes (psi) only warn in this run: the drift alert(s) {rules} triggered it",
    )


def retrain(ws: Workspace, triggers: list[Trigger], check_id: str | None, *, show_progress: bool = False) -> Decision:
    """Export new labels, rerun the pipeline from ``ingest`` under the workspace lock, and record the verdict.

    The pipeline runs in a fresh child process (:func:`loopml.pipeline.child.run_pipeline_in_child`): it does
    not start on top of what this process holds (a serving demo, a long-lived monitor), and its memory goes
    back to the system when it ends. The child's pid and peak RSS are part of the decision's evidence.
    """
    from loopml.pipeline import pipeline_for
    from loopml.pipeline.child import run_pipeline_in_child

    spec = ws.spec.monitoring.retraining
    decision = Decision(new_id(), "retrain", "running", triggers)
    now = utcnow()
    with ws.engine.begin() as conn:
        conn.execute(
            monitor_decisions.insert().values(
                decision_id=decision.decision_id, check_id=check_id, decided_at=now,
                triggers=[t.__dict__ for t in triggers], action="retrain", status="running",
            )
        )
    try:
        with ws.lock(wait_s=spec.lock_wait_s) as lock:
            other = _finished_while_waiting(ws, decision.decision_id, now)
            if other is not None:
                # another monitor retrained while this one waited for the lock: nothing left to do
                decision.action, decision.status = "skip", "skipped"
                decision.evidence["reason"] = f"retraining {other} finished while this one waited for the lock"
                update_row(ws, monitor_decisions, "decision_id", decision.decision_id, action="skip", status="skipped",
                           evidence=decision.evidence, ended_at=utcnow())
                return decision
            exported = export_labelled(ws, export_watermark(ws))
            decision.evidence["exported"] = exported
            # recorded at once: the exported file stays in the source folder even if training fails
            update_row(ws, monitor_decisions, "decision_id", decision.decision_id,
                       evidence=json.loads(json.dumps(decision.evidence, default=str)))
            run_ws, accepted = _retraining_workspace(ws, triggers)
            if accepted:
                decision.evidence["accepted_drift"] = accepted
            stages = pipeline_for(run_ws.spec)
            names = [s.name for s in stages]
            if "ingest" not in names:
                raise NotFound(
                    f"retraining needs the `ingest` stage, but the pipeline has only: {', '.join(names) or 'no stages'}",
                    hint="declare data sources in loopml.yaml",
                )
            try:
                report, child = run_pipeline_in_child(
                    run_ws, start_from="ingest", show_progress=show_progress, lock_fd=lock.fileno(),
                    command=f"loopml monitor: retrain ({'; '.join(t.detail for t in triggers)})",
                )
            except LoopMLError as exc:
                if getattr(exc, "child", None) is not None:
                    decision.evidence["process"] = exc.child.to_json()  # type: ignore[attr-defined]
                raise
            decision.evidence["process"] = child.to_json()
        decision.run_id = report.run_id
        decision.evidence["stages"] = [
            {"stage": o.stage, "status": o.status, "seconds": round(o.duration_s, 3), "outputs": o.outputs,
             "error": o.error}
            for o in report.outcomes
        ]
        by_stage = {o.stage: o for o in report.outcomes}
        failed = [o for o in report.outcomes if o.status == "failed"]
        if failed:
            decision.status = "failed"
            decision.error = failed[0].error or f"stage {failed[0].stage} failed"
            if failed[0].stage == "validate" and any(t.kind == "alert" for t in triggers):
                decision.evidence["hint"] = (
                    "the new data failed verification against the old reference; when the change is the drift "
                    "that triggered retraining, accept it (refresh the data schema/reference, or raise "
                    "data.verification.psi_error) and the next check retrains"
                )
        else:
            ev = by_stage.get("evaluate")
            verdict: dict[str, Any] = {}
            if ev and "report" in ev.outputs:
                verdict = _json_artifact(ws, ev.outputs["report"])
                decision.evidence["gates"] = verdict.get("gates", [])
                decision.evidence["metrics"] = {
                    k: v for k, v in (verdict.get("metrics") or {}).items() if isinstance(v, int | float)
                } if isinstance(verdict.get("metrics"), dict) else {}
            reg = by_stage.get("register")
            approved = bool(verdict.get("approved", False))
            if reg and "version" in reg.outputs:
                version = _json_artifact(ws, reg.outputs["version"])
                decision.version_id = str(version.get("version_id")) if version.get("version_id") else None
                decision.evidence["version"] = version
                approved = bool(version.get("approved", approved))
            decision.status = "approved" if approved else "rejected"
    except LoopMLError as exc:
        decision.status = "failed"
        decision.error = str(exc)
    except Exception as exc:  # recorded, never left 'running'; the traceback goes to the caller
        decision.status = "failed"
        decision.error = f"{type(exc).__name__}: {exc}"
        update_row(ws, monitor_decisions, "decision_id", decision.decision_id, status="failed", error=decision.error,
                   ended_at=utcnow(), evidence=json.loads(json.dumps(decision.evidence, default=str)))
        raise
    update_row(
        ws, monitor_decisions, "decision_id", decision.decision_id, status=decision.status, run_id=decision.run_id,
        version_id=decision.version_id, evidence=json.loads(json.dumps(decision.evidence, default=str)),
        ended_at=utcnow(), error=decision.error,
    )
    return decision


def _finished_while_waiting(ws: Workspace, decision_id: str, since: dt.datetime) -> str | None:
    """Id of another retraining that ended after ``since`` (i.e. while this one waited for the lock)."""
    for r in recent(ws, monitor_decisions, "decided_at", 20):
        ended = r.get("ended_at")
        if (r["decision_id"] != decision_id and r["action"] == "retrain" and r["status"] != "running"
                and ended is not None and _aware(ended) >= since):
            return str(r["decision_id"])
    return None


def export_watermark(ws: Workspace) -> dt.datetime | None:
    """Label time of the newest row already exported by an earlier retraining (exported files stay in place)."""
    marks = []
    for r in recent(ws, monitor_decisions, "decided_at", 1000):
        ts = ((r.get("evidence") or {}).get("exported") or {}).get("max_label_ts")
        if ts:
            marks.append(_aware(dt.datetime.fromisoformat(ts)))
    return max(marks) if marks else None


def record_skip(ws: Workspace, check_id: str | None, triggers: list[Trigger], reason: str) -> Decision:
    """Record that triggers held but retraining was not started (cooldown, disabled)."""
    d = Decision(new_id(), "skip", "skipped", triggers, evidence={"reason": reason})
    with ws.engine.begin() as conn:
        conn.execute(
            monitor_decisions.insert().values(
                decision_id=d.decision_id, check_id=check_id, decided_at=utcnow(),
                triggers=[t.__dict__ for t in triggers], action="skip", status="skipped", evidence=d.evidence,
                ended_at=utcnow(),
            )
        )
    return d
