"""Column profiles in one vectorised pass per column (numpy / Arrow compute, columns in parallel).

Numbers and timestamps are sorted once: distinct values, their counts, top values and
quantiles come from the sorted copy; the equal-width histogram (for reports) and the decile
bins (for PSI) are ``bincount`` over bucket indices. Strings and booleans are dictionary
encoded once; counts per value are a ``bincount`` of the codes. When a reference profile is
given, its histogram edges, decile edges and categories are reused so that the two
distributions are directly comparable.

>>> import pyarrow as pa
>>> p = profile_table(pa.table({"x": [1.0, 2.0, None, 4.0], "c": ["a", "b", "a", "a"]}))
>>> p.columns["x"].missing, p.columns["c"].top[0]
(1, ['a', 3])
"""

from __future__ import annotations

import datetime as dt
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopml.validation.columnar import ColumnData, Columns, kind_of

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
PSI_QUANTILES = tuple(i / 10 for i in range(1, 10))
OTHER = "__other__"
NULL = "__null__"


@dataclass
class ColumnProfile:
    """Statistics of one column."""

    name: str
    type: str
    kind: str
    count: int = 0
    missing: int = 0
    missing_rate: float = 0.0
    distinct: int = 0
    min: Any = None
    max: Any = None
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] = field(default_factory=dict)
    top: list[list[Any]] = field(default_factory=list)  # [[value, count], ...]
    histogram: dict[str, list[Any]] = field(default_factory=dict)  # edges+counts or values+counts
    psi_bins: dict[str, Any] = field(default_factory=dict)  # edges+counts or values+counts


