"""Verdicts follow evaluations, and promotion follows the evidence (german_credit, real CLI).

v1 (all features) goes to production. v2 (one weak feature) is evaluated with a gate it fails, then the
gate changes and the rerun re-evaluates the same bundle: the registered version's verdict follows (history
kept). v2 is significantly worse than production on the primary metric, so `models promote` refuses it
and prints the comparison; with --force it goes through, recorded as forced.
"""

from __future__ import annotations

import json
from pathlib import Path

SPEC = """
spec_version: 1
project: {{name: credit-verdicts}}
task: {{type: binary, target: label}}
data:
  sources:
    applications: {{type: csv, path: {csv}, quote: "'"}}
  transform: SELECT * EXCLUDE ("class"), CAST("class" = 'bad' AS INTEGER) AS label FROM applications
features:
  inputs:
{inputs}
training:
  split: {{type: stratified, valid_fraction: 0.2, test_fraction: 0.3}}
  prefer_simpler: false
  candidates:
    - {{type: lightgbm, params: {{n_estimators: 60, learning_rate: 0.1, num_leaves: 7}}}}
evaluation:
  bootstrap_resamples: 200
  permutation_repeats: 0
  baseline_gate: {baseline_gate}
  gates: {gates}
"""

ALL = ["checking_status", "duration", "credit_history", "purpose", "credit_amount", "savings_status", "age"]


def _write(project: Path, datasets: Path, inputs: list[str], gates: list[str], baseline_gate: bool = True) -> None:
    lines = "\n".join(
        f"    - {{column: {c}, kind: {'numeric' if c in ('duration', 'credit_amount', 'age') else 'categorical'}}}"
        for c in inputs)
    (project / "loopml.yaml").write_text(SPEC.format(
        csv=datasets / "german_credit" / "credit-g.csv", inputs=lines, gates=json.dumps(gates),
        baseline_gate=str(baseline_gate).lower()), encoding="utf-8")


def test_verdict_follows_reevaluation_and_promotion_follows_the_evidence(project: Path, datasets: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from loopml.registry import Registry, evaluations
    from loopml.workspace import Workspace

    _write(project, datasets, ALL, [])
    first = json.loads(cli("run", "-p", str(project), "--json", check=True).stdout)
    assert first["approved"] is True and first["version"] == "v1" and first["state"] == "production"
    assert first["verdict"] == "approved" and first["baseline"]["name"] == "prior"

    # v2: one weak feature, a gate it fails (the baseline gate is off for it, and the report says so)
    _write(project, datasets, ["age"], ["roc_auc >= 0.9"], baseline_gate=False)
    check = cli("spec", "check", str(project))
    assert "baseline_gate is false" in check.stdout
    second = json.loads(cli("run", "-p", str(project), "--json").stdout)
    assert second["version"] == "v2" and second["approved"] is False and second["state"] == "candidate"
    assert second["baseline"]["gate"] == "off"
    report = json.loads((project / ".loopml" / "reports" / "evaluation.json").read_text())
    assert "the baseline gate was off" in (project / ".loopml" / "reports" / "evaluation.html").read_text()
    assert report["comparisons"]["production"]["roc_auc"]["verdict"] == "worse"
    reg = Registry(Workspace.open(project))
    assert not reg.get("v2").approved

    # the gate changes; the rerun re-evaluates the same bundle and the registered verdict follows
    _write(project, datasets, ["age"], ["roc_auc >= 0.5"], baseline_gate=False)
    third = json.loads(cli("run", "-p", str(project), "--json", check=True).stdout)
    assert third["version"] == "v2" and third["approved"] is True
    v2 = reg.get("v2")
    assert v2.approved and v2.verdict["verdict"] == "approved"
    history = evaluations(reg, "v2")
    assert [e.approved for e in history] == [False, True]
    assert history[-1].vs_production is not None and history[-1].vs_production["verdict"] == "worse"
    shown = cli("models", "show", "v2", "-p", str(project), check=True).stdout
    assert "worse vs v1" in shown

    # approved, but significantly worse than production on roc_auc: refused without --force, with the comparison
    refused = cli("models", "promote", "v2", "-p", str(project), "--reason", "newer")
    assert refused.returncode != 0
    err = " ".join(refused.stderr.split())
    assert "significantly worse than production" in err and "roc_auc -0." in err and "vs production v1" in err
    assert "worse" in err and "--force" in err
    assert reg.production().version_id == "v1"  # type: ignore[union-attr]
    forced = cli("models", "promote", "v2", "-p", str(project), "--reason", "accepting the loss", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "forced" in forced.stdout and "vs production v1" in " ".join(forced.stdout.split())
    assert reg.production().version_id == "v2"  # type: ignore[union-attr]
    last = reg.history("v2")[-1]
    assert last.to_state == "production" and last.forced and "accepting the loss" in last.reason
    assert "worse" in last.reason
