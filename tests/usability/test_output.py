"""Output for people and programs: piped tables are whole, every `--json` parses with its documented keys,
`run` ends with a summary and exits non-zero when it should, progress lines when not on a terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loopml.cli.shapes import JSON_KEYS, RECORD_KEYS
from tests.conftest import run_cli
from tests.usability.helpers import breast_cancer_csv

NARROW = {"COLUMNS": "80"}  # what a pipe gets by default: rich would cut tables to 80 columns


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A breast-cancer project initialised from its CSV and run once (progress ticking every 10 ms)."""
    tmp = tmp_path_factory.mktemp("out")
    data = breast_cancer_csv(tmp)
    proj = tmp / "cancer"
    run_cli("init", str(proj), "--from", str(data), "--target", "target", check=True)
    ran = run_cli("run", "-p", str(proj), "--json", env={"LOOPML_PROGRESS_SECONDS": "0.01"}, check=True)
    return {"proj": proj, "data": data, "run": ran}


def _keys(command: str, out: str) -> dict[str, Any]:
    doc = json.loads(out)
    assert isinstance(doc, dict)
    missing = [k for k in JSON_KEYS[command] if k not in doc]
    assert not missing, f"`{command} --json` lacks {missing}"
    for path, keys in RECORD_KEYS.items():
        cmd, field = path.rsplit(".", 1)
        if cmd == command:
            for rec in doc[field]:
                assert set(keys) <= set(rec), f"{path} record lacks {set(keys) - set(rec)}"
    return doc


def test_piped_tables_are_never_cut(trained: dict[str, Any]) -> None:
    proj = str(trained["proj"])
    bundle = _keys("models list", run_cli("models", "list", "-p", proj, "--json", check=True).stdout)["versions"][0]
    outputs = {
        "runs": run_cli("runs", "-p", proj, env=NARROW, check=True).stdout,
        "models list": run_cli("models", "list", "-p", proj, env=NARROW, check=True).stdout,
        "lineage": run_cli("lineage", bundle["bundle"][:12], "-p", proj, env=NARROW, check=True).stdout,
        "leaderboard": run_cli("train", "-p", proj, env=NARROW, check=True).stdout,
    }
    run_id = json.loads(trained["run"].stdout)["run_id"]
    assert run_id in outputs["runs"]  # the whole id, not `7b0e835237d…`
    assert "roc_auc=0.99" in outputs["models list"] and "[0." in outputs["models list"]  # the metric with its interval
    assert "bundle:logistic" in outputs["lineage"] or "bundle:lightgbm" in outputs["lineage"]
    assert "95% CI" in outputs["leaderboard"] and "lightgbm" in outputs["leaderboard"]
    for name, text in outputs.items():
        assert "…" not in text, f"piped `{name}` is cut:\n{text}"
    assert max(len(line) for line in outputs["runs"].splitlines()) > 80  # drawn wider than the pipe's 80 columns


