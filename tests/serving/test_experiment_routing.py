"""Shadow, canary and A/B routing: the arms, their sticky assignment and the log of both arms.

In memory (a real ServingApp over real LightGBM bundles) and end to end through the CLI.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pytest
from helpers import click_spec, rows_of, train_bundle
from pydantic import ValidationError

from conftest import make_project, start_server
from loopml.errors import NotFound
from loopml.serving import Servable, ServingApp
from loopml.serving.auth import AdminAuth
from loopml.serving.logs import SegmentLog, prediction_table
from loopml.serving.routing import ABPolicy, CanaryPolicy, SplitConfig
from loopml.spec import Spec
from loopml.training.bundle import load_bundle
from loopml.workspace import Workspace


class MemorySource:
    def __init__(self, servables: dict[str, Servable], states: dict[str, str]) -> None:
        self.servables, self.states = servables, states

    def snapshot(self) -> dict[str, str]:
        return dict(self.states)

    def load(self, version_id: str) -> Servable:
        return self.servables[version_id]


@pytest.fixture(scope="module")
def servables(tmp_path_factory: pytest.TempPathFactory, click: pa.Table) -> dict[str, Servable]:
    ws = Workspace.open(tmp_path_factory.mktemp("routing") / "p", click_spec())
    d1 = train_bundle(ws, click, n_estimators=10, seed=0)
    d2 = train_bundle(ws, click, n_estimators=20, seed=1)
    return {"v1": Servable.from_bundle("v1", load_bundle(ws, d1), d1),
            "v2": Servable.from_bundle("v2", load_bundle(ws, d2), d2)}


def serve_rows(tmp: Path, servables: dict[str, Servable], state: str, routing: str, options: dict[str, object],
               rows: list[dict[str, object]]) -> tuple[list[dict[str, object]], list[tuple[object, ...]]]:
    log = SegmentLog(tmp / "log", prediction_table, flush_rows=100_000, flush_seconds=60)
    app = ServingApp(MemorySource(servables, {"v1": "production", "v2": state}), prediction_log=log,
                     feedback_log=None, auth=AdminAuth("NO_SUCH_ENV"), routing=routing, routing_options=options)
    app.load_initial()
    answers = []
    for row in rows:
        status, body, _ = app.handle(b"POST", b"/v1/predict", {}, orjson.dumps(row))  # type: ignore[misc]
        assert status == 200, body
        answers.append(orjson.loads(body))
    status, body, _ = app.handle(b"POST", b"/v1/predict", {}, orjson.dumps(rows[:5]))  # type: ignore[misc]
    assert status == 200
    log.close()
    logged = duckdb.sql(f"select request_id, model_version, route, experiment, round(propensity, 6), score "
                        f"from read_parquet('{tmp}/log/*.parquet', union_by_name=true)").fetchall()
    return answers, logged


def test_shadow_logs_both_arms_with_the_experiment(tmp_path: Path, servables: dict[str, Servable],
                                                   click: pa.Table) -> None:
    rows = rows_of(click, 30)
    answers, logged = serve_rows(tmp_path, servables, "shadow", "shadow", {"experiment": "shadow-v2"}, rows)
    assert {a["model_version"] for a in answers} == {"v1"}  # production answers every request
    arms = {(r[1], r[2], r[3], r[4]) for r in logged}
    assert arms == {("v1", "production", "shadow-v2", 1.0), ("v2", "shadow", "shadow-v2", 1.0)}
    shadow = {r[0]: r[5] for r in logged if r[2] == "shadow"}
    assert len(shadow) == 35  # every request, single and many-row, mirrored
    assert shadow[answers[0]["request_id"]] == pytest.approx(servables["v2"].predict_one(dict(rows[0]))[0])


def test_canary_sends_its_share_and_logs_propensities(tmp_path: Path, servables: dict[str, Servable],
                                                      click: pa.Table) -> None:
    rows = rows_of(click, 600)
    answers, logged = serve_rows(tmp_path, servables, "canary", "canary", {"fraction": 0.3}, rows)
    share = sum(a["model_version"] == "v2" for a in answers) / len(answers)
    assert 0.3 - 0.07 < share < 0.3 + 0.07  # 600 requests: ±3.7 standard errors
    arms = {(r[1], r[2], r[3], r[4]) for r in logged}
    assert arms == {("v1", "production", "canary-v2", 0.7), ("v2", "canary", "canary-v2", 0.3)}


def test_ab_is_sticky_per_unit_and_salted(tmp_path: Path, servables: dict[str, Servable], click: pa.Table) -> None:
    rows = rows_of(click, 400)
    opts = {"fraction": 0.5, "unit_key": "user_id", "salt": "s1", "experiment": "ab-v2"}
    answers, logged = serve_rows(tmp_path, servables, "canary", "ab", opts, rows)
    arm_of: dict[object, set[str]] = {}
    for row, a in zip(rows, answers, strict=True):
        arm_of.setdefault(row["user_id"], set()).add(a["route"])
    assert all(len(arms) == 1 for arms in arm_of.values())  # a user stays in one arm
    assert {a["route"] for a in answers} == {"control", "treatment"}
    assert {(r[1], r[2], r[3], r[4]) for r in logged} == {("v1", "control", "ab-v2", 0.5), ("v2", "treatment", "ab-v2", 0.5)}
    # the same user lands in the same arm on another server; a new salt reshuffles users
    m = {"v1": servables["v1"], "v2": servables["v2"]}
    st = {"v1": "production", "v2": "canary"}
    same = ABPolicy(m, st, SplitConfig(**opts))  # type: ignore[arg-type]
    other = ABPolicy(m, st, SplitConfig(**{**opts, "salt": "s2"}))  # type: ignore[arg-type]
    users = list(arm_of)
    assert all({same.route("r", {"user_id": u}).name} == arm_of[u] for u in users)
    moved = sum(other.route("r", {"user_id": u}).name not in arm_of[u] for u in users)
    assert 0.3 * len(users) < moved < 0.7 * len(users)
    assert same.route("r", {"no_user": 1}).name == "production"  # no unit: outside the experiment


def test_policies_need_their_versions(servables: dict[str, Servable]) -> None:
    m = {"v1": servables["v1"], "v2": servables["v2"]}
    lone = CanaryPolicy({"v1": m["v1"]}, {"v1": "production"}, SplitConfig(fraction=0.5))
    assert {lone.route(f"r{i}", {}).name for i in range(50)} == {"production"}  # no canary: production only
    with pytest.raises(NotFound, match="one version in state `canary`"):
        CanaryPolicy({**m, "v3": m["v2"]}, {"v1": "production", "v2": "canary", "v3": "canary"}, SplitConfig())
    with pytest.raises(NotFound, match="unit key"):
        ABPolicy(m, {"v1": "production", "v2": "canary"}, SplitConfig())


def test_spec_offers_only_served_routing_types() -> None:
    for gone in ("interleaving",):
        with pytest.raises(ValidationError, match=f"routing type `{gone}` is not served"):
            Spec.model_validate({"task": {"type": "binary", "target": "y"}, "deployment": {"routing": {"type": gone}}})
    with pytest.raises(ValidationError, match="needs `unit_key`"):
        Spec.model_validate({"task": {"type": "binary", "target": "y"}, "deployment": {"routing": {"type": "ab"}}})
    ok = Spec.model_validate({"task": {"type": "binary", "target": "y"},
                              "deployment": {"routing": {"type": "ab", "unit_key": "user_id", "salt": "x"}}})
    assert ok.deployment.routing.options()["unit_key"] == "user_id"


def _logged(project: Path) -> set[tuple[object, ...]]:
    return set(duckdb.sql(
        f"select model_version, route, experiment, round(propensity, 6) "
        f"from read_parquet('{project}/.loopml/logs/predictions/*.parquet', union_by_name=true)").fetchall())


def _send(server, rows: list[dict[str, object]]) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    out = []
    for row in rows:
        status, body, _ = server.request("POST", "/v1/predict", row)
        assert status == 200, body
        out.append(body)
    return out


def test_shadow_then_canary_through_the_cli(tmp_path: Path, click: pa.Table, cli) -> None:  # type: ignore[no-untyped-def]
    project = make_project(tmp_path / "proj", click)
    spec = (project / "loopml.yaml").read_text()
    (project / "loopml.yaml").write_text(spec + "  routing: {type: shadow}\n")
    rows = rows_of(click, 60)
    server = start_server(["--project", str(project)], tmp_path)
    try:
        cli("models", "promote", "v2", "--to", "shadow", "--reason", "shadow test", "-p", str(project), check=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the server follows the registry: wait for the shadow to load
            _send(server, rows[:1])
            _status, metrics, _ = server.request("GET", "/metrics")
            if 'version="v2"' in metrics:
                break
            time.sleep(0.2)
        answers = _send(server, rows)
        assert {a["model_version"] for a in answers} == {"v1"}
    finally:
        assert "logs flushed" in server.stop()
    logged = _logged(project)
    assert ("v1", "production", "shadow-v2", 1.0) in logged and ("v2", "shadow", "shadow-v2", 1.0) in logged
    # monitoring, quality and retraining read what was answered; the experiment analysis reads the shadows too
    from loopml.monitoring.logs import read_predictions

    ws = Workspace.open(project)
    assert set(read_predictions(ws).column("route").to_pylist()) == {"production"}
    assert set(read_predictions(ws, shadows=True).column("route").to_pylist()) == {"production", "shadow"}

    (project / "loopml.yaml").write_text(spec + "  routing: {type: canary, fraction: 0.5, experiment: canary-1}\n")
    cli("models", "promote", "v2", "--to", "canary", "--reason", "canary test", "-p", str(project), check=True)
    server = start_server(["--project", str(project)], tmp_path)
    try:
        answers = _send(server, rows)
    finally:
        assert "logs flushed" in server.stop()
    assert {a["model_version"] for a in answers} == {"v1", "v2"}
    logged = _logged(project)
    assert ("v1", "production", "canary-1", 0.5) in logged and ("v2", "canary", "canary-1", 0.5) in logged
    hist = cli("models", "history", "-p", str(project), check=True).stdout
    assert "canary" in hist and "shadow" in hist


def test_canary_steps_advance_only_when_the_guard_says_so(servables: dict[str, Servable]) -> None:
    m = {"v1": servables["v1"], "v2": servables["v2"]}
    cfg = SplitConfig(steps=[0.1, 0.5, 1.0], hold_seconds=0.01, experiment=f"steps-{time.monotonic_ns()}")
    policy = CanaryPolicy(m, {"v1": "production", "v2": "canary"}, cfg)
    assert policy.step == 0 and policy.route("r", {}).propensity in (0.1, pytest.approx(0.9))
    time.sleep(0.05)  # the hold passed, but a step never advances by the clock alone (the gate decides)
    assert policy.step == 0 and {round(policy.route(f"r{i}", {}).propensity or 0, 6) for i in range(200)} == {0.1, 0.9}
    assert policy.advance() and policy.advance() and not policy.advance()  # the last step stays
    assert policy.step == 2 and {policy.route(f"r{i}", {}).name for i in range(50)} == {"canary"}
    again = CanaryPolicy(m, {"v1": "production", "v2": "canary"}, cfg)  # a reload keeps the step
    assert again.step == 2 and again.progress is policy.progress
    again.progress.rolled_back = True  # type: ignore[union-attr]
    fresh = CanaryPolicy(m, {"v1": "production", "v2": "canary"}, cfg)  # canary again after a rollback: step 0
    assert fresh.step == 0 and fresh.fraction == 0.1
    with pytest.raises(ValidationError, match="increasing traffic shares"):
        Spec.model_validate({"task": {"type": "binary", "target": "y"},
                             "deployment": {"routing": {"type": "canary", "steps": [0.5, 0.1]}}})
