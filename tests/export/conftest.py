"""Real data for the ONNX export tests: german_credit (binary, multiclass) and bike_sharing (regression)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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
from tests.webui.conftest import (
    browser as browser,  # the same headless Chromium (Selenium) as the web UI tests
)

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "tools" / "onnx-node"
WEB_DIR = REPO / "tools" / "onnx-web"

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


def _feeds_json(inputs: dict[str, np.ndarray]) -> str:
    """The feeds as tools/onnx-node/score.js and tools/onnx-web/score.js read them."""
    spec = {}
    for name, arr in inputs.items():
        flat = arr.reshape(-1)
        if arr.dtype == object:
            spec[name] = {"type": "string", "values": [str(v) for v in flat]}
        else:
            spec[name] = {"type": "float64", "values": [None if v != v else float(v) for v in flat]}
    return json.dumps(spec)


def node_scores(model_path: Path, inputs: dict[str, np.ndarray], tmp: Path) -> np.ndarray:
    """Score the feeds with the ONNX file in ONNX Runtime for Node.js (tools/onnx-node/score.js)."""
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        raise RuntimeError("ONNX Runtime for Node.js is not installed: run `make node` (npm ci in tools/onnx-node)")
    feeds_path = tmp / "feeds.json"
    feeds_path.write_text(_feeds_json(inputs))
    proc = subprocess.run([node, str(NODE_DIR / "score.js"), str(model_path), str(feeds_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    return np.asarray(out["score"], dtype=np.float64).reshape(out["dims"])


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def browser_scores(driver: Any, model_path: Path, inputs: dict[str, np.ndarray], tmp: Path) -> np.ndarray:
    """Score the feeds with the ONNX file in ONNX Runtime Web (WebAssembly) in a headless Chromium page
    (tools/onnx-web/score.html), everything served by a local HTTP server on 127.0.0.1."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if not (WEB_DIR / "node_modules" / "onnxruntime-web" / "dist").is_dir():
        raise RuntimeError("ONNX Runtime Web is not installed: run `make node` (npm ci in tools/onnx-web)")
    root = tmp / "web"
    root.mkdir(exist_ok=True)
    for name in ("score.html", "score.js", "node_modules"):
        if not (root / name).exists():
            (root / name).symlink_to(WEB_DIR / name)
    shutil.copyfile(model_path, root / "model.onnx")
    (root / "feeds.json").write_text(_feeds_json(inputs))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietFiles, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/score.html?model=model.onnx&feeds=feeds.json")
        WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "status").text in ("done", "failed"))
        status = driver.find_element(By.ID, "status").text
        assert status == "done", driver.find_element(By.ID, "error").text
        out = json.loads(driver.find_element(By.ID, "result").text)
    finally:
        server.shutdown()
        server.server_close()
    return np.asarray(out["score"], dtype=np.float64).reshape(out["dims"])
