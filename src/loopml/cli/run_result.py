"""The machine-readable outcome of ``loopml run --json``: one JSON object a script can act on.

``{"run_id", "status", "winner", "approved", "verdict", "version", "state", "promoted",
"primary_metric": {"name", "value", "interval"}, "baseline": {"name", "value"}, "reasons": [...],
"reports": {"leaderboard_html" | "evaluation_html" | "evaluation_json": path}}``
— read from the ``train`` leaderboard, the ``evaluate`` report and the ``register`` output of the run
(cached stages included). Keys whose stage did not run are ``null``.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from loopml.errors import NotFound
from loopml.pipeline.runner import RunReport
from loopml.workspace import Workspace


def _artifact_json(ws: Workspace, digest: str | None) -> dict[str, Any]:
    if not digest:
        return {}
    with contextlib.suppress(NotFound, ValueError):
        data = json.loads(ws.artifacts.get_bytes(digest))
        return data if isinstance(data, dict) else {}
    return {}


def run_result(ws: Workspace, run: RunReport) -> dict[str, Any]:
    """The run's decision as one JSON-able dict (see the module docstring)."""
    from loopml.evaluation.report import evidence_text

    by = {o.stage: o for o in run.outcomes}
    board = _artifact_json(ws, by["train"].outputs.get("leaderboard")) if "train" in by else {}
    report = _artifact_json(ws, by["evaluate"].outputs.get("report")) if "evaluate" in by else {}
    version = _artifact_json(ws, by["register"].outputs.get("version")) if "register" in by else {}
    reasons: list[str] = []
    for o in run.outcomes:
        if o.status == "failed":
            reasons.append(f"stage {o.stage} failed: {o.error or 'no message'}")
    if board.get("why"):
        reasons.append(f"selection: {board['why']}")
    reasons.extend(f"note: {n}" for n in board.get("notes") or [] if "cut short" in n)
    if report and not report.get("approved") and report.get("verdict"):
        reasons.append(f"verdict: {report['verdict']}")
    for g in report.get("gates") or []:
        if not g.get("passed"):
            reasons.append(f"gate `{g['gate']}` failed: {evidence_text(g.get('evidence') or {})}")
    if version.get("version_id") and report and not report.get("approved"):
        reasons.append(f"{version['version_id']} is registered as {version.get('state')}, not promoted")
    pm = report.get("primary_metric")
    m = (report.get("metrics") or {}).get(pm) or {}
    base = report.get("baseline") or {}
    approved = report.get("approved") if report else None
    if version.get("version_id"):  # the registry's verdict is the latest evaluation's
        approved = version.get("approved", approved)
    return {
        "run_id": run.run_id,
        "status": run.status,
        "winner": board.get("winner"),
        "approved": approved,
        "verdict": report.get("verdict"),
        "version": version.get("version_id"),
        "state": version.get("state"),
        "promoted": version.get("promoted"),
        "primary_metric": None if not pm else {"name": pm, "value": m.get("value"),
                                               "interval": [m.get("lower"), m.get("upper")]},
        "baseline": None if not base else {"name": base.get("name"), "value": base.get("value"),
                                           "gate": base.get("gate")},
        "reasons": reasons,
        "reports": _reports(ws, by),
    }


def _reports(ws: Workspace, by: dict[str, Any]) -> dict[str, str]:
    """The report files the run's train and evaluate stages wrote (or wrote before, when cached)."""
    files = {"leaderboard_html": ("train", "leaderboard.html"), "evaluation_html": ("evaluate", "evaluation.html"),
             "evaluation_json": ("evaluate", "evaluation.json")}
    return {name: str(ws.reports / f) for name, (stage, f) in files.items() if stage in by and (ws.reports / f).exists()}
