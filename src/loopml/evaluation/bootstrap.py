"""The vectorised bootstrap: resample weights in chunks and evaluate every kernel at once.

A resample is a vector of counts (how often each example was drawn). For up to
``MULTINOMIAL_MAX_N`` examples the counts are the exact multinomial bootstrap (indices drawn
with replacement, counted with ``bincount``). Above that, the Poisson bootstrap is used: each
count is an independent Poisson(1) draw (Hanley & MacGibbon 2006; Chamandy et al. 2012),
generated from random 16-bit integers through a lookup table, so a million examples × 200
resamples costs well under a second. Both give ``uint8`` count matrices of shape ``(B, n)``.

The engine evaluates all kernels on the same resamples, which is what makes paired
comparisons (candidate minus production on the same examples) valid.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from math import exp, factorial
from typing import Any, Literal

import numpy as np

from loopml.evaluation.kernels import CustomKernel, Kernel, RankKernel, RankOrder, SumKernel

BootstrapMethod = Literal["auto", "multinomial", "poisson"]
MULTINOMIAL_MAX_N = 200_000
CHUNK_ELEMENTS = 8_000_000  # resamples × examples evaluated at once (memory ≈ 100 bytes × this)
# Worker threads for bootstrap chunks (numpy releases the GIL). One by default: on a shared, busy
# machine a second thread measured no faster; LOOPML_EVAL_THREADS=2 opts in on an idle one.
THREADS = max(1, min(os.cpu_count() or 1, int(os.environ.get("LOOPML_EVAL_THREADS", "1"))))


def _poisson_table() -> np.ndarray:
    """Lookup table mapping a uniform 16-bit integer to a Poisson(1) count (quantised inverse CDF)."""
    cdf = np.cumsum([exp(-1.0) / factorial(k) for k in range(16)])
    u = (np.arange(65536, dtype=np.float64) + 0.5) / 65536.0
    return np.searchsorted(cdf, u).astype(np.uint8)


_POISSON_TABLE = _poisson_table()


def resample_counts(rng: np.random.Generator, rows: int, n: int, method: BootstrapMethod = "auto") -> np.ndarray:
    """``(rows, n)`` uint8 bootstrap counts.

    Parameters
    ----------
    rng
        Random generator (seeded by the caller for reproducible intervals).
    rows
        Number of resamples.
    n
        Number of examples (or clusters, e.g. queries for ranking metrics).
    method
        ``multinomial`` (exact), ``poisson`` (independent Poisson(1) counts) or ``auto``.

    Examples
    --------
    >>> c = resample_counts(np.random.default_rng(0), 3, 10, "multinomial")
    >>> c.shape, c.sum(axis=1).tolist()
    ((3, 10), [10, 10, 10])
    """
    if method == "auto":
        method = "multinomial" if n <= MULTINOMIAL_MAX_N else "poisson"
    if method == "poisson":
        # raw 64-bit outputs viewed as 16-bit integers: the cheapest uniform bits numpy offers
        words = rng.bit_generator.random_raw(-(-rows * n // 4))
        raw = np.asarray(words).view(np.uint16)[: rows * n].reshape(rows, n)
        return _POISSON_TABLE[raw]
    idx = rng.integers(0, n, size=(rows, n), dtype=np.int64)
    idx += (np.arange(rows, dtype=np.int64) * n)[:, None]
    counts = np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n)
    return np.minimum(counts, 255).astype(np.uint8)


@dataclass
class _Plan:
    """Kernels regrouped for evaluation in one base order."""

    base: np.ndarray | None  # base order (weights are generated in this order), None = identity
    inverse: np.ndarray | None
    dense_names: list[str]
    dense_slices: list[np.ndarray]  # per dense kernel: its columns in the shared matrix
    dense_columns: np.ndarray | None
    sparse: dict[str, SumKernel]
    rank_orders: list[tuple[RankOrder, np.ndarray | None]]  # ranking, its order within the base order
    rank_kernels: dict[str, tuple[int, RankKernel]]
    custom: dict[str, CustomKernel]
    sum_kernels: dict[str, SumKernel]


def _plan(kernels: Mapping[str, Kernel], n: int) -> _Plan:
    orders: list[RankOrder] = []
    for k in kernels.values():
        if isinstance(k, RankKernel) and all(k.ranking is not o for o in orders):
            orders.append(k.ranking)
    base = orders[0].order if orders else None
    inverse = None
    if base is not None:
        inverse = np.empty(n, dtype=np.int64)
        inverse[base] = np.arange(n)
    rank_orders: list[tuple[RankOrder, np.ndarray | None]] = []
    for o in orders:
        rank_orders.append((o, None if o is orders[0] else inverse[o.order]))  # type: ignore[index]
    rank_kernels = {
        name: (next(i for i, (o, _) in enumerate(rank_orders) if o is k.ranking), k)
        for name, k in kernels.items()
        if isinstance(k, RankKernel)
    }
    dense_names: list[str] = []
    dense_slices: list[np.ndarray] = []
    unique: dict[bytes, int] = {}  # identical columns (the ones column, y, ŷ·y...) are summed once
    columns: list[np.ndarray] = []
    sparse: dict[str, SumKernel] = {}
    sum_kernels: dict[str, SumKernel] = {}
    for name, k in kernels.items():
        if not isinstance(k, SumKernel):
            continue
        sum_kernels[name] = k
        cols = k.columns
        if isinstance(cols, np.ndarray):
            c2 = np.asarray(cols.reshape(n, -1) if cols.ndim == 1 else cols, dtype=np.float64)
            if c2.shape[0] != n:
                raise ValueError(f"kernel `{name}` has {c2.shape[0]} rows, expected {n}")
            idx = []
            for j in range(c2.shape[1]):
                col = np.ascontiguousarray(c2[:, j])
                key = col.tobytes()
                if key not in unique:
                    unique[key] = len(columns)
                    columns.append(col)
                idx.append(unique[key])
            dense_names.append(name)
            dense_slices.append(np.asarray(idx, dtype=np.int64))
        else:  # scipy sparse (n, k)
            sparse[name] = SumKernel(cols if base is None else cols[base], k.finalize)
    del unique
    dense = None
    if columns:
        dense = np.empty((n, len(columns)), dtype=np.float64)
        for j, col in enumerate(columns):
            dense[:, j] = col if base is None else col[base]
    custom = {name: k for name, k in kernels.items() if isinstance(k, CustomKernel)}
    return _Plan(base, inverse, dense_names, dense_slices, dense, sparse, rank_orders, rank_kernels, custom,
                 sum_kernels)


def _evaluate_chunk(plan: _Plan, w: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Metric values of every kernel for the weight rows ``w`` (in the plan's base order)."""
    out: dict[str, np.ndarray] = {}
    if plan.dense_columns is not None or plan.sparse:
        wf = w.astype(np.float64)
        if plan.dense_columns is not None:
            sums = wf @ plan.dense_columns
            for name, sl in zip(plan.dense_names, plan.dense_slices):
                out[name] = np.asarray(plan.sum_kernels[name].finalize(sums[:, sl]), dtype=np.float64)
        for name, k in plan.sparse.items():
            s = np.asarray((k.columns.T @ wf.T).T)
            out[name] = np.asarray(k.finalize(s), dtype=np.float64)
        del wf
    stats = []
    for ranking, rel in plan.rank_orders:
        ww = w if rel is None else np.take(w, rel, axis=1)
        stats.append(ranking.stats(ww, in_order=True))
    for name, (i, rk) in plan.rank_kernels.items():
        out[name] = np.asarray(rk.finalize(stats[i]), dtype=np.float64)
    if plan.custom:
        wo = w if plan.inverse is None else np.take(w, plan.inverse, axis=1)
        for name, ck in plan.custom.items():
            out[name] = ck.evaluate(wo)
    return {name: out[name] for name in names}


