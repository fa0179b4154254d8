"""The metric registry: every offline metric, by name, as a weighted kernel.

A metric is registered with :func:`register_metric` and builds a kernel (see
:mod:`loopml.evaluation.kernels`) from an :class:`~loopml.evaluation.data.EvalData`. The same
kernel gives the point estimate (weights 1) and the bootstrap distribution (resample counts),
so each metric is written exactly once.

Names with a cut-off are written ``name@k`` (``ndcg@10``); :func:`resolve_metric` parses them.

Examples
--------
>>> import numpy as np
>>> from loopml.evaluation.data import EvalData
>>> d = EvalData("binary", np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
>>> round(compute_metric("roc_auc", d), 3)
0.75
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from loopml.errors import SpecError
from loopml.evaluation.bootstrap import point_estimates
from loopml.evaluation.data import EvalData
from loopml.evaluation.kernels import (
    CustomKernel,
    Kernel,
    RankKernel,
    SumKernel,
    average_precision_from_stats,
    roc_auc_from_stats,
    safe_div,
)

Builder = Callable[[EvalData, int | None], Kernel]


@dataclass(frozen=True)
class MetricDef:
    """A registered metric.

    Attributes
    ----------
    name
        Registry name (``roc_auc``, ``ndcg``...).
    tasks
        Tasks the metric applies to.
    higher_is_better
        Direction: used for "worst slice first", comparisons and gate wording.
    description
        One line for reports and ``--help``.
    build
        Makes the metric's kernel for one model's data and the cut-off ``k``.
    takes_k
        Whether the metric has a cut-off (``@k``).
    online_metric
        The online metric it usually stands for (a default for the report's pairing).
    """

    name: str
    tasks: tuple[str, ...]
    higher_is_better: bool
    description: str
    build: Builder
    takes_k: bool = False
    online_metric: str | None = None


METRICS: dict[str, MetricDef] = {}

DEFAULT_METRICS: dict[str, list[str]] = {
    "binary": ["roc_auc", "pr_auc", "log_loss", "brier", "ece", "precision", "recall", "f1", "accuracy"],
    "multiclass": ["accuracy", "macro_f1", "macro_precision", "macro_recall", "log_loss", "brier", "roc_auc_ovr"],
    "regression": ["rmse", "mse", "mae", "mape", "r2"],
    "ranking": ["ndcg@10", "map", "mrr", "precision@10", "recall@10", "hit_rate@10", "coverage@10"],
    "text": ["bleu", "rouge1", "rouge2", "rougeL"],
}


def register_metric(
    name: str,
    tasks: tuple[str, ...],
    *,
    higher_is_better: bool,
    description: str,
    takes_k: bool = False,
    online_metric: str | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering a kernel builder as metric ``name``."""

    def deco(fn: Builder) -> Builder:
        METRICS[name] = MetricDef(name, tasks, higher_is_better, description, fn, takes_k, online_metric)
        return fn

    return deco


_NAME_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:@(?P<k>\d+))?$")


def resolve_metric(key: str, task: str | None = None, k: int | None = None) -> tuple[MetricDef, int | None]:
    """The metric definition and cut-off for a name such as ``roc_auc`` or ``ndcg@10``.

    Raises
    ------
    SpecError
        Unknown name, a cut-off on a metric without one, or a metric that does not apply to ``task``.
    """
    m = _NAME_RE.match(key.strip())
    if m is not None and task is not None and (task, m.group("name")) in ALIASES:
        m = _NAME_RE.match(canonical_key(key, task))
    if m is None or m.group("name") not in METRICS:
        known = ", ".join(sorted(n + ("@k" if d.takes_k else "") for n, d in METRICS.items()))
        raise SpecError(f"evaluation metric `{key}` is not registered (known metrics: {known})")
    mdef = METRICS[m.group("name")]
    kk = int(m.group("k")) if m.group("k") else k
    if kk is not None and not mdef.takes_k:
        raise SpecError(f"evaluation metric `{key}`: `{mdef.name}` takes no cut-off @k")
    if kk is not None and kk < 1:
        raise SpecError(f"evaluation metric `{key}`: the cut-off k must be ≥ 1")
    if task is not None and task not in mdef.tasks:
        raise SpecError(
            f"evaluation metric `{key}` does not apply to a {task} task (it applies to: {', '.join(mdef.tasks)})"
        )
    return mdef, kk