@dataclass
class Profile:
    """Profile of a table: row count and one :class:`ColumnProfile` per column."""

    rows: int
    columns: dict[str, ColumnProfile]

    def to_json(self) -> dict[str, Any]:
        """Plain data."""
        return {"rows": self.rows, "columns": {n: asdict(c) for n, c in self.columns.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        """Inverse of :meth:`to_json`."""
        return cls(rows=int(data["rows"]), columns={n: ColumnProfile(**c) for n, c in data["columns"].items()})


def _num(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, bool | int | str):
        return v
    if isinstance(v, np.integer):
        return int(v)
    return float(v)


def _label(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _as_value(v: float, cp: ColumnProfile) -> Any:
    """A float from the numeric view back as the column's own value type (for top values)."""
    if cp.kind == "temporal":
        moment = dt.datetime.fromtimestamp(float(v), dt.UTC).replace(tzinfo=None)
        return moment.date().isoformat() if cp.type.startswith("date") else moment.isoformat()
    if cp.type.startswith(("int", "uint")):
        return int(v)
    return float(v)


def profile_table(
    table: pa.Table,
    *,
    reference: Profile | None = None,
    bins: int = 20,
    top_k: int = 10,
    columns: Columns | None = None,
    threads: int | None = None,
) -> Profile:
    """Profile every column of ``table``.

    Parameters
    ----------
    table
        The data (Arrow).
    reference
        A reference profile whose histogram edges, decile edges and categories are reused.
    bins
        Number of equal-width histogram bins for numeric and temporal columns.
    top_k
        Number of most frequent values kept for every column.
    columns
        Converted columns to reuse (the validator shares them with the row-level checks).
    threads
        Columns profiled in parallel (numpy and Arrow release the GIL); default: CPU count.
    """
    owned = columns is None
    cols = columns or Columns(table)
    names = table.column_names

    def one(name: str) -> ColumnProfile:
        ref = reference.columns.get(name) if reference is not None else None
        prof = profile_column(cols.get(name), ref, bins=bins, top_k=top_k)
        if owned:  # nothing else reads the conversions: memory holds the columns being profiled, not all of them
            cols.forget(name)
        return prof

    workers = max(1, min(threads or os.cpu_count() or 1, len(names)))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            profiles = list(pool.map(one, names))
    else:
        profiles = [one(n) for n in names]
    return Profile(rows=table.num_rows, columns=dict(zip(names, profiles)))


def profile_column(col: ColumnData, ref: ColumnProfile | None, *, bins: int = 20, top_k: int = 10) -> ColumnProfile:
    """Profile of one converted column (reference bins reused when the kinds agree)."""
    cp = ColumnProfile(name=col.name, type=str(col.array.type), kind=col.kind)
    if ref is not None and ref.kind != cp.kind:
        ref = None
    n = col.n
    cp.missing = col.missing
    cp.count = n - cp.missing
    cp.missing_rate = cp.missing / n if n else 0.0
    if cp.kind == "other":
        return cp
    if cp.kind in ("numeric", "temporal"):
        _numeric(col, cp, ref, bins, top_k)
    else:
        _categorical(col, cp, ref, top_k)
    return cp


def _numeric(col: ColumnData, cp: ColumnProfile, ref: ColumnProfile | None, bins: int, top_k: int) -> None:
    s = col.sorted
    uniques, counts = col.uniques, col.counts
    cp.distinct = int(uniques.size)
    if s.size == 0:
        cp.histogram = {"edges": [], "counts": []}
        return
    cp.min, cp.max = _as_value(s[0], cp), _as_value(s[-1], cp)  # from the sorted copy: no extra pass
    # moments over the distinct values weighted by their counts: O(distinct), not O(rows)
    w = counts.astype(np.float64)
    # extreme (finite) values such as ±1e300 overflow the sums: scale by a power of two (exact) first
    top = float(np.max(np.abs(uniques)))
    scale = float(np.ldexp(1.0, np.frexp(top)[1])) if top > 1e150 else 1.0
    u = uniques / scale if scale != 1.0 else uniques
    mean_s = float(u @ w / s.size)
    cp.mean = mean_s * scale
    cp.std = float(np.sqrt(((u - mean_s) ** 2) @ w / (s.size - 1))) * scale if s.size > 1 else None
    qv = col.quantiles([*QUANTILES, *PSI_QUANTILES])
    cp.quantiles = {f"p{round(q * 100):02d}": v for q, v in zip(QUANTILES, qv[: len(QUANTILES)])}
    k = min(top_k, counts.size)
    top_idx = np.argpartition(-counts, k - 1)[:k] if counts.size > k else np.arange(counts.size)
    top_idx = top_idx[np.lexsort((uniques[top_idx], -counts[top_idx]))]
    cp.top = [[_as_value(uniques[i], cp), int(counts[i])] for i in top_idx]
    # equal-width histogram (reference edges when given)
    if ref is not None and ref.histogram.get("edges"):
        edges = np.asarray(ref.histogram["edges"], dtype=np.float64)
    else:
        lo, hi = float(s[0]), float(s[-1])
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    nb = edges.size - 1
    width = (edges[-1] - edges[0]) / nb or 1.0
    idx = np.clip(np.floor((uniques - edges[0]) / width), 0, nb - 1).astype(np.int64)
    cp.histogram = {"edges": edges.tolist(), "counts": np.bincount(idx, weights=counts, minlength=nb).astype(
        np.int64).tolist()}
    # decile bins for PSI (reference edges when given): bucket = number of edges below the value
    psi_edges = (ref.psi_bins.get("edges") if ref is not None else None)
    if psi_edges is None:
        psi_edges = sorted(set(qv[len(QUANTILES):]))
    pe = np.asarray(psi_edges, dtype=np.float64)
    b = np.searchsorted(pe, uniques, side="left")
    cp.psi_bins = {
        "edges": pe.tolist(),
        "counts": np.bincount(b, weights=counts, minlength=pe.size + 1).astype(np.int64).tolist(),
        "missing": cp.missing,
    }


def _categorical(col: ColumnData, cp: ColumnProfile, ref: ColumnProfile | None, top_k: int) -> None:
    # everything over the distinct values (an Arrow array) and their counts: O(distinct) vectorised work
    values: pa.Array = col.uniques
    counts: np.ndarray = col.counts
    cp.distinct = len(values)
    if cp.count == 0:
        return
    if cp.kind == "boolean":
        flags = np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)
        cp.mean = float(counts[flags].sum() / cp.count)
        labels_arr = pc.cast(values, pa.string())  # "true" / "false"
    else:
        mm = pc.min_max(values)
        cp.min, cp.max = _num(mm["min"].as_py()), _num(mm["max"].as_py())
        lengths = np.asarray(pc.utf8_length(values).to_numpy(zero_copy_only=False), dtype=np.float64)
        cp.mean = float(lengths @ counts / cp.count)  # mean length of the strings
        labels_arr = values
    order = np.argsort(-counts, kind="stable")[:top_k]
    top_values = values.take(pa.array(order, pa.int64())).to_pylist()
    top_labels = labels_arr.take(pa.array(order, pa.int64())).to_pylist()
    cp.top = [[_num(v), int(counts[i])] for v, i in zip(top_values, order)]
    ref_labels = [_label(v) for v, _ in ref.top] if ref is not None else []

    def count_of(labels: list[str]) -> list[int]:
        if not labels:
            return []
        pos = pc.index_in(pa.array(labels, pa.string()), value_set=labels_arr).to_numpy(zero_copy_only=False)
        return [0 if p is None or (isinstance(p, float) and math.isnan(p)) else int(counts[int(p)]) for p in pos]

    shown = ref_labels + [lab for lab in top_labels if lab not in ref_labels]
    shown_counts = count_of(shown)
    cp.histogram = {
        "values": [*shown, OTHER, NULL],
        "counts": [*shown_counts, cp.count - sum(shown_counts), cp.missing],
    }
    if ref is not None:
        ref_counts = shown_counts[: len(ref_labels)]
        cp.psi_bins = {
            "values": [*ref_labels, OTHER, NULL],
            "counts": [*ref_counts, cp.count - sum(ref_counts), cp.missing],
        }
    else:
        cp.psi_bins = cp.histogram


def psi(expected: list[int], actual: list[int], eps: float = 1e-4) -> float:
    """Population stability index between two binned count vectors (same bins)."""
    te, ta = sum(expected), sum(actual)
    if te == 0 or ta == 0:
        return 0.0
    total = 0.0
    for e, a in zip(expected, actual):
        pe = max(e / te, eps)
        pa_ = max(a / ta, eps)
        total += (pa_ - pe) * math.log(pa_ / pe)
    return total


__all__ = ["NULL", "OTHER", "ColumnProfile", "Profile", "kind_of", "profile_column", "profile_table", "psi"]