def _blas_one_thread() -> AbstractContextManager[Any]:
    """BLAS on one thread while evaluating: the matrix products here are skinny (few columns), and
    OpenBLAS threads that spin-wait on a busy machine make them up to 20× slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return nullcontext()
    limiter: AbstractContextManager[Any] = threadpool_limits(limits=1, user_api="blas")
    return limiter


def point_estimates(kernels: Mapping[str, Kernel], n: int) -> dict[str, float]:
    """Every kernel evaluated with weight 1 on each example (the plain metric values)."""
    if not kernels:
        return {}
    with _blas_one_thread():
        plan = _plan(kernels, n)
        vals = _evaluate_chunk(plan, np.ones((1, n), dtype=np.uint8), list(kernels))
    return {k: float(v[0]) for k, v in vals.items()}


def bootstrap_samples(
    kernels: Mapping[str, Kernel],
    n: int,
    resamples: int,
    *,
    seed: int = 0,
    method: BootstrapMethod = "auto",
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Bootstrap distribution of every kernel: ``{name: (resamples,) values}`` on shared resamples.

    Parameters
    ----------
    kernels
        Named metric kernels over the same ``n`` examples.
    n
        Number of examples (bootstrap units).
    resamples
        Number of bootstrap resamples.
    seed
        Seed of the resampling: the same seed gives the same intervals.
    method
        See :func:`resample_counts`.
    progress
        Called with the number of resamples done after each chunk.

    Examples
    --------
    >>> import numpy as np
    >>> from loopml.evaluation.kernels import SumKernel
    >>> x = np.arange(10.0)
    >>> mean = SumKernel(np.column_stack([np.ones(10), x]), lambda s: s[:, 1] / s[:, 0])
    >>> s = bootstrap_samples({"mean": mean}, 10, 50, seed=1)
    >>> s["mean"].shape
    (50,)
    """
    names = list(kernels)
    if resamples <= 0 or not kernels:
        return {k: np.empty(0) for k in names}
    with _blas_one_thread():
        return _bootstrap(_plan(kernels, n), names, n, resamples, seed, method, progress)


