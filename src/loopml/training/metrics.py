"""Validation metrics used to tune and select models, with bootstrap confidence intervals.

The evaluation stage owns the full report (slices, fairness, gates); these are the few
metrics selection needs, computed with scikit-learn and numpy; the bootstrap of ROC-AUC and
PR-AUC reads each resample from the evaluation's rank kernels (one sort per score vector).

>>> import numpy as np
>>> m = METRICS["roc_auc"]
>>> m.fn(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]), None)
1.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopml.errors import SpecError

MetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]


@dataclass(frozen=True)
class Metric:
    """A validation metric: its function, direction and the tasks it applies to."""

    name: str
    fn: MetricFn
    higher_is_better: bool
    tasks: frozenset[str]

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` beats value ``b``."""
        return a > b if self.higher_is_better else a < b

    def signed(self, v: float) -> float:
        """The value turned so that higher is better."""
        return v if self.higher_is_better else -v


def _roc_auc(y: np.ndarray, s: np.ndarray, g: np.ndarray | None) -> float:
    from sklearn.metrics import roc_auc_score

    if np.unique(y).size < 2:
        return float("nan")
    if s.ndim == 2:
        return float(roc_auc_score(y, s, multi_class="ovr", labels=list(range(s.shape[1]))))
    return float(roc_auc_score(y, s))


def _pr_auc(y: np.ndarray, s: np.ndarray, g: np.ndarray | None) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s)) if np.unique(y).size > 1 else float("nan")


