"""Alert rules: a metric of a window compared with a threshold; each firing recorded with its evidence.

Hooks run only when a rule starts firing (not on every check while it keeps firing): a
shell ``command`` gets the alert as JSON on stdin and ``LOOPML_ALERT_*`` variables; a
``webhook`` gets the same JSON POSTed. A hook's outcome is stored with the alert; a failing
hook never stops the check.
"""

from __future__ import annotations

import json
import math
import operator
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from loopml.monitoring.records import monitor_alerts, new_id, recent
from loopml.monitoring.windows import utcnow
from loopml.spec.monitoring import AlertRule
from loopml.workspace import Workspace

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}


@dataclass
class Firing:
    """One rule that fired in one check."""

    rule: str
    metric: str
    op: str
    threshold: float
    value: float
    window: str
    severity: str
    retrain: bool
    new: bool = True
    evidence: dict[str, Any] = field(default_factory=dict)
    hooks: dict[str, Any] = field(default_factory=dict)
    alert_id: str = ""

    def message(self) -> str:
        """One line for the terminal."""
        return (
            f"[{self.severity}] {self.rule}: {self.metric} = {self.value:.4g} {self.op} {self.threshold:g} "
            f"(window {self.window}){'' if self.new else ' (still firing)'}"
        )


@dataclass
class RuleStatus:
    """How a rule came out in a check: fired, ok, or no data."""

    rule: str
    metric: str
    value: float | None
    fired: bool
    note: str = ""


def evaluate(rules: list[AlertRule], metrics_by_window: dict[str, dict[str, float]]) -> tuple[list[Firing], list[RuleStatus]]:
    """Compare every rule's metric (from its window) with its threshold."""
    firings: list[Firing] = []
    statuses: list[RuleStatus] = []
    for rule in rules:
        metrics = metrics_by_window.get(rule.window, {})
        value = metrics.get(rule.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            statuses.append(RuleStatus(rule.name, rule.metric, None, False, "no data in the window"))
            continue
        fired = OPS[rule.op](float(value), rule.threshold)
        statuses.append(RuleStatus(rule.name, rule.metric, float(value), fired))
        if fired:
            firings.append(
                Firing(rule.name, rule.metric, rule.op, rule.threshold, float(value), rule.window, rule.severity,
                       rule.retrain)
            )
    return firings, statuses


def was_firing(ws: Workspace, rule: str, previous_check: str | None) -> bool:
    """Whether ``rule`` fired in the previous check."""
    if previous_check is None:
        return False
    return bool(recent(ws, monitor_alerts, "fired_at", 1, rule=rule, check_id=previous_check))


def run_hooks(ws: Workspace, rule: AlertRule, firing: Firing) -> dict[str, Any]:
    """Run the rule's command and webhook for a new firing; returns their outcomes."""
    payload = json.dumps({"project": ws.spec.project.name, **_public(firing)}, default=str).encode()
    out: dict[str, Any] = {}
    if rule.command:
        env = {
            **os.environ,
            "LOOPML_ALERT_RULE": firing.rule,
            "LOOPML_ALERT_METRIC": firing.metric,
            "LOOPML_ALERT_VALUE": repr(firing.value),
            "LOOPML_ALERT_THRESHOLD": repr(firing.threshold),
            "LOOPML_ALERT_SEVERITY": firing.severity,
            "LOOPML_ALERT_ID": firing.alert_id,
        }
        try:
            proc = subprocess.run(
                rule.command, shell=True, input=payload, env=env, cwd=ws.project_dir, capture_output=True, timeout=60
            )
            out["command"] = {"exit_code": proc.returncode, "stderr": proc.stderr.decode(errors="replace")[-500:]}
        except subprocess.TimeoutExpired:
            out["command"] = {"exit_code": None, "error": "timed out after 60 s"}
    if rule.webhook:
        req = urllib.request.Request(rule.webhook, data=payload, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                out["webhook"] = {"status": resp.status}
        except (urllib.error.URLError, OSError, ValueError) as exc:
            out["webhook"] = {"error": str(getattr(exc, "reason", exc))}
    return out


def _public(f: Firing) -> dict[str, Any]:
    d = asdict(f)
    d.pop("hooks", None)
    return d


def record(ws: Workspace, check_id: str, firing: Firing) -> None:
    """Store a firing in ``monitor_alerts``."""
    with ws.engine.begin() as conn:
        conn.execute(
            monitor_alerts.insert().values(
                alert_id=firing.alert_id or new_id(), check_id=check_id, rule=firing.rule, metric=firing.metric,
                op=firing.op, threshold=firing.threshold, value=firing.value, window=firing.window,
                severity=firing.severity, fired_at=utcnow(), new=firing.new, retrain=firing.retrain,
                evidence=json.loads(json.dumps(firing.evidence, default=str)), hooks=firing.hooks,
            )
        )
