"""Property test: on random (and recombined) rows of real datasets, transform_row == transform_batch, bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopml.features import FeaturePipeline
from loopml.spec.features import Feature, Features
from loopml.spec.task import Task

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _criteo_features() -> list[Feature]:
    num = [
        {"column": "I1", "transforms": [{"type": "impute", "strategy": "mean", "add_indicator": True},
                                         {"type": "scale", "method": "zscore"}]},
        {"column": "I2", "transforms": [{"type": "clip", "lower_quantile": 0.05, "upper_quantile": 0.95},
                                         {"type": "scale", "method": "minmax"}]},
        {"column": "I3", "transforms": [{"type": "log"}, {"type": "impute", "strategy": "median"}]},
        {"column": "I4", "transforms": [{"type": "discretize", "n_bins": 8}]},
        {"column": "I5", "transforms": [{"type": "log"}, {"type": "scale", "method": "robust"}]},
        {"column": "I6", "transforms": [{"type": "discretize", "edges": [0, 1, 5, 20, 100]}]},
        {"column": "I7", "transforms": [{"type": "impute", "strategy": "most_frequent"}, {"type": "log"},
                                         {"type": "clip"}]},
        {"column": "I8", "transforms": [{"type": "impute", "strategy": "constant", "fill_value": -1}]},
        {"column": "I9", "transforms": [{"type": "ordinal"}], "name": "I9_as_category"},
    ]
    cat = [
        {"column": "C1", "kind": "categorical", "transforms": [{"type": "ordinal", "min_frequency": 3}]},
        {"column": "C2", "kind": "categorical", "transforms": [{"type": "onehot", "min_frequency": 20}]},
        {"column": "C3", "kind": "categorical", "transforms": [{"type": "hash", "n_buckets": 64}]},
        {"column": "C4", "kind": "categorical", "transforms": [{"type": "target_encode", "smoothing": 5}]},
        {"column": "C5", "kind": "categorical", "transforms": [{"type": "embedding_ids", "min_frequency": 2}]},
        {"column": "C6", "kind": "categorical", "transforms": [{"type": "cross", "with_columns": ["C1", "C9"],
                                                                 "n_buckets": 512}]},
        {"column": "C12", "kind": "categorical",
         "transforms": [{"type": "impute", "strategy": "most_frequent", "add_indicator": True},
                        {"type": "onehot", "max_categories": 5}]},
        {"column": "C9", "kind": "categorical", "transforms": [{"type": "impute", "strategy": "constant",
                                                                 "fill_value": "none"}]},
    ]
    return [Feature.model_validate(f) for f in num + cat]


@pytest.fixture(scope="module")
def criteo_pipeline(criteo: pa.Table) -> FeaturePipeline:
    train = criteo.slice(0, 700)
    y = train.column("label").to_numpy()
    return FeaturePipeline(_criteo_features(), task=Task(target="label")).fit(train, y)


@pytest.fixture(scope="module")
def bike_pipeline(bike: pa.Table) -> FeaturePipeline:
    feats = [
        Feature(column="ts", kind="timestamp", transforms=[
            {"type": "date_parts", "parts": ["year", "month", "day", "dayofweek", "hour", "minute"]}]),
        Feature(column="ts", kind="timestamp", name="ts_raw",
                transforms=[{"type": "date_parts", "parts": ["month", "hour"], "cyclical": False}]),
        Feature(column="dteday", kind="timestamp", transforms=[{"type": "date_parts", "parts": ["dayofweek"]}]),
        Feature(column="temp", transforms=[{"type": "scale"}]),
        Feature(column="hum", transforms=[{"type": "log"}]),
    ]
    return FeaturePipeline(feats, task=Task(target="cnt", type="regression")).fit(bike.slice(0, 2000))


def _row_strategy(table: pa.Table) -> st.SearchStrategy[dict[str, Any]]:
    """A real row, with each field possibly swapped for another row's value or for null."""
    rows = table.to_pylist()
    n = len(rows)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        base = dict(rows[draw(st.integers(0, n - 1))])
        for col in table.column_names:
            choice = draw(st.integers(0, 9))
            if choice == 0:
                base[col] = None
            elif choice == 1:
                base[col] = rows[draw(st.integers(0, n - 1))][col]
        return base
    return build()


