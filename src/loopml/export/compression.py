"""Compression for on-device targets: each variant is an exported ONNX artifact, measured in ONNX Runtime.

Variants of a trained candidate (its :class:`~loopml.training.bundle.Bundle` and the split it was
trained on):

- ``fp32``: the plain export (the reference for drift);
- ``fp16``: float16 weights (each large weight tensor stored as float16 and cast back at load,
  compute stays float32: ONNX Runtime's CPU kernels are float32), for neural and linear models;
- ``int8``: int8 weights (:func:`int8_weights`: every weight tensor, biases and embedding tables
  included, one symmetric scale per tensor, turned back by ``DequantizeLinear``; activations stay float32), for neural
  and linear models;
- GBDT pruning: the first k trees of the booster (``trees=k``) and a retrained booster with fewer
  leaves and early stopping on validation (``leaves=7``);
- MLP magnitude pruning: the smallest |w| of every dense layer set to zero, then fine-tuned with the
  mask held (``prune=70%``), exported as int8;
- distillation: a small student (logistic, an MLP with one hidden layer of 16, a 7-leaf GBDT) fitted
  on ``alpha·teacher + (1-alpha)·label`` (soft targets as two weighted rows for a classifier).

:func:`measure` scores every variant's ONNX file on the test rows in ONNX Runtime (the artifact a
device runs), with the evaluation stage's bootstrap on shared resamples: quality with its
interval, the paired difference to the reference (the best cloud model) and the share of the
reference's lift over the baseline that the variant keeps; plus file size, gzip size and the p99
of single-row calls on one thread. :func:`pick` chooses the best variant that fits a budget.
"""

from __future__ import annotations

import copy
import gzip
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from loopml.export.onnx_export import (
    bundle_to_onnx,
    compare,
    feeds,
    model_to_onnx,
    run,
    session,
    single_row_latency,
)
from loopml.training.bundle import Bundle
from loopml.training.models import make_model

#: model families whose weights are tensors (quantization and float16 apply)
TENSOR_FAMILIES = ("logistic", "linear", "linear_svm", "mlp", "factorization_machine")


@dataclass
class FitData:
    """The training and validation matrices (the bundle transform's output) and labels."""

    task: str
    X: np.ndarray
    y: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    categorical: list[int]


@dataclass
class Variant:
    """One deployable artifact: a name, what produced it, the Python bundle it came from and its ONNX bytes."""

    name: str
    base: str  # the cloud candidate it derives from (the teacher for a student)
    technique: str  # export, fp16, int8, trees, leaves, prune, distill
    bundle: Bundle
    onnx: bytes
    model_kb: float = float("nan")  # the model part alone (without the transform's vocabularies), same compression


@dataclass
class Measured:
    """A variant's measurements on the test rows, its artifact run in ONNX Runtime."""

    name: str
    base: str
    technique: str
    size_kb: float
    gzip_kb: float
    model_kb: float
    p50_ms: float
    p99_ms: float
    metric: str
    value: float
    interval: tuple[float, float]
    delta: float  # variant − reference (in the metric's direction: positive is better)
    delta_interval: tuple[float, float]
    lift_share: float  # (variant − baseline) / (reference − baseline)
    lift_interval: tuple[float, float]
    drift: float  # max |ONNX − its own Python bundle| (0 up to float error for fp32)
    fits: bool | None = None
    notes: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """Plain data for JSON and leaderboards."""
        return {k: v for k, v in self.__dict__.items()}


