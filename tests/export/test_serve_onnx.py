"""`loopml serve --backend onnx`: the model runs in ONNX Runtime behind the same server; the answers are the
Python bundle's (plain export) or its compressed variant's (the on-device winner's int8/fp16 weights)."""

from __future__ import annotations

import numpy as np

from loopml.export.artifact import held_out_split
from loopml.export.compression import int8_weights
from loopml.export.onnx_export import bundle_to_onnx, feeds, run, session
from loopml.export.serving import model_artifact
from loopml.registry import Registry
from loopml.serving.servable import Servable
from loopml.training.bundle import Bundle, load_bundle
from loopml.workspace import Workspace
from tests.examples.test_examples import _small_copy
from tests.export.conftest import node_scores
from tests.export.test_onnx_export import _bundle
from tests.serving.conftest import start_server


def test_serve_backend_onnx_answers_like_the_bundle(cli, tmp_path, datasets):
    proj = _small_copy("german_credit_fairness", tmp_path / "credit", datasets)
    assert cli("run", "-p", str(proj), "-q", timeout=900).returncode == 0
    ws = Workspace.open(proj)
    reg = Registry(ws)
    v = reg.production() or reg.list()[0]
    if v.state != "production":
        cli("models", "promote", v.version_id, "--to", "production", "--force", "-r", "test", "-p", str(proj),
            check=True)
    bundle = load_bundle(ws, v.bundle_digest)
    rows = [{c: r[c] for c in bundle.transform.input_columns} for r in held_out_split(ws, v).slice(0, 20).to_pylist()]
    server = start_server(["-p", str(proj), "--backend", "onnx", "--no-log"], tmp_path)
    try:
        single = [server.request("POST", "/v1/predict", r)[1]["score"] for r in rows]
        status, many, _ = server.request("POST", "/v1/predict", rows)
        assert status == 200
    finally:
        server.stop()
    want = np.array([float(bundle.predict_row(r)) for r in rows])
    assert np.abs(np.array(single) - want).max() <= 1e-5
    got_many = np.array(many["scores"])
    assert np.abs(got_many - want).max() <= 1e-5
    bad = cli("serve", "-p", str(proj), "--backend", "tflite", "--port", "0")
    assert bad.returncode != 0 and "--backend must be" in (bad.stdout + bad.stderr)


def test_onnx_servable_keeps_the_chosen_int8_compression(german_binary):
    b = _bundle(german_binary, "mlp")
    b = Bundle(b.transform, b.model, {"device": {"technique": "int8"}})
    servable = Servable.from_bundle("v1", b, backend="onnx")
    table = german_binary.test
    scores = servable.predict_table(table)
    device = run(session(int8_weights(bundle_to_onnx(b).SerializeToString())), feeds(b.transform, table))
    assert np.abs(scores - device).max() <= 1e-4  # the server runs the same int8 weights as the device file
    assert np.abs(scores - b.predict_table(table)).max() > 1e-7  # and they are not the float32 weights
    # only the weights are int8 (activations stay float32): a row alone gets the score it gets in the batch
    row = table.slice(0, 1)
    one = servable.predict_one(row.to_pylist()[0])[0]
    assert abs(one - device[0]) <= 1e-4
    q, plain = model_artifact(b), model_artifact(Bundle(b.transform, b.model, {}))
    assert b"DequantizeLinear" in q and b"DequantizeLinear" not in plain and len(q) < len(plain)


def test_the_exported_file_of_an_int8_winner_is_int8_with_its_drift_measured(german_binary, tmp_path):
    from loopml.export.compression import for_device
    from loopml.export.onnx_export import check_parity

    b = _bundle(german_binary, "mlp")
    fp32 = bundle_to_onnx(b).SerializeToString()
    assert for_device(b, fp32) == (None, fp32)  # a cloud winner is written as is
    b = Bundle(b.transform, b.model, {"device": {"technique": "int8"}})
    kind, data = for_device(b, fp32)
    assert kind == "int8" and b"DequantizeLinear" in data
    drift = check_parity(b, data, german_binary.test, tolerance=float("inf"))
    assert 1e-7 < drift.max_abs_diff < 0.05  # measured, small, and not zero: the weights are int8
    # the quantised file runs off Python too: ONNX Runtime for Node.js gives the Python runtime's int8 scores
    path = tmp_path / "int8.onnx"
    path.write_bytes(data)
    inputs = feeds(b.transform, german_binary.test)
    js = node_scores(path, inputs, tmp_path)
    assert np.abs(js - run(session(data), inputs)).max() <= 1e-5
    assert for_device(Bundle(b.transform, b.model, {"device": {"technique": "fp16"}}), fp32)[0] == "fp16"
