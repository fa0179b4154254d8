"""Slices: groups of rows defined by a column's values, or by quantile buckets of a numeric column.

A column with at most ``max_values`` distinct values (or any non-numeric column) is sliced by
value: the most frequent values each get a slice and the rest are pooled as ``(other)``.
A numeric column with more values is cut into ``buckets`` quantile buckets (or at the given
bin edges). Missing values (None, NaN) form their own ``(missing)`` slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from loopml.errors import DataError

MISSING = "(missing)"
OTHER = "(other)"


@dataclass
class SliceDef:
    """One slice: the column, a readable label and the boolean row mask."""

    column: str
    label: str
    kind: str  # "value", "bucket", "other", "missing"
    mask: np.ndarray

    @property
    def n(self) -> int:
        """Rows in the slice."""
        return int(self.mask.sum())


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _is_missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.asarray(np.isnan(values))
    if values.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in values], dtype=bool)
    return np.zeros(values.shape[0], dtype=bool)


def define_slices(
    column: str,
    values: Any,
    *,
    buckets: int = 4,
    max_values: int = 20,
    bins: list[float] | None = None,
) -> list[SliceDef]:
    """The slices of one column.

    Parameters
    ----------
    column
        Column name (for labels and errors).
    values
        One value per row.
    buckets
        Quantile buckets for a numeric column with many values.
    max_values
        Most frequent values kept as their own slice; also the distinct-value count above which a
        numeric column is bucketed.
    bins
        Explicit bucket edges for a numeric column (e.g. ages ``[25, 40, 60]``), overriding quantiles.

    Examples
    --------
    >>> [s.label for s in define_slices("age", np.array([20, 30, 40, 50, 60]), buckets=2, max_values=3)]
    ['[20, 40)', '[40, 60]']
    """
    v = np.asarray(values)
    if v.ndim != 1:
        raise DataError(f"slice column `{column}` must be one value per row, got shape {v.shape}")
    missing = _is_missing(v)
    out: list[SliceDef] = []
    numeric = v.dtype.kind in "iuf"
    if numeric:
        present = v[~missing].astype(np.float64)
        n_distinct = np.unique(present).size
    if numeric and (bins is not None or n_distinct > max_values):
        x = np.where(missing, np.nan, v.astype(np.float64))
        if bins is not None:
            edges = np.unique(np.asarray(sorted(bins), dtype=np.float64))
            lo, hi = (float(present.min()), float(present.max())) if present.size else (0.0, 0.0)
            edges = np.concatenate([[min(lo, edges[0])], edges[(edges > lo) & (edges <= hi)], [max(hi, edges[-1])]])
            edges = np.unique(edges)
        else:
            edges = np.unique(np.quantile(present, np.linspace(0, 1, buckets + 1))) if present.size else np.zeros(1)
        if edges.size < 2:
            edges = np.array([edges[0], edges[0]])
        for i in range(edges.size - 1):
            last = i == edges.size - 2
            lo_e, hi_e = edges[i], edges[i + 1]
            m = (x >= lo_e) & ((x <= hi_e) if last else (x < hi_e))
            label = f"[{_fmt(lo_e)}, {_fmt(hi_e)}{']' if last else ')'}"
            if m.any():
                out.append(SliceDef(column, label, "bucket", m))
    else:
        keys = v.astype(str) if v.dtype.kind in "OUSb" else v
        uniq, inverse = np.unique(keys, return_inverse=True)
        inverse = inverse.reshape(-1)
        counts = np.bincount(inverse[~missing], minlength=uniq.size)
        top = [i for i in np.argsort(-counts, kind="stable") if counts[i] > 0][:max_values]
        covered = np.zeros(v.shape[0], dtype=bool)
        for i in top:
            m = (inverse == i) & ~missing
            covered |= m
            out.append(SliceDef(column, str(uniq[i]), "value", m))
        rest = ~covered & ~missing
        if rest.any():
            out.append(SliceDef(column, OTHER, "other", rest))
    if missing.any():
        out.append(SliceDef(column, MISSING, "missing", missing))
    return out
