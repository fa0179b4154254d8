"""Verdicts follow evaluations: every evaluation of a registered version is recorded, the latest decides.

An evaluation report (``loopml.evaluation``) of a registered bundle becomes a row of
``model_evaluations`` (history kept) and the version's ``approved``/``verdict`` columns are set to
it, so changing the gates and re-evaluating updates the verdict that promotion reads. Promotion
also reads the latest evaluation's paired comparison with production on the primary metric:
:func:`check_promotion` refuses a version significantly worse than the production model unless
forced.

Examples
--------
>>> import tempfile
>>> from loopml.workspace import Workspace
>>> from loopml.registry import Registry
>>> ws = Workspace.open(tempfile.mkdtemp())
>>> reg = Registry(ws)
>>> v = reg.register(ws.put_artifact_bytes(b"{}", kind="bundle", name="b"), verdict={"approved": False}, lineage={})
>>> record_evaluation(reg, v.version_id, {"approved": True, "verdict": "approved", "gates": []}).approved
True
>>> [e.approved for e in evaluations(reg, "v1")]
[True]
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update

from loopml.errors import GateFailed
from loopml.registry.registry import ModelVersion, Registry, _aware, default_actor
from loopml.registry.tables import model_evaluations, model_versions
from loopml.workspace import utcnow


@dataclass(frozen=True)
class EvaluationRecord:
    """One recorded evaluation of a version."""

    evaluation_id: int
    version_id: str
    at: dt.datetime
    approved: bool
    verdict: dict[str, Any] = field(default_factory=dict)
    report: str | None = None
    source: str = ""
    actor: str = ""

    @property
    def vs_production(self) -> dict[str, Any] | None:
        """The paired comparison with production on the primary metric, when there was one."""
        vp = self.verdict.get("vs_production")
        return vp if isinstance(vp, dict) else None


def verdict_from_report(report: dict[str, Any], report_ref: str | None = None) -> dict[str, Any]:
    """What the registry keeps of an evaluation report: approval, gates, primary metric, baseline, vs production."""
    pm = str(report.get("primary_metric") or "")
    m = (report.get("metrics") or {}).get(pm) or {}
    comp = ((report.get("comparisons") or {}).get("production") or {}).get(pm)
    prod = (report.get("model") or {}).get("production") or None
    out: dict[str, Any] = {
        "approved": bool(report.get("approved", False)),
        "verdict": report.get("verdict"),
        "gates": list(report.get("gates") or []),
        "primary_metric": {"name": pm, "value": m.get("value"),
                           "interval": [m.get("lower"), m.get("upper")] if m else None},
        "baseline": report.get("baseline"),
        "evaluated_at": report.get("created_at"),
        "report": report_ref,
    }
    if comp and prod:
        out["vs_production"] = {
            "production": prod.get("version_id"), "metric": pm, "candidate": comp.get("candidate"),
            "production_value": comp.get("reference_value"), "difference": comp.get("difference"),
            "verdict": comp.get("verdict"), "significant": comp.get("significant"),
            "confidence": report.get("confidence"),
        }
    return out


def record_evaluation(
    reg: Registry, version_id: str, report: dict[str, Any], *, report_ref: str | None = None,
    source: str = "evaluate", actor: str | None = None,
) -> ModelVersion:
    """Record an evaluation of ``version_id`` and make it the version's current verdict.

    The same report recorded twice (same ``report_ref``) is kept once.
    """
    v = reg.get(version_id)
    latest = latest_evaluation(reg, v.version_id)
    if report_ref is not None and latest is not None and latest.report == report_ref:
        return v
    verdict = verdict_from_report(report, report_ref)
    with reg.ws.engine.begin() as conn:
        conn.execute(insert(model_evaluations).values(
            version_id=v.version_id, at=utcnow(), approved=verdict["approved"], verdict=verdict, report=report_ref,
            source=source, actor=actor or default_actor(),
        ))
        conn.execute(update(model_versions).where(model_versions.c.version_id == v.version_id)
                     .values(approved=verdict["approved"], verdict=verdict))
    return reg.get(v.version_id)


def record_for_bundle(reg: Registry, bundle_digest: str, report: dict[str, Any], *, report_ref: str | None = None,
                      source: str = "evaluate") -> ModelVersion | None:
    """Record the evaluation when ``bundle_digest`` is a registered version (else nothing, None)."""
    v = reg.by_bundle(bundle_digest)
    if v is None:
        return None
    return record_evaluation(reg, v.version_id, report, report_ref=report_ref, source=source)


def evaluations(reg: Registry, version_id: str) -> list[EvaluationRecord]:
    """Every recorded evaluation of a version, oldest first."""
    vid = reg.get(version_id).version_id
    q = select(model_evaluations).where(model_evaluations.c.version_id == vid).order_by(
        model_evaluations.c.evaluation_id)
    with reg.ws.engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    return [EvaluationRecord(r["evaluation_id"], r["version_id"], _aware(r["at"]) or utcnow(), bool(r["approved"]),
                             dict(r["verdict"] or {}), r["report"], r["source"], r["actor"]) for r in rows]


def latest_evaluation(reg: Registry, version_id: str) -> EvaluationRecord | None:
    """The newest recorded evaluation of a version, if any."""
    found = evaluations(reg, version_id)
    return found[-1] if found else None


def comparison_text(vp: dict[str, Any]) -> str:
    """``roc_auc −0.0173 vs production v1 (95% interval [−0.03, −0.005]): worse``."""
    d = vp.get("difference") or {}

    def f(x: Any) -> str:
        return "–" if x is None else f"{x:+.4f}"

    conf = round(100 * (vp.get("confidence") or 0.95))
    return (f"{vp.get('metric')} {f(d.get('value'))} vs production {vp.get('production')} "
            f"({conf}% paired interval [{f(d.get('lower'))}, {f(d.get('upper'))}]): {vp.get('verdict')}")


def worse_than_production(reg: Registry, version_id: str) -> dict[str, Any] | None:
    """The latest evaluation's comparison when it found the version significantly worse than the current production."""
    v = reg.get(version_id)
    prod = reg.production()
    latest = latest_evaluation(reg, v.version_id)
    vp = latest.vs_production if latest is not None else None
    if prod is None or prod.version_id == v.version_id or vp is None:
        return None
    if vp.get("verdict") == "worse" and vp.get("production") == prod.version_id:
        return vp
    return None


