"""Edge cases: no resamples, a single-class test set, text and ranking through evaluate_predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loopml.errors import DataError
from loopml.evaluation import build_report, check_gates, evaluate_predictions
from loopml.spec.evaluation import Evaluation


def test_no_resamples_gives_point_values_and_confidence_gates_fail_with_a_reason() -> None:
    y = np.array([0, 1] * 50)
    s = np.where(y == 1, 0.8, 0.2)
    r = evaluate_predictions("binary", y, s, spec_eval=Evaluation(bootstrap_resamples=0))
    assert r.metrics["roc_auc"].value == 1.0 and np.isnan(r.metrics["roc_auc"].interval.lower)
    v = check_gates(["roc_auc >= 0.9", "roc_auc >= 0.9 at 95% confidence"], r)
    assert [x.passed for x in v] == [True, False]
    assert "bootstrap_resamples is 0" in v[1].evidence["reason"]
    json.dumps(build_report(r, v), allow_nan=False)


def test_single_class_test_set_is_undefined_not_a_crash() -> None:
    y = np.zeros(50, dtype=int)
    r = evaluate_predictions("binary", y, np.linspace(0, 1, 50), spec_eval=Evaluation(bootstrap_resamples=20))
    assert np.isnan(r.metrics["roc_auc"].value) and r.metrics["log_loss"].value > 0
    (v,) = check_gates(["roc_auc >= 0.5"], r)
    assert not v.passed
    rep = build_report(r, [v])
    assert rep["metrics"]["roc_auc"]["value"] is None
    json.dumps(rep, allow_nan=False)


def test_text_generation_through_evaluate_predictions() -> None:
    refs = ["the cat sat on the mat", "a dog ran in the park", "it is raining today", "we like green tea"] * 10
    hyps = ["the cat sat on a mat", "a dog ran at the park", "it rains today", "we like tea"] * 10
    worse = ["cat", "dog", "rain", "tea"] * 10
    r = evaluate_predictions("text", refs, hyps, baseline_score=worse, spec_eval=Evaluation(bootstrap_resamples=50))
    assert r.primary_metric == "bleu" and set(r.metrics) == {"bleu", "rouge1", "rouge2", "rougeL"}
    assert r.comparisons["baseline"]["rouge1"].verdict == "better"
    assert r.metrics["bleu"].interval.lower <= r.metrics["bleu"].value <= r.metrics["bleu"].interval.upper


def test_ranking_through_evaluate_predictions_resamples_queries() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 10)
    rel = (rng.random(groups.size) < 0.3).astype(float)
    rel[::10] = 1.0
    good = rel + rng.random(groups.size) * 0.8
    bad = rng.random(groups.size)
    items = rng.integers(0, 100, groups.size)
    ev = Evaluation(bootstrap_resamples=100, gates=["ndcg@10 > production + 0.05 at 95% confidence"])
    r = evaluate_predictions("ranking", rel, good, groups=groups, items=items, production_score=bad, spec_eval=ev,
                             slices={"segment": groups % 3})
    assert r.units == 60 and r.n == 600
    assert r.primary_metric == "ndcg@10" and "coverage@10" in r.metrics
    assert check_gates(ev.gates, r)[0].passed
    assert sum(s.n for s in r.slices) == 600
    with pytest.raises(DataError, match="group"):
        evaluate_predictions("ranking", rel, good, spec_eval=ev)
