"""Quality on delayed labels, and confidence-based performance estimation (CBPE) before they arrive.

Labels arrive late (a click within a window, a loan that defaults months later). So
quality is measured twice: on the predictions whose feedback has arrived, per window and
per model version; and, for classifiers, *estimated* on every prediction of the window from
the model's own calibrated scores (CBPE, as NannyML does): if scores are calibrated, a
row with score 0.8 is a true positive with probability 0.8, so expected confusion
matrices (hence accuracy and ROC-AUC) follow without labels. For a multiclass model the logged
score is its confidence in the predicted class, calibrated to P(correct): its mean is the
expected accuracy. A drop in the estimate is
visible as soon as the inputs shift, days before the labels confirm it.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> p = rng.uniform(size=20000); y = (rng.uniform(size=20000) < p).astype(float)
>>> cal = Calibrator().fit(p, y)
>>> est = cbpe_estimate(cal.transform(p), p)
>>> abs(est["roc_auc"] - roc_auc(y, p)) < 0.02
True
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopml.monitoring.windows import floor_time

CLIP = 1e-7


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC by the rank-sum (Mann–Whitney) formula, ties counted half; NaN with one class only."""
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks of tied groups
    bounds = np.flatnonzero(np.diff(ss)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(s)]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """ROC-AUC, accuracy, log loss, Brier score, precision, recall and rates of a binary classifier."""
    y = (np.asarray(y, dtype=np.float64) > 0.5).astype(np.float64)
    s = np.clip(np.asarray(score, dtype=np.float64), CLIP, 1 - CLIP)
    pred = s >= threshold
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    return {
        "roc_auc": roc_auc(y, s),
        "accuracy": float(np.mean(pred == (y == 1))),
        "log_loss": float(-np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))),
        "brier": float(np.mean((s - y) ** 2)),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "positive_rate": float(y.mean()),
        "mean_score": float(s.mean()),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, R² and bias (mean of prediction minus truth)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    err = p - y
    var = float(np.var(y))
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(math.sqrt(np.mean(err**2))),
        "r2": 1.0 - float(np.mean(err**2)) / var if var > 0 else float("nan"),
        "bias": float(np.mean(err)),
    }


def multiclass_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy of predicted classes."""
    return {"accuracy": float(np.mean(np.asarray(y) == np.asarray(pred)))}


def task_metrics(task: str, y: np.ndarray, score: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """The metrics of a task type on labelled rows."""
    if task == "binary":
        return binary_metrics(y, score)
    if task == "multiclass":
        return multiclass_metrics(y, prediction)
    return regression_metrics(y, score)


class Calibrator:
    """Isotonic calibration of scores to probabilities (pool-adjacent-violators), kept as plain knots
    (``x_``, ``y_``) and applied by linear interpolation.

    Examples
    --------
    >>> cal = Calibrator().fit(np.array([0.1, 0.4, 0.6, 0.9]), np.array([0, 0, 1, 1]))
    >>> cal.transform(np.array([0.05, 0.95])).tolist()
    [0.0, 1.0]
    """

    def __init__(self, target: str = "positive") -> None:
        self.target = target  # what the probability is of: "positive" (binary) or "correct" (multiclass confidence)
        self.x_: np.ndarray | None = None
        self.y_: np.ndarray | None = None

    def fit(self, score: np.ndarray, y: np.ndarray) -> Calibrator:
        """Fit on reference scores and labels; returns self."""
        from sklearn.isotonic import IsotonicRegression  # compiled PAV: a million rows in well under a second

        s = np.asarray(score, dtype=np.float64)
        t = (np.asarray(y, dtype=np.float64) > 0.5).astype(np.float64)
        ok = np.isfinite(s)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s[ok], t[ok])
        self.x_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
        self.y_ = np.asarray(iso.y_thresholds_, dtype=np.float64)
        return self

    def transform(self, score: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``score``."""
        if self.x_ is None or self.y_ is None:
            raise RuntimeError("Calibrator.transform called before fit")
        return np.asarray(np.interp(np.asarray(score, dtype=np.float64), self.x_, self.y_), dtype=np.float64)

    def to_json(self) -> dict[str, list[float]]:
        """Plain data."""
        return {"target": self.target, "x": [] if self.x_ is None else self.x_.tolist(),
                "y": [] if self.y_ is None else self.y_.tolist()}


