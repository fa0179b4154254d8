"""The Python API (`loopml.Project`) on a DataFrame, an Arrow table and dicts, and its service."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import loopml
from loopml.serving.sources import load_version
from tests.conftest import run_cli
from tests.usability.helpers import post_json, wine_csv


def test_public_surface() -> None:
    assert {"Project", "Model", "Service"} <= set(loopml.__all__)
    for name in loopml.__all__:
        assert getattr(loopml, name) is not None
    with pytest.raises(loopml.LoopMLError, match=r"holds no loopml\.yaml"):
        loopml.Project("/nonexistent/folder")


def test_project_runs_and_predicts_a_dataframe(tmp_path: Path) -> None:
    data = wine_csv(tmp_path)
    run_cli("init", str(tmp_path / "wine"), "--from", str(data), "--target", "target", check=True)
    project = loopml.Project(tmp_path / "wine")
    result = project.run()
    assert result["approved"] is True and result["version"] == "v1" and result["state"] == "production"
    board = project.leaderboard()
    assert board["winner"] == result["winner"] and len(board["candidates"]) == 3
    report = project.evaluation("v1")
    assert report["primary_metric"] == "accuracy" and report["approved"] is True

    frame = pd.read_csv(data)
    inputs = frame.drop(columns="target")
    model = project.model()
    assert model.version_id == "v1"
    predicted = model.predict(inputs)
    assert predicted.shape == (len(frame),)
    assert float(np.mean(predicted == frame["target"].to_numpy())) > 0.9  # wine is easy: the model learned it
    # the same rows as Arrow, as dicts and one by one give the same answers as the DataFrame
    np.testing.assert_array_equal(model.predict(pa.Table.from_pandas(inputs)), predicted)
    np.testing.assert_array_equal(model.predict(inputs.head(5).to_dict("records")), predicted[:5])
    assert model.predict(inputs.iloc[0].to_dict()).tolist() == [predicted[0]]
    # ... and what the service's own servable answers row by row
    servable = load_version(project.workspace, "v1", project._version("v1").bundle_digest)
    assert [servable.predict_one(r)[1] for r in inputs.head(5).to_dict("records")] == predicted[:5].tolist()
    with pytest.raises(loopml.LoopMLError, match="cannot predict on a str"):
        model.predict("not rows")

    with project.serve() as service:
        status, body = post_json(service.host, service.port, "/v1/predict", inputs.iloc[0].to_dict())
        assert status == 200 and body["prediction"] == predicted[0] and body["model_version"] == "v1"
    assert service.process.poll() is not None  # stopped on leaving the block
