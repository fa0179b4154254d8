"""int8 weight compression of an exported graph: the whole file is >= 3x smaller for the benchmark's MLPs (bike_sharing
and the ad-clicks simulator, whose id vocabularies are part of the file), every weight tensor of the model is int8
and nothing else changes (the transform's constants stay exact)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from loopml.export.compression import fp16_weights, int8_weights
from loopml.export.graph import is_weight
from loopml.export.onnx_export import bundle_to_onnx, check_parity, feeds, model_to_onnx, run, session
from loopml.training.bundle import Bundle
from loopml.training.models import make_model
from tests.export.conftest import Data, browser_scores, fit_data, node_scores


def _fit(data: Data, name: str, **params: object) -> Bundle:
    m = make_model(name, task=data.task, seed=0, **params).fit(data.X, data.y,
                                                              categorical=data.pipeline.categorical_features)
    return Bundle(data.pipeline, m, {})


def _constants(m: onnx.ModelProto, weights: bool) -> list[bytes]:
    out = []
    for init in m.graph.initializer:
        if is_weight(init.name) == weights:
            body = onnx.TensorProto()
            body.CopyFrom(init)
            body.name = ""
            out.append(body.SerializeToString())
    return sorted(out)


def test_int8_cuts_the_whole_exported_mlp_file_at_least_3x_with_its_drift_measured(bike_regression, tmp_path,
                                                                                  browser):
    b = _fit(bike_regression, "mlp", hidden=[128, 64], epochs=2, batch_size=256)  # the benchmark's MLP
    fp32 = bundle_to_onnx(b).SerializeToString()
    q = int8_weights(fp32)
    assert len(fp32) / len(q) >= 3.0, (len(fp32), len(q))  # the file bytes, transform included
    part = model_to_onnx(b).SerializeToString()
    assert len(part) / len(int8_weights(part)) >= 3.0
    # the quantisation error is measured against the Python bundle: not zero (the weights are int8), and small
    # next to the spread of the target (hourly rentals)
    test = bike_regression.test
    drift = check_parity(b, q, test, tolerance=float("inf"))
    mean_abs = float(np.abs(run(session(q), feeds(b.transform, test)) - b.predict_table(test)).mean())
    assert drift.max_abs_diff > 1e-3 and mean_abs < 0.05 * float(np.std(bike_regression.y)), (drift.line(), mean_abs)
    # the same file in ONNX Runtime for Node.js and in ONNX Runtime Web (Chromium) gives the Python runtime's
    # scores: the activations stay float32 everywhere, so a row scores the same alone and in a batch
    path = tmp_path / "int8.onnx"
    path.write_bytes(q)
    inputs = feeds(b.transform, test.slice(0, 200))
    py = run(session(q), inputs)
    assert np.abs(node_scores(path, inputs, tmp_path) - py).max() <= 1e-3
    assert np.abs(browser_scores(browser, path, inputs, tmp_path) - py).max() <= 1e-3
    one = run(session(q), {k: v[7:8] for k, v in inputs.items()})
    assert abs(float(one[0]) - float(py[7])) <= 1e-5 * max(1.0, abs(float(py[7])))


def test_int8_cuts_the_whole_exported_ad_clicks_mlp_file_at_least_3x(tmp_path):
    """The benchmark's ad-clicks MLP (`python -m benchmarks compression`): the same simulated traffic, features and
    layers, so the same vocabularies and tensor shapes (one epoch: the bytes do not depend on training longer)."""
    from benchmarks.bench_compression import AD_FEATURES, _split, ad_clicks

    table, target = ad_clicks(40_000, 3)
    tr, _, te = _split(table.num_rows, 0.15, 0.15)
    y = np.asarray(table.column(target).to_numpy(zero_copy_only=False), dtype=np.int64)
    data = fit_data(table, AD_FEATURES, target, "binary", y, tr.stop)
    b = _fit(data, "mlp", hidden=[128, 64], epochs=1, batch_size=512)
    fp32 = bundle_to_onnx(b).SerializeToString()
    q = int8_weights(fp32)
    # the file bytes, the transform with its id vocabularies (about 10,000 ad ids, 7,800 advertisers) included
    assert len(fp32) / len(q) >= 3.0, (len(fp32), len(q))
    # the compact vocabularies change nothing computed: the float32 file is the Python bundle, in both runtimes
    test = table.slice(te.start, 3000)
    assert check_parity(b, fp32, test).ok, check_parity(b, fp32, test).line()
    path = tmp_path / "fp32.onnx"
    path.write_bytes(fp32)
    inputs = feeds(b.transform, test.slice(0, 300))
    assert np.abs(node_scores(path, inputs, tmp_path) - b.predict_table(test.slice(0, 300))).max() <= 1e-5


def test_int8_and_fp16_touch_every_model_weight_and_nothing_else(german_binary):
    for name, params in [("mlp", {"hidden": [32, 16], "epochs": 2}), ("factorization_machine", {"epochs": 2})]:
        b = _fit(german_binary, name, **params)
        m32 = bundle_to_onnx(b)
        big = [i for i in m32.graph.initializer if is_weight(i.name) and int(np.prod(i.dims)) >= 16]
        assert len(big) >= 3, name  # dense layers / embedding and factor tables are marked as weights
        for squeeze, dtype, op in [(int8_weights, TensorProto.INT8, "DequantizeLinear"),
                                   (fp16_weights, TensorProto.FLOAT16, "Cast")]:
            m = onnx.load_from_string(squeeze(m32.SerializeToString()))
            # the transform's constants (levels, index tables, scaling) are byte for byte the float32 export's
            assert _constants(m, weights=False) == _constants(m32, weights=False), (name, op)
            # no float weight of 16+ elements is left; each compressed one is turned back by one node
            left = [i.name for i in m.graph.initializer if is_weight(i.name) and i.data_type == TensorProto.FLOAT
                    and int(np.prod(i.dims)) >= 16]
            assert not left, (name, op, left)
            small = [i for i in m.graph.initializer if i.data_type == dtype]
            assert len(small) == len(big), (name, op)
            feeders = {n.input[0] for n in m.graph.node if n.op_type == op}
            # an int8 embedding table is gathered first, then only its rows are dequantized
            feeders |= {n.input[0] for n in m.graph.node if n.op_type == "Gather" and n.output[0] in feeders}
            assert {i.name for i in small} <= feeders, (name, op)
            if op == "DequantizeLinear" and name == "mlp":
                assert any(n.op_type == "Gather" and n.input[0] in {i.name for i in small} for n in m.graph.node)
            scores = run(session(m.SerializeToString()), feeds(b.transform, german_binary.test))
            assert np.abs(scores - b.predict_table(german_binary.test)).max() < 0.05, (name, op)
        if name == "mlp":  # int8 weights: one scale per tensor, every value within [-127, 127], the extremes used
            q = onnx.load_from_string(int8_weights(m32.SerializeToString()))
            for i in q.graph.initializer:
                if i.data_type == TensorProto.INT8:
                    a = numpy_helper.to_array(i)
                    assert np.abs(a.astype(int)).max() == 127, i.name


def test_the_exported_graph_is_compact(german_binary):
    b = _fit(german_binary, "mlp", hidden=[32, 16], epochs=2)
    m = bundle_to_onnx(b)
    inits = _constants(m, weights=False) + _constants(m, weights=True)
    assert len(inits) == len(set(inits))  # each distinct constant stored once
    inputs = {i.name for i in m.graph.input}
    internal = {x for n in m.graph.node for x in [*n.input, *n.output]} - inputs - {"score", ""}
    assert max(len(x) for x in internal) <= 4 and [o.name for o in m.graph.output] == ["score"]
    assert check_parity(b, m.SerializeToString(), german_binary.test).ok
