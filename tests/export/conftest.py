"""Real data for the ONNX export tests: german_credit (binary, multiclass) and bike_sharing (regression)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from loopml.features import FeaturePipeline
from loopml.spec.features import Feature
from loopml.spec.task import Task
from tests.training.conftest import read_german

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "tools" / "onnx-node"

GERMAN_FEATURES: list[dict[str, Any]] = [
    {"column": "checking_status", "kind": "categorical", "transforms": [{"type": "onehot"}]},
    {"column": "duration", "kind": "numeric", "transforms": [{"type": "impute", "strategy": "median",
                                                              "add_indicator": True}]},
    {"column": "credit_history", "kind": "categorical"},
    {"column": "purpose", "kind": "categorical", "transforms": [{"type": "onehot", "min_frequency": 10}]},
    {"column": "credit_amount", "kind": "numeric", "transforms": [{"type": "log"}, {"type": "scale"}]},
    {"column": "savings_status", "kind": "categorical", "transforms": [{"type": "target_encode"}]},
    {"column": "age", "kind": "numeric", "transforms": [{"type": "clip", "lower_quantile": 0.05,
                                                         "upper_quantile": 0.95}]},
    {"column": "installment_commitment", "kind": "numeric"},
    {"column": "existing_credits", "kind": "numeric", "transforms": [{"type": "discretize", "n_bins": 3}]},
    {"column": "property_magnitude", "kind": "categorical", "transforms": [{"type": "embedding_ids"}]},
    {"column": "job", "kind": "categorical"},
]
BIKE_FEATURES: list[dict[str, Any]] = [
    {"column": "hr", "kind": "numeric"},
    {"column": "weekday", "kind": "categorical"},
    {"column": "workingday", "kind": "numeric"},
    {"column": "season", "kind": "categorical", "transforms": [{"type": "onehot"}]},
    {"column": "mnth", "kind": "numeric"},
    {"column": "yr", "kind": "numeric"},
    {"column": "weathersit", "kind": "categorical"},
    {"column": "temp", "kind": "numeric", "transforms": [{"type": "scale", "method": "zscore"}]},
    {"column": "hum", "kind": "numeric", "transforms": [{"type": "scale", "method": "robust"}]},
    {"column": "windspeed", "kind": "numeric", "transforms": [{"type": "clip"}]},
]


@dataclass
class Data:
    """A fitted pipeline with its train matrix and a held-out table of raw rows."""

    task: str
    pipeline: FeaturePipeline
    X: np.ndarray
    y: np.ndarray
    test: pa.Table


def _with_missing(t: pa.Table, column: str, every: int) -> pa.Table:
    vals = t.column(column).to_pylist()
    vals = [None if i % every == 3 else v for i, v in enumerate(vals)]
    return t.set_column(t.column_names.index(column), column, pa.array(vals, type=t.schema.field(column).type))


def fit_data(table: pa.Table, features: list[dict[str, Any]], target: str, task: str, y: np.ndarray,
             n_train: int) -> Data:
    """Fit the pipeline on the first ``n_train`` rows; the rest is the held-out table."""
    inputs = [Feature.model_validate(f) for f in features]
    p = FeaturePipeline(inputs, task=Task(type=task, target=target))  # type: ignore[arg-type]
    X = p.fit_transform(table.slice(0, n_train), y[:n_train])
    return Data(task, p, X, y[:n_train], table.slice(n_train))


@pytest.fixture(scope="session")
def german_table(datasets: Path) -> pa.Table:
    """german_credit with a 0/1 `label` (bad risk), some missing durations and purposes, an unseen purpose."""
    t = read_german(datasets)
    y = np.array([1 if v == "bad" else 0 for v in t.column("class").to_pylist()])
    t = t.append_column("label", pa.array(y))
    t = _with_missing(t, "duration", 17)
    t = _with_missing(t, "purpose", 23)
    purposes = t.column("purpose").to_pylist()
    purposes = [("never-seen" if i > 900 and i % 7 == 0 else v) for i, v in enumerate(purposes)]
    return t.set_column(t.column_names.index("purpose"), "purpose", pa.array(purposes, pa.string()))


@pytest.fixture(scope="session")
def german_binary(german_table: pa.Table) -> Data:
    """Binary: P(bad credit risk)."""
    y = np.asarray(german_table.column("label").to_numpy())
    return fit_data(german_table, GERMAN_FEATURES, "label", "binary", y, 700)


@pytest.fixture(scope="session")
def german_multiclass(german_table: pa.Table) -> Data:
    """Multiclass: the housing of the applicant (own, rent, for free)."""
    codes = {"own": 0, "rent": 1, "for free": 2}
    y = np.array([codes[v] for v in german_table.column("housing").to_pylist()])
    return fit_data(german_table, GERMAN_FEATURES, "housing", "multiclass", y, 700)


@pytest.fixture(scope="session")
def bike_regression(datasets: Path) -> Data:
    """Regression: hourly rentals (3,000 rows of bike_sharing)."""
    t = pacsv.read_csv(datasets / "bike_sharing" / "hour.csv").slice(0, 3000)
    y = np.asarray(t.column("cnt").to_numpy(), dtype=np.float64)
    return fit_data(t, BIKE_FEATURES, "cnt", "regression", y, 2200)


def node_scores(model_path: Path, inputs: dict[str, np.ndarray], tmp: Path) -> np.ndarray:
    """Score the feeds with the ONNX file in ONNX Runtime for Node.js (tools/onnx-node/score.js)."""
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        raise RuntimeError("ONNX Runtime for Node.js is not installed: run `make node` (npm ci in tools/onnx-node)")
    spec = {}
    for name, arr in inputs.items():
        flat = arr.reshape(-1)
        if arr.dtype == object:
            spec[name] = {"type": "string", "values": [str(v) for v in flat]}
        else:
            spec[name] = {"type": "float64", "values": [None if v != v else float(v) for v in flat]}
    feeds_path = tmp / "feeds.json"
    feeds_path.write_text(json.dumps(spec))
    proc = subprocess.run([node, str(NODE_DIR / "score.js"), str(model_path), str(feeds_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    return np.asarray(out["score"], dtype=np.float64).reshape(out["dims"])
