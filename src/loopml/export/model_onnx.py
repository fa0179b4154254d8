"""Models of the zoo as ONNX operators on the float32 feature matrix.

The linear family, the MLP and the factorization machine are scored with numpy in loopml; their
ONNX form is the same arithmetic (``MatMul``, ``Gather`` for id embeddings, ``Relu``,
``Sigmoid``/``Softmax``) over the same fitted arrays, in float32, the precision a device runs.
LightGBM goes through its converter (``onnxmltools.convert_lightgbm``). A model class declares
``exports_onnx``; any other model is refused by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loopml.export.graph import FLOAT, INT64, OPSET, GraphBuilder
from loopml.export.transform_onnx import ExportRefused

F32 = np.float32


def _refuse(model: Any, why: str) -> ExportRefused:
    return ExportRefused(f"cannot export to ONNX: model `{model.name}`: {why}",
                         hint="models that export: `loopml zoo` (capability `onnx`)")


def _rows(b: GraphBuilder, X: str, value: np.ndarray) -> str:
    """``value`` (1-D, length C) repeated on every row of ``X``: (N, C)."""
    n = b.op("Slice", [b.op("Shape", [X]), b.const([0], np.int64), b.const([1], np.int64)])
    shape = b.op("Concat", [n, b.const([value.size], np.int64)], axis=0)
    return b.op("Expand", [b.const(value.reshape(1, -1), F32), shape])


def _isfinite(b: GraphBuilder, x: str) -> str:
    return b.op("Not", [b.op("Or", [b.op("IsNaN", [x]), b.op("IsInf", [x])])])


def _numeric(b: GraphBuilder, X: str, enc: Any) -> str | None:
    if len(enc.numeric) == 0:
        return None
    cols = b.columns(X, [int(j) for j in enc.numeric])
    z = b.op("Div", [b.op("Sub", [cols, b.const(enc.mean, F32, "mean")]), b.const(enc.std, F32, "std")])
    return b.op("Where", [_isfinite(b, z), z, b.const(0.0, F32)])


def _level_match(b: GraphBuilder, X: str, j: int, levels: np.ndarray) -> str:
    """(N, K) float 0/1: which kept level column ``j`` holds (all zeros for other/unknown/missing)."""
    col = b.column(X, j)
    return b.op("Cast", [b.op("Equal", [col, b.const(levels.astype(F32)[None, :], F32, "levels")])], to=FLOAT)


def _level_index(b: GraphBuilder, X: str, j: int, levels: np.ndarray) -> str:
    """(N,) int64: 1..K for a kept level, 0 otherwise (``InputEncoder.category_indices``)."""
    if levels.size == 0:
        zero = _rows(b, X, np.zeros(1, dtype=F32))
        return b.op("Cast", [b.op("Reshape", [zero, b.const([-1], np.int64)])], to=INT64)
    lo = float(levels[0])
    if np.array_equal(levels, lo + np.arange(levels.size)) and lo.is_integer():
        # contiguous integer codes (the usual case: the transform's codes 0..V): a range check, no table
        col = b.column(X, j)
        inside = b.op("And", [b.op("GreaterOrEqual", [col, b.const(lo, F32)]),
                              b.op("LessOrEqual", [col, b.const(lo + levels.size - 1, F32)])])
        idx = b.op("Where", [inside, b.op("Add", [col, b.const(1.0 - lo, F32)]), b.const(0.0, F32)])
    else:
        eq = _level_match(b, X, j, levels)
        idx = b.op("MatMul", [eq, b.const(np.arange(1, levels.size + 1, dtype=F32)[:, None], F32)])
    return b.op("Cast", [b.op("Reshape", [idx, b.const([-1], np.int64)])], to=INT64)


def _passthrough(b: GraphBuilder, X: str, enc: Any) -> str | None:
    if enc.passthrough.size == 0:
        return None
    cols = b.columns(X, [int(j) for j in enc.passthrough])
    return b.op("Where", [_isfinite(b, cols), cols, b.const(0.0, F32)])


def _dense(b: GraphBuilder, X: str, model: Any) -> str:
    enc = model.encoder_
    parts = [p for p in [_numeric(b, X, enc)] if p is not None]
    parts += [_level_match(b, X, int(j), lv) for j, lv in zip(enc.categorical, enc.vocab) if lv.size]
    pt = _passthrough(b, X, enc)
    if pt is not None:
        parts.append(pt)
    if not parts:
        return _rows(b, X, np.zeros(0, dtype=F32))
    return parts[0] if len(parts) == 1 else b.op("Concat", parts, "design", axis=1)


def _affine(b: GraphBuilder, h: str, W: np.ndarray, bias: np.ndarray, hint: str) -> str:
    """``h @ W.T + bias`` with W (out, in)."""
    return b.op("Add", [b.op("MatMul", [h, b.const(np.ascontiguousarray(W.T), F32, hint + "_w", weight=True)]),
                        b.const(bias, F32, hint + "_b", weight=True)], hint)


def _head(b: GraphBuilder, model: Any, z: str) -> str:
    """Task head on (N, k) logits: P(positive) (N,), class probabilities (N, k) or the value (N,)."""
    if model.task == "binary":
        return b.op("Reshape", [b.op("Sigmoid", [z]), b.const([-1], np.int64)], "score")
    if model.task == "multiclass":
        return b.op("Softmax", [z], "score", axis=1)
    return b.op("Reshape", [z, b.const([-1], np.int64)], "score")


def _linear(b: GraphBuilder, X: str, model: Any) -> str:
    z = _affine(b, _dense(b, X, model), model.coef_, model.intercept_, "linear")
    if model.name == "linear_svm":
        z = _affine(b, z, model.platt_coef_, model.platt_intercept_, "platt")
    return _head(b, model, z)


def _mlp(b: GraphBuilder, X: str, model: Any) -> str:
    W, enc = model.weights_, model.encoder_
    parts = [p for p in [_numeric(b, X, enc)] if p is not None]
    for i, (j, levels) in enumerate(zip(enc.categorical, enc.vocab)):
        parts.append(b.op("Gather", [b.const(W[f"emb.{i}.weight"], F32, "emb", weight=True), _level_index(b, X, int(j), levels)],
                          "embed", axis=0))
    h = parts[0] if len(parts) == 1 else b.op("Concat", parts, "mlp_in", axis=1)
    layers = sorted({int(k.split(".")[1]) for k in W if k.startswith("mlp.")})
    for n, li in enumerate(layers):
        h = _affine(b, h, W[f"mlp.{li}.weight"], W[f"mlp.{li}.bias"], f"layer{li}")
        if n < len(layers) - 1:
            h = b.op("Relu", [h])
    return _neural_head(b, model, h)


def _neural_head(b: GraphBuilder, model: Any, h: str) -> str:
    if model.task == "regression":
        h = b.op("Add", [b.op("Mul", [h, b.const(model.y_std_, F32)]), b.const(model.y_mean_, F32)])
    return _head(b, model, h)


def _fm(b: GraphBuilder, X: str, model: Any) -> str:
    W, enc = model.weights_, model.encoder_
    zn = _numeric(b, X, enc)
    terms: list[str] = []  # linear terms (N, 1)
    vecs: list[str] = []  # (N, m, f) factor vectors
    if zn is not None:
        terms.append(b.op("MatMul", [zn, b.const(W["w_num"], F32, "w_num", weight=True)]))
        v_num = W["v_num"].astype(F32)  # (n_num, f)
        vecs.append(b.op("Mul", [b.op("Unsqueeze", [zn, b.const([2], np.int64)]), b.const(v_num[None], F32, "v_num", weight=True)]))
    for i, (j, levels) in enumerate(zip(enc.categorical, enc.vocab)):
        idx = _level_index(b, X, int(j), levels)
        terms.append(b.op("Gather", [b.const(W[f"w_cat.{i}.weight"], F32, "w_cat", weight=True), idx], axis=0))
        v = b.op("Gather", [b.const(W[f"v_cat.{i}.weight"], F32, "v_cat", weight=True), idx], axis=0)
        vecs.append(b.op("Unsqueeze", [v, b.const([1], np.int64)]))
    lin = _rows(b, X, np.asarray(W["bias"], dtype=F32).reshape(-1))
    for t in terms:
        lin = b.op("Add", [lin, t])
    if vecs:
        E = vecs[0] if len(vecs) == 1 else b.op("Concat", vecs, "fm_E", axis=1)
        one = b.const([1], np.int64)
        s = b.op("ReduceSum", [E, one], keepdims=0)
        sq = b.op("ReduceSum", [b.op("Mul", [E, E]), one], keepdims=0)
        inter = b.op("ReduceSum", [b.op("Sub", [b.op("Mul", [s, s]), sq]), one], keepdims=1)
        inter = b.op("Mul", [inter, b.const(0.5, F32)])
        lin = b.op("Add", [lin, b.op("Mul", [inter, b.const(np.asarray(W["head"], F32).reshape(1, -1), F32, "head", weight=True)])])
    return _neural_head(b, model, lin)


def _constant(b: GraphBuilder, X: str, model: Any) -> str:
    if model.name == "prior":
        prior = np.asarray(model.prior_, dtype=F32)
        if model.task == "binary":
            return b.op("Reshape", [_rows(b, X, prior[1:2]), b.const([-1], np.int64)], "score")
        return _rows(b, X, prior)
    return b.op("Reshape", [_rows(b, X, np.asarray([model.value_], dtype=F32)), b.const([-1], np.int64)], "score")


def _lightgbm(b: GraphBuilder, X: str, model: Any, n_features: int) -> str:
    import onnx
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    if getattr(model, "objective_", None) == "focal":
        raise _refuse(model, "trained with the focal loss (a custom objective the converter cannot read)")
    if model.task not in ("binary", "multiclass", "regression"):
        raise _refuse(model, f"task `{model.task}` (the converter handles binary, multiclass and regression)")
    try:
        onx = convert_lightgbm(model.booster_, initial_types=[("X", FloatTensorType([None, n_features]))],
                               target_opset=min(OPSET, 15), zipmap=False)
    except Exception as exc:  # the converter raises plain RuntimeError/NotImplementedError
        raise _refuse(model, f"the LightGBM converter failed: {exc}") from None
    sub = onnx.compose.add_prefix(onx, b.name("gbm") + "_")
    g = sub.graph
    b.nodes.append(onnx.helper.make_node("Identity", [X], [g.input[0].name]))
    b.nodes.extend(g.node)
    b.initializers.extend(g.initializer)
    outs = [o.name for o in g.output]
    if model.task == "regression":
        return b.op("Reshape", [outs[0], b.const([-1], np.int64)], "score")
    probs = outs[1]
    if model.task == "binary":
        p1 = b.op("Gather", [probs, b.const([1], np.int64)], axis=1)
        return b.op("Reshape", [p1, b.const([-1], np.int64)], "score")
    return b.op("Identity", [probs], "score")


def _trees(b: GraphBuilder, X: str, model: Any) -> str:
    """sklearn trees flattened by loopml (``TreeArrays``) as one ``TreeEnsembleRegressor`` (mean of the trees)."""
    T = model.trees_
    n_out = int(T.value.shape[1])
    roots = [int(r) for r in T.roots] + [int(T.left.size)]
    tree_ids, node_ids, modes, feats, thr, trues, falses, miss = [], [], [], [], [], [], [], []
    t_ids, t_nodes, t_targets, t_weights = [], [], [], []
    n_trees = len(roots) - 1
    for t in range(n_trees):
        lo, hi = roots[t], roots[t + 1]
        for node in range(lo, hi):
            leaf = int(T.left[node]) == node
            tree_ids.append(t)
            node_ids.append(node - lo)
            feats.append(0 if leaf else int(T.feature[node]))
            thr.append(0.0 if leaf else _floor32(float(T.threshold[node])))
            modes.append("LEAF" if leaf else "BRANCH_LEQ")
            trues.append(0 if leaf else int(T.left[node]) - lo)
            falses.append(0 if leaf else int(T.right[node]) - lo)
            miss.append(0 if leaf else int(bool(T.missing_left[node])))
            if leaf:
                for k in range(n_out):
                    t_ids.append(t)
                    t_nodes.append(node - lo)
                    t_targets.append(k)
                    t_weights.append(float(T.value[node, k]) / n_trees)
    out = b.op("TreeEnsembleRegressor", [X], "trees", domain="ai.onnx.ml", n_targets=n_out,
               nodes_treeids=tree_ids, nodes_nodeids=node_ids, nodes_modes=modes, nodes_featureids=feats,
               nodes_values=thr, nodes_truenodeids=trues, nodes_falsenodeids=falses,
               nodes_missing_value_tracks_true=miss, target_treeids=t_ids, target_nodeids=t_nodes,
               target_ids=t_targets, target_weights=t_weights, aggregate_function="SUM")
    if model.task == "binary":
        out = b.op("Gather", [out, b.const([1], np.int64)], axis=1)
    if model.task == "multiclass":
        return b.op("Identity", [out], "score")
    return b.op("Reshape", [out, b.const([-1], np.int64)], "score")


def _floor32(t: float) -> float:
    """The largest float32 <= t: for a float32 x, ``x <= t`` (double) iff ``x <= _floor32(t)`` (float)."""
    f = np.float32(t)
    if float(f) > t:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


def write_model(b: GraphBuilder, X: str, model: Any, n_features: int) -> str:
    """Write ``model`` on the float32 (N, n_features) tensor ``X``; returns the score tensor."""
    if not getattr(type(model), "exports_onnx", False):
        raise _refuse(model, "the model family declares no ONNX export (exports_onnx is false)")
    name = model.name
    if name in ("prior", "mean"):
        return _constant(b, X, model)
    if name in ("logistic", "linear", "linear_svm"):
        return _linear(b, X, model)
    if name == "mlp":
        return _mlp(b, X, model)
    if name == "factorization_machine":
        return _fm(b, X, model)
    if name == "lightgbm":
        return _lightgbm(b, X, model, n_features)
    if name in ("decision_tree", "random_forest"):
        return _trees(b, X, model)
    raise _refuse(model, "no ONNX writer for this model")
