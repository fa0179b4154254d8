"""Bootstrap resampling and intervals, paired comparisons, and slices."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from loopml.evaluation import evaluate_predictions
from loopml.evaluation.bootstrap import bootstrap_samples, percentile_interval, resample_counts
from loopml.evaluation.kernels import SumKernel
from loopml.evaluation.slices import MISSING, OTHER, define_slices
from loopml.spec.evaluation import Evaluation

from .conftest import Credit


def test_resample_counts() -> None:
    rng = np.random.default_rng(0)
    m = resample_counts(rng, 50, 1000, "multinomial")
    assert m.dtype == np.uint8 and m.shape == (50, 1000)
    assert (m.sum(axis=1) == 1000).all()
    p = resample_counts(rng, 20, 50_000, "poisson").astype(float)
    assert p.mean() == pytest.approx(1.0, abs=0.01)
    assert p.var() == pytest.approx(1.0, abs=0.02)
    assert (p == 0).mean() == pytest.approx(np.exp(-1), abs=0.005)
    assert resample_counts(rng, 2, 10).sum(axis=1).tolist() == [10, 10]  # auto: exact below the cut-over


@pytest.mark.parametrize("method", ["multinomial", "poisson"])
def test_bootstrap_standard_error_of_a_mean(method: str) -> None:
    x = np.random.default_rng(1).normal(0, 2.0, 4000)
    k = {"mean": SumKernel(np.column_stack([np.ones_like(x), x]), lambda s: s[:, 1] / s[:, 0])}
    s = bootstrap_samples(k, x.size, 400, seed=2, method=method)["mean"]  # type: ignore[arg-type]
    assert s.std() == pytest.approx(x.std() / np.sqrt(x.size), rel=0.15)
    iv = percentile_interval(float(x.mean()), s, 0.95)
    assert iv.lower < x.mean() < iv.upper
    assert iv.upper - iv.lower == pytest.approx(2 * 1.96 * x.std() / np.sqrt(x.size), rel=0.2)


def test_roc_auc_bootstrap_resample_equals_sklearn_on_the_resampled_rows(credit: Credit) -> None:
    from loopml.evaluation.data import EvalData
    from loopml.evaluation.metrics import build_kernel

    d = EvalData("binary", credit.y, credit.score)
    k = build_kernel("roc_auc", d)
    w = resample_counts(np.random.default_rng(3), 5, d.n, "multinomial")
    got = k.evaluate(w)
    for row, value in zip(w, got):
        idx = np.repeat(np.arange(d.n), row)
        assert value == pytest.approx(roc_auc_score(credit.y[idx], credit.score[idx]), rel=1e-12)


def test_paired_comparison(credit: Credit) -> None:
    ev = Evaluation(bootstrap_resamples=300)
    r = evaluate_predictions("binary", credit.y, credit.score, production_score=credit.weak_score,
                             baseline_score=credit.score.copy(), spec_eval=ev)
    prod = r.comparisons["production"]["roc_auc"]
    assert prod.difference.value == pytest.approx(
        roc_auc_score(credit.y, credit.score) - roc_auc_score(credit.y, credit.weak_score))
    assert prod.significant and prod.verdict == "better" and prod.p_value < 0.05
    assert prod.difference.lower > 0
    # the same rows resampled for both models: the paired interval is narrower than unpaired intervals would be
    unpaired = np.sqrt(r.metrics["roc_auc"].interval.std ** 2 + r.references["production"]["roc_auc"].interval.std ** 2)
    assert prod.difference.std < unpaired
    same = r.comparisons["baseline"]["log_loss"]
    assert same.difference.value == 0 and same.difference.lower == 0 and same.difference.upper == 0
    assert not same.significant and same.p_value == 1.0
    # lower is better for brier: a significantly lower loss is "better", a higher one "worse"
    brier = r.comparisons["production"]["brier"]
    assert brier.difference.value < 0 and brier.significant and brier.verdict == "better"
    flipped = evaluate_predictions("binary", credit.y, credit.weak_score, production_score=credit.score, spec_eval=ev)
    assert flipped.comparisons["production"]["brier"].verdict == "worse"
    assert flipped.comparisons["production"]["roc_auc"].verdict == "worse"


def test_define_slices_values_buckets_missing_and_other() -> None:
    v = np.array(["a", "b", "a", None, "c", "a", "b", "d"], dtype=object)
    sl = define_slices("col", v, max_values=2)
    assert [(s.label, s.n) for s in sl] == [("a", 3), ("b", 2), (OTHER, 2), (MISSING, 1)]
    x = np.arange(100, dtype=float)
    x[5] = np.nan
    b = define_slices("x", x, buckets=4)
    assert [s.kind for s in b][-1] == "missing"
    assert sum(s.n for s in b) == 100
    assert all(abs(s.n - 25) <= 1 for s in b if s.kind == "bucket")
    few = define_slices("stars", np.array([1, 2, 2, 3, 3, 3]))  # few distinct numbers: by value
    assert [(s.label, s.n) for s in few] == [("3", 3), ("2", 2), ("1", 1)]


def test_slices_worst_first_with_counts_and_worse_than_production(credit: Credit) -> None:
    cols = {"purpose": credit.columns["purpose"], "duration": credit.columns["duration"]}
    # production: the candidate's scores, except much better on one purpose (so the candidate is worse there)
    prod = credit.score.copy()
    worse_on = "radio/tv"
    m = cols["purpose"] == worse_on
    prod[m] = np.where(credit.y[m] == 1, 0.95, 0.05)
    ev = Evaluation(bootstrap_resamples=100, slices=list(cols), slice_max_values=5)
    r = evaluate_predictions("binary", credit.y, credit.score, slices=cols, production_score=prod, spec_eval=ev)
    for col in cols:
        assert sum(s.n for s in r.slices if s.column == col) == credit.y.size
    values = [s.primary.value for s in r.slices if np.isfinite(s.primary.value)]
    assert values == sorted(values)  # roc_auc: higher is better, worst first
    one = next(s for s in r.slices if s.column == "purpose" and s.label == "business")
    mask = cols["purpose"] == "business"
    assert one.metrics["roc_auc"] == pytest.approx(roc_auc_score(credit.y[mask], credit.score[mask]))
    assert one.n == int(mask.sum())
    worst = r.worse_slices
    assert worst and worst[0].column == "purpose" and worst[0].label == worse_on
    assert worst[0].vs_production is not None and worst[0].vs_production.difference.value < 0
    js = r.to_json()
    assert js["worse_than_production"][0]["slice"] == worse_on
    assert {s["slice"] for s in js["slices"] if s["column"] == "duration"} <= {
        s.label for s in define_slices("duration", cols["duration"])}


def test_slice_intervals_for_every_metric_on_request(credit: Credit) -> None:
    cols = {"foreign_worker": credit.columns["foreign_worker"]}
    ev = Evaluation(bootstrap_resamples=60, slice_intervals="all", metrics=[{"name": "roc_auc"}, {"name": "brier"}])
    r = evaluate_predictions("binary", credit.y, credit.score, slices=cols, spec_eval=ev)
    yes = next(s for s in r.slices if s.label == "yes")
    assert set(yes.intervals) == {"roc_auc", "brier"}
    assert yes.intervals["brier"].lower <= yes.metrics["brier"] <= yes.intervals["brier"].upper
    assert yes.intervals["roc_auc"].value == yes.primary.value
    default = evaluate_predictions("binary", credit.y, credit.score, slices=cols,
                                   spec_eval=Evaluation(bootstrap_resamples=20))
    assert all(s.intervals == {} for s in default.slices)


def test_same_seed_same_resamples_with_one_or_two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import loopml.evaluation.bootstrap as boot
    from loopml.evaluation.data import EvalData
    from loopml.evaluation.metrics import build_kernel

    rng = np.random.default_rng(0)
    n = 250_000
    y = rng.integers(0, 2, n)
    d = EvalData("binary", y, np.clip(0.2 * y + 0.8 * rng.random(n), 0, 1))
    kernels = {k: build_kernel(k, d) for k in ("roc_auc", "log_loss")}
    out = []
    for threads in (1, 2):
        monkeypatch.setattr(boot, "THREADS", threads)
        out.append(boot.bootstrap_samples(kernels, n, 70, seed=9))  # 70 resamples = 3 chunks of 32
    for k in kernels:
        assert np.array_equal(out[0][k], out[1][k])
