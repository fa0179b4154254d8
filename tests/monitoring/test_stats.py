"""The hand-written statistics agree with scipy/scikit-learn, and CBPE recovers quality without labels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from loopml.monitoring.quality import Calibrator, binary_metrics, cbpe_estimate, regression_metrics, roc_auc
from loopml.monitoring.stats import chi2_sf, chi2_two_sample, js_distance, kolmogorov_sf, ks_pvalue, psi


@pytest.mark.parametrize("lam", [0.1, 0.3, 0.5, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0])
def test_kolmogorov_tail_matches_scipy(lam: float) -> None:
    assert kolmogorov_sf(lam) == pytest.approx(stats.kstwobign.sf(lam), abs=1e-9)


@pytest.mark.parametrize(("x", "dof"), [(0.5, 1), (3.84, 1), (10.0, 3), (30.0, 9), (1e3, 900), (1200.0, 999), (5.0, 40)])
def test_chi2_tail_matches_scipy(x: float, dof: int) -> None:
    assert chi2_sf(x, dof) == pytest.approx(stats.chi2.sf(x, dof), rel=1e-7, abs=1e-12)


def test_ks_pvalue_close_to_scipy_two_sample() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=3000), rng.normal(0.08, 1, size=2500)
    res = stats.ks_2samp(a, b, method="asymp")
    assert ks_pvalue(res.statistic, 3000, 2500) == pytest.approx(res.pvalue, rel=0.1)


def test_chi2_two_sample_matches_contingency_and_pools_rare_cells() -> None:
    r = np.array([500, 300, 200, 3])
    c = np.array([450, 330, 215, 1])
    stat, dof, v = chi2_two_sample(r, c)
    pooled = np.array([[500, 300, 203], [450, 330, 216]])
    ref_stat, _, ref_dof, _ = stats.chi2_contingency(pooled, correction=False)
    assert dof == ref_dof == 2
    assert stat == pytest.approx(ref_stat)
    assert v == pytest.approx(np.sqrt(ref_stat / pooled.sum()))


def test_psi_and_js_are_zero_for_equal_and_grow_with_shift() -> None:
    p = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(p, p) == pytest.approx(0.0)
    assert js_distance(p, p) == pytest.approx(0.0)
    small, big = np.array([0.3, 0.25, 0.25, 0.2]), np.array([0.6, 0.2, 0.1, 0.1])
    assert 0 < psi(p, small) < psi(p, big)
    assert js_distance(p, big) == pytest.approx(
        __import__("scipy.spatial.distance", fromlist=["jensenshannon"]).jensenshannon(p, big, base=2)
    )


def test_roc_auc_with_ties_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    s = np.round(rng.uniform(size=2000) + 0.3 * y, 1)  # many ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert np.isnan(roc_auc(np.ones(5), np.arange(5.0)))


def test_metrics_are_sane() -> None:
    m = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]))
    assert m["accuracy"] == 0.5 and m["precision"] == 0.5 and m["recall"] == 0.5
    r = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert r["mae"] == pytest.approx(1 / 3) and r["bias"] == pytest.approx(1 / 3)


def test_calibrator_is_monotone_and_fixes_a_miscalibrated_model() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(size=20000)
    y = (rng.uniform(size=20000) < p).astype(float)
    skewed = p**3  # an overconfident-low model: ranking intact, probabilities wrong
    cal = Calibrator().fit(skewed, y)
    out = cal.transform(np.sort(skewed))
    assert np.all(np.diff(out) >= -1e-12)
    assert np.mean(np.abs(cal.transform(skewed) - p)) < 0.03


def test_cbpe_sees_a_quality_drop_before_labels() -> None:
    """Calibrated on a reference period; after a shift toward hard (uncertain) rows the estimate drops
    with the real, later-measured quality."""
    rng = np.random.default_rng(2)

    def period(n: int, hard: float) -> tuple[np.ndarray, np.ndarray]:
        easy = rng.uniform(size=n) >= hard
        p = np.where(easy, rng.choice([0.03, 0.97], size=n), rng.uniform(0.35, 0.65, size=n))
        return p, (rng.uniform(size=n) < p).astype(float)

    p_ref, y_ref = period(20000, 0.2)
    cal = Calibrator().fit(p_ref, y_ref)
    p_cur, y_cur = period(20000, 0.7)
    est_ref = cbpe_estimate(cal.transform(p_ref), p_ref)
    est_cur = cbpe_estimate(cal.transform(p_cur), p_cur)
    real_cur = binary_metrics(y_cur, p_cur)
    assert est_cur["roc_auc"] < est_ref["roc_auc"] - 0.1
    assert est_cur["roc_auc"] == pytest.approx(real_cur["roc_auc"], abs=0.02)
    assert est_cur["accuracy"] == pytest.approx(real_cur["accuracy"], abs=0.02)