def _check(p: FeaturePipeline, table: pa.Table, row: dict[str, Any]) -> None:
    one = pa.Table.from_pylist([row], schema=table.schema)
    batch = p.transform_batch(one)[0]
    online = p.transform_row(row)
    assert online.dtype == np.float32
    assert np.array_equal(online, batch, equal_nan=True), (
        [(n, a, b) for n, a, b in zip(p.feature_names, online, batch) if not (a == b or (a != a and b != b))][:5])


def test_whole_test_split_row_equals_batch(criteo: pa.Table, criteo_pipeline: FeaturePipeline) -> None:
    test = criteo.slice(700)
    X = criteo_pipeline.transform_batch(test)
    for i, row in enumerate(test.to_pylist()):
        assert np.array_equal(criteo_pipeline.transform_row(row), X[i], equal_nan=True), f"row {i}"


@SETTINGS
@given(data=st.data())
def test_criteo_rows(criteo: pa.Table, criteo_pipeline: FeaturePipeline, data: st.DataObject) -> None:
    _check(criteo_pipeline, criteo, data.draw(_row_strategy(criteo.slice(700))))


@SETTINGS
@given(data=st.data())
def test_bike_rows(bike: pa.Table, bike_pipeline: FeaturePipeline, data: st.DataObject) -> None:
    _check(bike_pipeline, bike, data.draw(_row_strategy(bike.slice(2000))))


@SETTINGS
@given(data=st.data())
def test_german_default_pipeline_rows(german: pa.Table, data: st.DataObject) -> None:
    p = _german_pipeline(german)
    _check(p, german, data.draw(_row_strategy(german.slice(700))))


_CACHE: dict[str, FeaturePipeline] = {}


def _german_pipeline(german: pa.Table) -> FeaturePipeline:
    if "g" not in _CACHE:
        _CACHE["g"] = FeaturePipeline.from_spec(Features(), task=Task(target="class")).fit(german.slice(0, 700))
    return _CACHE["g"]


@SETTINGS
@given(data=st.data())
def test_tweets_tfidf_rows(tweets: pa.Table, data: st.DataObject) -> None:
    if "t" not in _CACHE:
        _CACHE["t"] = FeaturePipeline(
            [Feature(column="tweet", kind="text", transforms=[{"type": "tfidf", "max_features": 200}])],
            task=Task(target="class", type="multiclass"),
        ).fit(tweets.slice(0, 300))
    _check(_CACHE["t"], tweets.select(["tweet"]), data.draw(_row_strategy(tweets.slice(300).select(["tweet"]))))


@SETTINGS
@given(x=st.floats(allow_nan=True, allow_infinity=True, width=64),
       cat=st.one_of(st.none(), st.text(max_size=6), st.integers(-5, 10**6), st.floats(allow_nan=True)))
def test_arbitrary_values(criteo: pa.Table, criteo_pipeline: FeaturePipeline, x: float, cat: Any) -> None:
    """Any float in every numeric column and any category value in every categorical one."""
    row = dict(criteo.slice(700, 1).to_pylist()[0])
    for c in row:
        if c.startswith("I"):
            row[c] = x
        elif c.startswith("C"):
            row[c] = cat
    schema = pa.schema([pa.field(c, pa.float64() if c.startswith("I") else
                                 (criteo.schema.field(c).type if c == "label" else pa.string())) for c in row])
    one = pa.Table.from_pylist([{**row, **{c: (None if v is None else str(v) if not isinstance(v, str) else v)
                                           for c, v in row.items() if c.startswith("C")}}], schema=schema)
    # the batch path sees categories through Arrow text; the row path sees the raw value: same canonical key
    from loopml.features.values import canon_category
    same_key = all(canon_category(row[c], c) == canon_category(one.column(c)[0].as_py(), c)
                   for c in row if c.startswith("C"))
    if same_key:
        assert np.array_equal(criteo_pipeline.transform_row(row), criteo_pipeline.transform_batch(one)[0],
                              equal_nan=True)