def metric_key(name: str, k: int | None) -> str:
    """Canonical key of a metric with its cut-off (``ndcg@10``)."""
    return f"{name}@{k}" if k is not None else name


def build_kernel(key: str, data: EvalData) -> Kernel:
    """The kernel of metric ``key`` on ``data``."""
    mdef, k = resolve_metric(key, data.task)
    return mdef.build(data, k)


def compute_metric(key: str, data: EvalData) -> float:
    """The plain (unweighted) value of one metric."""
    return point_estimates({key: build_kernel(key, data)}, data.units)[key]


def _mean_kernel(values: np.ndarray, defined: np.ndarray | None = None) -> SumKernel:
    """Weighted mean of per-unit ``values`` over the units where ``defined``."""
    d = np.ones_like(values) if defined is None else defined
    return SumKernel(np.column_stack([d, values * d]), lambda s: safe_div(s[:, 1], s[:, 0]))


def _ratio(num_col: np.ndarray, den_col: np.ndarray) -> SumKernel:
    return SumKernel(np.column_stack([den_col, num_col]), lambda s: safe_div(s[:, 1], s[:, 0]))


_EPS = float(np.finfo(np.float64).eps)


# -- binary classification -------------------------------------------------------------------
@register_metric("roc_auc", ("binary",), higher_is_better=True, online_metric="CTR",
                 description="Area under the ROC curve (ties count one half).")
def _roc_auc(d: EvalData, k: int | None) -> Kernel:
    return RankKernel(d.ranking(), roc_auc_from_stats)


@register_metric("pr_auc", ("binary",), higher_is_better=True, online_metric="precision of actions taken",
                 description="Area under the precision-recall curve (average precision).")
def _pr_auc(d: EvalData, k: int | None) -> Kernel:
    return RankKernel(d.ranking(), average_precision_from_stats)


@register_metric("log_loss", ("binary", "multiclass"), higher_is_better=False,
                 description="Mean negative log-likelihood (probabilities clipped to [eps, 1-eps]).")
def _log_loss(d: EvalData, k: int | None) -> Kernel:
    if d.task == "binary":
        p = np.clip(d.score, _EPS, 1 - _EPS)
        ll = -(d.y * np.log(p) + (1 - d.y) * np.log(1 - p))
    else:
        p = np.clip(d.score[np.arange(d.n), d.y], _EPS, 1 - _EPS)
        ll = -np.log(p)
    return _mean_kernel(ll)


@register_metric("brier", ("binary", "multiclass"), higher_is_better=False,
                 description="Mean squared error of the predicted probabilities.")
def _brier(d: EvalData, k: int | None) -> Kernel:
    if d.task == "binary":
        return _mean_kernel((d.score - d.y) ** 2)
    onehot = np.eye(d.score.shape[1])[d.y]
    return _mean_kernel(((d.score - onehot) ** 2).sum(axis=1))


@register_metric("ece", ("binary",), higher_is_better=False,
                 description="Expected calibration error over equal-width probability bins.")
def _ece(d: EvalData, k: int | None) -> Kernel:
    nb = d.calibration_bins
    b = np.minimum((d.score * nb).astype(np.int64), nb - 1)
    rows = np.concatenate([np.arange(d.n), np.arange(d.n)])
    cols = np.concatenate([b, np.full(d.n, nb)])
    vals = np.concatenate([d.y - d.score, np.ones(d.n)])
    m = sp.csr_matrix((vals, (rows, cols)), shape=(d.n, nb + 1))
    return SumKernel(m, lambda s: safe_div(np.abs(s[:, :nb]).sum(axis=1), s[:, nb]))


@register_metric("accuracy", ("binary", "multiclass"), higher_is_better=True,
                 description="Fraction of rows whose predicted class is the label.")
def _accuracy(d: EvalData, k: int | None) -> Kernel:
    return _mean_kernel((d.pred == d.y).astype(np.float64))


@register_metric("precision", ("binary",), higher_is_better=True,
                 description="Of the rows predicted positive, the fraction that are positive.")
def _precision(d: EvalData, k: int | None) -> Kernel:
    return _ratio(d.pred * d.y, d.pred)


@register_metric("recall", ("binary",), higher_is_better=True,
                 description="Of the positive rows, the fraction predicted positive (true positive rate).")
