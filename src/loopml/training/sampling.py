"""Sampling of the training split: stratified, reservoir, importance and negative down-sampling.

Each sampler returns the kept row indices and a weight per kept row (importance weights
carry into training); negative down-sampling also returns the rate at which negatives were
kept so that predictions can be re-calibrated afterwards (:func:`recalibrate`).

>>> import numpy as np
>>> recalibrate(np.array([0.5]), negative_rate=0.1).round(4).tolist()
[0.0909]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from loopml.errors import DataError, SpecError
from loopml.spec.training import Sampling


@dataclass
class Sample:
    """Rows kept from the training split, their weights and the re-calibration to apply."""

    rows: np.ndarray
    weights: np.ndarray | None = None
    negative_rate: float | None = None
    note: str = ""


def stratified_sample(y: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """At most ``max_rows`` rows keeping every class's share (each class keeps at least one row)."""
    n = len(y)
    if max_rows >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        k = max(1, round(max_rows * len(rows) / n))
        out.append(rng.choice(rows, size=min(k, len(rows)), replace=False))
    return np.sort(np.concatenate(out))


def reservoir_sample(batches: Iterable[pa.RecordBatch], k: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    """A uniform sample of ``k`` rows from a stream of record batches, in O(k) memory.

    Each row gets a uniform random key; the ``k`` smallest keys seen so far are kept
    (equivalent to reservoir sampling, vectorised per batch). Returns the sampled rows (in
    stream order) and their positions in the stream.
    """
    rng = np.random.default_rng(seed)
    keep: pa.Table | None = None
    keys = np.zeros(0)
    pos = np.zeros(0, dtype=np.int64)
    offset = 0
    for batch in batches:
        n = batch.num_rows
        bk = rng.random(n)
        cand = pa.Table.from_batches([batch])
        merged_keys = np.concatenate([keys, bk])
        merged_pos = np.concatenate([pos, np.arange(offset, offset + n)])
        merged = cand if keep is None else pa.concat_tables([keep, cand])
        offset += n
        if merged.num_rows > k:
            sel = np.argpartition(merged_keys, k - 1)[:k]
            sel.sort()
            merged = merged.take(pa.array(sel))
            merged_keys, merged_pos = merged_keys[sel], merged_pos[sel]
        keep, keys, pos = merged, merged_keys, merged_pos
    if keep is None:
        raise DataError("reservoir sampling got an empty stream (the training split has no rows)")
    order = np.argsort(pos, kind="stable")
    return keep.take(pa.array(order)), pos[order]


def importance_sample(importance: np.ndarray, max_rows: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Poisson sampling with inclusion probability ∝ importance; kept rows weigh ``1/π``.

    Without ``max_rows`` every row is kept and the importance values are the weights.
    """
    s = np.asarray(importance, dtype=np.float64)
    if np.any(~np.isfinite(s)) or np.any(s < 0):
        bad = s[~np.isfinite(s) | (s < 0)][0]
        raise DataError(f"importance weights must be finite and >= 0, found {bad}")
    if max_rows is None or max_rows >= len(s):
        return np.arange(len(s)), s
    total = s.sum()
    if total <= 0:
        raise DataError("importance weights are all zero")
    pi = np.minimum(1.0, max_rows * s / total)
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(rng.random(len(s)) < pi)
    return rows, 1.0 / pi[rows]


def negative_downsample(y: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Keep every positive and each negative with probability ``rate``."""
    rng = np.random.default_rng(seed)
    keep = (y == 1) | (rng.random(len(y)) < rate)
    return np.flatnonzero(keep)


def recalibrate(q: np.ndarray, negative_rate: float) -> np.ndarray:
    """Undo negative down-sampling: ``p = q / (q + (1 - q) / w)`` with ``w`` the negative keep rate."""
    q = np.asarray(q, dtype=np.float64)
    return q / (q + (1.0 - q) / negative_rate)


def sample_training_rows(
    sampling: Sampling, y: np.ndarray, task_type: str, seed: int, importance: np.ndarray | None = None
) -> Sample:
    """Apply ``spec.training.sampling`` to the encoded labels of the training split.

    Reservoir sampling over a stream is done by the caller with :func:`reservoir_sample`
    (it needs the stream, not the labels); here it falls back to a uniform sample.
    """
    n = len(y)
    t = sampling.type
    if t == "none":
        return Sample(np.arange(n))
    if t == "stratified":
        if sampling.max_rows is None:
            raise SpecError("training.sampling: stratified sampling needs `max_rows`")
        strata = y if task_type in ("binary", "multiclass") else np.searchsorted(np.quantile(y, [0.25, 0.5, 0.75]), y)
        rows = stratified_sample(strata, sampling.max_rows, seed)
        return Sample(rows, note=f"stratified sample of {len(rows)} of {n} rows")
    if t == "reservoir":
        if sampling.max_rows is None:
            raise SpecError("training.sampling: reservoir sampling needs `max_rows`")
        rows = np.sort(np.random.default_rng(seed).permutation(n)[: sampling.max_rows])
        return Sample(rows, note=f"uniform sample of {len(rows)} of {n} rows")
    if t == "importance":
        if importance is None:
            raise SpecError("training.sampling: importance sampling needs `weight_column`")
        rows, w = importance_sample(importance, sampling.max_rows, seed)
        return Sample(rows, w, note=f"importance sample of {len(rows)} of {n} rows, weights 1/π")
    # negative_downsample
    if task_type != "binary":
        raise SpecError(f"training.sampling: negative_downsample applies to binary tasks, not `{task_type}`")
    if sampling.negative_rate is None:
        raise SpecError("training.sampling: negative_downsample needs `negative_rate` (fraction of negatives kept)")
    rows = negative_downsample(y, sampling.negative_rate, seed)
    return Sample(
        rows,
        negative_rate=sampling.negative_rate,
        note=f"kept all positives and {sampling.negative_rate:g} of negatives ({len(rows)} of {n} rows)",
    )
