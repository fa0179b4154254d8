"""The row path equals the batch path and the bundle's own prediction; validation names every problem."""

from __future__ import annotations

import math
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest
from helpers import click_spec, rows_of, train_bundle

from loopml.serving import ROUTING_POLICIES, InputSchema, RequestInvalid, Servable
from loopml.serving.predictor import LightGBMFastPredictor
from loopml.serving.routing import Route, make_policy
from loopml.serving.sources import FileSource
from loopml.training.bundle import load_bundle
from loopml.workspace import Workspace


@pytest.fixture(scope="module")
def bundle_servable(tmp_path_factory: pytest.TempPathFactory, click: pa.Table):  # type: ignore[no-untyped-def]
    ws = Workspace.open(tmp_path_factory.mktemp("sv"), click_spec())
    digest = train_bundle(ws, click, n_estimators=25)
    bundle = load_bundle(ws, digest)
    return bundle, Servable.from_bundle("v1", bundle, digest)


def test_row_many_and_table_paths_equal_the_bundle(bundle_servable, click: pa.Table) -> None:  # type: ignore[no-untyped-def]
    bundle, s = bundle_servable
    part = click.slice(0, 400)
    ref = bundle.predict_table(part)
    rows = rows_of(click, 400)
    one = np.array([s.predict_one(dict(r))[0] for r in rows])
    assert np.array_equal(one, ref)
    few, _ = s.predict_many([dict(r) for r in rows[:10]])  # row-wise fast path
    many, preds = s.predict_many([dict(r) for r in rows])  # matrix path
    assert np.array_equal(few, ref[:10]) and np.array_equal(many, ref)
    assert np.array_equal(preds, (ref >= 0.5).astype(float))
    assert np.array_equal(s.predict_table(part), ref)
    assert one[0] == pytest.approx(bundle.predict_row(rows[0]), abs=0)


def test_invalid_rows_name_field_value_and_expectation(bundle_servable, click: pa.Table) -> None:  # type: ignore[no-untyped-def]
    _, s = bundle_servable
    row = rows_of(click, 1)[0]
    bad = {**row, "impression": "many", "advertiser_id": [1]}
    del bad["depth"]
    with pytest.raises(RequestInvalid) as exc:
        s.predict_one(bad)
    by_field = {p["field"]: p for p in exc.value.body()["detail"]}
    assert set(by_field) == {"impression", "advertiser_id", "depth"}
    assert by_field["impression"]["value"] == "many" and by_field["impression"]["expected"].startswith("number")
    assert "missing" in by_field["depth"]["msg"]
    with pytest.raises(RequestInvalid) as exc2:
        s.predict_many([row, {**row, "position": True}])
    assert exc2.value.problems[0]["loc"] == ["body", 1, "position"]


def test_nulls_are_missing_values_not_errors(bundle_servable, click: pa.Table) -> None:  # type: ignore[no-untyped-def]
    bundle, s = bundle_servable
    row = {**rows_of(click, 1)[0], "impression": None}
    score, _ = s.predict_one(row)
    assert math.isfinite(score)
    assert score == pytest.approx(float(bundle.predict_row(row)), abs=1e-12)


def test_fast_predictor_matches_booster_predict_on_real_rows(tmp_path: Path, click: pa.Table) -> None:
    X = np.column_stack([np.asarray(click.column(c).to_numpy(), dtype=np.float64)
                         for c in ["impression", "ad_id", "depth", "position", "keyword_id"]])
    y = np.asarray(click.column("click").to_numpy(), dtype=np.float64)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1}, lgb.Dataset(X, y), 20)
    p = LightGBMFastPredictor(booster, np.float64)
    got = []
    for row in X[:300]:
        p.buffer[:] = row
        got.append(p.predict_buffer())
    assert np.array_equal(np.array(got), booster.predict(X[:300]))
    booster.save_model(str(tmp_path / "m.txt"))
    s = FileSource(tmp_path / "m.txt").load("f")
    names = booster.feature_name()
    assert s.predict_one(dict(zip(names, X[7].tolist())))[0] == booster.predict(X[7:8])[0]


def test_schema_kinds_from_manifest_types() -> None:
    s = InputSchema.from_mapping({"a": "int64", "b": "string", "c": "categorical", "d": "bool", "e": "image"})
    assert [f.kind for f in s.fields] == ["number", "string", "category", "boolean", "any"]
    assert s.check_row({"a": 1.5, "b": "x", "c": 3, "d": True, "e": [[0]]}, None) == []
    assert [p["field"] for p in s.check_row({"a": float("nan"), "b": 2, "c": "z", "d": "yes", "e": 1}, None)] == ["a", "b", "d"]


@pytest.mark.parametrize("name", sorted(ROUTING_POLICIES))
def test_routing_policy_contract(name: str, bundle_servable) -> None:  # type: ignore[no-untyped-def]
    _, s = bundle_servable
    options = dict(getattr(ROUTING_POLICIES[name], "example_options", {}))  # declared by a policy without defaults
    policy = make_policy(name, {"v1": s}, {"v1": "production"}, options)
    route = policy.route("rid", {})
    assert isinstance(route, Route) and route.model is s and route.name
    with pytest.raises(Exception, match=r"extra|unexpected|not permitted"):
        make_policy(name, {"v1": s}, {"v1": "production"}, {**options, "no_such_option": 1})