def _recall(d: EvalData, k: int | None) -> Kernel:
    return _ratio(d.pred * d.y, d.y)


@register_metric("f1", ("binary",), higher_is_better=True,
                 description="Harmonic mean of precision and recall.")
def _f1(d: EvalData, k: int | None) -> Kernel:
    return SumKernel(np.column_stack([d.y, d.pred, d.pred * d.y]),
                     lambda s: safe_div(2 * s[:, 2], s[:, 0] + s[:, 1]))


@register_metric("specificity", ("binary",), higher_is_better=True,
                 description="Of the negative rows, the fraction predicted negative.")
def _specificity(d: EvalData, k: int | None) -> Kernel:
    return _ratio((1 - d.pred) * (1 - d.y), 1 - d.y)


# -- multiclass ------------------------------------------------------------------------------
def _class_columns(d: EvalData) -> tuple[np.ndarray, int]:
    """Per-class indicator columns [label == c | predicted == c | both] over the classes seen (scikit-learn's
    macro average: classes present in the labels or the predictions)."""
    labels = np.union1d(np.unique(d.y), np.unique(d.pred.astype(np.int64)))
    yc = (d.y[:, None] == labels[None, :]).astype(np.float64)
    pc = (d.pred.astype(np.int64)[:, None] == labels[None, :]).astype(np.float64)
    return np.hstack([yc, pc, yc * pc]), len(labels)


def _macro(which: str) -> Builder:
    def build(d: EvalData, k: int | None) -> Kernel:
        cols, m = _class_columns(d)

        def fin(s: np.ndarray) -> np.ndarray:
            sup, pp, tp = s[:, :m], s[:, m:2 * m], s[:, 2 * m:]
            with np.errstate(divide="ignore", invalid="ignore"):
                prec = np.where(pp > 0, tp / np.maximum(pp, 1e-300), 0.0)
                rec = np.where(sup > 0, tp / np.maximum(sup, 1e-300), 0.0)
                f1 = np.where(sup + pp > 0, 2 * tp / np.maximum(sup + pp, 1e-300), 0.0)
            return {"precision": prec, "recall": rec, "f1": f1}[which].mean(axis=1)  # type: ignore[no-any-return]

        return SumKernel(cols, fin)

    return build


register_metric("macro_precision", ("multiclass",), higher_is_better=True,
                description="Unweighted mean over classes of precision.")(_macro("precision"))
register_metric("macro_recall", ("multiclass",), higher_is_better=True,
                description="Unweighted mean over classes of recall.")(_macro("recall"))
register_metric("macro_f1", ("multiclass",), higher_is_better=True,
                description="Unweighted mean over classes of F1.")(_macro("f1"))


@register_metric("roc_auc_ovr", ("multiclass",), higher_is_better=True,
                 description="Unweighted mean over classes of one-vs-rest ROC-AUC.")
def _roc_auc_ovr(d: EvalData, k: int | None) -> Kernel:
    kernels = [RankKernel(d.ranking(c), roc_auc_from_stats) for c in range(d.score.shape[1])]

    def compute(w: np.ndarray) -> np.ndarray:
        return np.nanmean(np.vstack([kk.evaluate(w) for kk in kernels]), axis=0)  # type: ignore[no-any-return]

    return CustomKernel(compute)


# -- regression ------------------------------------------------------------------------------
@register_metric("mse", ("regression",), higher_is_better=False, description="Mean squared error.")
def _mse(d: EvalData, k: int | None) -> Kernel:
    return _mean_kernel((d.score - d.y) ** 2)


@register_metric("rmse", ("regression",), higher_is_better=False, description="Root mean squared error.")
def _rmse(d: EvalData, k: int | None) -> Kernel:
    e2 = (d.score - d.y) ** 2
    return SumKernel(np.column_stack([np.ones(d.n), e2]), lambda s: np.sqrt(safe_div(s[:, 1], s[:, 0])))


@register_metric("mae", ("regression",), higher_is_better=False, description="Mean absolute error.")
def _mae(d: EvalData, k: int | None) -> Kernel:
    return _mean_kernel(np.abs(d.score - d.y))


@register_metric("mape", ("regression",), higher_is_better=False,
                 description="Mean absolute percentage error (as a fraction; |y| floored at machine eps).")
