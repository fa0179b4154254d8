"""Gates: parsing (with clear errors), and verdicts that pass and fail for the right reasons."""

from __future__ import annotations

import numpy as np
import pytest

from loopml.errors import SpecError
from loopml.evaluation import (
    GateContext,
    GateSyntaxError,
    approved,
    check_gates,
    evaluate_predictions,
    parse_gate,
    parse_gates,
)
from loopml.spec.evaluation import Evaluation, Fairness

from .conftest import Credit, sex_of


@pytest.mark.parametrize(
    ("text", "subject", "op", "threshold", "reference", "margin", "confidence"),
    [
        ("roc_auc >= 0.75", "roc_auc", ">=", 0.75, None, 0.0, None),
        ("roc_auc > production + 0.002 at 95% confidence", "roc_auc", ">", None, "production", 0.002, 0.95),
        ("log_loss<production-0.01", "log_loss", "<", None, "production", -0.01, None),
        ("roc_auc > baseline", "roc_auc", ">", None, "baseline", 0.0, None),
        ("fairness.demographic_parity_difference <= 0.1", "fairness.demographic_parity_difference", "<=", 0.1,
         None, 0.0, None),
        ("fairness.sex.equalized_odds_difference < 0.2 at 90% confidence", "fairness.sex.equalized_odds_difference",
         "<", 0.2, None, 0.0, 0.9),
        ("latency_p99_ms <= requirements", "latency_p99_ms", "<=", None, "requirements", 0.0, None),
        ("ndcg@10 >= 0.3", "ndcg@10", ">=", 0.3, None, 0.0, None),
        ("  recall   >=   1e-1  ", "recall", ">=", 0.1, None, 0.0, None),
    ],
)
def test_parse_valid_gates(text: str, subject: str, op: str, threshold: float | None, reference: str | None,
                           margin: float, confidence: float | None) -> None:
    g = parse_gate(text)
    assert (g.subject, g.op, g.threshold, g.reference, g.confidence) == (subject, op, threshold, reference, confidence)
    assert g.margin == pytest.approx(margin)


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("roc_auc >= ", 11, "a number, `production`, `baseline` or `requirements`"),
        ("roc_auc => 0.7", 9, "a comparison"),
        ("roc_auc >= 0.7 at 95 confidence", 22, "`%`"),
        ("roc_auc >= 0.7 at 150% confidence", 19, "a confidence level in [50, 100)"),
        ("roc_auc > production + ", 23, "a number after + or -"),
        ("production < roc_auc", 1, "a metric name on the left"),
        ("roc_auc >= 0.7 maybe", 16, "the end of the gate"),
        ("roc_auc >= 0.7 at 95% sure", 23, "the word `confidence`"),
        (">= 0.7", 1, "a metric name"),
    ],
)
def test_malformed_gate_names_gate_position_and_expectation(text: str, position: int, expected: str) -> None:
    with pytest.raises(GateSyntaxError) as err:
        parse_gate(text, 3)
    msg = str(err.value)
    assert f"evaluation.gates[3] gate `{text}`" in msg
    assert f"at position {position}" in msg
    assert expected in msg
    assert isinstance(err.value, SpecError)


def test_parse_gates_reports_every_malformed_gate() -> None:
    with pytest.raises(GateSyntaxError) as err:
        parse_gates(["roc_auc >= 0.7", "roc_auc >=", "f1 ! 0.2"])
    assert "2 evaluation gates are malformed" in str(err.value)
    assert "gates[1]" in str(err.value) and "gates[2]" in str(err.value)


def _result(credit: Credit, **kw):  # type: ignore[no-untyped-def]
    ev = Evaluation(bootstrap_resamples=200, **kw.pop("ev", {}))
    return evaluate_predictions("binary", credit.y, credit.score, spec_eval=ev, **kw)


def test_absolute_gates_pass_and_fail(credit: Credit) -> None:
    r = _result(credit)
    auc = r.metrics["roc_auc"].value
    v = check_gates([f"roc_auc >= {auc - 0.01:.4f}", "roc_auc >= 0.99", f"log_loss < {r.metrics['log_loss'].value - 0.001:.6f}"],
                    r)
    assert [x.passed for x in v] == [True, False, False]
    assert v[1].evidence["value"] == pytest.approx(auc)
    assert not approved(v)
    # with confidence the lower bound decides: a threshold just under the point estimate fails
    lower = np.quantile(r.metrics["roc_auc"].samples, 0.05)
    c = check_gates([f"roc_auc >= {auc - 0.001:.5f} at 95% confidence", f"roc_auc >= {lower - 0.01:.5f} at 95% confidence"],
                    r)
    assert [x.passed for x in c] == [False, True]
    assert c[0].evidence["bound"] == pytest.approx(lower)
    assert c[0].evidence["bound_side"] == "lower"


