"""A served bandit: `loopml serve` with routing type `bandit` moves traffic to the version whose delayed labels
reward it more, logs every choice with the share in force as its propensity, and the log's off-policy values
recover each arm's true reward rate.

Real bundles, a real `loopml serve`, real feedback over HTTP; the rewards come from a known simulator: a click
with probability 0.6 when v2 (the challenger) answered and 0.2 when v1 (production) did.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from helpers import rows_of

from conftest import make_project, start_server
from loopml.errors import DataError
from loopml.experiments.analysis import analyse
from loopml.registry import Registry
from loopml.serving.bandit import rewards_by_arm, share_of_challenger
from loopml.serving.routing import BanditConfig
from loopml.spec import Spec
from loopml.workspace import Workspace

TRUE_CTR = {"v1": 0.2, "v2": 0.6}


def test_thompson_bandit_moves_traffic_to_the_better_version_and_logs_propensities(tmp_path: Path,
                                                                                     click: pa.Table) -> None:
    project = make_project(tmp_path / "proj", click)
    (project / "loopml.yaml").write_text((project / "loopml.yaml").read_text()
                                         + "  routing: {type: bandit, update_seconds: 0.3, min_share: 0.05}\n")
    ws = Workspace.open(project)
    Registry(ws).transition("v2", "canary", actor="test", reason="bandit between v1 and v2")
    rows = rows_of(click, 1200)
    rng = np.random.default_rng(0)
    server = start_server(["--project", str(project)], tmp_path)
    answered: list[str] = []
    try:
        for i, row in enumerate(rows):
            status, body, _ = server.request("POST", "/v1/predict", row)
            assert status == 200, body
            answered.append(body["model_version"])
            label = int(rng.random() < TRUE_CTR[body["model_version"]])
            assert server.request("POST", "/v1/feedback", {"request_id": body["request_id"], "label": label})[0] == 200
            if i % 100 == 99:
                time.sleep(0.8)  # the labels reach the logs; the updater (every 0.3 s) reads them
        status, text, _ = server.request("GET", "/metrics")
        assert status == 200 and 'loopml_canary_share{experiment="bandit-v2"' in text
    finally:
        assert "logs flushed" in server.stop()

    from loopml.monitoring.logs import read_labelled, read_predictions

    log = read_predictions(ws)
    routes = log.column("route").to_pylist()
    props = np.asarray(log.column("propensity").to_numpy(zero_copy_only=False), dtype=float)
    assert set(log.column("experiment").to_pylist()) == {"bandit-v2"} and log.num_rows == len(rows)
    assert ((props >= 0.05 - 1e-12) & (props <= 0.95 + 1e-12)).all()  # the floor keeps every propensity usable
    share = np.where(np.asarray(routes) == "canary", props, 1.0 - props)  # the challenger's share at each request
    assert share[0] == pytest.approx(0.5)  # an even start before any reward
    assert share[-200:].min() > 0.9, share[-200:]  # then most traffic goes to the better version
    assert answered[-200:].count("v2") > 150
    res = analyse(log, read_labelled(ws), "bandit-v2", alpha=0.01)
    values = {v["policy"]: v for v in res.policy_values}
    for arm, version in (("canary", "v2"), ("production", "v1")):
        est = values[f"always {arm}"]["snips"]
        assert abs(est["value"] - TRUE_CTR[version]) < 0.12, (arm, est)
        assert est["ci_low"] < est["value"] < est["ci_high"]
    assert res.srm is not None and not res.srm["mismatch"], res.srm  # shares that moved are expected as they were


def test_bandit_shares_from_rewards() -> None:
    t = pa.table({"route": ["production"] * 4 + ["canary"] * 4, "experiment": ["e"] * 8,
                  "label": [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0]})
    pulls, rewards = rewards_by_arm(t, "e")
    assert pulls.tolist() == [4.0, 4.0] and rewards.tolist() == [1.0, 3.0]
    ts = share_of_challenger(pulls, rewards, BanditConfig())
    assert 0.8 < ts < 1.0 and ts == share_of_challenger(pulls, rewards, BanditConfig())  # seeded: reproducible
    eg = share_of_challenger(pulls, rewards, BanditConfig(algorithm="epsilon_greedy", epsilon=0.2))
    assert eg == pytest.approx(0.9)
    with pytest.raises(DataError, match=r"must lie in \[0, 1\]; experiment e has label 7 "):
        rewards_by_arm(pa.table({"route": ["canary"], "experiment": ["e"], "label": [7.0]}), "e")


def test_spec_serves_the_bandit_with_its_options() -> None:
    spec = Spec.model_validate({"task": {"type": "binary", "target": "y"}, "deployment": {"routing": {
        "type": "bandit", "algorithm": "epsilon_greedy", "epsilon": 0.2, "min_share": 0.1}}})
    opts = spec.deployment.routing.options()
    assert opts["algorithm"] == "epsilon_greedy" and opts["epsilon"] == 0.2 and opts["min_share"] == 0.1
    BanditConfig(**opts)  # the policy's own config accepts exactly what the spec passes
