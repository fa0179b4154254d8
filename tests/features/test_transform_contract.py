"""Contract suite run over every registered transform (declarations live on the transform class)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from loopml.errors import DataError
from loopml.features import TRANSFORMS, FeaturePipeline
from loopml.features.pipeline import Chain
from loopml.features.values import Categorical
from loopml.spec.features import Feature
from loopml.spec.task import Task

WRONG = {"numeric": "abc", "categorical": {"a": 1}, "text": 12345, "timestamp": "not a date", "image": "pixels"}
UNSEEN = {"categorical": "__never_seen_category__", "text": "zzqx unseenword qqzx"}


@pytest.fixture(scope="module")
def examples(criteo: pa.Table, ratings: pa.Table, tweets: pa.Table, mnist: pa.Table) -> dict[str, Any]:
    """(table, column, target) per example kind, from real datasets."""
    return {
        "numeric": (criteo, "I2", "label"),
        "categorical": (criteo, "C3", "label"),
        "timestamp": (ratings.slice(0, 600), "ts", "rating"),
        "text": (tweets.slice(0, 120), "tweet", "class"),
        "image": (mnist.slice(0, 120), "image", "label"),
    }


def _pipeline(name: str, examples: dict[str, Any]) -> tuple[FeaturePipeline, pa.Table, pa.Table, str]:
    cls = TRANSFORMS[name]
    table, column, target = examples[cls.example_kind]
    cfg = {"type": name, **cls.example_config}
    feat = Feature(column=column, kind=cls.example_kind, transforms=[cfg])  # type: ignore[list-item]
    n_train = int(table.num_rows * 0.7)
    train, test = table.slice(0, n_train), table.slice(n_train)
    p = FeaturePipeline([feat], task=Task(target=target, type="regression" if target == "rating" else "binary"))
    y = np.asarray(train.column(target).to_numpy(), dtype=float)
    if name == "target_encode" and target == "class":
        y = (y == 2).astype(float)
    out = p.fit(train, y)
    assert out is p
    return p, train, test, column


def _equal(a: np.ndarray, b: np.ndarray, exact: bool) -> bool:
    if exact:
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.allclose(a, b, atol=1e-5, equal_nan=True))


@pytest.fixture(scope="module")
def fitted(examples: dict[str, Any]) -> dict[str, Any]:
    return {name: _pipeline(name, examples) for name in TRANSFORMS}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_fit_returns_self_and_does_not_mutate(name: str, examples: dict[str, Any]) -> None:
    cls = TRANSFORMS[name]
    table, column, target = examples[cls.example_kind]
    cfg = {"type": name, **cls.example_config}
    chain = Chain(Feature(column=column, kind=cls.example_kind, transforms=[cfg]))  # type: ignore[list-item]
    link = chain.links[0]
    from loopml.features.pipeline import _BATCH_READERS, KIND_STATE, _batch_to_category

    values = _BATCH_READERS[KIND_STATE[cls.example_kind]](table, column)
    if link.convert_from is not None:
        values = _batch_to_category(values, link.convert_from, column)
    if isinstance(values, Categorical):
        snapshot: Any = (values.codes.copy(), list(values.keys))
    elif isinstance(values, np.ndarray):
        snapshot = values.copy()
    else:
        snapshot = [None if v is None else (v.copy() if isinstance(v, np.ndarray) else v) for v in values]
    y = np.asarray(table.column(target).to_numpy(), dtype=float)
    y_before = y.copy()
    assert link.t.fit(values, y) is link.t
    if isinstance(values, Categorical):
        assert np.array_equal(values.codes, snapshot[0]) and values.keys == snapshot[1]
    elif isinstance(values, np.ndarray):
        assert np.array_equal(values, snapshot, equal_nan=True)
    else:
        assert all((a is None and b is None) or (np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b)
                   for a, b in zip(values, snapshot))
    assert np.array_equal(y, y_before)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_save_load_round_trip_gives_identical_output(name: str, fitted: dict[str, Any]) -> None:
    p, _, test, _ = fitted[name]
    blob = json.dumps(p.to_json())  # plain JSON, no pickle
    q = FeaturePipeline.from_json(json.loads(blob))
    assert q.feature_names == p.feature_names
    assert np.array_equal(q.transform_batch(test), p.transform_batch(test), equal_nan=True)
    row = test.slice(0, 1).to_pylist()[0]
    assert np.array_equal(q.transform_row(row), p.transform_row(row), equal_nan=True)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_row_path_equals_batch_path(name: str, fitted: dict[str, Any]) -> None:
    p, _, test, _ = fitted[name]
    exact = TRANSFORMS[name].exact_row_parity
    if not exact:
        assert TRANSFORMS[name].parity_reason, "a transform without exact parity must say why"
    sample = test.slice(0, 40 if exact else 8)
    X = p.transform_batch(sample)
    assert X.dtype == np.float32 and X.shape == (sample.num_rows, len(p.feature_names))
    for i, row in enumerate(sample.to_pylist()):
        assert _equal(p.transform_row(row), X[i], exact), f"row {i} differs"


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_missing_value_is_handled_as_declared(name: str, fitted: dict[str, Any]) -> None:
    cls = TRANSFORMS[name]
    p, _, test, column = fitted[name]
    row = {**test.slice(0, 1).to_pylist()[0], column: None}
    batch = pa.Table.from_pylist([row], schema=test.schema)
    if cls.missing_output == "refuse":
        with pytest.raises(DataError, match=column):
            p.transform_row(row)
        return
    v = p.transform_row(row)
    assert np.array_equal(v, p.transform_batch(batch)[0], equal_nan=True)
    if cls.missing_output == "nan":
        assert np.isnan(v).all()
    elif cls.missing_output == "zeros":
        assert (v == 0).all()
    else:
        assert np.isfinite(v).all()


@pytest.mark.parametrize("name", sorted(n for n, c in TRANSFORMS.items() if c.unseen_output is not None))
def test_unseen_category_is_handled_as_declared(name: str, fitted: dict[str, Any]) -> None:
    cls = TRANSFORMS[name]
    p, _, test, column = fitted[name]
    row = {**test.slice(0, 1).to_pylist()[0], column: UNSEEN[cls.example_kind]}
    v = p.transform_row(row)
    assert np.array_equal(v, p.transform_batch(pa.Table.from_pylist([row], schema=test.schema))[0])
    if cls.unseen_output == "zero":
        assert v[0] == 0.0
    elif cls.unseen_output == "unknown_column":
        assert v[-1] == 1.0 and v[:-1].sum() == 0.0
    elif cls.unseen_output == "prior":
        t = p.chains[0].transforms[-1]
        assert np.allclose(v, np.asarray(t.prior_, dtype=np.float32))
    else:
        assert np.isfinite(v).all()


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_wrong_type_names_the_column_and_value(name: str, fitted: dict[str, Any]) -> None:
    cls = TRANSFORMS[name]
    p, _, test, column = fitted[name]
    bad = WRONG[cls.example_kind]
    row = {**test.slice(0, 1).to_pylist()[0], column: bad}
    with pytest.raises(DataError) as err:
        p.transform_row(row)
    assert column in str(err.value) and repr(bad)[:20] in str(err.value)
    wrong_col = pa.array([bad] * 2)
    table = test.slice(0, 2).set_column(test.schema.get_field_index(column), column, wrong_col)
    with pytest.raises(DataError, match=column):
        p.transform_batch(table)