# -- ONNX-level compression --------------------------------------------------------------------------
def fp16_weights(model_bytes: bytes, min_elements: int = 16) -> bytes:
    """The model's weight tensors (:func:`~loopml.export.graph.is_weight`) of at least ``min_elements`` stored as
    float16, each cast back to float32 at load; the transform's constants stay exact."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from loopml.export.graph import compact, is_weight

    m = onnx.load_from_string(model_bytes)
    g = m.graph
    casts = []
    keep = []
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT and is_weight(init.name) and int(np.prod(init.dims)) >= min_elements:
            arr = numpy_helper.to_array(init).astype(np.float16)
            half = numpy_helper.from_array(arr, init.name + "h")
            keep.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
        else:
            keep.append(init)
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    return bytes(compact(m).SerializeToString())


def int8_weights(model_bytes: bytes, min_elements: int = 16) -> bytes:
    """Every weight tensor of the model (:func:`~loopml.export.graph.is_weight`: dense weights and biases, embedding
    and factor tables) of at least ``min_elements`` stored as int8 with one float32 scale (symmetric, per tensor),
    turned back into float32 by a ``DequantizeLinear`` node (the QDQ format, weights only).

    Unlike ``onnxruntime.quantization.quantize_dynamic`` (the QOperator format: int8 ``MatMulInteger`` with
    activations quantised per call), the activations stay float32: a row gives the same score alone or in a
    batch, every weight-bearing op is covered (biases, the ``Mul`` of factor vectors, not only ``MatMul`` and
    ``Gather``), the transform's constants are never touched (``quantize_dynamic`` also quantised the index
    ``MatMul`` of non-contiguous category levels) and the file carries 1 node per tensor instead of 5 per ``MatMul``.
    An embedding table is gathered in int8 and only the gathered rows are dequantized.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from loopml.export.graph import compact, is_weight

    m = onnx.load_from_string(model_bytes)
    g = m.graph
    nodes = list(g.node)
    dequant = []
    keep = []
    for init in g.initializer:
        if not (init.data_type == TensorProto.FLOAT and is_weight(init.name) and int(np.prod(init.dims)) >= min_elements):
            keep.append(init)
            continue
        w = numpy_helper.to_array(init).astype(np.float64)
        top = float(np.abs(w).max()) if w.size else 0.0
        scale = np.float32(top / 127.0 if top > 0 else 1.0)
        q = np.clip(np.rint(w / np.float64(scale)), -127, 127).astype(np.int8)
        wq, ws = init.name + "q", init.name + "s"
        keep += [numpy_helper.from_array(q, wq), numpy_helper.from_array(np.asarray(scale), ws)]
        users = [n for n in nodes if init.name in n.input]
        if users and all(n.op_type == "Gather" and list(n.input).index(init.name) == 0 for n in users):
            # an embedding table: gather the int8 rows, then dequantize only those (one scale: the two commute),
            # instead of dequantizing the whole table on every call
            for n in users:
                out = n.output[0]
                n.input[0] = wq
                n.output[0] = out + "q"
                nodes.insert(nodes.index(n) + 1, helper.make_node("DequantizeLinear", [out + "q", ws], [out]))
            continue
        dequant.append(helper.make_node("DequantizeLinear", [wq, ws], [init.name]))
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.node[:]
    g.node.extend(dequant + nodes)
    return bytes(compact(m).SerializeToString())


def for_device(bundle: Bundle, model_bytes: bytes) -> tuple[str | None, bytes]:
    """The weight compression the on-device selection chose for this bundle (``manifest["device"]["technique"]``:
    int8 for ``int8``/``prune``/``distill+int8`` winners, fp16 for ``fp16``) applied to an ONNX graph of it."""
    technique = str((bundle.manifest.get("device") or {}).get("technique", ""))
    if "int8" in technique or technique == "prune":
        return "int8", int8_weights(model_bytes)
    if technique == "fp16":
        return "fp16", fp16_weights(model_bytes)
    return None, model_bytes


# -- model-level compression -------------------------------------------------------------------------
def first_trees(bundle: Bundle, n_trees: int) -> Bundle:
    """A LightGBM bundle keeping only its first ``n_trees`` boosting rounds."""
    import lightgbm as lgb

    m = copy.copy(bundle.model)
    text = m.booster_.model_to_string(num_iteration=n_trees)  # type: ignore[attr-defined]
    m.booster_ = lgb.Booster(model_str=text)  # type: ignore[attr-defined]
    return Bundle(bundle.transform, m, dict(bundle.manifest))


def refit(bundle: Bundle, data: FitData, name: str, params: dict[str, Any], *, seed: int = 0,
          y: np.ndarray | None = None, weight: np.ndarray | None = None, X: np.ndarray | None = None) -> Bundle:
    """A new model ``name(**params)`` on the bundle's transform, with early stopping on validation when it has it."""
    from loopml.training.models import FitContext

    m = make_model(name, task=data.task, seed=seed, **params)
    ctx = FitContext(eval_X=data.X_valid, eval_y=data.y_valid)
    m.fit(data.X if X is None else X, data.y if y is None else y, weight, categorical=data.categorical, context=ctx)
    return Bundle(bundle.transform, m, dict(bundle.manifest))


