"""Measured facts of a project, read from its workspace: never computed for the report, only read.

The sources are the ones every stage already writes: the metadata database (the latest successful
execution of each stage, its summary and its output artifacts), the JSON artifacts (snapshot
manifest, validation report, leaderboard, evaluation report, registered version), the registry,
and the monitoring records (checks, alerts, retraining decisions).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import desc, func, inspect, select

from loopml.errors import LoopMLError
from loopml.workspace import Workspace
from loopml.workspace.metadata import executions, runs


@dataclass
class StageRecord:
    """The latest execution of a stage that produced outputs (success or a cache hit of one)."""

    stage: str
    status: str
    execution_id: str
    run_id: str
    ended_at: Any
    duration_s: float | None
    outputs: dict[str, str]
    summary: dict[str, Any]


@dataclass
class Facts:
    """Everything measured about a project, as plain data."""

    ws: Workspace
    stages: dict[str, StageRecord] = field(default_factory=dict)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: int = 0
    versions: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    simulation: dict[str, Any] | None = None
    imported: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    _json_cache: dict[str, Any] = field(default_factory=dict)

    def ran(self, stage: str) -> bool:
        """Whether the stage has a successful execution."""
        return stage in self.stages

    def summary(self, stage: str) -> dict[str, Any]:
        """The summary of the latest successful execution of a stage (empty if it never ran)."""
        rec = self.stages.get(stage)
        return rec.summary if rec else {}

    def output_json(self, stage: str, name: str) -> dict[str, Any] | None:
        """A JSON output artifact of the latest successful execution of a stage, checksum-verified."""
        rec = self.stages.get(stage)
        if rec is None or name not in rec.outputs:
            return None
        digest = rec.outputs[name]
        if digest not in self._json_cache:
            try:
                data = json.loads(self.ws.artifacts.get_bytes(digest))
            except (LoopMLError, ValueError, OSError):
                data = None
            self._json_cache[digest] = data if isinstance(data, dict) else None
        return self._json_cache[digest]  # type: ignore[no-any-return]

    def output_path(self, stage: str, name: str) -> Path | None:
        """The stored file of an output artifact (None if the stage never ran or the file is gone)."""
        rec = self.stages.get(stage)
        if rec is None or name not in rec.outputs:
            return None
        p = self.ws.artifacts.path_of(rec.outputs[name])
        return p if p.exists() else None


def _latest_stage_records(ws: Workspace) -> tuple[dict[str, StageRecord], dict[str, dict[str, Any]], int]:
    # a few indexed queries per stage, never the whole execution history (a workspace may hold 10,000s of runs)
    stages: dict[str, StageRecord] = {}
    failures: dict[str, dict[str, Any]] = {}
    with ws.engine.connect() as conn:
        n_runs = int(conn.execute(select(func.count()).select_from(runs)).scalar() or 0)
        names = [n for (n,) in conn.execute(select(executions.c.stage).distinct()).all()]
        for name in names:
            newest = select(executions).where(executions.c.stage == name).order_by(desc(executions.c.started_at))
            r = conn.execute(newest.where(executions.c.status.in_(("success", "cached"))).limit(1)).mappings().first()
            if r is not None:
                stages[name] = StageRecord(
                    stage=name, status=r["status"], execution_id=r["execution_id"], run_id=r["run_id"],
                    ended_at=r["ended_at"], duration_s=r["duration_s"], outputs=dict(r["outputs"] or {}),
                    summary=dict(r["summary"] or {}),
                )
            failed = newest.where(executions.c.status == "failed")
            if r is not None:
                failed = failed.where(executions.c.started_at > r["started_at"])
            f = conn.execute(failed.limit(1)).mappings().first()
            if f is not None:
                failures[name] = {"error": (f["error"] or "").strip().splitlines()[-1:] or [""], "ended_at": f["ended_at"]}
    # a cache hit carries the summary of the execution it reused; keep the original duration too
    return stages, failures, n_runs


def _monitoring_rows(ws: Workspace) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    names = set(inspect(ws.engine).get_table_names())
    if "monitor_checks" not in names:
        return [], [], []
    from loopml.monitoring.records import monitor_alerts, monitor_checks, monitor_decisions

    with ws.engine.connect() as conn:
        checks = [dict(r) for r in conn.execute(
            select(monitor_checks).order_by(desc(monitor_checks.c.started_at)).limit(20)).mappings()]
        alerts = [dict(r) for r in conn.execute(
            select(monitor_alerts).order_by(desc(monitor_alerts.c.fired_at)).limit(50)).mappings()]
        decisions = [dict(r) for r in conn.execute(
            select(monitor_decisions).order_by(desc(monitor_decisions.c.decided_at)).limit(20)).mappings()]
    return checks, alerts, decisions


def _versions(ws: Workspace) -> list[dict[str, Any]]:
    names = set(inspect(ws.engine).get_table_names())
    if "model_versions" not in names:
        return []
    from loopml.registry import Registry

    out = []
    for v in Registry(ws).list():
        out.append(
            {
                "version_id": v.version_id, "state": v.state, "approved": v.approved, "created_at": v.created_at,
                "bundle_digest": v.bundle_digest, "verdict": v.verdict, "lineage": v.lineage, "meta": v.meta,
            }
        )
    return out


def _simulation(ws: Workspace, manifest: str = "simulation.json") -> dict[str, Any] | None:
    """The simulator's manifest when the project's event logs were simulated (``simulation.json`` beside them).

    With ``manifest="import.json"``: the importer's manifest when they came from a real click log.
    """
    for src in ws.spec.data.sources.values():
        path = getattr(src, "path", None)
        if not path:
            continue
        folder = ws.resolve(path).parent
        for cand in (folder / manifest, folder.parent / manifest):
            if cand.is_file():
                try:
                    data = json.loads(cand.read_text())
                except ValueError:
                    return None
                return data if isinstance(data, dict) else None
    return None


def collect(ws: Workspace) -> Facts:
    """Read every measured fact of the project's workspace."""
    stages, failures, n_runs = _latest_stage_records(ws)
    facts = Facts(ws=ws, stages=stages, failures=failures, runs=n_runs)
    facts.versions = _versions(ws)
    facts.checks, facts.alerts, facts.decisions = _monitoring_rows(ws)
    facts.simulation = _simulation(ws)
    facts.imported = _simulation(ws, "import.json")
    demo = ws.root / "demo.json"
    if demo.is_file():
        with contextlib.suppress(ValueError):
            facts.extras["demo"] = json.loads(demo.read_text())
    return facts
