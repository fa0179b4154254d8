"""`loopml experiment`: a canary read from the log, rolled back by its guardrail with the reason in the registry.

Real bundles, a real `loopml serve`, real feedback; the broken candidate is the `prior` model (one
constant score for every request).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from helpers import click_spec, constant_bundle, rows_of, train_bundle

from conftest import PASSED, make_project, start_server
from loopml.experiments.analysis import analyse
from loopml.registry import Registry
from loopml.workspace import Workspace


def send(server, rows: list[dict[str, object]], labels: list[int]) -> list[str]:  # type: ignore[no-untyped-def]
    versions = []
    for row, label in zip(rows, labels, strict=True):
        status, body, _ = server.request("POST", "/v1/predict", row)
        assert status == 200, body
        versions.append(body["model_version"])
        status, _, _ = server.request("POST", "/v1/feedback", {"request_id": body["request_id"], "label": label})
        assert status == 200
    return versions


def test_broken_canary_is_rolled_back_before_its_second_step(tmp_path: Path, click: pa.Table, cli) -> None:  # type: ignore[no-untyped-def]
    project = make_project(tmp_path / "proj", click)
    spec = (project / "loopml.yaml").read_text()
    # steps 30% then 100% (not before 120 s); the server's own guard checks hourly: the CLI rolls back here
    (project / "loopml.yaml").write_text(spec + "  routing: {type: canary, steps: [0.3, 1.0], hold_seconds: 120, gate: {check_seconds: 3600}}\n")
    ws = Workspace.open(project)
    v3 = Registry(ws).register(constant_bundle(ws, click), verdict=PASSED, lineage={"note": "broken"})
    cli("models", "promote", v3.version_id, "--to", "canary", "-r", "canary of v3", "-p", str(project), check=True)
    rows = rows_of(click, 400)
    labels = click.column("click").to_pylist()[:400]
    server = start_server(["--project", str(project)], tmp_path)
    try:
        send(server, rows[:300], labels[:300])
        out = cli("experiment", "status", "--json", "--metrics-url", f"http://{server.host}:{server.port}/metrics",
                  "-p", str(project), check=True).stdout
        done = cli("experiment", "status", "--rollback-on-breach", "-p", str(project))
        assert done.returncode == 3, done.stdout + done.stderr
        time.sleep(1.0)  # the server follows the registry (registry_poll_seconds 0.3)
        after = send(server, rows[300:], labels[300:])
    finally:
        assert "logs flushed" in server.stop()
    assert set(after) == {"v1"}  # rolled back: production answers everything again
    canary_shares = {r[0] for r in duckdb.sql(
        f"select distinct round(propensity, 6) from read_parquet('{project}/.loopml/logs/predictions/*.parquet', "
        "union_by_name=true) where route = 'canary'").fetchall()}
    assert canary_shares == {0.3}  # every canary request was served in the first step

    res = json.loads(out)
    res = json.loads(out)
    arms = {a["route"]: a for a in res["arms"]}
    assert arms["canary"]["model_version"] == "v3" and arms["production"]["model_version"] == "v1"
    assert arms["canary"]["score_sd"] < 1e-9 and res["guardrail"]["constant_scores"] and res["breached"]
    assert res["srm"]["mismatch"] is False
    assert res["slo"]["versions"]["v3"]["requests"] > 0 and res["slo"]["versions"]["v3"]["errors"] == 0
    assert res["online"]["n_control"] + res["online"]["n_treatment"] == 300  # feedback joined per arm
    assert "rolled back" in done.stdout
    last = Registry(ws).history()[-1]
    assert (last.version_id, last.from_state, last.to_state) == ("v3", "canary", "archived")
    assert "constant scores" in last.reason and "canary-v3" in last.reason and last.actor == "loopml experiment"
    assert "constant scores" in cli("models", "history", "-p", str(project), check=True).stdout
    rep = cli("experiment", "report", "-p", str(project), check=True).stdout
    assert "wrote" in rep and (ws.reports / "experiment-canary-v3.json").is_file()


def test_healthy_shadow_passes_its_guardrail(tmp_path: Path, click: pa.Table) -> None:
    ws = Workspace.open(tmp_path / "p", click_spec())
    d1, d2 = train_bundle(ws, click, n_estimators=20, seed=0), train_bundle(ws, click, n_estimators=30, seed=1)
    from loopml.serving import Servable
    from loopml.training.bundle import load_bundle

    a, b = (Servable.from_bundle(v, load_bundle(ws, d), d) for v, d in (("v1", d1), ("v2", d2)))
    rows = rows_of(click, 400)
    sa, sb = a.predict_many(rows)[0], b.predict_many(rows)[0]
    ids = [f"r{i}" for i in range(len(rows))]
    log = pa.table({"request_id": ids * 2, "model_version": ["v1"] * 400 + ["v2"] * 400,
                    "route": ["production"] * 400 + ["shadow"] * 400, "experiment": ["shadow-v2"] * 800,
                    "propensity": [1.0] * 800, "score": np.concatenate([sa, sb]),
                    "prediction": np.concatenate([sa > 0.5, sb > 0.5]).astype(float)})
    labels = np.asarray(click.column("click").to_numpy()[:400], dtype=float)
    labelled = log.append_column("label", pa.array(np.concatenate([labels, labels])))
    res = analyse(log, labelled)
    assert res.experiment == "shadow-v2" and not res.breached, res.as_dict()
    q = res.shadow[0]["quality"]
    want = float(np.mean((sb - labels) ** 2 - (sa - labels) ** 2))
    assert q["pairs"] == 400 and q["difference"] == pytest.approx(want) and q["ci_low"] < want < q["ci_high"]
    assert res.shadow[0]["pairs"] == 400 and res.shadow[0]["score_correlation"] > 0.8
    assert res.srm is None  # a shadow mirrors all traffic: no split to check
    shifted = log.set_column(log.column_names.index("score"), "score",
                             pa.array(np.concatenate([sa, np.minimum(sb + 0.3, 1.0)])))
    bad = analyse(shifted)
    assert bad.breached and "KS D" in bad.reasons()[0] and not bad.guardrail["constant_scores"]  # type: ignore[index]
    with pytest.raises(Exception, match="not in the prediction log"):
        analyse(log, experiment="nope")


def test_experiment_start_and_stop_are_recorded(tmp_path: Path, click: pa.Table, cli) -> None:  # type: ignore[no-untyped-def]
    from loopml.experiments.records import get

    project = make_project(tmp_path / "proj", click)
    p = str(project)
    refused = cli("experiment", "start", "v2", "-r", "try", "-p", p)
    assert refused.returncode != 0 and "routing.type is `production`" in refused.stdout + refused.stderr
    spec = (project / "loopml.yaml").read_text()
    (project / "loopml.yaml").write_text(spec + "  routing: {type: canary, fraction: 0.1}\n")
    out = cli("experiment", "start", "v2", "-r", "retrained", "--baseline", "0.05", "--mde", "0.1", "-p", p,
              check=True).stdout
    assert "planned sample size" in out and "canary-v2" in out
    ws = Workspace.open(project)
    rec = get(ws, "canary-v2")
    assert rec is not None and rec["status"] == "running" and rec["plan"]["per_arm"] > rec["plan"]["fixed_horizon_per_arm"]
    assert Registry(ws).get("v2").state == "canary"
    again = cli("experiment", "start", "v2", "-r", "twice", "-p", p)
    assert again.returncode != 0 and "already exists" in again.stdout + again.stderr
    bad = cli("experiment", "stop", "-d", "maybe", "-r", "x", "-p", p)
    assert bad.returncode != 0 and "promote or rollback" in bad.stdout + bad.stderr
    cli("experiment", "stop", "-d", "promote", "-r", "won", "-p", p, check=True)
    reg = Registry(ws)
    assert reg.get("v2").state == "production" and reg.get("v1").state == "archived"
    rec = get(ws, "canary-v2")
    assert rec is not None and rec["status"] == "promoted" and "won" in rec["decision_reason"]
    reasons = [t.reason for t in reg.history("v2")]
    assert any("experiment canary-v2 started: retrained" in r for r in reasons)
    assert any("experiment canary-v2 promoted: won" in r for r in reasons)
    ended = cli("experiment", "stop", "-d", "rollback", "-r", "late", "-p", p)
    assert ended.returncode != 0 and "already ended" in ended.stdout + ended.stderr