def prune_mlp(bundle: Bundle, data: FitData, sparsity: float = 0.7, epochs: int = 2, seed: int = 0) -> Bundle:
    """Magnitude pruning of the MLP's dense layers (``sparsity`` of each set to 0), then fine-tuning with the mask."""
    import torch

    src = bundle.model
    m = copy.deepcopy(src)
    enc = m.encoder_  # type: ignore[attr-defined]
    net = m._build(torch, len(enc.numeric), enc.cardinalities)  # type: ignore[attr-defined]
    net.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in m.weights_.items()})  # type: ignore[attr-defined]
    masks = {}
    with torch.no_grad():
        for k, p in net.state_dict().items():
            if k.startswith("mlp.") and k.endswith(".weight"):
                cut = torch.quantile(p.abs().flatten(), sparsity)
                masks[k] = (p.abs() > cut).float()
        params = dict(net.named_parameters())
        for k, mask in masks.items():
            params[k].mul_(mask)
    Zn = torch.from_numpy(enc.numeric_matrix(data.X).astype(np.float32))
    Ci = torch.from_numpy(enc.category_indices(data.X))
    y = data.y
    ty = torch.from_numpy(((y - m.y_mean_) / m.y_std_).astype(np.float32) if m.task == "regression"  # type: ignore[attr-defined]
                          else y.astype(np.float32 if m.task != "multiclass" else np.int64))
    tw = torch.ones(len(y))
    opt = torch.optim.Adam(net.parameters(), lr=m.config.learning_rate / 2)  # type: ignore[attr-defined]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    bs = m.config.batch_size  # type: ignore[attr-defined]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            net.train()
            perm = rng.permutation(len(y))
            for i in range(0, len(y), bs):
                idx = perm[i : i + bs]
                opt.zero_grad()
                loss = m._loss(torch, net(Zn[idx], Ci[idx]), ty[idx], tw[idx], False, 0.0, None, idx)  # type: ignore[attr-defined]
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for k, mask in masks.items():
                        params[k].mul_(mask)
        net.eval()
        m._export(net)  # type: ignore[attr-defined]
    finally:
        torch.set_num_threads(threads)
    return Bundle(bundle.transform, m, dict(bundle.manifest))


def distill(teacher: Bundle, data: FitData, student: str, params: dict[str, Any], alpha: float = 0.7,
            seed: int = 0) -> Bundle:
    """A student fitted on ``alpha·teacher score + (1 − alpha)·label`` of the training rows."""
    t = np.asarray(teacher.model.score(data.X), dtype=np.float64)
    if data.task == "binary":
        soft = alpha * t + (1.0 - alpha) * data.y
        X2 = np.vstack([data.X, data.X])
        y2 = np.concatenate([np.ones(len(soft)), np.zeros(len(soft))]).astype(np.int64)
        w2 = np.concatenate([soft, 1.0 - soft])
        return refit(teacher, data, student, params, seed=seed, X=X2, y=y2, weight=w2)
    if data.task == "regression":
        return refit(teacher, data, student, params, seed=seed, y=alpha * t + (1.0 - alpha) * data.y)
    raise ValueError(f"distillation handles binary and regression, not {data.task}")


