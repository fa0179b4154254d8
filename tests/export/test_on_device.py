"""`deployment_target: on-device`: compressed variants are candidates, judged on their ONNX files in ONNX Runtime;
the pick fits the device budget, and the leaderboard says why."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
from ruamel.yaml import YAML

from loopml.export.onnx_export import feeds, run, session
from loopml.training.bundle import load_bundle
from loopml.workspace import Workspace
from tests.examples.test_examples import _small_copy

BUDGET_MB = 0.03


def test_a_device_budget_spec_picks_a_variant_that_fits(cli, tmp_path, datasets):
    proj = _small_copy("german_credit_fairness", tmp_path / "credit", datasets)
    y = YAML()
    doc = y.load((proj / "loopml.yaml").read_text())
    doc["requirements"]["constraints"] = {"latency_p99_ms": 5, "max_model_size_mb": BUDGET_MB,
                                          "deployment_target": "on-device"}
    doc["training"]["candidates"].append({"type": "mlp", "params": {"hidden": [64, 32], "epochs": 3}})
    with open(proj / "loopml.yaml", "w") as f:
        y.dump(doc, f)
    tr = cli("train", "-p", str(proj), "-q", timeout=900)
    assert tr.returncode == 0, tr.stdout[-3000:] + tr.stderr[-3000:]
    assert "on-device variants" in tr.stdout and "on-device:" in tr.stdout

    ws = Workspace.open(proj)
    from loopml.reporting import collect

    facts = collect(ws)
    board = facts.output_json("train", "leaderboard")
    sec = board["on_device"]
    rows = {v["name"]: v for v in sec["variants"]}
    assert sec["winner"] == board["winner"] and board["why"].startswith("on-device:")
    win = rows[sec["winner"]]
    # the pick fits: its exported file and its device latency are within the budget
    assert win["fits"] and win["size_kb"] * 1024 <= BUDGET_MB * 1e6 and win["p99_ms"] <= 5 * 1.2
    # compressed variants were candidates: quantised, pruned and distilled ones, each measured
    techniques = {v["technique"] for v in sec["variants"]}
    assert {"export", "int8", "fp16", "trees", "leaves", "prune", "distill"} <= techniques
    for v in sec["variants"]:
        assert v["size_kb"] > 0 and v["p99_ms"] > 0 and v["interval"][0] <= v["value"] <= v["interval"][1]
        assert v["fits"] == (not v["reasons"])
    # something better did not fit, and says why (the cloud model is over the size budget)
    over = [v for v in sec["variants"] if not v["fits"]]
    assert over and all("size budget" in v["reasons"][0] or "p99" in v["reasons"][0] for v in over)
    assert sec["cloud"]["name"] in rows
    # the winner's bundle is registered-ready and the chosen ONNX file is an output of the train stage
    from sqlalchemy import select

    from loopml.workspace.metadata import executions

    with ws.engine.connect() as conn:
        row = conn.execute(select(executions).where(executions.c.stage == "train",
                                                    executions.c.status == "success")).mappings().first()
    onnx_digest = row["outputs"]["device_model"]
    onnx_bytes = ws.artifacts.get_bytes(onnx_digest)
    assert len(onnx_bytes) == round(win["size_kb"] * 1024)
    bundle = load_bundle(ws, row["outputs"]["bundle"])
    assert bundle.manifest["device"]["variant"] == sec["winner"]
    valid = pq.read_table(ws.artifacts.open_verified(row["outputs"]["valid"]))
    scores = run(session(onnx_bytes), feeds(bundle.transform, valid))
    assert scores.shape == (valid.num_rows,) and np.all((scores >= 0) & (scores <= 1))
    # the quantised/compressed file stays close to its Python bundle (drift measured and recorded)
    assert np.abs(scores - bundle.predict_table(valid)).max() <= max(0.05, win["drift"] + 1e-6)
    assert json.dumps(sec)  # plain JSON
    # the design document's deployment section shows the cloud and the on-device choice side by side
    rep = cli("report", "-p", str(proj))
    assert rep.returncode == 0, rep.stdout + rep.stderr
    md = (proj / ".loopml" / "reports" / "design.md").read_text()
    dep = md[md.index("## 7. Deployment"):]
    assert f"cloud: best model ({sec['cloud']['name']})" in dep and f"on-device (chosen: on-device): {sec['winner']}" in dep
    assert f"{win['size_kb']:.1f} KB" in dep and f"{sec['cloud']['size_kb']:.1f} KB" in dep
    for v in (win, sec["cloud"]):  # with their numbers: quality [95% CI] and device p99 of each
        assert f"{v['value']:.4f} [{v['interval'][0]:.4f}, {v['interval'][1]:.4f}]" in dep
        assert f"{v['p99_ms']:.3f} ms" in dep
    assert f"{win['lift_share'] * 100:.1f}%" in dep