def check_promotion(reg: Registry, version_id: str, to_state: str, *, force: bool = False) -> dict[str, Any] | None:
    """Refuse (:class:`GateFailed`) a move to production of a version significantly worse than production.

    Returns the comparison when ``force`` overrides it (the caller records the move as forced),
    else None.
    """
    if to_state != "production":
        return None
    vp = worse_than_production(reg, version_id)
    if vp is None:
        return None
    if force:
        return vp
    raise GateFailed(
        f"model version {reg.get(version_id).version_id} is significantly worse than production on its latest "
        f"evaluation: {comparison_text(vp)}; refusing to promote it",
        hint="re-evaluate it (`loopml evaluate`), or pass --force with a --reason to override; the override is recorded",
    )


def promotion_advice(reg: Registry, version_id: str) -> tuple[bool, str]:
    """Whether the evidence supports promoting a version to production, and the one-line why.

    Supported only when the version is approved on its latest evaluation and that evaluation
    found it significantly better than the current production model on the primary metric (or
    there is no production model). Otherwise the line says why not.
    """
    v = reg.get(version_id)
    prod = reg.production()
    latest = latest_evaluation(reg, v.version_id)
    if not v.approved:
        why = (latest.verdict.get("verdict") if latest is not None else None) or "its evaluation gates failed"
        return False, f"{v.version_id} is not approved ({why})"
    if prod is None:
        return True, f"{v.version_id} is approved and nothing is in production"
    if prod.version_id == v.version_id:
        return False, f"{v.version_id} is already in production"
    vp = latest.vs_production if latest is not None else None
    if vp is None or vp.get("production") != prod.version_id:
        return False, (f"{v.version_id} has no evaluation against the current production {prod.version_id}; "
                       "re-evaluate it first (`loopml evaluate`)")
    if vp.get("verdict") == "better":
        return True, comparison_text(vp)
    if vp.get("verdict") == "worse":
        return False, f"it is significantly worse than production: {comparison_text(vp)}"
    return False, f"it is not significantly better than production: {comparison_text(vp)}"


__all__ = [
    "EvaluationRecord",
    "check_promotion",
    "comparison_text",
    "evaluations",
    "latest_evaluation",
    "promotion_advice",
    "record_evaluation",
    "record_for_bundle",
    "verdict_from_report",
    "worse_than_production",
]
