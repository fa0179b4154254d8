"""`loopml export --to mlflow`: the project's runs in a real local MLflow file store, read back with MLflow's client."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.usability.helpers import wine_csv

mlflow = pytest.importorskip("mlflow", reason="the `mlflow` extra (make setup installs it)")


def test_runs_exported_to_mlflow_and_read_back(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    data = wine_csv(tmp_path)
    proj = tmp_path / "wine"
    run_cli("init", str(proj), "--from", str(data), "--target", "target", check=True)
    ran = json.loads(run_cli("run", "-p", str(proj), "--json", check=True).stdout)
    store = tmp_path / "mlruns"
    out = run_cli("export", "--to", "mlflow", "-p", str(proj), "--tracking-uri", str(store), "--json", check=True)
    exported = json.loads(out.stdout)
    assert exported["experiment"] == "wine" and list(exported["exported"]) == [ran["run_id"]]

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps file stores behind this opt-in
    client = MlflowClient(tracking_uri=str(store))
    exp = client.get_experiment_by_name("wine")
    assert exp is not None and exp.experiment_id == exported["experiment_id"]
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    r = runs[0]
    assert r.info.run_id == exported["exported"][ran["run_id"]] and r.info.status == "FINISHED"
    # metrics with their intervals, as the evaluation report has them
    pm = ran["primary_metric"]
    assert pm["name"] == "accuracy"
    assert r.data.metrics["accuracy"] == pytest.approx(pm["value"])
    assert r.data.metrics["accuracy.lower"] == pytest.approx(pm["interval"][0])
    assert r.data.metrics["accuracy.upper"] == pytest.approx(pm["interval"][1])
    assert r.data.metrics["accuracy.lower"] <= r.data.metrics["accuracy"] <= r.data.metrics["accuracy.upper"]
    valid = [k for k in r.data.metrics if k.startswith(f"valid.{ran['winner']}.")]  # the selection metric, log_loss
    assert len(valid) == 3 and any(k.endswith(".lower") for k in valid) and "baseline.accuracy" in r.data.metrics
    # params, verdict and lineage tags
    assert r.data.params["task"] == "multiclass" and r.data.params["winner"] == ran["winner"]
    assert r.data.params["baseline"] == "prior"
    tags = r.data.tags
    assert tags["loopml.run_id"] == ran["run_id"] and tags["loopml.verdict"] == ran["verdict"]
    assert tags["loopml.approved"] == "true" and tags["loopml.version"] == "v1" and tags["loopml.state"] == "production"
    versions = json.loads(run_cli("models", "list", "-p", str(proj), "--json", check=True).stdout)["versions"]
    assert tags["loopml.digest.train.bundle"] == versions[0]["bundle"]
    assert len(tags["loopml.digest.ingest.table"]) == 64
    # the report files as artifacts, byte for byte what loopml stored
    names = {a.path for a in client.list_artifacts(r.info.run_id, "loopml")}
    assert {"loopml/evaluation.json", "loopml/evaluation.html", "loopml/leaderboard.json"} <= names
    local = Path(client.download_artifacts(r.info.run_id, "loopml/evaluation.json", str(tmp_path / "dl")))
    assert json.loads(local.read_text())["primary_metric"] == "accuracy"

    again = json.loads(run_cli("export", "--to", "mlflow", "-p", str(proj), "--tracking-uri", str(store), "--json",
                               check=True).stdout)
    assert again["exported"] == {} and again["skipped"] == [ran["run_id"]]  # exporting again adds nothing
    bad = run_cli("export", "--to", "wandb", "-p", str(proj))
    assert bad.returncode == 2 and "supported: mlflow" in bad.stderr
