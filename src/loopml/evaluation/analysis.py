"""Analysis tools: feature importance (model-native and permutation) and the largest-loss examples.

The slices where the candidate is worse than production are part of the result
(:attr:`~loopml.evaluation.result.EvaluationResult.worse_slices`); the calibration curve is in
:mod:`loopml.evaluation.curves`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from loopml.evaluation.data import EvalData
from loopml.evaluation.metrics import compute_metric, resolve_metric

if TYPE_CHECKING:
    from loopml.features import FeaturePipeline

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


def _with_blocks(X: Any, blocks: list[tuple[int, int, Any]]) -> Any:
    """``X`` with the columns ``start:stop`` of each block replaced (dense: a copy; CSR: re-stacked)."""
    if not sp.issparse(X):
        out = np.array(X, copy=True)
        for a, b, block in blocks:
            out[:, a:b] = block.toarray() if sp.issparse(block) else block
        return out
    pieces, pos = [], 0
    for a, b, block in sorted(blocks, key=lambda t: t[0]):
        if a > pos:
            pieces.append(X[:, pos:a])
        pieces.append(sp.csr_matrix(block))
        pos = b
    if pos < X.shape[1]:
        pieces.append(X[:, pos:])
    return sp.hstack(pieces, format="csr", dtype=X.dtype)


def input_permutation_importance(
    score: Callable[[Any], np.ndarray],
    transform: FeaturePipeline,
    table: pa.Table,
    X: Any,
    data: EvalData,
    metric: str,
    *,
    repeats: int = 3,
    seed: int = 0,
    budget_s: float = 20.0,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """How much ``metric`` worsens when one *input column* is shuffled, largest first.

    One permutation per raw input column, however many model columns it feeds: a text column
    turned into thousands of TF-IDF terms (or 384 embedding dimensions) is one entry. Shuffling a
    raw column permutes the rows of the outputs of every transform chain reading only that column
    (the transforms are row-wise once fitted), so those blocks are permuted without re-running
    them; a chain that also reads other columns (a cross) is recomputed on the shuffled table.

    Repeats go round-robin (every column once, then every column again, ...) until ``repeats``
    or the time budget ``budget_s`` is reached, so a budget cut still measures every column
    once when it can, and says what it left out.

    Parameters
    ----------
    score
        Scores a transformed matrix (dense or CSR) as served.
    transform
        The fitted feature pipeline that produced ``X`` from ``table``.
    table
        The raw rows (aligned with ``data`` and ``X``).
    X
        ``transform`` applied to ``table``.
    data
        Labels and settings (the scores in it are not used).
    metric
        The metric to degrade (the primary metric).
    repeats, seed, budget_s
        Shuffles per column, the seed, and the time budget in seconds.
    progress
        Called with one short line as each shuffle starts.

    Returns
    -------
    (rows, info)
        rows: ``{"feature" (the input column), "importance" (mean drop), "lower", "upper" (min/max over
        repeats), "repeats", "model_columns", "unit"}``; info: ``{"by", "seconds", "budget_s",
        "stopped_early", "columns_measured", "columns_total", "shuffles", "note"}``.
    """
    mdef, _ = resolve_metric(metric, data.task)
    say = progress or (lambda msg: None)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    spans = transform.output_spans()
    columns = [c for c in transform.input_columns if c in table.column_names]
    n = table.num_rows

    def value(s: np.ndarray) -> float:
        return compute_metric(metric, data.with_score(s, "permuted"))

    base = value(score(X))
    drops: dict[str, list[float]] = {c: [] for c in columns}
    stopped = False
    done = 0
    for r in range(max(repeats, 1)):
        for j, c in enumerate(columns):
            elapsed = time.perf_counter() - t0
            if elapsed > budget_s:
                stopped = True
                break
            say(f"importance: input column {j + 1}/{len(columns)} `{c}`, shuffle {r + 1}/{max(repeats, 1)} "
                f"({elapsed:.0f}s of {budget_s:g}s)")
            perm = rng.permutation(n)
            blocks = []
            shuffled: pa.Table | None = None
            for i in transform.chains_reading(c):
                a, b = spans[i]
                ch = transform.chains[i]
                if ch.column == c and not ch.other_columns:
                    blocks.append((a, b, X[perm, a:b]))
                else:  # a cross reads other columns too: recompute it on the shuffled column
                    if shuffled is None:
                        k = table.column_names.index(c)
                        shuffled = table.set_column(k, c, table.column(c).take(pa.array(perm)))
                    blocks.append((a, b, transform.transform_chain(i, shuffled)))
            v = value(score(_with_blocks(X, blocks)))
            drops[c].append((base - v) if mdef.higher_is_better else (v - base))
            done += 1
        if stopped:
            break
    widths = {c: sum(spans[i][1] - spans[i][0] for i in transform.chains_reading(c)) for c in columns}
    out: list[dict[str, Any]] = []
    for c in columns:
        if not drops[c]:
            continue
        d = np.asarray(drops[c])
        out.append({"feature": c, "importance": float(np.nanmean(d)), "lower": float(np.nanmin(d)),
                    "upper": float(np.nanmax(d)), "repeats": len(d), "model_columns": widths[c],
                    "unit": f"{metric} drop"})
    out.sort(key=lambda r: -float(r["importance"]) if np.isfinite(float(r["importance"])) else np.inf)
    measured = sum(1 for c in columns if drops[c])
    seconds = time.perf_counter() - t0
    note = None
    if stopped:
        note = (f"permutation importance stopped at its {budget_s:g}s budget after {done} of "
                f"{len(columns) * max(repeats, 1)} shuffles: {measured} of {len(columns)} input columns measured"
                + ("" if measured == len(columns) else " (the rest are not listed)")
                + "; raise evaluation.importance_budget_s for more")
    info = {"by": "input column", "seconds": round(seconds, 3), "budget_s": budget_s, "stopped_early": stopped,
            "columns_measured": measured, "columns_total": len(columns), "shuffles": done, "rows": n,
            "note": note}
    return out, info


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