def cbpe_estimate(prob: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Expected accuracy, precision, recall and ROC-AUC of a binary classifier without labels.

    Parameters
    ----------
    prob : array
        Calibrated probability that each row is positive.
    score : array
        The model's raw scores (they order the rows and make the decisions at ``threshold``).
    """
    p = np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0)
    s = np.asarray(score, dtype=np.float64)
    if len(p) == 0:
        return {}
    pred = s >= threshold
    exp_tp = float(p[pred].sum())
    exp_fp = float((1 - p[pred]).sum())
    exp_fn = float(p[~pred].sum())
    exp_tn = float((1 - p[~pred]).sum())
    order = np.argsort(-s, kind="mergesort")
    ps = p[order]
    ss = s[order]
    tp = np.cumsum(ps)
    fp = np.cumsum(1 - ps)
    # evaluate only at the last row of each tied score group
    last = np.concatenate([np.flatnonzero(np.diff(ss)), [len(ss) - 1]])
    tp, fp = tp[last], fp[last]
    auc = float("nan")
    if tp[-1] > 0 and fp[-1] > 0:
        tpr = np.concatenate([[0.0], tp / tp[-1]])
        fpr = np.concatenate([[0.0], fp / fp[-1]])
        auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    n = len(p)
    return {
        "roc_auc": auc,
        "accuracy": (exp_tp + exp_tn) / n,
        "precision": exp_tp / (exp_tp + exp_fp) if exp_tp + exp_fp else float("nan"),
        "recall": exp_tp / (exp_tp + exp_fn) if exp_tp + exp_fn else float("nan"),
        "positive_rate": float(p.mean()),
    }


def cbpe_from_calibrated(calibrator: Calibrator, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """CBPE estimates of a calibrator's kind: the full binary set, or the expected accuracy of a multiclass
    model from its calibrated confidence (the probability that its predicted class is right)."""
    ok = ~np.isnan(score)
    prob = calibrator.transform(score[ok])
    if calibrator.target == "correct":
        return {"accuracy": float(prob.mean())} if len(prob) else {}
    return cbpe_estimate(prob, score[ok], threshold)


def _col(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _starts(table: pa.Table, width: dt.timedelta) -> np.ndarray:
    ts = pc.cast(table.column("ts"), pa.timestamp("us", tz="UTC")).to_numpy(zero_copy_only=False).astype("int64")
    w = int(width.total_seconds() * 1_000_000)
    return np.asarray((ts // w) * w, dtype=np.int64)


def _by_window_version(
    table: pa.Table, width: dt.timedelta, values: Callable[[np.ndarray], dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per (window, model version), oldest window first: ``values(mask)`` gives its figures."""
    starts = _starts(table, width)
    versions = np.asarray(table.column("model_version").to_pylist(), dtype=object)
    out: list[dict[str, Any]] = []
    for start in np.unique(starts):
        in_w = starts == start
        for version in sorted({str(v) for v in versions[in_w]}):
            mask = in_w & (versions == version)
            out.append(
                {
                    "window_start": dt.datetime.fromtimestamp(int(start) / 1e6, dt.UTC),
                    "model_version": version,
                    "rows": int(mask.sum()),
                    **values(mask),
                }
            )
    return out


def quality_by_window(labelled: pa.Table, task: str, width: dt.timedelta) -> list[dict[str, Any]]:
    """Metrics of labelled predictions per window and per model version (rows with ``window_start``,
    ``model_version``, ``rows`` and the task's metrics), oldest window first.
    """
    if labelled.num_rows == 0 or "label" not in labelled.column_names:
        return []
    y = _col(labelled, "label")
    score = _col(labelled, "score")
    pred = _col(labelled, "prediction") if "prediction" in labelled.column_names else score
    return _by_window_version(labelled, width, lambda m: task_metrics(task, y[m], score[m], pred[m]))


def cbpe_by_window(
    predictions: pa.Table, calibrator: Calibrator, width: dt.timedelta, threshold: float = 0.5
) -> list[dict[str, Any]]:
    """CBPE estimates per window and model version over all logged predictions (labelled or not)."""
    if predictions.num_rows == 0:
        return []
    score = _col(predictions, "score")
    return _by_window_version(predictions, width, lambda m: cbpe_from_calibrated(calibrator, score[m], threshold))


def window_start(ts: dt.datetime, width: dt.timedelta) -> dt.datetime:
    """Start of the window holding ``ts`` (re-exported for callers building windows)."""
    return floor_time(ts, width)
