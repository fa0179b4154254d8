"""The whole pipeline on real data: `loopml run` trains, evaluates and registers; the model then serves."""

from __future__ import annotations

import json
from pathlib import Path

SPEC = """
spec_version: 1
project: {{name: credit-serve}}
task: {{type: binary, target: label}}
data:
  sources:
    applications: {{type: csv, path: {csv}, quote: "'"}}
  transform: SELECT * EXCLUDE ("class"), CAST("class" = 'bad' AS INTEGER) AS label FROM applications
features:
  inputs:
    - {{column: checking_status, kind: categorical}}
    - {{column: duration, kind: numeric}}
    - {{column: credit_history, kind: categorical}}
    - {{column: credit_amount, kind: numeric}}
    - {{column: age, kind: numeric}}
training:
  split: {{type: stratified, valid_fraction: 0.2, test_fraction: 0.3}}
  candidates:
    - {{type: lightgbm, params: {{n_estimators: 40, learning_rate: 0.1, num_leaves: 7}}}}
evaluation:
  bootstrap_resamples: 50
  gates: ["roc_auc >= 0.6"]
"""


def test_run_registers_with_lineage_and_the_version_serves(project: Path, datasets: Path, cli) -> None:  # type: ignore[no-untyped-def]
    csv = datasets / "german_credit" / "credit-g.csv"
    (project / "loopml.yaml").write_text(SPEC.format(csv=csv), encoding="utf-8")
    p = str(project)
    run = cli("run", "-p", p, "-q")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "register" in run.stdout

    shown = json.loads(cli("models", "show", "v1", "--json", "-p", p, check=True).stdout)
    assert shown["state"] == "production" and shown["approved"] is True  # first approved version serves
    lineage = shown["lineage"]
    for key in ("data_snapshot", "feature_table", "training_execution", "evaluation_report", "bundle"):
        assert lineage.get(key), f"lineage misses {key}: {lineage}"
    assert shown["verdict"]["gates"][0]["gate"] == "roc_auc >= 0.6"
    assert shown["meta"]["model_type"] == "lightgbm"

    row = {"checking_status": "<0", "duration": 24, "credit_history": "existing paid", "credit_amount": 3000,
           "age": 35}
    out = json.loads(cli("predict", "--row", json.dumps(row), "-p", p, check=True).stdout)
    assert out["model_version"] == "v1" and 0.0 < out["score"] < 1.0

    bad = cli("predict", "--row", json.dumps({**row, "age": "old"}), "-p", p)
    assert bad.returncode == 1 and "age" in bad.stderr and "expected number" in bad.stderr

    # a rerun is a cache hit: no second version
    cli("run", "-p", p, "-q", check=True)
    assert "v2" not in cli("models", "list", "-p", p, check=True).stdout
