"""Column profiles computed with two vectorised DuckDB aggregate queries over an Arrow table.

Query 1 computes, for every column at once, the count, missing count, approximate distinct
count, min/max/mean/std, approximate quantiles and approximate top values. Query 2 bins every
column at once: an equal-width histogram (for reports) and decile bins (for PSI). When a
reference profile is given, its bin edges and categories are reused so that the two
distributions are directly comparable.

>>> import pyarrow as pa
>>> p = profile_table(pa.table({"x": [1.0, 2.0, None, 4.0], "c": ["a", "b", "a", "a"]}))
>>> p.columns["x"].missing, p.columns["c"].top[0]
(1, ['a', 3])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from loopml.data.labels import ident

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
PSI_QUANTILES = tuple(i / 10 for i in range(1, 10))
OTHER = "__other__"
NULL = "__null__"


def kind_of(t: pa.DataType) -> str:
    """Coarse kind of an Arrow type: numeric, boolean, temporal, string or other."""
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "temporal"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return "string"
    return "other"


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
    psi_bins: dict[str, list[Any]] = field(default_factory=dict)  # edges+counts or values+counts


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
    if isinstance(v, int | float | str | bool):
        return v
    return float(v)


def _expr_num(c: str, kind: str) -> str:
    """A DOUBLE expression of a numeric or temporal column (temporal as epoch seconds)."""
    return f"epoch({c})" if kind == "temporal" else f"CAST({c} AS DOUBLE)"


def profile_table(
    table: pa.Table,
    *,
    reference: Profile | None = None,
    bins: int = 20,
    top_k: int = 10,
    con: duckdb.DuckDBPyConnection | None = None,
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
    con
        DuckDB connection to use (a new in-memory one when omitted).
    """
    own = con is None
    con = con or duckdb.connect()
    try:
        con.register("__profile_t", table)
        cols = {f.name: ColumnProfile(name=f.name, type=str(f.type), kind=kind_of(f.type)) for f in table.schema}
        _pass_stats(con, table.num_rows, cols, top_k)
        _pass_bins(con, cols, reference, bins)
        con.unregister("__profile_t")
    finally:
        if own:
            con.close()
    return Profile(rows=table.num_rows, columns=cols)


def _pass_stats(con: duckdb.DuckDBPyConnection, n: int, cols: dict[str, ColumnProfile], top_k: int) -> None:
    exprs: list[str] = []
    keys: list[tuple[str, str]] = []

    def add(col: str, what: str, expr: str) -> None:
        keys.append((col, what))
        exprs.append(expr)

    for name, cp in cols.items():
        c = ident(name)
        add(name, "count", f"count({c})")
        if cp.kind == "other":
            continue
        add(name, "distinct", f"approx_count_distinct({c})")
        if cp.kind in ("numeric", "temporal"):
            x = _expr_num(c, cp.kind)
            add(name, "min", f"min({c})")
            add(name, "max", f"max({c})")
            add(name, "mean", f"avg({x})")
            add(name, "std", f"stddev_samp({x})")
            add(name, "quantiles", f"approx_quantile({x}, [{', '.join(map(str, QUANTILES))}])")
            add(name, "psi_edges", f"approx_quantile({x}, [{', '.join(map(str, PSI_QUANTILES))}])")
        elif cp.kind == "boolean":
            add(name, "mean", f"avg(CAST({c} AS DOUBLE))")
        else:
            add(name, "min", f"min({c})")
            add(name, "max", f"max({c})")
            add(name, "mean", f"avg(length({c}))")  # mean length for strings
        add(name, "top", f"approx_top_k({c}, {top_k})")
    row = con.execute(f"SELECT {', '.join(exprs)} FROM __profile_t").fetchall()[0]
    for (name, what), value in zip(keys, row):
        cp = cols[name]
        if what == "count":
            cp.count = int(value or 0)
            cp.missing = n - cp.count
            cp.missing_rate = cp.missing / n if n else 0.0
        elif what == "distinct":
            cp.distinct = int(value or 0)
        elif what in ("min", "max"):
            setattr(cp, what, _num(value))
        elif what in ("mean", "std"):
            setattr(cp, what, _num(value))
        elif what == "quantiles":
            cp.quantiles = {f"p{round(q * 100):02d}": _num(v) for q, v in zip(QUANTILES, value or [])}
        elif what == "psi_edges":
            edges = sorted({float(v) for v in (value or []) if v is not None})
            cp.psi_bins = {"edges": edges}
        elif what == "top":
            cp.top = [[_num(v), 0] for v in (value or []) if v is not None]
    for cp in cols.values():
        if cp.distinct and cp.count:
            cp.distinct = min(cp.distinct, cp.count)


def _cat_expr(c: str, values: list[Any], kind: str) -> str:
    lits = ", ".join(_lit(v, kind) for v in values)
    if not values:
        return f"CASE WHEN {c} IS NULL THEN '{NULL}' ELSE '{OTHER}' END"
    return (
        f"CASE WHEN {c} IS NULL THEN '{NULL}' WHEN CAST({c} AS VARCHAR) IN ({lits}) "
        f"THEN CAST({c} AS VARCHAR) ELSE '{OTHER}' END"
    )


