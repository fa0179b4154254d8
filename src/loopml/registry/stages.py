"""Pipeline stage ``register`` (order 60): the trained bundle becomes a model version.

The version carries the evaluation verdict (so promotion can refuse a model whose gates failed)
and its lineage: the data snapshot, the feature set, the training run and the evaluation report.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from loopml.lineage import lineage
from loopml.pipeline.stage import STAGES, BaseStage, StageContext, StageResult, register_stage
from loopml.registry.evidence import record_evaluation, verdict_from_report
from loopml.registry.registry import Registry
from loopml.spec import Spec
from loopml.workspace.metadata import executions


def _json_artifact(ctx: StageContext, digest: str) -> dict[str, Any]:
    data = json.loads(ctx.workspace.artifacts.get_bytes(digest))
    return data if isinstance(data, dict) else {"value": data}


def bundle_lineage(ctx: StageContext, bundle_digest: str, report_digest: str) -> dict[str, Any]:
    """Data snapshot, feature table, feature set, training run and evaluation report of a bundle.

    Found through the metadata database: the bundle's producing (train) execution names its
    input feature table and its run; the ingest execution of that run names the lake snapshot.
    """
    ws = ctx.workspace
    out: dict[str, Any] = {"bundle": bundle_digest, "evaluation_report": report_digest,
                           "evaluation_execution": ctx.execution_id}
    producer = ws.artifact_info(bundle_digest).get("producer")
    with ws.engine.connect() as conn:
        train = conn.execute(select(executions).where(executions.c.execution_id == producer)).mappings().first()
        if train is not None:
            out["training_execution"] = train["cached_from"] or train["execution_id"]
            out["training_run"] = train["run_id"]
            out["feature_table"] = ((train["inputs"] or {}).get("features") or {}).get("table")
            same_run = conn.execute(
                select(executions).where(executions.c.run_id == train["run_id"],
                                         executions.c.status.in_(("success", "cached")))
            ).mappings().all()
            for row in same_run:
                outputs, summary = row["outputs"] or {}, row["summary"] or {}
                if row["stage"] == "ingest":
                    out["data_snapshot"] = summary.get("snapshot") or outputs.get("table")
                    out["data_table"] = outputs.get("table")
                elif row["stage"] == "validate":
                    out["validated_table"] = outputs.get("table")
    if "data_snapshot" not in out:  # produced outside a pipeline run: walk the artifact lineage
        for step in lineage(ws, bundle_digest):
            if step.stage == "ingest":
                out.setdefault("data_snapshot", step.digest)
    out["feature_set"] = ctx.spec.features.model_dump(mode="json")
    return {k: v for k, v in out.items() if v is not None}


@register_stage
class RegisterStage(BaseStage):
    """Register the trained bundle with its evaluation verdict and lineage."""

    name = "register"
    order = 60
    requires = ("train", "evaluate")
    description = "Register the trained bundle as a model version (verdict + lineage)."

    @classmethod
    def enabled(cls, spec: Spec) -> bool:
        """Part of the pipeline when the stages it needs (train, evaluate) are."""
        return all(r in STAGES and STAGES[r].enabled(spec) for r in cls.requires)

    def config(self, spec: Spec) -> Any:
        return {"task": spec.task.type, "features": spec.features.model_dump(mode="json")}

    def run(self, ctx: StageContext) -> StageResult:
        bundle_digest = ctx.input("train", "bundle")
        report_digest = ctx.input("evaluate", "report")
        report = _json_artifact(ctx, report_digest)
        manifest = _json_artifact(ctx, bundle_digest)
        verdict = verdict_from_report(report, report_digest)
        meta = {
            "task": manifest.get("task", ctx.spec.task.type),
            "model_type": manifest.get("model_type"),
            "metrics": {
                k: v for k, v in (report.get("metrics") or {}).items() if isinstance(v, int | float)
            } if isinstance(report.get("metrics"), dict) else {},
            "execution": ctx.execution_id,
        }
        reg = Registry(ctx.workspace)
        version = reg.register(
            bundle_digest, verdict=verdict, lineage=bundle_lineage(ctx, bundle_digest, report_digest), meta=meta,
            actor="pipeline", reason=f"registered by execution {ctx.execution_id}",
        )
        # the same bundle evaluated again (gates changed...): its verdict follows the new evaluation
        version = record_evaluation(reg, version.version_id, report, report_ref=report_digest, source="register",
                                    actor="pipeline")
        promoted = False
        if version.state == "candidate" and version.approved and reg.production() is None:
            # the first approved model of a project goes straight to production so that
            # `loopml serve` works after the first run; later ones wait for a promotion
            version = reg.promote(version.version_id, actor="pipeline", reason="first approved version")
            promoted = True
        payload = {
            "version_id": version.version_id,
            "state": version.state,
            "approved": version.approved,
            "bundle": bundle_digest,
            "promoted": promoted,
        }
        digest = ctx.put_bytes(json.dumps(payload, indent=2).encode(), kind="json", name="version")
        return StageResult(outputs={"version": digest}, summary=payload)
