"""The bundle path (named columns): every binary-capable model behind a real FeaturePipeline on german_credit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from loopml.errors import DataError, IntegrityError
from loopml.features import FeaturePipeline
from loopml.spec import Spec
from loopml.training.bundle import Bundle, load_bundle, make_manifest, save_bundle
from loopml.training.models import MODELS, FitContext, make_model
from loopml.workspace import Workspace

BINARY = sorted(n for n, c in MODELS.items() if "binary" in c.task_types)


@pytest.fixture(scope="module")
def fitted(german: pa.Table) -> dict[str, Bundle]:
    spec = Spec.model_validate({"task": {"type": "binary", "target": "class", "positive_label": "bad"}})
    train = german.slice(0, 400)
    y = (np.asarray(train.column("class").to_numpy(zero_copy_only=False)) == "bad").astype(np.int64)
    transform = FeaturePipeline.from_spec(spec.features, task=spec.task)
    X = transform.fit_transform(train, y)
    out = {}
    for name in BINARY:
        model = make_model(name, task="binary", **MODELS[name].contract_params)
        model.fit(X, y, None, transform.categorical_features, context=FitContext(feature_names=transform.feature_names))
        out[name] = Bundle(transform, model, make_manifest(transform, model, schema=train.schema, classes=["good", "bad"]))
    return out


@pytest.fixture
def table(german: pa.Table) -> pa.Table:
    return german.slice(400, 60)


@pytest.mark.parametrize("name", BINARY)
def test_shuffled_column_order_does_not_change_predictions(name: str, fitted: dict[str, Bundle], table: pa.Table) -> None:
    b = fitted[name]
    cols = list(table.column_names)
    shuffled = table.select([cols[i] for i in np.random.default_rng(3).permutation(len(cols))])
    np.testing.assert_array_equal(b.predict_table(shuffled), b.predict_table(table))


@pytest.mark.parametrize("name", BINARY)
def test_a_missing_column_is_a_clear_error(name: str, fitted: dict[str, Bundle], table: pa.Table) -> None:
    b = fitted[name]
    with pytest.raises(DataError, match=r"missing column\(s\) `credit_amount`"):
        b.predict_table(table.drop(["credit_amount"]))
    row = table.slice(0, 1).to_pylist()[0]
    del row["duration"]
    with pytest.raises(DataError, match="duration"):
        b.predict_row(row)


@pytest.mark.parametrize("name", BINARY)
def test_online_row_equals_the_batch(name: str, fitted: dict[str, Bundle], table: pa.Table) -> None:
    b = fitted[name]
    batch = b.predict_table(table)
    rows = np.array([b.predict_row(r) for r in table.to_pylist()])
    np.testing.assert_allclose(rows, batch, rtol=0, atol=1e-12)


def test_save_and_load_through_the_artifact_store(fitted: dict[str, Bundle], table: pa.Table, tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path)
    b = fitted["lightgbm"]
    digest = save_bundle(ws, b, producer=None)
    manifest = json.loads(ws.artifacts.get_bytes(digest))
    assert manifest["model_type"] == "lightgbm" and manifest["task"] == "binary"
    assert set(manifest["files"]) == {"model/model.json", "model/model.txt"}
    assert manifest["input_schema"]["credit_amount"] == "int64"
    assert manifest["feature_names"] == b.transform.feature_names
    loaded = load_bundle(ws, digest)
    np.testing.assert_array_equal(loaded.predict_table(table), b.predict_table(table))
    assert loaded.model.booster_.num_trees() == b.model.booster_.num_trees()
    # a flipped byte in a model file is caught before anything is rebuilt
    path = ws.artifacts.path_of(manifest["files"]["model/model.txt"])
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="corrupted"):
        load_bundle(ws, digest)


def test_negative_downsampling_recalibration_is_applied_on_both_paths(fitted: dict[str, Bundle], table: pa.Table) -> None:
    b = fitted["logistic"]
    cal = Bundle(b.transform, b.model, {**b.manifest, "calibration": {"negative_rate": 0.25}})
    q = b.predict_table(table)
    p = cal.predict_table(table)
    np.testing.assert_allclose(p, q / (q + (1 - q) / 0.25))
    assert cal.predict_row(table.to_pylist()[0]) == pytest.approx(p[0], abs=1e-12)