def variants(candidates: dict[str, Bundle], data: FitData, *, teacher: str | None = None,
             seed: int = 0) -> list[Variant]:
    """Every compressed variant of every exportable candidate (plus its plain export)."""
    out: list[Variant] = []

    def add(name: str, base: str, technique: str, b: Bundle, squeeze: Any = None) -> None:
        full = bundle_to_onnx(b).SerializeToString()
        part = model_to_onnx(b).SerializeToString()
        if squeeze is not None:
            full, part = squeeze(full), squeeze(part)
        out.append(Variant(name, base, technique, b, full, len(part) / 1024))

    for name, b in candidates.items():
        fam = b.model.name
        add(name, name, "export", b)
        if fam in TENSOR_FAMILIES:
            add(f"{name} fp16", name, "fp16", b, fp16_weights)
            add(f"{name} int8", name, "int8", b, int8_weights)
        if fam == "lightgbm":
            n = b.model.booster_.current_iteration()  # type: ignore[attr-defined]
            for k in sorted({max(1, n // 4), max(1, n // 2)}):
                if k < n:
                    add(f"{name} trees={k}", name, "trees", first_trees(b, k))
            add(f"{name} leaves=7", name, "leaves",
                refit(b, data, "lightgbm", {"n_estimators": max(n, 50), "num_leaves": 7, "learning_rate": 0.1,
                                            "early_stopping_rounds": 20}, seed=seed))
        if fam == "mlp":
            add(f"{name} prune=70% int8", name, "prune", prune_mlp(b, data, seed=seed), int8_weights)
    if teacher is not None and data.task in ("binary", "regression"):
        tb = candidates[teacher]
        small = "logistic" if data.task == "binary" else "linear"
        students: list[tuple[str, dict[str, Any]]] = [(small, {}), ("mlp", {"hidden": [16], "epochs": 8, "dropout": 0.0}),
                    ("lightgbm", {"n_estimators": 60, "num_leaves": 7, "learning_rate": 0.1})]
        for sname, params in students:
            sb = distill(tb, data, sname, params, seed=seed)
            label = f"student {sname}{'[16]' if sname == 'mlp' else ''} of {teacher}"
            add(label, teacher, "distill", sb)
            if sname == "mlp":
                add(label + " int8", teacher, "distill+int8", sb, int8_weights)
    return out


# -- measuring and choosing ----------------------------------------------------------------------------
def _percentile(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return (float("nan"), float("nan"))
    a = (1 - confidence) / 2
    return (float(np.quantile(s, a)), float(np.quantile(s, 1 - a)))


def measure(vs: list[Variant], test: pa.Table, y_test: np.ndarray, task: str, metric: str, *,
            reference: str, baseline_scores: np.ndarray, resamples: int = 300, seed: int = 0,
            latency_rows: int = 300) -> list[Measured]:
    """Quality (from each ONNX file run in ONNX Runtime), paired intervals, size and single-row latency."""
    from loopml.evaluation.bootstrap import evaluate_kernels
    from loopml.evaluation.data import EvalData
    from loopml.evaluation.metrics import build_kernel, resolve_metric

    mdef, _ = resolve_metric(metric, task)
    sign = 1.0 if mdef.higher_is_better else -1.0
    pipeline_feeds: dict[int, dict[str, np.ndarray]] = {}
    scores: dict[str, np.ndarray] = {}
    drift: dict[str, float] = {}
    for v in vs:
        key = id(v.bundle.transform)
        if key not in pipeline_feeds:
            pipeline_feeds[key] = feeds(v.bundle.transform, test)
        s = run(session(v.onnx), pipeline_feeds[key])
        scores[v.name] = s
        drift[v.name] = compare(v.bundle.predict_table(test), s, tolerance=float("inf")).max_abs_diff
    kernels = {name: build_kernel(metric, EvalData(task, y_test, s)) for name, s in scores.items()}
    kernels["__baseline__"] = build_kernel(metric, EvalData(task, y_test, baseline_scores))
    point, samples = evaluate_kernels(kernels, len(y_test), resamples, seed=seed)
    base_p, base_s = point["__baseline__"], samples["__baseline__"]
    ref_p, ref_s = point[reference], samples[reference]
    out: list[Measured] = []
    for v in vs:
        p, s = point[v.name], samples[v.name]
        lat = single_row_latency(v.onnx, v.bundle.transform, test, rows=latency_rows)
        with np.errstate(all="ignore"):
            lift = (s - base_s) / (ref_s - base_s)
        out.append(Measured(
            name=v.name, base=v.base, technique=v.technique, size_kb=len(v.onnx) / 1024, model_kb=v.model_kb,
            gzip_kb=len(gzip.compress(v.onnx, 6)) / 1024, p50_ms=lat["p50_ms"], p99_ms=lat["p99_ms"],
            metric=metric, value=p, interval=_percentile(s), delta=sign * (p - ref_p),
            delta_interval=tuple(sorted(sign * x for x in _percentile(s - ref_s))),  # type: ignore[arg-type]
            lift_share=(p - base_p) / (ref_p - base_p) if ref_p != base_p else float("nan"),
            lift_interval=_percentile(lift), drift=drift[v.name],
        ))
    return out


def pick(measured: list[Measured], max_size_kb: float | None, max_p99_ms: float | None,
         higher_is_better: bool = True) -> tuple[Measured | None, str]:
    """The best variant (by quality) whose size and p99 fit the budget, and one line on why it won."""
    for m in measured:
        m.fits = (max_size_kb is None or m.size_kb <= max_size_kb) and (max_p99_ms is None or m.p99_ms <= max_p99_ms)
    fitting = [m for m in measured if m.fits]
    if not fitting:
        return None, "no variant fits the budget"
    best = max(fitting, key=lambda m: (m.value if higher_is_better else -m.value, -m.size_kb))
    budget = []
    if max_size_kb is not None:
        budget.append(f"{max_size_kb:,.0f} KB")
    if max_p99_ms is not None:
        budget.append(f"{max_p99_ms:g} ms p99")
    why = (f"{best.name}: best {best.metric} ({best.value:.4f}) among the {len(fitting)} of {len(measured)} variants "
           f"within {' / '.join(budget) or 'no budget'} ({best.size_kb:,.1f} KB, p99 {best.p99_ms:.3f} ms); keeps "
           f"{best.lift_share:.0%} of the best cloud model's lift over the baseline "
           f"(95% interval {best.lift_interval[0]:.0%}..{best.lift_interval[1]:.0%})")
    return best, why