def test_every_json_output_parses_with_its_documented_keys(trained: dict[str, Any]) -> None:
    proj = str(trained["proj"])
    run = _keys("run", trained["run"].stdout)
    assert run["approved"] is True and run["winner"] in ("logistic", "lightgbm")
    assert run["reports"]["evaluation_html"].endswith("evaluation.html")
    versions = _keys("models list", run_cli("models", "list", "-p", proj, "--json", check=True).stdout)["versions"]
    assert versions[0]["primary_metric"]["name"] == "roc_auc" and len(versions[0]["primary_metric"]["interval"]) == 2
    runs = _keys("runs", run_cli("runs", "-p", proj, "--json", check=True).stdout)
    assert run["run_id"] in [r["run_id"] for r in runs["runs"]] and {e["stage"] for e in runs["executions"]} >= {"train"}
    steps = _keys("lineage", run_cli("lineage", versions[0]["bundle"], "-p", proj, "--json", check=True).stdout)
    assert steps["artifact"] == versions[0]["bundle"] and steps["steps"][0]["stage"] == "train"
    train = _keys("train", run_cli("train", "-p", proj, "--json", check=True).stdout)
    assert train["winner"] == run["winner"] and train["leaderboard"]["candidates"]
    assert train["primary_metric"]["interval"][0] is not None
    history = _keys("models history", run_cli("models", "history", "-p", proj, "--json", check=True).stdout)
    assert history["transitions"][0]["version_id"] == "v1"
    check = _keys("spec check", run_cli("spec", "check", "-p", proj, "--json", check=True).stdout)
    assert check["ok"] is True and check["task"] == "binary" and check["data_checked"] is True
    zoo = _keys("zoo", run_cli("zoo", "--json", check=True).stdout)
    assert any(m["model"] == "lightgbm" for m in zoo["models"])
    drift = _keys("monitor drift", run_cli("monitor", "drift", "-p", proj, "--current", str(trained["data"]), "--json",
                                           check=True).stdout)
    assert drift["n_current"] == 569 and drift["features"]
    _keys("monitor history", run_cli("monitor", "history", "-p", proj, "--json", check=True).stdout)
    out = trained["proj"].parent / "scored.parquet"
    scored = _keys("predict", run_cli("predict", "-p", proj, "--batch", str(trained["data"]), "--output", str(out),
                                      "--json", check=True).stdout)  # --output: the old spelling of -o/--out
    assert scored["rows"] == 569 and scored["output"] == str(out) and out.exists()

    quality = _keys("monitor quality", run_cli("monitor", "quality", "-p", proj, "--json", check=True).stdout)
    assert quality["metric"] == "roc_auc" and quality["windows"] == []  # nothing served yet
    schema = _keys("data infer-schema", run_cli("data", "infer-schema", "-p", proj, "--force", "--json", check=True).stdout)
    assert Path(schema["schema"]).exists() and "mean radius" in schema["columns"]
    design = _keys("report", run_cli("report", "-p", proj, "--json", check=True).stdout)
    assert Path(design["html"]).exists() and Path(design["markdown"]).read_text().strip()
    archived = _keys("models promote", run_cli("models", "promote", "v1", "--to", "archived", "-r", "test", "-p", proj,
                                               "--json", check=True).stdout)
    assert archived["version_id"] == "v1" and archived["state"] == "archived"
    back = _keys("models promote", run_cli("models", "promote", "v1", "-r", "back", "-p", proj, "--json",
                                           check=True).stdout)
    assert back["state"] == "production" and back["forced"] is False
    made = _keys("init", run_cli("init", str(trained["proj"].parent / "again"), "--from", str(trained["data"]),
                                 "--target", "target", "--json", check=True).stdout)
    assert made["task"] == "binary" and len(made["inputs"]) == 30 and made["inputs"][0]["kind"] == "numeric"

    bad = trained["proj"].parent / "bad"
    bad.mkdir()
    (bad / "loopml.yaml").write_text("task: {type: binry}\n")
    failed = run_cli("spec", "check", "-p", str(bad), "--json")
    doc = _keys("spec check", failed.stdout)
    assert failed.returncode == 2 and doc["ok"] is False and "binry" in " ".join(doc["problems"])


def test_run_summary_progress_and_exit_codes(trained: dict[str, Any], tmp_path: Path) -> None:
    progress = trained["run"].stderr  # not a terminal: plain lines, and ticks while a stage runs
    assert "▶ train: started" in progress and "■ train: success" in progress
    assert "train: still running (" in progress

    human = run_cli("run", "-p", str(trained["proj"]), check=True).stdout
    assert "winner: " in human and "roc_auc 0.99" in human and "model version: v1 (production)" in human
    assert "verdict: APPROVED" in human and "report evaluation_html: " in human

    missing = run_cli("run", "-p", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert not (tmp_path / "nope").exists()  # no .loopml created for a folder that is not there
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "loopml.yaml").write_text("spec_version: 1\n")
    nothing = run_cli("run", "-p", str(empty))
    assert nothing.returncode == 2 and "nothing to run" in nothing.stderr

    # a target that is noise: no model beats the prior, so nothing is approved; --strict turns that into exit 4
    import numpy as np

    rng = np.random.default_rng(0)
    rows = ["a,b,label", *(f"{x:.4f},{y:.4f},{int(c)}" for x, y, c in zip(rng.random(400), rng.random(400),
                                                                        rng.random(400) < 0.3, strict=True))]
    (tmp_path / "noise.csv").write_text("\n".join(rows) + "\n")
    run_cli("init", str(tmp_path / "noise"), "--from", str(tmp_path / "noise.csv"), "--target", "label", check=True)
    lenient = run_cli("run", "-p", str(tmp_path / "noise"), "--json", check=True)
    assert json.loads(lenient.stdout)["approved"] is False
    strict = run_cli("run", "-p", str(tmp_path / "noise"), "--strict")
    assert strict.returncode == 4 and "without an approved model" in strict.stderr
