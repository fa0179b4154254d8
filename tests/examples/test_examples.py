"""Every example spec runs with `loopml run` on its real dataset (small budgets), and its design document
is generated with the measured figures in it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from loopml.spec import load_spec
from loopml.workspace import Workspace
from tests.webui.conftest import assert_self_contained

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "loopml.yaml").is_file())
PREFIX = "../../../shared/datasets"

#: small budgets per model type, so the suite stays fast; the specs themselves keep their full budgets
SMALL = {
    "lightgbm": {"n_estimators": 40},
    "mlp": {"epochs": 1},
    "factorization_machine": {"epochs": 1},
}
#: row samples of the larger datasets (DuckDB SQL over the source), same columns as the source
SAMPLES = {
    "kdd2012_ad_clicks": "SELECT * FROM clicks USING SAMPLE 8000 ROWS (reservoir, 7)",
    "davidson_hate_speech": 'SELECT tweet, "class" FROM tweets USING SAMPLE 1500 ROWS (reservoir, 7)',
}


def test_every_dataset_folder_has_an_example():
    assert set(NAMES) == {
        "kdd2012_ad_clicks", "movielens_ranking", "davidson_hate_speech", "bike_sharing_demand", "german_credit_fairness"
    }
    for name in NAMES:
        assert (EXAMPLES / name / "README.md").is_file(), name
        text = (EXAMPLES / name / "loopml.yaml").read_text()
        assert PREFIX in text, f"{name}: sources should point at {PREFIX}"


@pytest.mark.parametrize("name", NAMES)
def test_example_spec_is_valid_as_shipped(name, cli):
    proc = cli("spec", "check", str(EXAMPLES / name))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert load_spec(EXAMPLES / name).training.candidates


def _small_copy(name: str, dest: Path, datasets: Path) -> Path:
    """The example in ``dest`` with its data paths pointing at ``datasets`` and small budgets."""
    text = (EXAMPLES / name / "loopml.yaml").read_text().replace(PREFIX, str(datasets))
    y = YAML()
    doc = y.load(text)
    for cand in doc["training"]["candidates"]:
        params = cand.setdefault("params", {})
        params.update(SMALL.get(cand["type"], {}))
    doc["evaluation"]["bootstrap_resamples"] = 50
    if name in SAMPLES:
        doc["data"]["transform"] = SAMPLES[name]
    if name == "davidson_hate_speech":
        # a smaller vocabulary for the 1,500-tweet sample (the shipped spec keeps up to 50,000 terms)
        for feat in doc["features"]["inputs"]:
            if feat["column"] == "tweet":
                feat["transforms"] = [{"type": "tfidf", "max_features": 300}]
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "loopml.yaml", "w") as f:
        y.dump(doc, f)
    for extra in (EXAMPLES / name).iterdir():
        if extra.name not in ("loopml.yaml", "README.md"):
            shutil.copy(extra, dest / extra.name)
    return dest


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+\.\d{4}", text))


@pytest.mark.parametrize("name", NAMES)
def test_example_runs_and_its_design_document_holds_the_measured_figures(name, cli, tmp_path, datasets):
    proj = _small_copy(name, tmp_path / name, datasets)
    env = {"LOOPML_HASH_KEY": "example-test-key"}
    run = cli("run", "-p", str(proj), "-q", env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "evaluate" in run.stdout and "register" in run.stdout

    rep = cli("report", "-p", str(proj))
    assert rep.returncode == 0, rep.stdout + rep.stderr
    md = (proj / ".loopml" / "reports" / "design.md").read_text()
    page = (proj / ".loopml" / "reports" / "design.html").read_text()

    ws = Workspace.open(proj)
    from loopml.reporting import collect

    facts = collect(ws)
    board = facts.output_json("train", "leaderboard")
    evaluation = facts.output_json("evaluate", "report")
    assert board and evaluation
    # the measured figures are in the document: winner, its validation value, the test metric and interval
    assert f"| {board['winner']} |" in md
    prim = evaluation["primary_metric"]
    m = evaluation["metrics"][prim]
    assert f"{m['value']:.4f}" in md and f"{m['lower']:.4f}" in md
    assert f"{facts.summary('ingest')['rows']:,}" in md
    for gate in evaluation["gates"]:
        assert gate["gate"] in md
    assert "Verdict: " + ("APPROVED" if evaluation["approved"] else "NOT APPROVED") in md
    # every step is there, and only monitoring (never run here) is marked as not measured
    for title in ("1. Requirements", "2. Framing", "3. Data", "4. Features", "5. Model development", "6. Evaluation",
                  "7. Deployment", "8. Monitoring"):
        assert f"## {title}" in md
    assert md.count("Not measured yet") == 1 and "no monitoring cycle has run yet" in md
    # HTML: self-contained (the chart layer inlined, no external resources) and holds the same figures
    assert_self_contained(page)
    assert _numbers(f"{m['value']:.4f}") <= _numbers(page)
    if name == "german_credit_fairness":
        assert "Fairness" in md and "fairness.demographic_parity_difference" in md
        dpd = evaluation["fairness"]["personal_status"]["demographic_parity_difference"]["value"]
        assert f"| personal_status | demographic_parity_difference | {dpd:.4f} |" in md
    if name == "kdd2012_ad_clicks":
        manifest = facts.output_json("ingest", "manifest")
        assert "url_hash" not in json.dumps(manifest["schema"])  # dropped at ingestion, as the spec asks
        assert "absent from the snapshot schema" in md


def test_ad_clicks_template_initialises_a_valid_project(cli, tmp_path):
    proj = tmp_path / "ads"
    assert cli("init", str(proj), "--example", "ad_clicks").returncode == 0
    check = cli("spec", "check", str(proj))
    assert check.returncode == 0, check.stdout + check.stderr
    spec = load_spec(proj)
    assert [c.type for c in spec.training.candidates] == ["prior", "logistic", "lightgbm", "factorization_machine", "mlp"]
    assert spec.data.labels is not None and spec.data.labels.type == "event_within_window"
    assert spec.requirements.privacy.hash == ["user_id"]
    assert set(spec.features.tables) == {"user_history", "ad_history"}
