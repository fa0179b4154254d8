"""int8 weight compression of an exported graph: the whole file is >= 3x smaller for the benchmark's MLP, every
weight tensor of the model is int8 and nothing else changes (the transform's constants stay exact)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from loopml.export.compression import fp16_weights, int8_weights
from loopml.export.graph import is_weight
from loopml.export.onnx_export import bundle_to_onnx, check_parity, feeds, model_to_onnx, run, session
from loopml.training.bundle import Bundle
from loopml.training.models import make_model
from tests.export.conftest import Data, node_scores


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


def test_int8_cuts_the_whole_exported_mlp_file_at_least_3x_with_its_drift_measured(bike_regression, tmp_path):
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
    # the same file in ONNX Runtime for Node.js gives the Python runtime's scores
    path = tmp_path / "int8.onnx"
    path.write_bytes(q)
    inputs = feeds(b.transform, test.slice(0, 200))
    assert np.abs(node_scores(path, inputs, tmp_path) - run(session(q), inputs)).max() <= 1e-3


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
            assert {i.name for i in small} <= feeders, (name, op)
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
