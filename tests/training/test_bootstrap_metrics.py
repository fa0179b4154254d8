"""Selection's bootstrap of ROC-AUC and PR-AUC: sorted once, the same values as scikit-learn on every resample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loopml.training.metrics import METRICS, bootstrap_ci, paired_bootstrap_gap

from .conftest import read_kdd


def _reference_values(name: str, y: np.ndarray, s: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """scikit-learn on each resampled set of rows, drawn as the bootstrap draws them."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        out.append(METRICS[name].fn(y[idx], s[idx], None))
    return np.asarray(out)


@pytest.fixture(scope="module")
def clicks(datasets: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = read_kdd(datasets, 20_000)
    y = np.asarray(t.column("click").to_numpy(), dtype=np.int64)
    depth = np.asarray(t.column("depth").to_numpy(), dtype=np.float64)  # few values: many ties
    position = np.asarray(t.column("position").to_numpy(), dtype=np.float64)
    s_a = -position + 0.1 * depth
    s_b = np.log1p(np.asarray(t.column("advertiser_id").to_numpy(), dtype=np.float64) % 97)
    assert 0 < y.mean() < 0.2
    return y, s_a, s_b


@pytest.mark.parametrize("name", ["roc_auc", "pr_auc"])
def test_interval_and_paired_gaps_equal_scikit_learn_on_the_same_resamples(
    clicks: tuple[np.ndarray, np.ndarray, np.ndarray], name: str
) -> None:
    y, s_a, s_b = clicks
    m = METRICS[name]
    ref_a = _reference_values(name, y, s_a, 60, seed=4)
    ref_b = _reference_values(name, y, s_b, 60, seed=4)
    gaps = paired_bootstrap_gap(m, y, s_a, s_b, resamples=60, seed=4)
    np.testing.assert_allclose(gaps, ref_a - ref_b, rtol=0, atol=1e-12)
    lo, hi = bootstrap_ci(m, y, s_a, resamples=60, seed=4)
    assert lo == pytest.approx(float(np.quantile(ref_a, 0.025)), abs=1e-12)
    assert hi == pytest.approx(float(np.quantile(ref_a, 0.975)), abs=1e-12)
    assert lo < m.fn(y, s_a, None) < hi


def test_resamples_with_one_class_are_left_out_as_before() -> None:
    y = np.array([0] * 9 + [1])  # most resamples of 10 rows miss the single positive
    s = np.linspace(0, 1, 10)
    gaps = paired_bootstrap_gap(METRICS["roc_auc"], y, s, s[::-1], resamples=50, seed=0)
    ref = _reference_values("roc_auc", y, s, 50, seed=0)
    ref_b = _reference_values("roc_auc", y, s[::-1], 50, seed=0)
    keep = np.isfinite(ref)
    assert 0 < keep.sum() < 50
    np.testing.assert_allclose(gaps, (ref - ref_b)[keep], atol=1e-12)
