"""Calibration of the simulator on the real KDD Cup 2012 track 2 sample.

The published sample (OpenML 1220, ``kdd2012_click_small``: 39,948 ad impressions of the
Tencent search-ads log, with the non-clicks down-sampled to about 5:1) has no timestamps and no
device, but it does fix:

* the click rate in each page cell ``(depth, position)``: position bias and page depth;
* the share of impressions by page depth;
* the share and click rate of anonymous users (``user_id = 0``);
* how often ids repeat: for 39,948 impressions, how many distinct ads, advertisers, queries,
  keywords and users appear and how large the most frequent one is.

:data:`KDD_MARGINALS` holds those figures as measured from the file (the test suite re-measures
them with :func:`measure_marginals` and compares). The simulator uses them in two ways:

* the intercepts of the click model (one per ``(depth, position)`` cell) and the anonymous-user
  offset are solved at start-up so that the simulated click rates equal the measured ones
  (:meth:`loopml.simulator.market.ClickModel.calibrate`);
* each catalogue's size and Zipf exponent were fitted with :func:`fit_zipf` so that the expected
  number of distinct ids in 39,948 draws and the expected count of the most popular id match the
  file; the fitted values are the defaults of :class:`~loopml.simulator.config.SimulatorConfig`.

Everything the file cannot tell (time of day, device, click delay, latent factor scales) is a
documented assumption in the config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loopml.errors import DataError

KDD_ROWS = 39_948

#: Marginals measured on ``kdd2012_click_small/Click_prediction_small.csv`` (2026-11-26).
KDD_MARGINALS: dict[str, Any] = {
    "rows": 39_948,
    "ctr": 0.16842,
    "ctr_by_cell": {"1,1": 0.17769, "2,1": 0.23987, "2,2": 0.13067, "3,1": 0.18287, "3,2": 0.09953, "3,3": 0.06902},
    "share_by_depth": {"1": 0.27669, "2": 0.48661, "3": 0.23671},
    "anonymous_share": 0.24114,
    "anonymous_ctr": 0.12011,
    "distinct": {"ad_id": 19_228, "advertiser_id": 6_064, "query_id": 30_748, "keyword_id": 19_803, "user_id": 30_113},
    "top_count": {"ad_id": 355, "advertiser_id": 3_363, "query_id": 571, "keyword_id": 570, "user_id": 6},
}

ID_COLUMNS = ("ad_id", "advertiser_id", "query_id", "keyword_id", "user_id")


@dataclass
class Marginals:
    """The calibration figures of an impression log (real or simulated)."""

    rows: int
    ctr: float
    ctr_by_cell: dict[str, float]
    share_by_depth: dict[str, float]
    anonymous_share: float
    anonymous_ctr: float
    distinct: dict[str, int]
    top_count: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return asdict(self)


def measure_marginals(source: str | Path | Any, *, label: str = "click") -> Marginals:
    """Measure the calibration marginals of an impression log.

    Parameters
    ----------
    source
        A CSV or Parquet file path, or a ``pyarrow.Table``, with columns ``depth``, ``position``,
        the label, and the id columns (``user_id`` 0 means anonymous).
    label
        The 0/1 click column.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"click": [1, 0, 0, 1], "depth": [1, 2, 2, 1], "position": [1, 1, 2, 1],
    ...               "ad_id": [5, 5, 6, 7], "advertiser_id": [1, 1, 1, 2], "query_id": [3, 3, 3, 3],
    ...               "keyword_id": [9, 9, 8, 9], "user_id": [0, 11, 12, 11]})
    >>> m = measure_marginals(t)
    >>> m.ctr_by_cell["1,1"], m.anonymous_share, m.distinct["ad_id"], m.top_count["user_id"]
    (1.0, 0.25, 3, 2)
    """
    import duckdb
    import pyarrow as pa

    con = duckdb.connect()
    if isinstance(source, pa.Table):
        con.register("src", source)
    else:
        p = Path(source)
        if not p.exists():
            raise DataError(f"{p}: impression log not found")
        reader = "read_parquet" if p.suffix == ".parquet" else "read_csv_auto"
        quoted = str(p).replace("'", "''")
        con.execute(f"CREATE VIEW src AS SELECT * FROM {reader}('{quoted}')")
    cols = {r[0] for r in con.execute("DESCRIBE src").fetchall()}
    missing = [c for c in ("depth", "position", label, *ID_COLUMNS) if c not in cols]
    if missing:
        raise DataError(f"{source}: impression log lacks column(s) {missing} needed for calibration")
    rows, ctr, anon_share = con.execute(
        f'SELECT count(*), avg("{label}"), avg((user_id = 0)::INT) FROM src'
    ).fetchone()  # type: ignore[misc]
    anon_ctr = con.execute(f'SELECT avg("{label}") FROM src WHERE user_id = 0').fetchone()[0]  # type: ignore[index]
    cells = con.execute(
        f'SELECT depth, position, avg("{label}") FROM src GROUP BY 1, 2 ORDER BY 1, 2'
    ).fetchall()
    depths = con.execute("SELECT depth, count(*) FROM src GROUP BY 1 ORDER BY 1").fetchall()
    distinct: dict[str, int] = {}
    top: dict[str, int] = {}
    for c in ID_COLUMNS:
        where = "WHERE user_id <> 0" if c == "user_id" else ""
        d, t = con.execute(
            f"SELECT count(*), max(n) FROM (SELECT {c}, count(*) AS n FROM src {where} GROUP BY 1)"
        ).fetchone()  # type: ignore[misc]
        distinct[c], top[c] = int(d), int(t or 0)
    return Marginals(
        rows=int(rows),
        ctr=float(ctr),
        ctr_by_cell={f"{int(d)},{int(p)}": float(r) for d, p, r in cells},
        share_by_depth={str(int(d)): n / rows for d, n in depths},
        anonymous_share=float(anon_share),
        anonymous_ctr=float(anon_ctr or 0.0),
        distinct=distinct,
        top_count=top,
    )


def expected_distinct(size: int, exponent: float, draws: float) -> tuple[float, float]:
    """Expected number of distinct ids and expected count of the top id in ``draws`` Zipf draws."""
    p = np.arange(1, size + 1, dtype=np.float64) ** (-exponent)
    p /= p.sum()
    distinct = float(np.sum(-np.expm1(draws * np.log1p(-np.minimum(p, 1 - 1e-15)))))
    return distinct, float(p[0] * draws)


def fit_zipf(
    draws: float, distinct: float, top_count: float, *, max_size: int = 5_000_000, exponents: np.ndarray | None = None
) -> tuple[int, float]:
    """Catalogue size and Zipf exponent reproducing ``distinct`` ids and a top id of ``top_count`` in ``draws``.

    For each exponent on a grid, the size matching the distinct count is found by bisection
    (distinct ids grow with the size); the exponent whose top count is closest wins.
    """
    grid = np.arange(0.0, 1.6, 0.02) if exponents is None else exponents
    best: tuple[float, int, float] | None = None
    for s in grid:
        lo, hi = np.log(max(distinct, 2.0)), np.log(max_size)
        if expected_distinct(int(np.exp(hi)), float(s), draws)[0] < distinct:
            continue
        for _ in range(28):
            mid = (lo + hi) / 2
            if expected_distinct(int(np.exp(mid)), float(s), draws)[0] < distinct:
                lo = mid
            else:
                hi = mid
        size = int(np.exp(hi))
        _, top = expected_distinct(size, float(s), draws)
        err = abs(np.log(max(top, 1e-9) / top_count))
        if best is None or err < best[0]:
            best = (err, size, float(s))
    if best is None:
        raise DataError(f"no Zipf catalogue up to {max_size:,} ids gives {distinct:,.0f} distinct ids in {draws:,.0f} draws")
    return best[1], best[2]


def compare(real: Marginals, simulated: Marginals) -> dict[str, float]:
    """Relative differences (simulated vs real) of every figure, for tests and the calibration report."""
    out: dict[str, float] = {"ctr": simulated.ctr / real.ctr - 1}
    for k, v in real.ctr_by_cell.items():
        out[f"ctr[{k}]"] = simulated.ctr_by_cell.get(k, 0.0) / v - 1
    for k, v in real.share_by_depth.items():
        out[f"share_depth[{k}]"] = simulated.share_by_depth.get(k, 0.0) / v - 1
    out["anonymous_share"] = simulated.anonymous_share / real.anonymous_share - 1
    out["anonymous_ctr"] = simulated.anonymous_ctr / real.anonymous_ctr - 1
    for k, v in real.distinct.items():
        out[f"distinct[{k}]"] = simulated.distinct.get(k, 0) / v - 1
    return out
