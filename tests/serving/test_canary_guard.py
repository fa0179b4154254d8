"""The canary guard of a real `loopml serve`: a broken canary is rolled back by the server itself before its
second step (no CLI call), the registry history says why with the numbers; a healthy one advances.

Broken candidates: `constant` (the prior model: one score for every request) and `errors` (a retrained model
that needs an input field 5% of the requests lack, so it refuses them with 422 while production answers).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from helpers import constant_bundle, rows_of, train_bundle

from conftest import PASSED, Server, make_project, start_server
from loopml.registry import Registry
from loopml.serving.canary_guard import ACTOR
from loopml.workspace import Workspace

ROUTING = ("  routing:\n    type: canary\n    steps: [0.5, 1.0]\n    hold_seconds: 2\n"
           "    gate: {check_seconds: 0.3, min_requests: 100, max_error_rate_increase: 0.03, max_p99_ratio: 20,"
           " p99_floor_ms: 250, max_hold_seconds: 90}\n")


def _project(tmp: Path, click: pa.Table, kind: str) -> tuple[Path, str]:
    project = make_project(tmp / "proj", click)
    (project / "loopml.yaml").write_text((project / "loopml.yaml").read_text() + ROUTING)
    ws = Workspace.open(project)
    reg = Registry(ws)
    if kind == "healthy":
        vid = "v2"
    elif kind == "constant":
        vid = reg.register(constant_bundle(ws, click), verdict=PASSED, lineage={"note": "constant"}).version_id
    else:  # a retrained model that needs a field some clients do not send
        wider = click.append_column("session_depth", pc.cast(click.column("depth"), pa.float64()))
        vid = reg.register(train_bundle(ws, wider, n_estimators=20, seed=0), verdict=PASSED,
                           lineage={"note": "needs session_depth"}).version_id
    reg.transition(vid, "canary", actor="test", reason=f"canary of {vid}")
    return project, vid


def _rows(click: pa.Table) -> list[dict[str, Any]]:
    rows = rows_of(click, 3000)
    for i, r in enumerate(rows):
        if i % 20:  # 5% of the requests lack the field only the `errors` candidate needs
            r["session_depth"] = float(r["depth"])
    return rows


def _metric(server: Server, name: str) -> list[str]:
    status, text, _ = server.request("GET", "/metrics")
    assert status == 200
    return [line for line in text.splitlines() if line.startswith(name)]


def _logged(project: Path) -> list[tuple[Any, ...]]:
    return duckdb.sql(f"select model_version, route, round(propensity, 6) from read_parquet("
                      f"'{project}/.loopml/logs/predictions/*.parquet', union_by_name=true)").fetchall()


@pytest.mark.parametrize("kind", ["constant", "errors"])
def test_broken_canary_is_rolled_back_by_the_server_before_its_second_step(tmp_path: Path, click: pa.Table,
                                                                            kind: str) -> None:
    project, vid = _project(tmp_path, click, kind)
    rows = _rows(click)
    server = start_server(["--project", str(project)], tmp_path)
    reg = Registry(Workspace.open(project))
    answers: list[tuple[int, str | None]] = []
    try:
        deadline = time.monotonic() + 120
        i = 0
        while reg.get(vid).state == "canary" and time.monotonic() < deadline:
            for _ in range(20):
                status, body, _ = server.request("POST", "/v1/predict", rows[i % len(rows)])
                answers.append((status, body.get("model_version") if status == 200 else None))
                i += 1
        assert reg.get(vid).state == "archived", "the server did not roll the canary back"
        time.sleep(0.5)
        after = [server.request("POST", "/v1/predict", rows[j])[1]["model_version"] for j in range(1, 40)]
        rollbacks = _metric(server, "loopml_canary_rollbacks_total")
    finally:
        err = server.stop()
    assert set(after) == {"v1"}, after  # everything to production at once
    assert rollbacks == ["loopml_canary_rollbacks_total 1"]
    assert f"{vid} routed out" in err and "archived in the registry" in err, err
    canary = {r[2] for r in _logged(project) if r[1] == "canary"}
    assert canary == {0.5}, canary  # every canary answer came from the first step: the second never started
    last = reg.history()[-1]
    assert (last.version_id, last.from_state, last.to_state, last.actor) == (vid, "canary", "archived", ACTOR)
    assert "rolled back by the server at step 1/2 (50% of the traffic)" in last.reason, last.reason
    assert "evidence:" in last.reason and f"{vid} " in last.reason and " answers, " in last.reason
    if kind == "constant":
        assert "gives constant scores" in last.reason, last.reason
        assert all(s == 200 for s, _ in answers)
    else:
        assert "error rate" in last.reason and "Fisher p" in last.reason, last.reason
        refused = sum(1 for s, v in answers if s == 422)
        assert refused > 0 and all(s in (200, 422) for s, _ in answers)


def test_healthy_canary_advances_through_its_gated_steps(tmp_path: Path, click: pa.Table, cli) -> None:  # type: ignore[no-untyped-def]
    project, vid = _project(tmp_path, click, "healthy")
    rows = _rows(click)
    server = start_server(["--project", str(project)], tmp_path)
    try:
        deadline = time.monotonic() + 150
        i = 0
        share: list[str] = []
        while time.monotonic() < deadline:
            for _ in range(20):
                status, body, _ = server.request("POST", "/v1/predict", rows[i % len(rows)])
                assert status == 200, body
                i += 1
            share = _metric(server, "loopml_canary_share{")
            if share and share[0].endswith(" 1.0"):
                break
        assert share and 'step="1"' in share[0] and share[0].endswith(" 1.0"), share
        last = [server.request("POST", "/v1/predict", rows[j])[1]["model_version"] for j in range(40)]
        status = cli("experiment", "status", "-p", str(project), "--metrics-url",
                     f"http://{server.host}:{server.port}/metrics", check=True).stdout
    finally:
        err = server.stop()
    assert set(last) == {vid}  # the second step sends every request to the canary
    assert "server's canary guard: v2 at step 2, 100% of the traffic; 0 rollback(s)" in " ".join(status.split())
    assert "passed the gate" in err and "step 2/2: 100% of the traffic" in err, err
    shares = [r[2] for r in _logged(project) if r[1] == "canary"]
    assert set(shares) == {0.5, 1.0}
    assert shares.count(0.5) >= 100  # the first step held until the canary had answered min_requests
    reg = Registry(Workspace.open(project))
    assert reg.get(vid).state == "canary" and all(t.to_state != "archived" for t in reg.history(vid))
