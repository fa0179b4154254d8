"""Fixtures for the evaluation tests: german_credit with a LightGBM model trained here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest


@dataclass
class Credit:
    """The german_credit test split with a real model's scores and the raw columns."""

    y: np.ndarray  # 1 = bad credit risk
    score: np.ndarray  # LightGBM P(bad)
    weak_score: np.ndarray  # a logistic-free weaker model: LightGBM on two features
    columns: dict[str, np.ndarray]  # raw test columns, ARFF quotes stripped


def load_german_credit(datasets: Path) -> dict[str, np.ndarray]:
    """All columns of credit-g.csv as numpy arrays, with the ARFF single quotes stripped from strings."""
    t = pacsv.read_csv(datasets / "german_credit" / "credit-g.csv")
    out: dict[str, np.ndarray] = {}
    for name in t.column_names:
        col = t.column(name)
        if col.type == "string" or str(col.type) in ("string", "large_string"):
            col = pc.utf8_trim(col, "'")
            out[name] = np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
        else:
            out[name] = np.asarray(col.to_numpy(zero_copy_only=False))
    return out


@pytest.fixture(scope="session")
def credit(datasets: Path) -> Credit:
    cols = load_german_credit(datasets)
    y = (cols["class"] == "bad").astype(np.int64)
    feats = [c for c in cols if c != "class"]
    X = np.column_stack([
        cols[c].astype(np.float64) if cols[c].dtype.kind in "iuf" else np.unique(cols[c], return_inverse=True)[1]
        for c in feats
    ])
    cat = [i for i, c in enumerate(feats) if cols[c].dtype.kind not in "iuf"]
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    tr, te = idx[:600], idx[600:]
    params = {"objective": "binary", "verbose": -1, "num_leaves": 15, "learning_rate": 0.05, "seed": 0,
              "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(X[tr], y[tr], categorical_feature=cat), num_boost_round=150)
    two = [feats.index("duration"), feats.index("credit_amount")]
    weak = lgb.train(params, lgb.Dataset(X[tr][:, two], y[tr]), num_boost_round=30)
    return Credit(
        y=y[te],
        score=np.asarray(booster.predict(X[te]), dtype=np.float64),
        weak_score=np.asarray(weak.predict(X[te][:, two]), dtype=np.float64),
        columns={c: v[te] for c, v in cols.items()},
    )


def sex_of(personal_status: np.ndarray) -> np.ndarray:
    """`male single` → `male`: sex is the first word of german_credit's personal_status."""
    return np.array([str(v).split(" ")[0] for v in personal_status], dtype=object)
