"""A target that is pure noise, no gates in the spec: nothing is approved, nothing promoted, the verdict
names the baseline (classification and regression), through `loopml run --json` on german_credit's real
columns with seeded random labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

SPEC = """
spec_version: 1
project: {{name: noise}}
task: {{type: {task}, target: noise}}
data:
  sources:
    applications: {{type: csv, path: {csv}}}
features:
  inputs:
    - {{column: checking_status, kind: categorical}}
    - {{column: duration, kind: numeric}}
    - {{column: credit_history, kind: categorical}}
    - {{column: purpose, kind: categorical}}
    - {{column: credit_amount, kind: numeric}}
    - {{column: age, kind: numeric}}
training:
  split: {{type: {split}, valid_fraction: 0.2, test_fraction: 0.3}}
  prefer_simpler: false   # the most accurate candidate on valid wins: the baseline gate has to stop it
  candidates:
    - {{type: lightgbm, params: {{n_estimators: 80, learning_rate: 0.1, num_leaves: 15}}}}
evaluation:
  bootstrap_resamples: 200
  permutation_repeats: 0
"""


def _noise_csv(datasets: Path, out: Path, task: str) -> Path:
    t = pacsv.read_csv(datasets / "german_credit" / "credit-g.csv").drop_columns(["class"])
    rng = np.random.default_rng(20261203)
    noise = rng.integers(0, 2, t.num_rows) if task == "binary" else rng.normal(100.0, 15.0, t.num_rows)
    path = out / "noise.csv"
    pacsv.write_csv(t.append_column("noise", pa.array(noise)), path)
    return path


@pytest.mark.parametrize(("task", "split", "baseline"), [("binary", "stratified", "prior"),
                                                         ("regression", "random", "mean")])
def test_pure_noise_is_no_better_than_the_baseline(project: Path, datasets: Path, cli, task: str, split: str,
                                                   baseline: str) -> None:  # type: ignore[no-untyped-def]
    csv = _noise_csv(datasets, project, task)
    (project / "loopml.yaml").write_text(SPEC.format(task=task, csv=csv, split=split), encoding="utf-8")
    check = cli("spec", "check", str(project))
    assert check.returncode == 0 and "declares no gate" in check.stdout  # warned before anything runs
    p = cli("run", "-p", str(project), "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads(p.stdout)  # stdout is exactly one JSON object
    # the baseline is always trained beside the spec's candidates; on noise either may score best on valid
    assert result["winner"] in ("lightgbm", baseline)
    assert result["approved"] is False
    assert result["verdict"] == f"no better than the baseline ({baseline})"
    assert result["baseline"]["name"] == baseline and result["baseline"]["value"] is not None
    assert result["version"] == "v1" and result["state"] == "candidate" and result["promoted"] is False
    pm = result["primary_metric"]
    lo, hi = pm["interval"]
    assert lo < pm["value"] < hi
    assert f"verdict: no better than the baseline ({baseline})" in result["reasons"]
    assert any(r.startswith(f"gate `{pm['name']} better than the baseline ({baseline})` failed") for r in result["reasons"])
    report = json.loads((project / ".loopml" / "reports" / "evaluation.json").read_text())
    base_gate = report["gates"][-1]
    assert base_gate["evidence"]["kind"] == "baseline" and not base_gate["passed"]
    if result["winner"] == baseline:
        assert f"the candidate is the baseline model ({baseline}) itself" in base_gate["evidence"]["reason"]
    else:  # decided on the paired interval, which does not exclude zero on the right side
        d = base_gate["evidence"]["difference"]
        higher = report["metrics"][pm["name"]]["higher_is_better"]
        assert (d["lower"] <= 0) if higher else (d["upper"] >= 0)
    from loopml.registry import Registry
    from loopml.workspace import Workspace

    reg = Registry(Workspace.open(project))
    assert reg.production() is None and not reg.get("v1").approved
    refused = cli("models", "promote", "v1", "-p", str(project), "--reason", "try")
    assert refused.returncode != 0 and "did not pass its evaluation gates" in refused.stderr
    assert f"better than the baseline ({baseline})" in refused.stderr
    assert reg.production() is None