def _mape(d: EvalData, k: int | None) -> Kernel:
    return _mean_kernel(np.abs(d.score - d.y) / np.maximum(np.abs(d.y), _EPS))


@register_metric("r2", ("regression",), higher_is_better=True, description="Coefficient of determination R².")
def _r2(d: EvalData, k: int | None) -> Kernel:
    yc = d.y - d.y.mean()  # centred: keeps the total sum of squares exact in float64
    cols = np.column_stack([np.ones(d.n), yc, yc * yc, (d.score - d.y) ** 2])

    def fin(s: np.ndarray) -> np.ndarray:
        sst = s[:, 2] - safe_div(s[:, 1] ** 2, s[:, 0])
        return 1.0 - safe_div(s[:, 3], sst)

    return SumKernel(cols, fin)


# -- ranking (bootstrap unit: the query) ------------------------------------------------------
def _ranking(metric: str) -> Builder:
    def build(d: EvalData, k: int | None) -> Kernel:
        from loopml.evaluation.ranking import per_query

        vals, defined = per_query(d, metric, k)
        return _mean_kernel(vals, defined)

    return build


register_metric("ndcg", ("ranking",), higher_is_better=True, takes_k=True, online_metric="watch time",
                description="Normalised discounted cumulative gain of the top k (linear gain).")(_ranking("ndcg"))
register_metric("map", ("ranking",), higher_is_better=True, takes_k=True, online_metric="engagement",
                description="Mean average precision (over the full list, or the top k).")(_ranking("map"))
register_metric("mrr", ("ranking",), higher_is_better=True, takes_k=True, online_metric="first-click position",
                description="Mean reciprocal rank of the first relevant item.")(_ranking("mrr"))
register_metric("hit_rate", ("ranking",), higher_is_better=True, takes_k=True, online_metric="sessions with a click",
                description="Fraction of queries with a relevant item in the top k.")(_ranking("hit_rate"))
register_metric("recall_at", ("ranking",), higher_is_better=True, takes_k=True,
                description="Relevant items in the top k over all relevant items (mean over queries).")(
    _ranking("recall"))
register_metric("precision_at", ("ranking",), higher_is_better=True, takes_k=True, online_metric="CTR",
                description="Relevant items in the top k divided by k (mean over queries).")(_ranking("precision"))


@register_metric("coverage", ("ranking",), higher_is_better=True, takes_k=True,
                 description="Fraction of the catalogue shown in at least one query's top k.")
def _coverage(d: EvalData, k: int | None) -> Kernel:
    from loopml.evaluation.ranking import coverage_incidence

    inc, catalogue = coverage_incidence(d, k)
    inc_t = inc.T.tocsr()

    def compute(w: np.ndarray) -> np.ndarray:
        shown = inc_t @ (np.asarray(w) > 0).T.astype(np.float64)  # items × resamples
        return (np.asarray(shown) > 0).sum(axis=0) / float(max(catalogue, 1))  # type: ignore[no-any-return]

    return CustomKernel(compute)


# -- text generation -------------------------------------------------------------------------
def _text(metric: str) -> Builder:
    def build(d: EvalData, k: int | None) -> Kernel:
        from loopml.evaluation import text

        return text.kernel(metric, d)

    return build


register_metric("bleu", ("text",), higher_is_better=True, online_metric="human acceptance rate",
                description="Corpus BLEU (sacrebleu, 13a tokenisation).")(_text("bleu"))
for _r in ("rouge1", "rouge2", "rougeL"):
    register_metric(_r, ("text",), higher_is_better=True,
                    description=f"Mean {_r} F-measure (rouge-score, stemmed).")(_text(_r))

# `precision@k` / `recall@k` read naturally for ranking; map them to the ranking metrics.
ALIASES: dict[tuple[str, str], str] = {("ranking", "precision"): "precision_at", ("ranking", "recall"): "recall_at"}


def canonical_key(key: str, task: str) -> str:
    """``precision@10`` on a ranking task is ``precision_at@10``; other names are unchanged."""
    m = _NAME_RE.match(key.strip())
    if m is None:
        return key
    name = ALIASES.get((task, m.group("name")), m.group("name"))
    return metric_key(name, int(m.group("k")) if m.group("k") else None)


__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "MetricDef",
    "build_kernel",
    "canonical_key",
    "compute_metric",
    "metric_key",
    "register_metric",
    "resolve_metric",
]
