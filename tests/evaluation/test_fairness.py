"""Fairness on german_credit (sex inside personal_status, age buckets, foreign_worker), checked by hand and
against fairlearn."""

from __future__ import annotations

import numpy as np
import pytest

from loopml.evaluation import evaluate_predictions
from loopml.evaluation.data import EvalData
from loopml.evaluation.fairness import fairness_for_column
from loopml.spec.evaluation import Evaluation, Fairness

from .conftest import Credit, sex_of

THRESHOLD = 0.3


def _hand(y: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> tuple[float, float, dict[str, float]]:
    sel, tpr, fpr = {}, [], []
    for g in np.unique(groups):
        m = groups == g
        sel[str(g)] = pred[m].mean()
        if (y[m] == 1).any():
            tpr.append(pred[m & (y == 1)].mean())
        if (y[m] == 0).any():
            fpr.append(pred[m & (y == 0)].mean())
    dpd = max(sel.values()) - min(sel.values())
    eod = max(max(tpr) - min(tpr), max(fpr) - min(fpr))
    return dpd, eod, sel


def _column(credit: Credit, column: str) -> tuple[np.ndarray, list[float] | None, np.ndarray]:
    """(values, bins, hand-made groups) of a sensitive column of german_credit."""
    values = sex_of(credit.columns["personal_status"]) if column == "sex" else credit.columns[column]
    bins = [25, 40, 60] if column == "age" else None
    groups = np.digitize(values, bins) if bins else values  # same buckets as [.., 25) [25, 40) [40, 60) [60, ..]
    return values, bins, groups


COLUMNS = ["sex", "personal_status", "age", "foreign_worker"]


@pytest.mark.parametrize("column", COLUMNS)
def test_fairness_matches_hand_computation(credit: Credit, column: str) -> None:
    values, bins, groups = _column(credit, column)
    d = EvalData("binary", credit.y, credit.score)
    f = fairness_for_column(d, column, values, threshold=THRESHOLD, resamples=100, confidence=0.95, bins=bins)
    pred = (credit.score >= THRESHOLD).astype(int)
    dpd, eod, sel = _hand(credit.y, pred, groups)
    assert f.demographic_parity_difference.value == pytest.approx(dpd)
    assert f.equalized_odds_difference.value == pytest.approx(eod)
    assert sum(g.n for g in f.groups) == credit.y.size
    assert sorted(round(g.selection_rate, 12) for g in f.groups) == sorted(round(v, 12) for v in sel.values())
    lo, hi = f.demographic_parity_difference.lower, f.demographic_parity_difference.upper
    assert 0 <= lo <= hi <= 1


@pytest.mark.parametrize("column", COLUMNS)
def test_fairness_matches_fairlearn(credit: Credit, column: str) -> None:
    fm = pytest.importorskip("fairlearn.metrics")  # a dev dependency; the hand check above always runs
    values, bins, groups = _column(credit, column)
    d = EvalData("binary", credit.y, credit.score)
    f = fairness_for_column(d, column, values, threshold=THRESHOLD, resamples=0, confidence=0.95, bins=bins)
    pred = (credit.score >= THRESHOLD).astype(int)
    assert f.demographic_parity_difference.value == pytest.approx(
        fm.demographic_parity_difference(credit.y, pred, sensitive_features=groups))
    assert f.equalized_odds_difference.value == pytest.approx(
        fm.equalized_odds_difference(credit.y, pred, sensitive_features=groups))


def test_group_labels_and_per_group_calibration(credit: Credit) -> None:
    d = EvalData("binary", credit.y, credit.score)
    sex = sex_of(credit.columns["personal_status"])
    f = fairness_for_column(d, "sex", sex, threshold=0.5, resamples=50, confidence=0.9)
    assert {g.group for g in f.groups} == {"male", "female"}  # ARFF quotes are gone
    for g in f.groups:
        m = sex == g.group
        assert g.n == int(m.sum())
        assert g.base_rate == pytest.approx(credit.y[m].mean())
        assert g.mean_score == pytest.approx(credit.score[m].mean())
        assert g.calibration_gap == pytest.approx(credit.score[m].mean() - credit.y[m].mean())
        cal = g.calibration
        assert sum(cal["count"]) == g.n
        # the calibration curve's bins average back to the group's mean score and positive rate
        assert np.dot(cal["mean_predicted"], cal["count"]) / g.n == pytest.approx(g.mean_score, abs=1e-5)
        assert np.dot(cal["fraction_positive"], cal["count"]) / g.n == pytest.approx(g.base_rate, abs=1e-5)
        assert 0 <= g.ece <= 1
    assert f.max_calibration_gap == pytest.approx(max(abs(g.calibration_gap) for g in f.groups))


def test_small_groups_are_listed_but_left_out_of_differences(credit: Credit) -> None:
    d = EvalData("binary", credit.y, credit.score)
    ps = credit.columns["personal_status"]
    sizes = {v: int((ps == v).sum()) for v in np.unique(ps)}
    cut = sorted(sizes.values())[1]  # drop the smallest group only
    f = fairness_for_column(d, "personal_status", ps, threshold=THRESHOLD, resamples=0, confidence=0.95,
                            min_group_size=cut)
    small = [k for k, v in sizes.items() if v < cut]
    assert f.excluded_groups == small and len(f.groups) == len(sizes)
    keep = ~np.isin(ps, small)
    dpd, _, _ = _hand(credit.y[keep], (credit.score[keep] >= THRESHOLD).astype(int), ps[keep])
    assert f.demographic_parity_difference.value == pytest.approx(dpd)


def test_fairness_through_evaluate_predictions(credit: Credit) -> None:
    sens = {"sex": sex_of(credit.columns["personal_status"]), "age": credit.columns["age"],
            "foreign_worker": credit.columns["foreign_worker"]}
    ev = Evaluation(bootstrap_resamples=100, bins={"age": [25, 40, 60]},
                    fairness=Fairness(sensitive_columns=list(sens), threshold=THRESHOLD))
    r = evaluate_predictions("binary", credit.y, credit.score, sensitive=sens, spec_eval=ev)
    assert set(r.fairness) == set(sens)
    age = credit.columns["age"]
    assert [g.group for g in r.fairness["age"].groups] == [
        f"[{age.min()}, 25)", "[25, 40)", "[40, 60)", f"[60, {age.max()}]"]
    js = r.to_json()["fairness"]["foreign_worker"]
    assert js["threshold"] == THRESHOLD and {g["group"] for g in js["groups"]} == {"yes", "no"}
    # a regression task has no fairness metrics, and says so
    rr = evaluate_predictions("regression", credit.columns["duration"].astype(float),
                              credit.columns["duration"].astype(float) + 1, sensitive=sens, spec_eval=ev)
    assert rr.fairness == {} and any("fairness metrics are defined for binary" in n for n in rr.notes)
