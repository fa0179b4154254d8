"""ONNX export: every model family that claims it gives the Python bundle's scores in ONNX Runtime for Python
and for Node.js; every transform is either written as ONNX operators (same matrix) or refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from loopml.export import (
    EXPORTED,
    PARITY_TOLERANCE,
    REFUSED,
    ExportRefused,
    bundle_to_onnx,
    check_parity,
    feeds,
)
from loopml.export.onnx_export import compare, run, session, transform_to_onnx
from loopml.features import FeaturePipeline
from loopml.features.transforms import TRANSFORMS
from loopml.spec.features import Feature
from loopml.training.bundle import Bundle
from loopml.training.models import MODELS, make_model
from tests.export.conftest import Data, fit_data, node_scores

#: small budgets (the same code paths) so each family fits in a second or two
SMALL: dict[str, dict[str, Any]] = {"lightgbm": {"n_estimators": 40}, "random_forest": {"n_estimators": 10},
                                    "mlp": {"epochs": 3, "hidden": [32, 16]}, "factorization_machine": {"epochs": 3}}
EXPORTING = sorted(n for n, cls in MODELS.items() if cls.exports_onnx)


def _bundle(data: Data, name: str) -> Bundle:
    cls = MODELS[name]
    params = {**cls.contract_params, **SMALL.get(name, {})}
    model = make_model(name, task=data.task, **params).fit(data.X, data.y,
                                                           categorical=data.pipeline.categorical_features)
    return Bundle(data.pipeline, model, {})


def _check_both_runtimes(bundle: Bundle, table: pa.Table, tmp_path: Path) -> None:
    onx = bundle_to_onnx(bundle)
    path = tmp_path / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    expected = bundle.predict_table(table)
    py = check_parity(bundle, path.read_bytes(), table)
    assert py.rows == table.num_rows and py.ok, py.line()
    # the graph inputs are the raw columns, named as in the data
    assert [i.name for i in onx.graph.input] == list(bundle.transform.input_columns)
    js = compare(expected, node_scores(path, feeds(bundle.transform, table), tmp_path))
    assert js.ok, "node.js: " + js.line()
    # a one-row call gives the batch value (what `loopml predict --row` answers)
    sess = session(path.read_bytes())
    row = table.slice(5, 1).to_pylist()[0]
    from loopml.export.onnx_export import feeds_row

    one = run(sess, feeds_row(bundle.transform, row))
    assert abs(float(np.ravel(one)[0]) - float(np.ravel(bundle.predict_row(row))[0])) <= PARITY_TOLERANCE * max(
        1.0, abs(float(np.ravel(expected[5])[0])))


def test_the_zoo_declares_which_families_export():
    assert {"prior", "mean", "logistic", "linear", "linear_svm", "lightgbm", "mlp", "factorization_machine",
            "decision_tree", "random_forest"} <= set(EXPORTING)
    assert not MODELS["bagging"].exports_onnx and not MODELS["stacking"].exports_onnx


@pytest.mark.parametrize("name", EXPORTING)
def test_every_exporting_family_scores_like_python_in_onnx_runtime_python_and_node(
        name, german_binary, bike_regression, tmp_path):
    cls = MODELS[name]
    data = german_binary if "binary" in cls.task_types else bike_regression
    _check_both_runtimes(_bundle(data, name), data.test, tmp_path)


@pytest.mark.parametrize("name", ["linear", "lightgbm", "mlp", "decision_tree"])
def test_regression_families_on_bike_sharing(name, bike_regression, tmp_path):
    _check_both_runtimes(_bundle(bike_regression, name), bike_regression.test, tmp_path)


@pytest.mark.parametrize("name", ["logistic", "lightgbm", "mlp", "random_forest"])
def test_multiclass_families(name, german_multiclass, tmp_path):
    bundle = _bundle(german_multiclass, name)
    _check_both_runtimes(bundle, german_multiclass.test, tmp_path)
    assert bundle.predict_table(german_multiclass.test).shape[1] == 3


def test_recalibrated_scores_follow_the_bundle(german_binary, tmp_path):
    b = _bundle(german_binary, "logistic")
    b = Bundle(b.transform, b.model, {"calibration": {"negative_rate": 0.25}})
    _check_both_runtimes(b, german_binary.test, tmp_path)


def test_a_model_without_an_onnx_form_is_refused_by_name(german_binary):
    b = _bundle(german_binary, "bagging")
    with pytest.raises(ExportRefused, match="model `bagging`"):
        bundle_to_onnx(b)


# -- transforms ------------------------------------------------------------------------------------------
EXPORTED_CASES: list[tuple[str, dict[str, Any]]] = [
    ("impute", {"column": "duration", "kind": "numeric", "transforms": [
        {"type": "impute", "strategy": "mean", "add_indicator": True}]}),
    ("impute", {"column": "purpose", "kind": "categorical", "transforms": [
        {"type": "impute", "strategy": "most_frequent", "add_indicator": True}, {"type": "onehot"}]}),
    ("impute", {"column": "purpose", "kind": "categorical", "transforms": [
        {"type": "impute", "strategy": "constant", "fill_value": "none"}, {"type": "ordinal"}]}),
    ("scale", {"column": "credit_amount", "kind": "numeric", "transforms": [{"type": "scale", "method": "minmax"}]}),
    ("log", {"column": "credit_amount", "kind": "numeric", "transforms": [{"type": "log"}]}),
    ("clip", {"column": "duration", "kind": "numeric", "transforms": [{"type": "clip"}]}),
    ("discretize", {"column": "duration", "kind": "numeric", "transforms": [{"type": "discretize", "n_bins": 6}]}),
    ("discretize", {"column": "age", "kind": "numeric", "transforms": [
        {"type": "discretize", "edges": [25, 40, 60]}, {"type": "onehot"}]}),
    ("ordinal", {"column": "purpose", "kind": "categorical", "transforms": [{"type": "ordinal", "min_frequency": 20}]}),
    ("ordinal", {"column": "duration", "kind": "numeric", "transforms": [{"type": "ordinal"}]}),
    ("onehot", {"column": "purpose", "kind": "categorical", "transforms": [{"type": "onehot", "max_categories": 4}]}),
    ("onehot", {"column": "installment_commitment", "kind": "numeric", "transforms": [{"type": "onehot"}]}),
    ("embedding_ids", {"column": "purpose", "kind": "categorical", "transforms": [{"type": "embedding_ids"}]}),
    ("target_encode", {"column": "purpose", "kind": "categorical", "transforms": [{"type": "target_encode"}]}),
    ("target_encode", {"column": "existing_credits", "kind": "numeric", "transforms": [{"type": "target_encode"}]}),
]
REFUSED_CASES: list[tuple[str, dict[str, Any]]] = [
    ("hash", {"column": "purpose", "kind": "categorical", "transforms": [{"type": "hash", "n_buckets": 16}]}),
    ("cross", {"column": "purpose", "kind": "categorical", "transforms": [
        {"type": "cross", "with_columns": ["housing"], "n_buckets": 64}]}),
    ("date_parts", {"column": "when", "kind": "timestamp"}),
    ("tfidf", {"column": "purpose", "kind": "text", "transforms": [{"type": "tfidf"}]}),
    ("sentence_embedding", {"column": "purpose", "kind": "text", "transforms": [{"type": "sentence_embedding"}]}),
    ("image_pixels", {"column": "picture", "kind": "image"}),
    ("impute", {"column": "duration", "kind": "numeric", "transforms": [{"type": "impute", "strategy": "drop"}]}),
]


def test_every_transform_is_either_exported_or_refused():
    assert set(EXPORTED) | set(REFUSED) == set(TRANSFORMS)
    assert not set(EXPORTED) & set(REFUSED)
    assert {n for n, _ in EXPORTED_CASES} == set(EXPORTED)
    assert set(REFUSED) <= {n for n, _ in REFUSED_CASES}


@pytest.mark.parametrize(("name", "feature"), EXPORTED_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(EXPORTED_CASES)])
def test_exported_transform_gives_the_same_matrix(name, feature, german_table):
    y = np.asarray(german_table.column("label").to_numpy())
    data = fit_data(german_table, [feature], "label", "binary", y, 700)
    onx = transform_to_onnx(data.pipeline)
    got = session(onx.SerializeToString()).run(["features"], feeds(data.pipeline, data.test))[0]
    want = data.pipeline.transform_batch(data.test)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.allclose(got, want, rtol=1e-6, atol=1e-6, equal_nan=True), np.abs(got - want).max()


@pytest.mark.parametrize(("name", "feature"), REFUSED_CASES, ids=[n for n, _ in REFUSED_CASES])
def test_refused_transform_is_named(name, feature, german_table):
    y = np.asarray(german_table.column("label").to_numpy())
    if name == "impute":  # drop: fitted, then refused
        p = fit_data(german_table.filter(pa.array(~np.isnan(german_table.column("duration").to_numpy(
            zero_copy_only=False).astype(float)))), [feature], "label", "binary", y, 0).pipeline
    else:
        p = FeaturePipeline([Feature.model_validate(feature)])
    with pytest.raises(ExportRefused, match=f"transform `{name}` of feature `{feature['column']}`"):
        transform_to_onnx(p)


def test_integer_ids_are_stored_as_numbers_and_any_other_text_stays_unknown(tmp_path, browser):
    """A vocabulary of integer-looking ids (as the ad-clicks simulator's) is stored as int64 keys with int64 codes;
    text that only parses as one of them ("007", "+12", " 12", "12.0") stays unknown, text keys still match."""
    from loopml.export.graph import GraphBuilder
    from loopml.export.transform_onnx import INT_KEYS_MIN, write_transform
    from tests.export.conftest import browser_scores

    rng = np.random.default_rng(3)
    ints = [*(str(v) for v in rng.integers(-(2**40), 2**40, size=3 * INT_KEYS_MIN)), "0", "12", "-7",
            "1234567890123456789"]
    vocab = [*ints, "abc", "x12", "12.5"]  # a 19-digit id and text ids stay text keys
    ids = [v for v in vocab for _ in range(3)]
    y = rng.integers(0, 2, size=len(ids))
    table = pa.table({"item": ids, "other": ids, "third": ids, "label": y})
    features = [{"column": "item", "kind": "categorical", "transforms": [{"type": "ordinal"}]},
                {"column": "other", "kind": "categorical", "transforms": [{"type": "target_encode"}]},
                {"column": "third", "kind": "categorical", "transforms": [{"type": "onehot", "max_categories": 90}]}]
    p = fit_data(table, features, "label", "binary", y, len(ids)).pipeline
    probe = [*vocab[::7], "12", "-7", "007", "+12", " 12", "12 ", "12.0", "1e3", "-0", "0012", "13",
             "99999999999999999999", "١٢", "ABC", None, "1234567890123456789", "x12", "12.5", "0"]
    test = pa.table({c: pa.array(probe, pa.string()) for c in ("item", "other", "third")})
    want = p.transform_batch(test)
    # the known ones are known, the look-alikes unknown (code 0), in the Python transform itself
    codes = dict(zip(probe, want[:, 0], strict=True))
    assert codes["12"] > 0 and codes["0"] > 0 and codes["1234567890123456789"] > 0 and codes["x12"] > 0
    assert all(codes[k] == 0 for k in ("007", "+12", " 12", "12 ", "12.0", "-0", "0012", "13", "١٢"))
    onx = transform_to_onnx(p)
    les = [n for n in onx.graph.node if n.op_type == "LabelEncoder"]
    int_keys = [a for n in les for a in n.attribute if a.name == "keys_int64s"]
    stored = [set(a.ints) for a in int_keys]  # every canonical id of at most 18 digits, as a number
    assert len(stored) == 3 and stored[0] == stored[1] == {int(v) for v in ints[:-1]} and stored[2] <= stored[0]
    assert all(a.name != "values_floats" for n in les for a in n.attribute)
    got = session(onx.SerializeToString()).run(["features"], feeds(p, test))[0]
    assert got.shape == want.shape and np.array_equal(got, want)
    # the same graph in ONNX Runtime for Node.js and in ONNX Runtime Web (the matrix as its output)
    b = GraphBuilder()
    b.output(write_transform(b, p), "score", 1, ["N", want.shape[1]])
    path = tmp_path / "transform.onnx"
    path.write_bytes(b.model("transform").SerializeToString())
    inputs = feeds(p, test)
    assert np.array_equal(node_scores(path, inputs, tmp_path), want)
    assert np.array_equal(browser_scores(browser, path, inputs, tmp_path), want)
