"""The report: JSON for machines, terminal tables, and a small self-contained HTML page."""

from __future__ import annotations

import json
import re

import numpy as np
from rich.console import Console

from loopml.evaluation import build_report, check_gates, evaluate_predictions, render_html, summary_tables
from loopml.spec.evaluation import Evaluation, Fairness

from .conftest import Credit, sex_of


def _report(credit: Credit, gates: list[str]) -> dict:  # type: ignore[type-arg]
    cols = {"purpose": credit.columns["purpose"], "age": credit.columns["age"]}
    ev = Evaluation(bootstrap_resamples=100, slices=list(cols), gates=gates,
                    fairness=Fairness(sensitive_columns=["sex"], threshold=0.3), target_precision=0.6)
    r = evaluate_predictions("binary", credit.y, credit.score, slices=cols,
                             sensitive={"sex": sex_of(credit.columns["personal_status"])},
                             production_score=credit.weak_score, baseline_score=np.full(credit.y.size, 0.3),
                             spec_eval=ev, online_metric="defaults among approved loans")
    r.analysis = {"importance": {"native": [{"feature": "duration", "importance": 3.0, "share": 1.0, "unit": "gain"}]},
                  "largest_loss": [{"row": 1, "label": 1, "score": 0.01, "loss": 4.6, "purpose": "<script>x</script>"}]}
    return build_report(r, check_gates(gates, r), {"bundle": "abc"})


def test_report_json_holds_metrics_gates_and_pairing(credit: Credit) -> None:
    rep = _report(credit, ["roc_auc >= 0.6", "roc_auc >= 0.99"])
    text = json.dumps(rep, allow_nan=False)  # strict JSON: no NaN anywhere
    assert json.loads(text)["approved"] is False
    assert [g["passed"] for g in rep["gates"]] == [True, False]
    assert rep["gates"][1]["evidence"]["value"] == rep["metrics"]["roc_auc"]["value"]
    assert rep["metric_values"]["roc_auc"] == rep["metrics"]["roc_auc"]["value"]
    m = rep["metrics"]["roc_auc"]
    assert m["lower"] <= m["value"] <= m["upper"] and m["resamples"] == 100
    assert {"offline": "roc_auc", "online": "defaults among approved loans", "source": "task"} in rep["pairing"]
    assert set(rep["comparisons"]) == {"production", "baseline"}
    assert rep["thresholds"]["chosen"]["reachable"] and rep["threshold"] == rep["thresholds"]["chosen"]["threshold"]
    assert rep["confusion_matrix"]["threshold"] == rep["threshold"]
    assert sum(map(sum, rep["confusion_matrix"]["matrix"])) == credit.y.size
    assert rep["curves"]["roc"]["candidate"]["fpr"][0] == 0.0 and rep["curves"]["roc"]["candidate"]["tpr"][-1] == 1.0


def test_terminal_summary(credit: Credit) -> None:
    rep = _report(credit, ["roc_auc >= 0.99"])
    con = Console(record=True, width=220)
    for t in summary_tables(rep):
        con.print(t)
    out = con.export_text()
    for needle in ("roc_auc *", "candidate vs production", "worst slices by roc_auc", "fairness", "NOT APPROVED",
                   "FAIL", "defaults among approved loans"):
        assert needle in out, needle


def test_html_is_self_contained_and_escaped(credit: Credit) -> None:
    page = render_html(_report(credit, ["roc_auc >= 0.6"]))
    assert page.startswith("<!DOCTYPE html>") and "APPROVED" in page
    assert page.count("<svg") >= 6  # ROC, PR, calibration, confusion, slices, fairness calibration, importance
    assert "<script" not in page  # the largest-loss row's value is escaped, and no scripts are loaded
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    urls = set(re.findall(r"https?://[^\s\"'<>]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}  # opens offline: nothing is fetched


def test_report_stays_small_for_a_million_rows() -> None:
    rng = np.random.default_rng(0)
    n = 1_000_000
    y = (rng.random(n) < 0.3).astype(np.int8)
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1)
    region = rng.choice(np.array(["north", "south", "east", "west"], dtype=object), n)
    ev = Evaluation(bootstrap_resamples=10, metrics=[{"name": "roc_auc"}, {"name": "log_loss"}, {"name": "brier"}],
                    slices=["region", "x"], gates=["roc_auc >= 0.8"])
    r = evaluate_predictions("binary", y, s, slices={"region": region, "x": rng.random(n)}, spec_eval=ev)
    rep = build_report(r, check_gates(ev.gates, r))
    js = json.dumps(rep, allow_nan=False)
    page = render_html(rep)
    assert len(js) < 100_000 and len(page) < 100_000
    assert max(len(c) for c in rep["curves"]["roc"]["candidate"].values()) <= 200
    assert rep["rows"] == n and rep["approved"] is True
