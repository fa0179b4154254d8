"""A new routing policy plugs in by name: here a shadow policy, registered by the test like a plugin.

The request loop is untouched: the policy returns a Route whose shadows the app scores after the
response and logs with route `shadow`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import duckdb
import orjson
import pyarrow as pa
import pytest
from helpers import click_spec, rows_of, train_bundle
from pydantic import BaseModel, ConfigDict, Field

from loopml.serving import ROUTING_POLICIES, Route, Servable, ServingApp
from loopml.serving.auth import AdminAuth
from loopml.serving.logs import SegmentLog, prediction_table
from loopml.training.bundle import load_bundle
from loopml.workspace import Workspace


class ShadowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(default=True, description="Score the shadow arm.")


class ShadowPolicy:
    """Production answers; every version in state `shadow` scores a copy of the request."""

    name: ClassVar[str] = "test-shadow"
    Config: ClassVar[type[BaseModel]] = ShadowConfig

    def __init__(self, models: dict[str, Servable], states: dict[str, str], config: Any = None) -> None:
        prod = next(v for v, s in states.items() if s == "production")
        shadows = tuple(models[v] for v, s in states.items() if s == "shadow")
        self._route = Route("production", models[prod], shadows)

    def route(self, request_id: str, row: Any) -> Route:
        return self._route


class MemorySource:
    def __init__(self, servables: dict[str, Servable], states: dict[str, str]) -> None:
        self.servables, self.states = servables, states

    def snapshot(self) -> dict[str, str]:
        return dict(self.states)

    def load(self, version_id: str) -> Servable:
        return self.servables[version_id]


@pytest.fixture
def shadow_policy():  # type: ignore[no-untyped-def]
    ROUTING_POLICIES[ShadowPolicy.name] = ShadowPolicy
    yield ShadowPolicy
    del ROUTING_POLICIES[ShadowPolicy.name]


def test_shadow_policy_plugs_in_and_shadow_scores_are_logged(tmp_path: Path, click: pa.Table, shadow_policy) -> None:  # type: ignore[no-untyped-def]
    ws = Workspace.open(tmp_path / "p", click_spec())
    d1 = train_bundle(ws, click, n_estimators=10, seed=0)
    d2 = train_bundle(ws, click, n_estimators=20, seed=1)
    s1 = Servable.from_bundle("v1", load_bundle(ws, d1), d1)
    s2 = Servable.from_bundle("v2", load_bundle(ws, d2), d2)
    log = SegmentLog(tmp_path / "log", prediction_table, flush_rows=10_000, flush_seconds=60)
    app = ServingApp(MemorySource({"v1": s1, "v2": s2}, {"v1": "production", "v2": "shadow"}), prediction_log=log,
                     feedback_log=None, auth=AdminAuth("NO_SUCH_ENV"), routing=shadow_policy.name)
    app.load_initial()
    rows = rows_of(click, 12)
    status, body, _ = app.handle(b"POST", b"/v1/predict", {}, orjson.dumps(rows[0]))  # type: ignore[misc]
    one = orjson.loads(body)
    assert status == 200 and one["model_version"] == "v1"
    status, body, _ = app.handle(b"POST", b"/v1/predict", {}, orjson.dumps(rows[1:]))  # type: ignore[misc]
    assert status == 200
    log.close()
    got = duckdb.sql(f"select request_id, model_version, route, score from read_parquet('{tmp_path}/log/*.parquet') "
                     "order by route, request_id").fetchall()
    shadow = {(r[0], r[3]) for r in got if r[2] == "shadow"}
    assert {r[1] for r in got if r[2] == "shadow"} == {"v2"} and len(shadow) == 12
    assert (one["request_id"], s2.predict_one(dict(rows[0]))[0]) in shadow
    assert sum(1 for r in got if r[2] == "production") == 12