def test_relative_gate_uses_the_paired_lower_bound(credit: Credit) -> None:
    r = _result(credit, production_score=credit.weak_score, baseline_score=np.full(credit.y.size, credit.y.mean()))
    comp = r.comparisons["production"]["roc_auc"]
    assert comp.difference.value > 0.02 and comp.significant
    lower = float(np.quantile(comp.samples, 0.05))
    v = check_gates([
        "roc_auc > production + 0.002 at 95% confidence",
        f"roc_auc > production + {lower + 0.005:.5f} at 95% confidence",  # bound just below the margin → fail
        # without `at`, the report's two-sided 95% interval decides (its lower end is below the 5% quantile),
        # not the point difference, which would pass this margin easily
        f"roc_auc > production + {lower + 0.005:.5f}",
        f"roc_auc > production + {comp.difference.lower - 0.001:.5f}",  # interval's lower end above the margin
        "roc_auc > baseline + 0.1",
        "brier < baseline",
    ], r)
    assert comp.difference.value > lower + 0.005  # the point estimate alone would have passed gate 2
    assert [x.passed for x in v] == [True, False, False, True, True, True]
    assert v[2].evidence["decided_on"] == "interval"
    assert v[2].evidence["bound"] == pytest.approx(comp.difference.lower)
    assert "not significant" in v[2].evidence["why"]
    assert v[0].evidence["bound"] == pytest.approx(lower)
    assert v[0].evidence["reference_value"] == pytest.approx(r.references["production"]["roc_auc"].value)


def test_same_model_as_production_does_not_pass_an_improvement_gate(credit: Credit) -> None:
    r = _result(credit, production_score=credit.score.copy())
    v = check_gates(["roc_auc > production + 0.002 at 95% confidence", "roc_auc >= production"], r)
    assert [x.passed for x in v] == [False, True]
    assert r.comparisons["production"]["roc_auc"].verdict == "no significant difference"


def test_relative_gate_without_production_passes_and_says_why(credit: Credit) -> None:
    r = _result(credit)
    (v,) = check_gates(["roc_auc > production + 0.002 at 95% confidence"], r)
    assert v.passed and "no production model" in v.evidence["skipped"]


def test_fairness_gates(credit: Credit) -> None:
    sens = {"sex": sex_of(credit.columns["personal_status"]), "foreign_worker": credit.columns["foreign_worker"]}
    r = _result(credit, sensitive=sens, ev={"fairness": Fairness(sensitive_columns=list(sens), threshold=0.3)})
    dpd = {c: f.demographic_parity_difference.value for c, f in r.fairness.items()}
    worst = max(dpd.values())
    v = check_gates([
        f"fairness.demographic_parity_difference <= {worst + 0.001:.4f}",
        f"fairness.demographic_parity_difference <= {worst - 0.001:.4f}",
        f"fairness.sex.demographic_parity_difference <= {dpd['sex'] + 0.001:.4f}",
        "fairness.age.demographic_parity_difference <= 0.5",
        "fairness.equalized_odds_difference <= 1.0",
        "fairness.bogus_metric <= 1",
    ], r)
    assert [x.passed for x in v] == [True, False, True, False, True, False]
    assert "no fairness analysis for column `age`" in v[3].evidence["reason"]
    assert set(v[0].evidence["columns"]) == {"sex", "foreign_worker"}


def test_requirement_gates_read_measured_values_and_budgets(credit: Credit) -> None:
    r = _result(credit)
    gates = ["latency_p99_ms <= requirements", "model_size_mb <= requirements"]
    ok = check_gates(gates, r, GateContext(measured={"latency_p99_ms": 3.0, "model_size_mb": 1.0},
                                           requirements={"latency_p99_ms": 10.0, "model_size_mb": 50.0}))
    assert [x.passed for x in ok] == [True, True]
    slow = check_gates(gates[:1], r, GateContext(measured={"latency_p99_ms": 12.5}, requirements={"latency_p99_ms": 10}))
    assert not slow[0].passed and slow[0].evidence["measured"] == 12.5 and slow[0].evidence["budget"] == 10
    none = check_gates(gates[:1], r, GateContext(measured={"latency_p99_ms": 1.0}))
    assert not none[0].passed and "requirements.constraints.latency_p99_ms is not set" in none[0].evidence["reason"]
    unmeasured = check_gates(gates[:1], r, GateContext(requirements={"latency_p99_ms": 10}))
    assert not unmeasured[0].passed and "no measured latency_p99_ms" in unmeasured[0].evidence["reason"]