def evaluate_kernels(
    kernels: Mapping[str, Kernel],
    n: int,
    resamples: int,
    *,
    seed: int = 0,
    method: BootstrapMethod = "auto",
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Point estimates and bootstrap samples of every kernel, sharing one evaluation plan."""
    names = list(kernels)
    if not kernels:
        return {}, {}
    with _blas_one_thread():
        plan = _plan(kernels, n)
        point = {k: float(v[0]) for k, v in _evaluate_chunk(plan, np.ones((1, n), dtype=np.uint8), names).items()}
        if resamples <= 0:
            return point, {k: np.empty(0) for k in names}
        return point, _bootstrap(plan, names, n, resamples, seed, method, progress)


def _bootstrap(
    plan: _Plan,
    names: list[str],
    n: int,
    resamples: int,
    seed: int,
    method: BootstrapMethod,
    progress: Callable[[int], None] | None,
) -> dict[str, np.ndarray]:
    chunk = max(1, min(resamples, CHUNK_ELEMENTS // max(n, 1)))
    sizes = [min(chunk, resamples - start) for start in range(0, resamples, chunk)]
    # one random stream per chunk: the same seed gives the same resamples with any number of threads
    streams = np.random.SeedSequence(seed).spawn(len(sizes))

    def one(i: int) -> dict[str, np.ndarray]:
        w = resample_counts(np.random.default_rng(streams[i]), sizes[i], n, method)
        return _evaluate_chunk(plan, w, names)

    workers = THREADS if len(sizes) > 1 and n * chunk >= 1_000_000 else 1
    results: list[dict[str, np.ndarray]] = []
    done = 0
    if workers > 1:  # numpy releases the GIL in the heavy kernels (cumsum, take, matmul, random bits)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i, vals in enumerate(pool.map(one, range(len(sizes)))):
                results.append(vals)
                done += sizes[i]
                if progress is not None:
                    progress(done)
    else:
        for i in range(len(sizes)):
            results.append(one(i))
            done += sizes[i]
            if progress is not None:
                progress(done)
    return {k: np.concatenate([r[k] for r in results]) for k in names}


@dataclass
class Interval:
    """A point estimate with its bootstrap percentile interval."""

    value: float
    lower: float
    upper: float
    std: float
    resamples: int

    def to_json(self) -> dict[str, float | int | None]:
        """Plain JSON (NaN becomes null)."""
        return {
            "value": _num(self.value),
            "lower": _num(self.lower),
            "upper": _num(self.upper),
            "std": _num(self.std),
            "resamples": self.resamples,
        }


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def percentile_interval(value: float, samples: np.ndarray, confidence: float) -> Interval:
    """Two-sided percentile interval at ``confidence`` from bootstrap ``samples`` (NaNs ignored)."""
    s = samples[np.isfinite(samples)] if samples.size else samples
    if s.size == 0:
        return Interval(value, float("nan"), float("nan"), float("nan"), 0)
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(s, [a, 1.0 - a])
    return Interval(value, float(lo), float(hi), float(s.std(ddof=1)) if s.size > 1 else 0.0, int(s.size))


def one_sided_bound(samples: np.ndarray, confidence: float, side: Literal["lower", "upper"]) -> float:
    """The one-sided bootstrap bound at ``confidence``: the value exceeded with that probability."""
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return float("nan")
    q = 1.0 - confidence if side == "lower" else confidence
    return float(np.quantile(s, q))


__all__ = [
    "BootstrapMethod",
    "Interval",
    "bootstrap_samples",
    "evaluate_kernels",
    "one_sided_bound",
    "percentile_interval",
    "point_estimates",
    "resample_counts",
]
