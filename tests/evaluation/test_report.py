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
    from tests.webui.conftest import assert_self_contained

    page = render_html(_report(credit, ["roc_auc >= 0.6"]))
    assert page.startswith("<!DOCTYPE html>") and "APPROVED" in page
    # ROC, PR, calibration, slices, fairness calibration, importance: uPlot charts; the confusion matrix a table
    specs = {m[0]: json.loads(m[1]) for m in re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', page)}
    assert {"evaluation-curve-1", "evaluation-curve-2", "evaluation-curve-3", "evaluation-slices",
            "evaluation-fairness-1", "evaluation-importance-1"} <= set(specs)
    roc = specs["evaluation-curve-1"]
    assert roc["title"] == "ROC" and {s["label"] for s in roc["series"]} == {"candidate", "production", "baseline"}
    assert roc["x"] == sorted(roc["x"]) and all(len(s["values"]) == len(roc["x"]) for s in roc["series"])
    assert 'id="evaluation-confusion"' in page
    # the slice chart carries each slice's interval as whiskers
    sl = specs["evaluation-slices"]["series"][0]
    assert all(lo <= v <= hi for lo, v, hi in zip(sl["lower"], sl["values"], sl["upper"]) if lo is not None)
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page  # the value is escaped
    assert_self_contained(page)  # opens offline: nothing is fetched


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
    from loopml.webui.export import inline_assets

    assets = sum(len(a) for a in inline_assets().values())  # the chart layer (~55 KB), the same for any size
    assert len(js) < 100_000 and len(page) - assets < 100_000
    assert max(len(c) for c in rep["curves"]["roc"]["candidate"].values()) <= 200
    assert rep["rows"] == n and rep["approved"] is True
