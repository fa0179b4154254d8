"""Small samples of the real datasets, read with DuckDB, shared by the feature tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest


def _arrow(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    out = rel.arrow()
    return out.read_all() if hasattr(out, "read_all") else out


@pytest.fixture(scope="session")
def criteo(datasets: Path) -> pa.Table:
    """1,000 Criteo rows: 13 numeric columns and 26 hashed categoricals, many missing."""
    cols = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    path = datasets / "criteo_sample" / "criteo_train_head1000.txt"
    lines = [ln.split("\t") for ln in path.read_text().splitlines() if ln]
    data: dict[str, list[object]] = {c: [] for c in cols}
    for parts in lines:
        parts += [""] * (len(cols) - len(parts))
        for c, v in zip(cols, parts):
            data[c].append(None if v == "" else (float(v) if c.startswith("I") else (int(v) if c == "label" else v)))
    return pa.table({c: pa.array(v, type=pa.float64() if c.startswith("I") else
                                 (pa.int64() if c == "label" else pa.string())) for c, v in data.items()})


@pytest.fixture(scope="session")
def german(datasets: Path) -> pa.Table:
    """German credit, 1,000 rows, quotes stripped from the categorical values."""
    path = datasets / "german_credit" / "credit-g.csv"
    con = duckdb.connect()
    names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_csv_auto('{path}')").fetchall()]
    types = dict(con.execute(f"DESCRIBE SELECT * FROM read_csv_auto('{path}')").fetchall()[i][:2] for i in range(len(names)))
    sel = ", ".join(f"trim(\"{c}\", '''') AS \"{c}\"" if types[c] == "VARCHAR" else f'"{c}"' for c in names)
    return _arrow(con.sql(f"SELECT {sel} FROM read_csv_auto('{path}')"))


@pytest.fixture(scope="session")
def bike(datasets: Path) -> pa.Table:
    """Bike sharing hourly rows with a real timestamp column `ts`."""
    path = datasets / "bike_sharing" / "hour.csv"
    return _arrow(duckdb.sql(
        f"SELECT CAST(dteday AS TIMESTAMP) + to_hours(hr) AS ts, * FROM read_csv_auto('{path}') LIMIT 3000"))


@pytest.fixture(scope="session")
def tweets(datasets: Path) -> pa.Table:
    """400 tweets (Davidson et al.) with their 3-class label."""
    path = datasets / "davidson_hate_speech" / "labeled_data.csv"
    return _arrow(duckdb.sql(f"SELECT tweet, class FROM read_csv_auto('{path}') ORDER BY column0 LIMIT 400"))


@pytest.fixture(scope="session")
def ratings(datasets: Path) -> pa.Table:
    """MovieLens 100k ratings with a real timestamp column."""
    path = datasets / "movielens_100k" / "u.data"
    return _arrow(duckdb.sql(
        f"SELECT column0 AS user_id, column1 AS item_id, column2 AS rating, to_timestamp(column3) AS ts "
        f"FROM read_csv('{path}', sep='\t', header=false) LIMIT 5000"))


@pytest.fixture(scope="session")
def mnist(datasets: Path) -> pa.Table:
    """300 MNIST test digits as a list<uint8> column `image`, plus `label`."""
    d = datasets / "mnist_test"
    with gzip.open(d / "t10k-images-idx3-ubyte.gz") as f:
        imgs = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(d / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    n = 300
    return pa.table({"image": pa.array([r.tolist() for r in imgs[:n]], type=pa.list_(pa.uint8())),
                     "label": pa.array(labels[:n].astype(np.int64))})
