"""End to end through the CLI: `loopml train` on german_credit, `loopml zoo`, and a bad spec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

SPEC = """\
spec_version: 1
project: {{name: credit}}
requirements:
  constraints: {{latency_p99_ms: 1000, max_model_size_mb: 20}}
task: {{type: binary, target: class, positive_label: bad}}
data:
  sources:
    credit: {{type: csv, path: {csv}}}
training:
  split: {{type: stratified}}
  candidates:
    - {{type: prior}}
    - {{type: logistic}}
    - {{type: lightgbm, tune: true}}
  tuning: {{time_budget_s: 600, n_trials: 3}}
  executor: process
evaluation: {{bootstrap_resamples: 30}}
"""


@pytest.fixture(scope="module")
def trained(datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    from tests.conftest import run_cli

    proj = tmp_path_factory.mktemp("train") / "proj"
    proj.mkdir()
    (proj / "loopml.yaml").write_text(SPEC.format(csv=datasets / "german_credit" / "credit-g.csv"))
    proc = run_cli("train", "-p", str(proj), "--quiet")
    return proj, proc


def test_train_prints_the_leaderboard_and_stores_the_bundle(trained: tuple[Path, object]) -> None:
    from loopml.lineage import list_executions
    from loopml.training.bundle import load_bundle
    from loopml.training.records import list_trials
    from loopml.workspace import Workspace

    proj, proc = trained
    assert proc.returncode == 0, proc.stderr  # type: ignore[attr-defined]
    out = proc.stdout  # type: ignore[attr-defined]
    assert "leaderboard (roc_auc, validation split)" in out and "HTML leaderboard" in out
    ws = Workspace.open(proj)
    ex = next(e for e in list_executions(ws) if e["stage"] == "train")
    outs = ex["outputs"]
    assert set(outs) >= {"bundle", "train", "valid", "test", "leaderboard", "leaderboard_html"}
    board = json.loads(ws.artifacts.get_bytes(outs["leaderboard"]))
    assert board["winner"] in out and board["why"].split(":")[0] == board["winner"]
    assert {c["name"] for c in board["candidates"]} == {"prior", "logistic", "lightgbm"}
    rows = {k: pq.read_table(ws.artifacts.open_verified(outs[k])).num_rows for k in ("train", "valid", "test")}
    assert rows == {"train": 700, "valid": 150, "test": 150}
    bundle = load_bundle(ws, outs["bundle"])
    test = pq.read_table(ws.artifacts.open_verified(outs["test"]))
    scores = bundle.predict_table(test)
    assert scores.shape == (150,) and np.all((scores >= 0) & (scores <= 1))
    assert bundle.manifest["training"]["splits"]["test"] == outs["test"]
    trials = list_trials(ws, ex["execution_id"])
    tuned = [t for t in trials if t["kind"] == "trial"]
    assert len(tuned) == 3 and all(t["candidate"] == "lightgbm" for t in tuned)
    finals = {t["candidate"]: t for t in trials if t["kind"] == "final"}
    assert set(finals) == {"prior", "logistic", "lightgbm"}
    assert finals[board["winner"]]["artifacts"]["bundle"] == outs["bundle"]
    assert (proj / ".loopml" / "reports" / "leaderboard.html").read_text().lower().startswith("<!doctype html>")


def test_train_again_is_a_cache_hit(trained: tuple[Path, object], cli) -> None:  # type: ignore[no-untyped-def]
    proj, _ = trained
    proc = cli("train", "-p", str(proj), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "train: cache hit" in proc.stdout


def test_zoo_lists_every_model_and_its_fields(cli) -> None:  # type: ignore[no-untyped-def]
    from loopml.training.models import MODELS

    proc = cli("zoo")
    assert proc.returncode == 0
    for name in MODELS:
        assert name in proc.stdout
    one = cli("zoo", "lightgbm")
    assert "num_leaves" in one.stdout and "Leaves per tree." in one.stdout
    bad = cli("zoo", "nope")
    assert bad.returncode == 1 and "model type `nope` is not registered" in bad.stderr


def test_a_bad_candidate_fails_with_the_key_path(datasets: Path, project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    text = SPEC.format(csv=datasets / "german_credit" / "credit-g.csv").replace(
        "- {type: logistic}", "- {type: logistic, params: {C: -1}}"
    )
    (project / "loopml.yaml").write_text(text)
    proc = cli("train", "-p", str(project), "--quiet")
    assert proc.returncode != 0
    assert "training.candidates[1] (logistic).params.C" in proc.stderr + proc.stdout


def test_rows_without_a_label_are_quarantined_not_dropped(datasets: Path, project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from loopml.lineage import list_executions
    from loopml.validation.quarantine import data_quarantine
    from loopml.workspace import Workspace

    lines = (datasets / "german_credit" / "credit-g.csv").read_text().splitlines()
    body = [line.rsplit(",", 1)[0] + "," if i % 50 == 0 else line for i, line in enumerate(lines[1:])]
    (project / "credit.csv").write_text("\n".join([lines[0], *body]) + "\n")
    text = SPEC.format(csv="credit.csv").replace("    - {type: lightgbm, tune: true}\n", "")
    (project / "loopml.yaml").write_text(text)
    proc = cli("train", "-p", str(project), "--quiet")
    assert proc.returncode == 0, proc.stderr
    ws = Workspace.open(project)
    ex = next(e for e in list_executions(ws) if e["stage"] == "train")
    assert ex["summary"]["unlabeled_quarantined"] == 20
    with ws.engine.connect() as conn:
        rows = conn.execute(select(data_quarantine).where(data_quarantine.c.check == "training.label_missing")).all()
    assert len(rows) == 20 and all(r.execution_id == ex["execution_id"] for r in rows)
    assert "target `class` is missing" in rows[0].reason
    assert ex["summary"]["train_rows"] + ex["summary"]["valid_rows"] == 980 - 147
