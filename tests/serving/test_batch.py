"""Batch prediction: chunked scoring to Parquet and the online store, then precomputed serving by key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import make_project, start_server
from loopml.errors import DataError
from loopml.registry import Registry
from loopml.serving import predict_batch
from loopml.serving.sources import load_version
from loopml.training.bundle import load_bundle
from loopml.workspace import Workspace


@pytest.fixture(scope="module")
def batch_project(tmp_path_factory: pytest.TempPathFactory, click: pa.Table) -> Path:
    root = make_project(tmp_path_factory.mktemp("batch") / "proj", click)
    spec = (root / "loopml.yaml").read_text().replace("task: {type: binary, target: click}",
                                                      "task: {type: binary, target: click, entity_keys: [row_id]}")
    (root / "loopml.yaml").write_text(spec + "  mode: both\n")
    return root


def test_chunked_batch_equals_the_bundle_and_handles_a_tiny_chunk(batch_project: Path, click: pa.Table, tmp_path: Path) -> None:
    ws = Workspace.open(batch_project)
    v = Registry(ws).get("v1")
    src = tmp_path / "in.parquet"
    pq.write_table(click, src, row_group_size=700)
    servable = load_version(ws, "v1", v.bundle_digest)
    res = predict_batch(servable, src, tmp_path / "out.parquet", chunk_rows=999, keep_columns=["impression"])
    out = pq.read_table(res.output)
    assert res.rows == out.num_rows == click.num_rows
    ref = load_bundle(ws, v.bundle_digest).predict_table(click)
    assert np.array_equal(out.column("score").to_numpy(), ref)
    assert out.column_names == ["impression", "score", "prediction", "model_version"]
    assert set(out.column("model_version").to_pylist()) == {"v1"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_batch_input_errors_name_the_file_and_columns(batch_project: Path, tmp_path: Path) -> None:
    ws = Workspace.open(batch_project)
    servable = load_version(ws, "v1", Registry(ws).get("v1").bundle_digest)
    bad = tmp_path / "x.xlsx"
    bad.write_text("nope")
    with pytest.raises(DataError, match=r"x.xlsx: cannot read files of type `.xlsx`"):
        predict_batch(servable, bad, tmp_path / "o.parquet")
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"impression": [1]}), src)
    with pytest.raises(DataError, match="columns row_id are missing"):
        predict_batch(servable, src, tmp_path / "o.parquet", keys=["row_id"])
    csv = tmp_path / "rows.csv"
    csv.write_text("impression\n1\n")
    with pytest.raises(DataError, match=r"rows.csv: batch scoring on Ray reads Parquet .* not `.csv`"):
        predict_batch(servable, csv, tmp_path / "o.parquet", executor="ray", project_dir=batch_project)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: the folder holds no .parquet file"):
        predict_batch(servable, tmp_path / "empty", tmp_path / "o.parquet", executor="ray", project_dir=batch_project)


def test_cli_batch_writes_parquet_and_online_store_then_serves_precomputed(
    batch_project: Path, click: pa.Table, tmp_path: Path, cli  # type: ignore[no-untyped-def]
) -> None:
    keyed = click.slice(0, 3000).append_column("row_id", pa.array(np.arange(3000, dtype=np.int64)))
    src = tmp_path / "keyed.csv"
    import pyarrow.csv as pacsv

    pacsv.write_csv(keyed, src)
    out = tmp_path / "preds.parquet"
    r = cli("predict", "--batch", str(src), "-o", str(out), "--chunk-rows", "1000", "-p", str(batch_project), check=True)
    assert "3000" in r.stdout and "batch prediction" in r.stdout
    table = pq.read_table(out)
    assert table.column_names == ["row_id", "score", "prediction", "model_version"]
    assert table.column("row_id").to_pylist() == list(range(3000))

    server = start_server(["--project", str(batch_project), "--no-log"], tmp_path)
    try:
        status, body, _ = server.request("POST", "/v1/predict", {"row_id": 17})
        assert status == 200, body
        assert body["route"] == "precomputed" and body["model_version"] == "v1"
        assert body["score"] == table.column("score")[17].as_py()
        status, body, _ = server.request("POST", "/v1/predict", [{"row_id": 1}, {"row_id": 2}])
        assert status == 200 and body["scores"] == table.column("score").to_pylist()[1:3]
        status, body, _ = server.request("POST", "/v1/predict", {"row_id": 99999})
        assert status == 404 and "no precomputed prediction" in body["error"]
        # a request with features is computed online, and agrees with the batch score
        row = {k: v for k, v in keyed.slice(5, 1).to_pylist()[0].items() if k not in ("click",)}
        status, body, _ = server.request("POST", "/v1/predict", row)
        assert status == 200 and body["route"] == "production"
        assert body["score"] == pytest.approx(table.column("score")[5].as_py(), abs=1e-12)
    finally:
        server.stop()
