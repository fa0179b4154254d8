"""Analysis tools: feature importance (model-native and permutation) and the largest-loss examples.

The slices where the candidate is worse than production are part of the result
(:attr:`~loopml.evaluation.result.EvaluationResult.worse_slices`); the calibration curve is in
:mod:`loopml.evaluation.curves`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from loopml.evaluation.data import EvalData
from loopml.evaluation.metrics import compute_metric, resolve_metric

_EPS = float(np.finfo(np.float64).eps)


def native_importance(model: Any, feature_names: Sequence[str]) -> list[dict[str, Any]] | None:
    """The model's own importance (LightGBM gain, or ``feature_importances_``), largest first.

    Returns None when the model has no native importance (linear models on encoded inputs,
    neural networks, baselines): permutation importance covers every model.
    """
    booster = getattr(model, "booster_", None)
    unit = "gain"
    if booster is not None and hasattr(booster, "feature_importance"):
        values = np.asarray(booster.feature_importance(importance_type="gain"), dtype=np.float64)
    elif hasattr(model, "feature_importances_"):
        values = np.asarray(model.feature_importances_, dtype=np.float64)
        unit = "importance"
    else:
        return None
    if values.size != len(feature_names):
        return None
    total = values.sum()
    order = np.argsort(-values, kind="stable")
    return [
        {"feature": str(feature_names[i]), "importance": float(values[i]),
         "share": float(values[i] / total) if total > 0 else 0.0, "unit": unit}
        for i in order
    ]


def permutation_importance(
    score: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    data: EvalData,
    metric: str,
    feature_names: Sequence[str],
    *,
    repeats: int = 3,
    max_rows: int = 20000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """How much ``metric`` worsens when one feature's column is shuffled, largest first.

    Parameters
    ----------
    score
        Scores a transformed feature matrix the way the model serves (``Bundle`` model + calibration).
    X
        The transformed test matrix (rows aligned with ``data``).
    data
        Labels (and the candidate's scores; only the labels and settings are used).
    metric
        The metric to degrade (the primary metric).
    feature_names
        Names of the columns of ``X``.
    repeats, max_rows, seed
        Shuffles per feature, rows sampled, and the seed.

    Returns
    -------
    list of dict
        ``{"feature", "importance" (mean drop), "lower", "upper" (min/max over repeats), "unit"}``.
    """
    mdef, _ = resolve_metric(metric, data.task)
    rng = np.random.default_rng(seed)
    idx = np.arange(X.shape[0])
    if X.shape[0] > max_rows:
        idx = np.sort(rng.choice(X.shape[0], size=max_rows, replace=False))
    Xs = np.array(X[idx], copy=True)
    sub = data.subset(np.isin(np.arange(data.n), idx))

    def value(s: np.ndarray) -> float:
        return compute_metric(metric, sub.with_score(s, "permuted"))

    base = value(score(Xs))
    out: list[dict[str, Any]] = []
    for j, name in enumerate(feature_names):
        col = Xs[:, j].copy()
        drops = []
        for _ in range(max(repeats, 1)):
            Xs[:, j] = col[rng.permutation(col.size)]
            v = value(score(Xs))
            drops.append((base - v) if mdef.higher_is_better else (v - base))
        Xs[:, j] = col
        d = np.asarray(drops)
        out.append({"feature": str(name), "importance": float(np.nanmean(d)), "lower": float(np.nanmin(d)),
                    "upper": float(np.nanmax(d)), "unit": f"{metric} drop"})
    out.sort(key=lambda r: -float(r["importance"]) if np.isfinite(float(r["importance"])) else np.inf)
    return out


def example_losses(data: EvalData) -> np.ndarray:
    """Per-row loss: log loss (classification), squared error (regression), NaN otherwise."""
    if data.task == "binary":
        p = np.clip(data.score, _EPS, 1 - _EPS)
        return np.asarray(-(data.y * np.log(p) + (1 - data.y) * np.log(1 - p)))
    if data.task == "multiclass":
        return np.asarray(-np.log(np.clip(data.score[np.arange(data.n), data.y], _EPS, 1.0)))
    if data.task == "regression":
        return np.asarray((data.score - data.y) ** 2)
    return np.full(data.n, np.nan)


def largest_loss(data: EvalData, k: int) -> np.ndarray:
    """Indices of the ``k`` rows with the largest loss, largest first (empty for ranking/text)."""
    loss = example_losses(data)
    if k <= 0 or not np.isfinite(loss).any():
        return np.zeros(0, dtype=np.int64)
    k = min(k, loss.size)
    top = np.argpartition(-np.nan_to_num(loss, nan=-np.inf), k - 1)[:k]
    return top[np.argsort(-loss[top], kind="stable")]
