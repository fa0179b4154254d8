"""One portable artifact: the fitted transform and the model as one ONNX graph, with a parity check.

>>> onx = bundle_to_onnx(bundle)                                    # doctest: +SKIP
>>> result = check_parity(bundle, onx.SerializeToString(), test_table)  # doctest: +SKIP
>>> result.max_abs_diff <= PARITY_TOLERANCE                           # doctest: +SKIP
True

The graph's inputs are the raw input columns (see :mod:`loopml.export.transform_onnx` for their
types); its output ``score`` is what ``Bundle.predict_table`` returns: P(positive) (N,) for
binary, class probabilities (N, k) for multiclass, the value (N,) for regression.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from loopml.errors import LoopMLError, ModelError
from loopml.export.graph import FLOAT, GraphBuilder
from loopml.export.model_onnx import write_model
from loopml.export.transform_onnx import ExportRefused, input_kinds, write_transform

#: largest |ONNX − Python| allowed before compression, on the score scale (relative to |score| above 1)
PARITY_TOLERANCE = 1e-5
SCORE = "score"
#: ONNX Runtime session settings of every session loopml opens (tools/onnx-node/score.js sets the same):
#: DequantizeLinear + MatMul fused into MatMulNBits computes in float32 (level 1), not with int8 activations (4)
SESSION_CONFIG = {"session.qdq_matmulnbits_accuracy_level": "1"}


def bundle_to_onnx(bundle: Any) -> Any:
    """The bundle (transform + model + calibration) as one ``onnx.ModelProto``; refuses by name what has no form."""
    import onnx

    b = GraphBuilder()
    X = write_transform(b, bundle.transform)
    n_features = len(bundle.transform.feature_names)
    score = write_model(b, X, bundle.model, n_features)
    neg = (bundle.manifest.get("calibration") or {}).get("negative_rate")
    if neg is not None and bundle.model.task == "binary":  # p = q / (q + (1 - q) / w)
        w = b.const(float(neg), np.float32)
        score = b.op("Div", [score, b.op("Add", [score, b.op("Div", [b.op("Sub", [b.const(1.0, np.float32), score]), w])])])
    shape: list[Any] = ["N", "K"] if bundle.model.task == "multiclass" else ["N"]
    b.output(score, SCORE, FLOAT, shape)
    m = b.model("loopml", doc=f"loopml {bundle.model.name} ({bundle.model.task}): feature transform + model")
    meta = {"loopml.model_type": bundle.model.name, "loopml.task": bundle.model.task,
            "loopml.inputs": ",".join(f"{c}:{k}" for c, k in input_kinds(bundle.transform).items()),
            "loopml.missing_category": "empty string"}
    for k, v in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    try:
        onnx.checker.check_model(m)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the exported ONNX graph is invalid: {exc}") from None
    return m


def model_to_onnx(bundle: Any) -> Any:
    """The model alone as ONNX on the float32 feature matrix (input ``features``): its own size, e.g. after int8."""
    b = GraphBuilder()
    n = len(bundle.transform.feature_names)
    X = b.input("features", FLOAT, ["N", n])
    score = write_model(b, X, bundle.model, n)
    b.output(score, SCORE, FLOAT, ["N", "K"] if bundle.model.task == "multiclass" else ["N"])
    return b.model("loopml_model")


def transform_to_onnx(pipeline: Any) -> Any:
    """The fitted feature transform alone as ONNX: raw inputs in, ``features`` (N, n_features) float32 out."""
    b = GraphBuilder()
    X = write_transform(b, pipeline)
    b.output(X, "features", FLOAT, ["N", len(pipeline.feature_names)])
    return b.model("loopml_transform")


def feeds(pipeline: Any, table: pa.Table) -> dict[str, np.ndarray]:
    """The graph inputs for an Arrow table of raw columns: (N, 1) float64 numbers, canonical category strings."""
    from loopml.features import values as V

    out: dict[str, np.ndarray] = {}
    for col, kind in input_kinds(pipeline).items():
        if kind == "double":
            out[col] = V.numeric_batch(table, col).astype(np.float64).reshape(-1, 1)
        else:
            cats = V.categorical_batch(table, col)
            keys = np.array(["" if k is None else k for k in cats.keys], dtype=object)
            vals = keys[cats.codes] if len(cats.codes) else np.zeros(0, dtype=object)
            out[col] = vals.reshape(-1, 1)
    return out


def feeds_row(pipeline: Any, row: dict[str, Any]) -> dict[str, np.ndarray]:
    """The graph inputs for one row given as a dict of raw values."""
    from loopml.features import values as V

    out: dict[str, np.ndarray] = {}
    for col, kind in input_kinds(pipeline).items():
        if kind == "double":
            out[col] = np.array([[V.to_float(row.get(col), col)]], dtype=np.float64)
        else:
            k = V.canon_category(row.get(col), col)
            out[col] = np.array([["" if k is None else k]], dtype=object)
    return out


def session(model_bytes: bytes, threads: int = 1) -> Any:
    """An ONNX Runtime session on the CPU with ``threads`` intra-op threads.

    ONNX Runtime may fuse an int8 file's ``DequantizeLinear`` + ``MatMul`` into ``MatMulNBits``; its compute is
    kept float32 (:data:`SESSION_CONFIG`), the graph's meaning and what ONNX Runtime Web computes, instead of the
    default int8 activations, so a row scores the same alone, in a batch and in every runtime.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    for k, v in SESSION_CONFIG.items():
        opts.add_session_config_entry(k, v)
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def run(sess: Any, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """``score`` of a session for the given feeds, as float64."""
    return np.asarray(sess.run([SCORE], inputs)[0], dtype=np.float64)


@dataclass
class Parity:
    """ONNX Runtime scores against the Python bundle on the same rows."""

    rows: int
    max_abs_diff: float
    max_rel_diff: float  # |diff| / max(1, |python score|)
    tolerance: float

    @property
    def ok(self) -> bool:
        """Within the tolerance (relative to the score above 1, absolute below)."""
        return self.max_rel_diff <= self.tolerance

    def line(self) -> str:
        """One printable line."""
        verdict = "ok" if self.ok else "FAILED"
        return (f"parity on {self.rows:,} test rows: max |onnx - python| = {self.max_abs_diff:.2e} "
                f"(relative {self.max_rel_diff:.2e}, tolerance {self.tolerance:.0e}): {verdict}")


def compare(python_scores: np.ndarray, onnx_scores: np.ndarray, tolerance: float = PARITY_TOLERANCE) -> Parity:
    """Max absolute and relative differences between two score arrays of the same shape."""
    a = np.asarray(python_scores, dtype=np.float64)
    o = np.asarray(onnx_scores, dtype=np.float64).reshape(a.shape)
    both_nan = np.isnan(a) & np.isnan(o)
    d = np.where(both_nan, 0.0, np.abs(o - a))
    d = np.where(np.isnan(d), np.inf, d)
    rel = d / np.maximum(1.0, np.abs(np.nan_to_num(a)))
    return Parity(int(a.shape[0]), float(d.max()) if d.size else 0.0, float(rel.max()) if rel.size else 0.0,
                  tolerance)


def check_parity(bundle: Any, model_bytes: bytes, table: pa.Table, tolerance: float = PARITY_TOLERANCE) -> Parity:
    """Score ``table`` with the bundle and with the ONNX graph in ONNX Runtime; compare."""
    sess = session(model_bytes)
    return compare(bundle.predict_table(table), run(sess, feeds(bundle.transform, table)), tolerance)


def single_row_latency(model_bytes: bytes, pipeline: Any, table: pa.Table, rows: int = 200, rounds: int = 3
                       ) -> dict[str, float]:
    """p50/p99 milliseconds of one-row ``run`` calls in ONNX Runtime with one thread (inputs prepared first)."""
    sess = session(model_bytes, threads=1)
    n = min(rows, table.num_rows)
    all_feeds = feeds(pipeline, table.slice(0, n))
    row_feeds = [{k: v[i : i + 1] for k, v in all_feeds.items()} for i in range(n)]
    for f in row_feeds[:20]:
        sess.run([SCORE], f)
    best = np.full(n, np.inf)
    for _ in range(rounds):
        for i, f in enumerate(row_feeds):
            t0 = time.perf_counter()
            sess.run([SCORE], f)
            best[i] = min(best[i], time.perf_counter() - t0)
    ms = best * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


__all__ = [
    "PARITY_TOLERANCE",
    "ExportRefused",
    "LoopMLError",
    "Parity",
    "bundle_to_onnx",
    "check_parity",
    "compare",
    "feeds",
    "feeds_row",
    "run",
    "session",
    "single_row_latency",
    "transform_to_onnx",
]