def _lit(v: Any, kind: str) -> str:
    s = str(v).lower() if isinstance(v, bool) else str(v)
    return "'" + s.replace("'", "''") + "'"


def _pass_bins(
    con: duckdb.DuckDBPyConnection, cols: dict[str, ColumnProfile], reference: Profile | None, bins: int
) -> None:
    exprs: list[str] = []
    keys: list[tuple[str, str, list[Any]]] = []
    for name, cp in cols.items():
        c = ident(name)
        ref = reference.columns.get(name) if reference is not None else None
        if ref is not None and ref.kind != cp.kind:
            ref = None
        if cp.kind in ("numeric", "temporal"):
            x = _expr_num(c, cp.kind)
            if ref is not None and ref.histogram.get("edges"):
                edges = [float(e) for e in ref.histogram["edges"]]
            else:
                lo_v = _to_float(cp.min, cp.kind)
                hi_v = _to_float(cp.max, cp.kind)
                if lo_v is None or hi_v is None:
                    edges = []
                else:
                    width = (hi_v - lo_v) / bins if hi_v > lo_v else 1.0
                    edges = [lo_v + i * width for i in range(bins + 1)]
            if edges:
                lo_e, w = edges[0], (edges[-1] - edges[0]) / (len(edges) - 1) or 1.0
                nb = len(edges) - 1
                keys.append((name, "hist", edges))
                exprs.append(
                    f"histogram(CASE WHEN {x} IS NULL THEN NULL ELSE "
                    f"least(greatest(CAST(floor(({x} - {lo_e!r}) / {w!r}) AS BIGINT), 0), {nb - 1}) END)"
                )
            psi_edges = (ref.psi_bins.get("edges") if ref is not None else None) or cp.psi_bins.get("edges") or []
            psi_edges = [float(e) for e in psi_edges]
            keys.append((name, "psi", psi_edges))
            bucket = " + ".join(f"CAST({x} > {e!r} AS INTEGER)" for e in psi_edges) or "0"
            exprs.append(f"histogram(CASE WHEN {x} IS NULL THEN -1 ELSE {bucket} END)")
            if cp.top:
                keys.append((name, "topc", [v for v, _ in cp.top]))
                exprs.append(f"histogram({_cat_expr(c, [_label(v).replace('T', ' ') for v, _ in cp.top], cp.kind)})")
        elif cp.kind in ("string", "boolean"):
            ref_values = [v for v, _ in ref.top] if ref is not None else []
            values = ref_values + [v for v, _ in cp.top if v not in ref_values]
            keys.append((name, "cat", [ref_values, values]))
            exprs.append(f"histogram({_cat_expr(c, values, cp.kind)})")
    if not exprs:
        return
    row = con.execute(f"SELECT {', '.join(exprs)} FROM __profile_t").fetchall()[0]
    for (name, what, spec), value in zip(keys, row):
        cp = cols[name]
        counts: dict[Any, int] = dict(value or {})
        if what == "hist":
            cp.histogram = {"edges": spec, "counts": [int(counts.get(i, 0)) for i in range(len(spec) - 1)]}
        elif what == "psi":
            cp.psi_bins = {
                "edges": spec,
                "counts": [int(counts.get(i, 0)) for i in range(len(spec) + 1)],
                "missing": int(counts.get(-1, 0)),
            }
        elif what == "topc":
            cp.top = sorted(
                ([v, int(counts.get(_label(v).replace("T", " "), 0))] for v in spec), key=lambda vc: -vc[1]
            )
        else:
            ref_values, values = spec
            labels = [_label(v) for v in values]
            cp.histogram = {
                "values": [*labels, OTHER, NULL],
                "counts": [int(counts.get(v, 0)) for v in [*labels, OTHER, NULL]],
            }
            if ref_values:
                ref_labels = [_label(v) for v in ref_values]
                other = sum(int(k) for v, k in counts.items() if v not in ref_labels and v != NULL)
                cp.psi_bins = {
                    "values": [*ref_labels, OTHER, NULL],
                    "counts": [*(int(counts.get(v, 0)) for v in ref_labels), other, int(counts.get(NULL, 0))],
                }
            else:
                cp.psi_bins = cp.histogram
            cp.top = sorted(([v, int(counts.get(_label(v), 0))] for v, _ in cp.top), key=lambda vc: -vc[1])


def _label(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _to_float(v: Any, kind: str) -> float | None:
    if v is None:
        return None
    if kind == "temporal":
        import datetime as dt

        if isinstance(v, str):
            try:
                d = dt.datetime.fromisoformat(v)
            except ValueError:
                return None
        else:
            d = v
        if isinstance(d, dt.datetime):
            if d.tzinfo is None:
                d = d.replace(tzinfo=dt.UTC)
            return d.timestamp()
        if isinstance(d, dt.date):
            return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp()
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


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


__all__ = ["OTHER", "ColumnProfile", "Profile", "kind_of", "profile_table", "psi"]