def test_gate_on_unlisted_metric_is_computed_and_unknown_metric_is_an_error(credit: Credit) -> None:
    r = _result(credit, ev={"metrics": [{"name": "roc_auc"}], "gates": ["specificity >= 0.1"]})
    assert "specificity" in r.metrics
    assert check_gates(["specificity >= 0.1"], r)[0].passed
    with pytest.raises(SpecError, match="gate on `roc_aux`"):
        _result(credit, ev={"gates": ["roc_aux >= 0.1"]})


def test_spec_loading_rejects_a_malformed_gate_with_file_line_and_position(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from loopml.spec import load_spec

    path = tmp_path / "loopml.yaml"
    path.write_text("spec_version: 1\nevaluation:\n  gates:\n    - roc_auc >= 0.7\n    - roc_auc >> 0.7\n",
                    encoding="utf-8")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    msg = str(err.value)
    assert f"{path}:" in msg and "evaluation.gates[1] gate `roc_auc >> 0.7`" in msg and "position 10" in msg


def _close_rival(credit: Credit):  # type: ignore[no-untyped-def]
    """A candidate whose ROC-AUC is a hair above production's: positive point gap, interval across 0."""
    for seed in range(50):
        noise = np.random.default_rng(seed).normal(0.0, 0.03, credit.y.size)
        cand = np.clip(credit.score + noise, 0.0, 1.0)
        r = evaluate_predictions("binary", credit.y, cand, spec_eval=Evaluation(bootstrap_resamples=400),
                                 production_score=credit.score)
        d = r.comparisons["production"]["roc_auc"].difference
        if d.value > 0.001 and d.lower < 0 < d.upper:
            return r
    raise AssertionError("no seed gave a candidate slightly above production")


def test_relative_gate_fails_when_the_point_passes_but_the_interval_spans_zero(credit: Credit) -> None:
    from loopml.evaluation.report import build_report, render_html, summary_tables

    r = _close_rival(credit)
    d = r.comparisons["production"]["roc_auc"].difference
    (v,) = check_gates(["roc_auc > production"], r)
    assert d.value > 0 and d.lower < 0  # the point estimate passes, the interval spans zero
    assert not v.passed
    assert v.evidence["bound"] == pytest.approx(d.lower) and v.evidence["bound_side"] == "lower"
    assert "not significant" in v.evidence["why"]
    report = build_report(r, [v])
    assert not report["approved"]
    g = report["gates"][0]
    assert g["evidence"]["difference"]["lower"] == pytest.approx(d.lower)
    assert g["evidence"]["difference"]["upper"] == pytest.approx(d.upper)
    from rich.console import Console

    con = Console(record=True, width=250)
    for t in summary_tables(report):
        con.print(t)
    text = con.export_text()
    assert f"[{d.lower:.4f}, {d.upper:.4f}]" in text and "not significant" in text and "FAIL" in text
    html = render_html(report)
    assert f"[{d.lower:.4f}, {d.upper:.4f}]" in html and "not significant" in html


def test_non_inferiority_gate_uses_the_interval(credit: Credit) -> None:
    r = _close_rival(credit)
    d = r.comparisons["production"]["roc_auc"].difference
    loose, tight = d.lower - 0.002, d.lower + 0.002
    v = check_gates([f"roc_auc >= production - {-loose:.5f}", f"roc_auc >= production - {-tight:.5f}"], r)
    assert [x.passed for x in v] == [True, False]


def test_baseline_gate_needs_a_significant_gain_over_the_baseline(credit: Credit) -> None:
    from loopml.evaluation import baseline_gate

    prior = np.full(credit.y.size, credit.y.mean())
    good = _result(credit, baseline_score=prior)
    v = baseline_gate(good, baseline="prior")
    assert v.passed and v.evidence["verdict"] == "better than the baseline (prior)"
    assert v.evidence["difference"]["lower"] > 0
    noise = np.random.default_rng(7).random(credit.y.size)
    bad = evaluate_predictions("binary", credit.y, noise, spec_eval=Evaluation(bootstrap_resamples=200),
                               baseline_score=prior)
    v = baseline_gate(bad, baseline="prior")
    assert not v.passed and v.evidence["verdict"] == "no better than the baseline (prior)"
    assert "includes 0" in v.evidence["why"]
    off = baseline_gate(bad, enabled=False, baseline="prior")
    assert off.passed and "baseline gate is off" in off.evidence["skipped"]
    itself = baseline_gate(good, baseline="prior", candidate_model="prior")
    assert not itself.passed and "is the baseline model (prior) itself" in itself.evidence["reason"]
    missing = baseline_gate(_result(credit), baseline="prior")
    assert not missing.passed and "no baseline model was scored" in missing.evidence["reason"]
