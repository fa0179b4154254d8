"""Small samples of the real datasets, as matrices (model contract) and as Arrow tables (bundle path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest


@dataclass
class Matrix:
    """A task's feature matrix with labels and the extras models may need."""

    task: str
    X: np.ndarray
    y: np.ndarray
    categorical: list[int]
    feature_names: list[str]
    group: np.ndarray | None = None


def read_german(datasets: Path) -> pa.Table:
    """german_credit with the ARFF quotes stripped from string values."""
    t = pacsv.read_csv(datasets / "german_credit" / "credit-g.csv")
    cols = {}
    for name in t.column_names:
        col = t.column(name)
        if pa.types.is_string(col.type):
            col = pc.utf8_trim(col, characters="'")
        cols[name] = col
    return pa.table(cols)


def read_kdd(datasets: Path, n: int | None = None) -> pa.Table:
    """kdd2012_click_small (first ``n`` rows)."""
    t = pacsv.read_csv(datasets / "kdd2012_click_small" / "Click_prediction_small.csv")
    return t.slice(0, n) if n else t


def read_movielens(datasets: Path) -> pa.Table:
    """movielens_100k ratings: user_id, item_id, rating, timestamp."""
    opts = pacsv.ReadOptions(column_names=["user_id", "item_id", "rating", "timestamp"])
    return pacsv.read_csv(
        datasets / "movielens_100k" / "u.data", read_options=opts, parse_options=pacsv.ParseOptions(delimiter="\t")
    )


def _codes(col: pa.ChunkedArray) -> np.ndarray:
    _, inv = np.unique(np.asarray(col.to_numpy(zero_copy_only=False)).astype(str), return_inverse=True)
    return inv.astype(np.float64)


@pytest.fixture(scope="session")
def german(datasets: Path) -> pa.Table:
    """The german_credit table (1,000 rows)."""
    return read_german(datasets)


@pytest.fixture(scope="session")
def matrices(datasets: Path) -> dict[str, Matrix]:
    """One small real matrix per task type."""
    out: dict[str, Matrix] = {}
    g = read_german(datasets).slice(0, 300)
    names, cols, cats = [], [], []
    for i, name in enumerate(n for n in g.column_names if n != "class"):
        col = g.column(name)
        if pa.types.is_string(col.type):
            cols.append(_codes(col))
            cats.append(i)
        else:
            cols.append(np.asarray(col.to_numpy(), dtype=np.float64))
        names.append(name)
    y = (np.asarray(g.column("class").to_numpy(zero_copy_only=False)) == "bad").astype(np.int64)
    out["binary"] = Matrix("binary", np.column_stack(cols), y, cats, names)
    from sklearn.datasets import load_wine

    w = load_wine()
    out["multiclass"] = Matrix("multiclass", w.data.astype(np.float64), w.target.astype(np.int64), [],
                               [f"w{i}" for i in range(w.data.shape[1])])
    b = pacsv.read_csv(datasets / "bike_sharing" / "hour.csv").slice(0, 400)
    feats = ["season", "yr", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit", "temp", "hum", "windspeed"]
    Xb = np.column_stack([np.asarray(b.column(f).to_numpy(), dtype=np.float64) for f in feats])
    out["regression"] = Matrix("regression", Xb, np.asarray(b.column("cnt").to_numpy(), dtype=np.float64),
                               [feats.index("weathersit")], feats)
    m = read_movielens(datasets)
    users = np.asarray(m.column("user_id").to_numpy())
    keep = users <= 30
    items = np.asarray(m.column("item_id").to_numpy())[keep].astype(np.float64)
    pop = np.bincount(np.asarray(m.column("item_id").to_numpy()))[items.astype(np.int64)].astype(np.float64)
    ts = np.asarray(m.column("timestamp").to_numpy())[keep].astype(np.float64)
    Xr = np.column_stack([items, np.log1p(pop), (ts - ts.min()) / 1e6])
    out["ranking"] = Matrix("ranking", Xr, np.asarray(m.column("rating").to_numpy())[keep].astype(np.float64),
                            [0], ["item_id", "log_pop", "t"], group=users[keep].astype(np.int64))
    return out
