"""Curves and threshold tools for binary classifiers: ROC, PR, calibration, confusion, threshold choice.

Curves are computed exactly from one sort and then downsampled to at most ``max_points``
points (always keeping both ends), so a report on a million rows stays a few kilobytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loopml.evaluation.data import EvalData


def _downsample(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


def _cumulative(d: EvalData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, true positives, false positives) at each distinct score, descending."""
    r = d.ranking()
    ss = d.score[r.order]
    ends = r.tie_ends if r.tie_ends is not None else np.arange(d.n)
    tp = np.cumsum(r.sorted_label)[ends].astype(np.float64)
    fp = (ends + 1) - tp
    return ss[ends], tp, fp


def roc_curve(d: EvalData, max_points: int = 200) -> dict[str, list[float | None]]:
    """ROC curve points ``{"fpr", "tpr", "threshold"}`` starting at (0, 0)."""
    thr, tp, fp = _cumulative(d)
    p, n = tp[-1] if tp.size else 0.0, fp[-1] if fp.size else 0.0
    fpr = np.concatenate([[0.0], fp / n if n else fp * 0])
    tpr = np.concatenate([[0.0], tp / p if p else tp * 0])
    th = np.concatenate([[np.inf], thr])
    idx = _downsample(fpr.size, max_points)
    return {"fpr": _r(fpr[idx]), "tpr": _r(tpr[idx]), "threshold": _r(th[idx])}


def pr_curve(d: EvalData, max_points: int = 200) -> dict[str, list[float | None]]:
    """Precision-recall curve points ``{"recall", "precision", "threshold"}`` by decreasing threshold."""
    thr, tp, fp = _cumulative(d)
    p = tp[-1] if tp.size else 0.0
    prec = tp / np.maximum(tp + fp, 1)
    rec = tp / p if p else tp * 0
    idx = _downsample(prec.size, max_points)
    return {"recall": _r(rec[idx]), "precision": _r(prec[idx]), "threshold": _r(thr[idx])}


def calibration_curve(y: np.ndarray, score: np.ndarray, bins: int = 10) -> dict[str, list[float | None]]:
    """Mean predicted probability, observed positive rate and count per equal-width bin (non-empty bins)."""
    b = np.minimum((np.asarray(score) * bins).astype(np.int64), bins - 1)
    cnt = np.bincount(b, minlength=bins).astype(np.float64)
    sp = np.bincount(b, weights=score, minlength=bins)
    sy = np.bincount(b, weights=y, minlength=bins)
    keep = cnt > 0
    return {
        "mean_predicted": _r(sp[keep] / cnt[keep]),
        "fraction_positive": _r(sy[keep] / cnt[keep]),
        "count": cnt[keep].astype(int).tolist(),
        "bin_lower": _r(np.arange(bins)[keep] / bins),
    }


def confusion_matrix(d: EvalData) -> dict[str, Any]:
    """Confusion matrix (rows: true class, columns: predicted class) at the decision threshold."""
    if d.task == "binary":
        k = 2
        labels: list[Any] = [0, 1]
    else:
        k = int(d.score.shape[1])
        labels = list(range(k))
    m = np.bincount(d.y.astype(np.int64) * k + d.pred.astype(np.int64), minlength=k * k).reshape(k, k)
    out: dict[str, Any] = {"labels": labels, "matrix": m.tolist()}
    if d.task == "binary":
        out["threshold"] = d.threshold
    return out


def threshold_for(d: EvalData, *, precision: float | None = None, recall: float | None = None) -> dict[str, Any]:
    """The decision threshold reaching a target precision (most recall) or recall (most precision).

    Returns the threshold with the precision and recall it achieves, or ``{"reachable": False}``.
    """
    thr, tp, fp = _cumulative(d)
    p = tp[-1] if tp.size else 0.0
    prec = tp / np.maximum(tp + fp, 1)
    rec = tp / p if p else tp * 0
    if precision is not None:
        ok = np.flatnonzero(prec >= precision)
        target: dict[str, Any] = {"target": "precision", "value": precision}
        i = int(ok[np.argmax(rec[ok])]) if ok.size else -1  # most recall among thresholds meeting the precision
    elif recall is not None:
        ok = np.flatnonzero(rec >= recall)
        target = {"target": "recall", "value": recall}
        i = int(ok[np.argmax(prec[ok])]) if ok.size else -1
    else:
        raise ValueError("give a target precision or recall")
    if i < 0:
        return {**target, "reachable": False}
    return {**target, "reachable": True, "threshold": float(thr[i]), "precision": float(prec[i]),
            "recall": float(rec[i]), "predicted_positive": int(tp[i] + fp[i])}


def _r(a: np.ndarray) -> list[float | None]:
    """Rounded floats for JSON (non-finite values, such as the ROC curve's first threshold, become null)."""
    return [float(x) if np.isfinite(x) else None for x in np.round(a.astype(np.float64), 6)]
