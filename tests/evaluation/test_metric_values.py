"""Metric values equal scikit-learn's (and sacrebleu's / rouge-score's); ranking metrics match hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from loopml.errors import DataError, SpecError
from loopml.evaluation.curves import threshold_for
from loopml.evaluation.data import EvalData
from loopml.evaluation.metrics import build_kernel, compute_metric, resolve_metric

from .conftest import Credit


def _binary_refs(y: np.ndarray, s: np.ndarray, w: np.ndarray | None = None) -> dict[str, float]:
    pred = (s >= 0.5).astype(int)
    return {
        "roc_auc": skm.roc_auc_score(y, s, sample_weight=w),
        "pr_auc": skm.average_precision_score(y, s, sample_weight=w),
        "log_loss": skm.log_loss(y, s, sample_weight=w),
        "brier": skm.brier_score_loss(y, s, sample_weight=w),
        "precision": skm.precision_score(y, pred, sample_weight=w),
        "recall": skm.recall_score(y, pred, sample_weight=w),
        "f1": skm.f1_score(y, pred, sample_weight=w),
        "accuracy": skm.accuracy_score(y, pred, sample_weight=w),
    }


def test_binary_metrics_equal_sklearn_on_german_credit(credit: Credit) -> None:
    d = EvalData("binary", credit.y, credit.score)
    for key, ref in _binary_refs(credit.y, credit.score).items():
        assert compute_metric(key, d) == pytest.approx(ref, rel=1e-10, abs=1e-12), key


def test_weighted_binary_metrics_equal_sklearn_sample_weight_with_ties_and_zero_weights() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 3000)
    s = np.round(np.clip(0.25 * y + 0.75 * rng.random(3000), 0, 1), 2)  # many ties
    w = rng.poisson(1.0, 3000)  # bootstrap-like counts, including zeros
    d = EvalData("binary", y, s)
    refs = _binary_refs(y, s, w)
    for key, ref in refs.items():
        got = build_kernel(key, d).evaluate(w[None, :].astype(np.uint8))[0]
        assert got == pytest.approx(ref, rel=1e-10, abs=1e-12), key


def test_ece_matches_hand_computation(credit: Credit) -> None:
    d = EvalData("binary", credit.y, credit.score, calibration_bins=10)
    bins = np.minimum((credit.score * 10).astype(int), 9)
    ece = sum(abs(credit.y[bins == b].mean() - credit.score[bins == b].mean()) * (bins == b).mean()
              for b in range(10) if (bins == b).any())
    assert compute_metric("ece", d) == pytest.approx(ece, rel=1e-10)


def test_multiclass_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 800)
    p = rng.dirichlet([1.0] * 4, 800)
    p[np.arange(800), y] += 0.4
    p /= p.sum(axis=1, keepdims=True)
    d = EvalData("multiclass", y, p)
    pred = p.argmax(axis=1)
    refs = {
        "accuracy": skm.accuracy_score(y, pred),
        "macro_f1": skm.f1_score(y, pred, average="macro"),
        "macro_precision": skm.precision_score(y, pred, average="macro"),
        "macro_recall": skm.recall_score(y, pred, average="macro"),
        "log_loss": skm.log_loss(y, p),
        "brier": skm.brier_score_loss(y, p),
        "roc_auc_ovr": skm.roc_auc_score(y, p, multi_class="ovr", average="macro"),
    }
    for key, ref in refs.items():
        assert compute_metric(key, d) == pytest.approx(ref, rel=1e-10), key


def test_regression_metrics_equal_sklearn(credit: Credit) -> None:
    y = credit.columns["credit_amount"].astype(float)
    s = y * (1 + 0.2 * np.sin(np.arange(y.size))) + 100
    d = EvalData("regression", y, s)
    refs = {
        "mse": skm.mean_squared_error(y, s),
        "rmse": skm.root_mean_squared_error(y, s),
        "mae": skm.mean_absolute_error(y, s),
        "mape": skm.mean_absolute_percentage_error(y, s),
        "r2": skm.r2_score(y, s),
    }
    for key, ref in refs.items():
        assert compute_metric(key, d) == pytest.approx(ref, rel=1e-10), key
    w = np.random.default_rng(1).poisson(1.0, y.size)
    assert build_kernel("r2", d).evaluate(w[None, :])[0] == pytest.approx(skm.r2_score(y, s, sample_weight=w))


def _ranking_example() -> EvalData:
    # query A: scores rank items a1 > a2 > a3 > a4, relevant: a2 (rel 1), a4 (rel 2)
    # query B: b1 > b2 > b3, relevant: b1 (rel 3)
    # query C: c1 > c2, relevant: none (undefined for every metric; excluded from the means)
    groups = np.array(["A"] * 4 + ["B"] * 3 + ["C"] * 2)
    items = np.array(["a1", "a2", "a3", "a4", "b1", "b2", "b3", "a1", "c2"])
    rel = np.array([0, 1, 0, 2, 3, 0, 0, 0, 0], dtype=float)
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    return EvalData("ranking", rel, score, groups=groups, items=items, catalogue_size=10)


def test_ranking_metrics_match_hand_computation() -> None:
    d = _ranking_example()
    # precision@2: A: 1/2, B: 1/2 → 0.5 ; recall@2: A: 1/2, B: 1/1 → 0.75
    assert compute_metric("precision@2", d) == pytest.approx(0.5)
    assert compute_metric("recall@2", d) == pytest.approx(0.75)
    # AP: A: (1/2 + 2/4) / 2 = 0.5 ; B: 1 → MAP 0.75
    assert compute_metric("map", d) == pytest.approx(0.75)
    # MRR: A: 1/2, B: 1 → 0.75 ; hit rate@1: A: 0, B: 1 → 0.5
    assert compute_metric("mrr", d) == pytest.approx(0.75)
    assert compute_metric("hit_rate@1", d) == pytest.approx(0.5)
    # nDCG@3 (linear gain): A: DCG = 1/log2(3) ; IDCG = 2/log2(2) + 1/log2(3) ; B: 1
    dcg_a = 1 / np.log2(3)
    idcg_a = 2 + 1 / np.log2(3)
    assert compute_metric("ndcg@3", d) == pytest.approx((dcg_a / idcg_a + 1.0) / 2)
    # coverage@1: top-1 items a1, b1, a1 → 2 distinct of a catalogue of 10
    assert compute_metric("coverage@1", d) == pytest.approx(0.2)


def test_ndcg_equals_sklearn_when_every_query_has_relevant_items() -> None:
    rng = np.random.default_rng(3)
    n_q, n_i = 25, 12
    rel = rng.integers(0, 4, (n_q, n_i)).astype(float)
    rel[:, 0] = 3
    score = rng.random((n_q, n_i))
    d = EvalData("ranking", rel.ravel(), score.ravel(), groups=np.repeat(np.arange(n_q), n_i))
    for k in (3, 5, 12):
        assert compute_metric(f"ndcg@{k}", d) == pytest.approx(skm.ndcg_score(rel, score, k=k), rel=1e-10)


def test_text_metrics_equal_sacrebleu_and_rouge_score() -> None:
    import sacrebleu
    from rouge_score import rouge_scorer

    refs = ["the cat sat on the mat", "a quick brown fox jumps over the lazy dog", "hello world again"]
    hyps = ["the cat sat on a mat", "a fast brown fox jumped over a lazy dog", "hello there world"]
    d = EvalData("text", refs, hyps)
    assert compute_metric("bleu", d) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score / 100)
    sc = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    for kind in ("rouge1", "rougeL"):
        want = np.mean([sc.score(r, h)[kind].fmeasure for r, h in zip(refs, hyps)])
        assert compute_metric(kind, d) == pytest.approx(want)


def test_threshold_for_target_precision_and_recall(credit: Credit) -> None:
    d = EvalData("binary", credit.y, credit.score)
    t = threshold_for(d, precision=0.7)
    assert t["reachable"]
    pred = credit.score >= t["threshold"]
    assert skm.precision_score(credit.y, pred) == pytest.approx(t["precision"])
    assert t["precision"] >= 0.7
    # no lower threshold keeps the precision target with more recall
    prec, rec, _thr = skm.precision_recall_curve(credit.y, credit.score)
    ok = prec[:-1] >= 0.7
    assert t["recall"] == pytest.approx(rec[:-1][ok].max())
    r = threshold_for(d, recall=0.9)
    assert r["recall"] >= 0.9
    assert skm.recall_score(credit.y, credit.score >= r["threshold"]) == pytest.approx(r["recall"])
    assert not threshold_for(EvalData("binary", [0, 1, 0], [0.9, 0.1, 0.8]), precision=1.0)["reachable"]


def test_unknown_metric_and_bad_inputs_give_clear_errors() -> None:
    with pytest.raises(SpecError, match="`roc_aux` is not registered"):
        resolve_metric("roc_aux", "binary")
    with pytest.raises(SpecError, match="does not apply to a regression task"):
        resolve_metric("roc_auc", "regression")
    with pytest.raises(SpecError, match="takes no cut-off"):
        resolve_metric("roc_auc@5", "binary")
    with pytest.raises(DataError, match="binary labels must be 0/1"):
        EvalData("binary", np.array([0, 2, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(DataError, match=r"probabilities in \[0, 1\]"):
        EvalData("binary", np.array([0, 1]), np.array([0.1, 1.7]))
    with pytest.raises(DataError, match="3 scores for 2 labels"):
        EvalData("regression", np.array([1.0, 2.0]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(DataError, match="score at row 1"):
        EvalData("regression", np.array([1.0, 2.0]), np.array([1.0, np.nan]))
