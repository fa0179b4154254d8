"""Online-store features on the request path, with the real SQLite online store."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest
from helpers import click_spec, rows_of, train_bundle

from loopml.features.store import OnlineRecord
from loopml.features.stores.sqlite_store import SqliteStore
from loopml.serving import RequestInvalid, Servable
from loopml.serving.lookup import EntityTable, FeatureLookup, PrecomputedLookup
from loopml.serving.store import entity_tables, prediction_writer
from loopml.spec import Spec
from loopml.training.bundle import load_bundle
from loopml.workspace import Workspace

STORED = ("impression", "depth")


@pytest.fixture
def store(tmp_path: Path, click: pa.Table) -> SqliteStore:
    s = SqliteStore(tmp_path / "online.sqlite")
    now = time.time()
    s.write("ad_stats", [OnlineRecord((i,), {f: r[f] for f in STORED}, now, now) for i, r in enumerate(rows_of(click, 50))])
    return s


def test_features_fetched_by_key_give_the_same_prediction(tmp_path: Path, click: pa.Table, store: SqliteStore) -> None:
    ws = Workspace.open(tmp_path / "p", click_spec())
    digest = train_bundle(ws, click, n_estimators=15)
    servable = Servable.from_bundle("v1", load_bundle(ws, digest), digest)
    lookup = FeatureLookup(store, [EntityTable("ad_stats", ("row_key",), STORED)])
    full = rows_of(click, 50)
    for i in (0, 7, 49):
        partial = {k: v for k, v in full[i].items() if k not in STORED} | {"row_key": i}
        lookup.fill(partial)
        assert {f: partial[f] for f in STORED} == {f: full[i][f] for f in STORED}
        assert servable.predict_one(partial) == servable.predict_one(dict(full[i]))
    many = [{k: v for k, v in full[i].items() if k not in STORED} | {"row_key": i} for i in range(20)]
    lookup.fill_many(many)
    assert servable.predict_many(many)[0].tolist() == servable.predict_many([dict(r) for r in full[:20]])[0].tolist()


def test_request_values_win_and_a_missing_key_is_named(store: SqliteStore) -> None:
    lookup = FeatureLookup(store, [EntityTable("ad_stats", ("row_key",), STORED)])
    row = {"row_key": 3, "impression": 999}
    lookup.fill(row)
    assert row["impression"] == 999 and "depth" in row
    with pytest.raises(RequestInvalid) as exc:
        lookup.fill({"impression": 1})
    assert exc.value.problems[0]["field"] == "row_key"
    unknown = {"row_key": 123456}
    lookup.fill(unknown)
    assert unknown == {"row_key": 123456, "impression": None, "depth": None}  # cold start: missing, not absent


def test_unknown_entity_predicts_like_missing_history(tmp_path: Path, click: pa.Table, store: SqliteStore) -> None:
    ws = Workspace.open(tmp_path / "p", click_spec())
    digest = train_bundle(ws, click, n_estimators=15)
    servable = Servable.from_bundle("v1", load_bundle(ws, digest), digest)
    lookup = FeatureLookup(store, [EntityTable("ad_stats", ("row_key",), STORED)])
    base = {k: v for k, v in rows_of(click, 1)[0].items() if k not in STORED}
    cold = base | {"row_key": 10**9}
    lookup.fill(cold)
    explicit = base | dict.fromkeys(STORED)
    assert servable.predict_one(cold) == servable.predict_one(explicit)
    many = [base | {"row_key": 10**9}, base | {"row_key": 3}]
    lookup.fill_many(many)
    assert many[0]["depth"] is None and many[1]["depth"] is not None
    scores = servable.predict_many(many)[0]
    assert scores[0] == servable.predict_one(explicit)[0]


def test_precomputed_round_trip_through_the_store(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "o.sqlite")
    write = prediction_writer(s, ["user", "item"])
    assert write("loopml_predictions", [{"user": 1, "item": "a", "score": 0.25, "prediction": 0.0, "model_version": "v3"}]) == 1
    pre = PrecomputedLookup(s, ["user", "item"])
    assert pre.only_keys({"user": 1, "item": "a"}) and not pre.only_keys({"user": 1, "item": "a", "x": 1})
    got = pre.get_many([{"user": 1, "item": "a"}, {"user": 2, "item": "a"}])
    assert got[0] is not None and got[0]["score"] == 0.25 and got[0]["model_version"] == "v3" and got[1] is None


def test_entity_tables_come_from_the_spec() -> None:
    spec = Spec.model_validate({"features": {"tables": {"user_stats": {
        "entity": ["user_id"], "aggregations": [{"name": "ctr_7d", "function": "rate", "column": "click", "window_days": 7}]}}}})
    assert entity_tables(spec) == [EntityTable("user_stats", ("user_id",), ("ctr_7d",))]