def _log_loss(y: np.ndarray, s: np.ndarray, g: np.ndarray | None) -> float:
    eps = 1e-15
    y = y.astype(np.int64)
    if s.ndim == 2:
        p = np.clip(s[np.arange(len(y)), y], eps, 1)
        return float(-np.mean(np.log(p)))
    p = np.clip(s, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _accuracy(y: np.ndarray, s: np.ndarray, g: np.ndarray | None) -> float:
    pred = np.argmax(s, axis=1) if s.ndim == 2 else (s >= 0.5).astype(np.int64)
    return float(np.mean(pred == y))


def _rmse(y: np.ndarray, s: np.ndarray, g: np.ndarray | None) -> float:
    return float(np.sqrt(np.mean((y - s) ** 2)))


def _mae(y: np.ndarray, s: np.ndarray, g: np.ndarray | None) -> float:
    return float(np.mean(np.abs(y - s)))


def _r2(y: np.ndarray, s: np.ndarray, g: np.ndarray | None) -> float:
    ss = float(np.sum((y - y.mean()) ** 2))
    return float(1 - np.sum((y - s) ** 2) / ss) if ss > 0 else float("nan")


def ndcg_at_k(y: np.ndarray, s: np.ndarray, group: np.ndarray | None, k: int = 10) -> float:
    """Mean NDCG@k over groups (gain ``2^rel - 1``); groups without relevant rows are skipped."""
    if group is None:
        group = np.zeros(len(y), dtype=np.int64)
    order = np.lexsort((-s, group))
    g_sorted, y_by_score = group[order], y[order]
    ideal = np.lexsort((-y, group))
    y_ideal = y[ideal]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    ends = np.r_[starts[1:], len(y)]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    out = []
    for a, b in zip(starts, ends):
        n = min(k, b - a)
        idcg = float(((2.0 ** y_ideal[a : a + n] - 1) * disc[:n]).sum())
        if idcg <= 0:
            continue
        dcg = float(((2.0 ** y_by_score[a : a + n] - 1) * disc[:n]).sum())
        out.append(dcg / idcg)
    return float(np.mean(out)) if out else float("nan")


METRICS: dict[str, Metric] = {
    "roc_auc": Metric("roc_auc", _roc_auc, True, frozenset({"binary", "multiclass"})),
    "pr_auc": Metric("pr_auc", _pr_auc, True, frozenset({"binary"})),
    "log_loss": Metric("log_loss", _log_loss, False, frozenset({"binary", "multiclass"})),
    "accuracy": Metric("accuracy", _accuracy, True, frozenset({"binary", "multiclass"})),
    "rmse": Metric("rmse", _rmse, False, frozenset({"regression"})),
    "mae": Metric("mae", _mae, False, frozenset({"regression"})),
    "r2": Metric("r2", _r2, True, frozenset({"regression"})),
}
def _ndcg_metric(k: int) -> Metric:
    def fn(y: np.ndarray, s: np.ndarray, g: np.ndarray | None) -> float:
        return ndcg_at_k(y, s, g, k)

    return Metric(f"ndcg@{k}", fn, True, frozenset({"ranking"}))


for _k in (1, 3, 5, 10, 20, 50):
    METRICS[f"ndcg@{_k}"] = _ndcg_metric(_k)

DEFAULT_METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse", "ranking": "ndcg@10"}


def metric_for(task: str, name: str | None) -> Metric:
    """The selection metric: ``name`` if given (checked against the task), else the task default."""
    key = name or DEFAULT_METRIC[task]
    if key not in METRICS:
        raise SpecError(
            f"training.tuning.metric: unknown metric `{key}` "
            f"(known for {task}: {', '.join(sorted(k for k, m in METRICS.items() if task in m.tasks))})"
        )
    m = METRICS[key]
    if task not in m.tasks:
        raise SpecError(f"training.tuning.metric: `{key}` does not apply to task `{task}`")
    return m


def score_for_pruning(task: str, y: np.ndarray, s: np.ndarray, group: np.ndarray | None) -> float:
    """The task's default metric turned so that higher is better (used by early stopping)."""
    m = METRICS[DEFAULT_METRIC[task]]
    v = m.fn(np.asarray(y), s, group)
    return m.signed(v) if np.isfinite(v) else -np.inf


#: resamples × rows evaluated at once by the rank metrics' bootstrap (int64 counts: 8 bytes each)
RESAMPLE_CHUNK_ELEMENTS = 4_000_000


def _rank_orders(metric: Metric, y: np.ndarray, scores: list[np.ndarray], group: np.ndarray | None) -> list[Any] | None:
    """One sort per score vector for a binary ROC-AUC / PR-AUC bootstrap, or None when the loop must be used."""
    if metric.name not in ("roc_auc", "pr_auc") or group is not None:
        return None
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0 or not bool(np.isin(y, (0, 1)).all()):
        return None
    if any(np.ndim(s) != 1 or not bool(np.all(np.isfinite(s))) for s in scores):
        return None
    from loopml.evaluation.kernels import RankOrder

    return [RankOrder(np.asarray(s), y) for s in scores]


def _rank_resamples(metric: Metric, orders: list[Any], rng: np.random.Generator, n: int, resamples: int) -> list[np.ndarray]:
    """The metric of each score vector on the same resamples as the loop draws (``rng.integers(0, n, n)`` each).

    A resample is the count of each row: the examples stay in the order sorted once, and the metric
    is read from weighted cumulative counts (:mod:`loopml.evaluation.kernels`), the value scikit-learn
    gives for the resampled rows (ties count one half), without sorting them again.
    """
    from loopml.evaluation.kernels import average_precision_from_stats, roc_auc_from_stats

    finalize = roc_auc_from_stats if metric.name == "roc_auc" else average_precision_from_stats
    out: list[list[np.ndarray]] = [[] for _ in orders]
    per = max(1, RESAMPLE_CHUNK_ELEMENTS // max(n, 1))
    done = 0
    while done < resamples:
        k = min(per, resamples - done)
        W = np.empty((k, n), dtype=np.int64)
        for i in range(k):
            W[i] = np.bincount(rng.integers(0, n, n), minlength=n)
        for j, order in enumerate(orders):
            st = order.stats(W)
            v = np.asarray(finalize(st), dtype=np.float64)
            v[(st.positives == 0) | (st.negatives == 0)] = np.nan  # one class only: undefined, as `fn` says
            out[j].append(v)
        done += k
    return [np.concatenate(v) if v else np.zeros(0) for v in out]


def paired_bootstrap_gap(
    metric: Metric,
    y: np.ndarray,
    s_a: np.ndarray,
    s_b: np.ndarray,
    group: np.ndarray | None = None,
    *,
    resamples: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """Bootstrap distribution of ``signed(metric(a)) - signed(metric(b))`` on the same resampled rows.

    Positive values mean ``a`` is better. Groups are resampled whole for ranking.
    """
    rng = np.random.default_rng(seed)
    orders = _rank_orders(metric, y, [s_a, s_b], group)
    if orders is not None:  # ROC-AUC / PR-AUC: sorted once, each resample read from weighted counts
        va, vb = _rank_resamples(metric, orders, rng, len(y), max(resamples, 1))
        ok = np.isfinite(va) & np.isfinite(vb)
        return np.asarray(metric.signed(va[ok]) - metric.signed(vb[ok]), dtype=np.float64)
    out = []
    if group is not None:
        uniq, inv = np.unique(group, return_inverse=True)
        members = np.split(np.argsort(inv, kind="stable"), np.cumsum(np.bincount(inv))[:-1])
    for _ in range(max(resamples, 1)):
        if group is not None:
            pick = rng.integers(0, len(uniq), len(uniq))
            idx = np.concatenate([members[i] for i in pick])
            g = np.repeat(np.arange(len(pick)), [len(members[i]) for i in pick])
        else:
            idx = rng.integers(0, len(y), len(y))
            g = None
        a = metric.fn(y[idx], s_a[idx], g)
        b = metric.fn(y[idx], s_b[idx], g)
        if np.isfinite(a) and np.isfinite(b):
            out.append(metric.signed(a) - metric.signed(b))
    return np.asarray(out)


def bootstrap_ci(
    metric: Metric,
    y: np.ndarray,
    s: np.ndarray,
    group: np.ndarray | None = None,
    *,
    resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric`` (groups are resampled whole for ranking)."""
    if resamples <= 0 or len(y) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    vals = []
    if group is not None:
        uniq, inv = np.unique(group, return_inverse=True)
        members = np.split(np.argsort(inv, kind="stable"), np.cumsum(np.bincount(inv))[:-1])
        for _ in range(resamples):
            pick = rng.integers(0, len(uniq), len(uniq))
            idx = np.concatenate([members[i] for i in pick])
            new_g = np.repeat(np.arange(len(pick)), [len(members[i]) for i in pick])
            vals.append(metric.fn(y[idx], s[idx], new_g))
    elif (orders := _rank_orders(metric, y, [s], None)) is not None:
        vals = list(_rank_resamples(metric, orders, rng, len(y), resamples)[0])
    else:
        n = len(y)
        for _ in range(resamples):
            idx = rng.integers(0, n, n)
            vals.append(metric.fn(y[idx], s[idx], None))
    arr = np.asarray([v for v in vals if np.isfinite(v)])
    if arr.size == 0:
        return (float("nan"), float("nan"))
    a = (1 - confidence) / 2
    return (float(np.quantile(arr, a)), float(np.quantile(arr, 1 - a)))
