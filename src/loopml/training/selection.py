"""Requirements-driven model selection.

Every candidate named in ``spec.training.candidates`` is trained (and tuned with Optuna
when asked) on the training split and scored on the validation split. Each fitted
candidate is then measured the way it will be served (single-row p99 latency through
:meth:`Bundle.predict_row` as CPU time in rounds interleaved across candidates, see
:mod:`loopml.training.measure`; artifact size); a candidate that breaks
``requirements.constraints`` is not eligible, however accurate. The best eligible
candidate wins, with one line saying why.
"""

from __future__ import annotations

import math
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from loopml.errors import DataError, LoopMLError, ModelError, SpecError
from loopml.spec import Spec
from loopml.spec.training import ModelCandidate
from loopml.training.bundle import Bundle, make_manifest
from loopml.training.imbalance import class_weights, oversample, undersample
from loopml.training.labels import encode_labels, group_ids
from loopml.training.measure import (
    METHOD,
    Latency,
    measure_batch_latency,
    measure_row_latencies,
    request_rows,
)
from loopml.training.metrics import Metric, bootstrap_ci, metric_for, paired_bootstrap_gap
from loopml.training.models import BaseModel, FitContext, model_class, validate_config
from loopml.training.sampling import recalibrate, sample_training_rows
from loopml.training.splits import fold_ids
from loopml.training.trials import make_trial_executor, save_trial_data
from loopml.training.tuning import TrialRecord, tune

if TYPE_CHECKING:
    from loopml.features import FeaturePipeline


@dataclass
class TrainingData:
    """The matrices selection works on, with the fitted transform that made them."""

    spec: Spec
    transform: FeaturePipeline
    X_train: Any  # float64: a dense array, or CSR when a feature is sparse (TF-IDF)
    y_train: np.ndarray
    w_train: np.ndarray | None
    g_train: np.ndarray | None
    X_valid: Any
    y_valid: np.ndarray
    g_valid: np.ndarray | None
    valid_table: pa.Table
    schema: pa.Schema
    train_table: pa.Table | None  # None once ``train_reader`` reads it back on demand (the train stage)
    classes: list[Any]
    negative_rate: float | None = None
    focal_gamma: float | None = None
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    scratch_dir: str | None = None  # a folder for work files (Ray Train's run files), else the system temp dir
    train_reader: Callable[[], pa.Table] | None = None  # reads the training table back (from its split file)

    def training_table(self) -> pa.Table:
        """The labeled training rows as a table (read back from their file when not held in memory)."""
        if self.train_table is not None:
            return self.train_table
        if self.train_reader is None:
            raise ModelError("the training table was released and there is no file to read it back from")
        return self.train_reader()

    @property
    def task(self) -> str:
        """The task type."""
        return self.spec.task.type

    @property
    def categorical(self) -> list[int]:
        """Indices of categorical (integer code) feature columns."""
        return list(self.transform.categorical_features)

    @property
    def embedding_dims(self) -> dict[int, int]:
        """Embedding size declared per id feature column (``embedding_ids`` transforms)."""
        emb = getattr(self.transform, "embedding_features", {}) or {}
        return {int(k): int(v["dim"]) for k, v in emb.items()}

    @property
    def feature_names(self) -> list[str]:
        """Names of the feature columns."""
        return list(self.transform.feature_names)


def _labeled(table: pa.Table, spec: Spec, classes: list[Any] | None = None) -> tuple[pa.Table, np.ndarray, list[Any], int]:
    lab = encode_labels(table, spec.task, classes)
    dropped = int((~lab.labeled).sum())
    if dropped:
        table = table.filter(pa.array(lab.labeled))
    return table, lab.y[lab.labeled], lab.classes, dropped


def _float64(X: Any) -> Any:
    """A float64 dense array, or a float64 CSR matrix when the features are sparse."""
    if sp.issparse(X):
        return sp.csr_matrix(X, dtype=np.float64)
    return np.asarray(X, dtype=np.float64)


def prepare_training_data(spec: Spec, train: pa.Table, valid: pa.Table, *, sampled: bool = False) -> TrainingData:
    """Labels, sampling, class imbalance and the feature pipeline (fitted on ``train`` only).

    Parameters
    ----------
    spec : the project spec.
    train, valid : the training and validation splits (raw feature tables).
    sampled : ``train`` was already sampled by the caller (reservoir sampling over a stream).
    """
    from loopml.features import FeaturePipeline

    task = spec.task
    tr = spec.training
    notes: list[str] = []
    train, y, classes, unl_train = _labeled(train, spec)
    train_labeled = train
    valid, y_valid, _, unl_valid = _labeled(valid, spec, classes if task.type == "multiclass" else None)
    if unl_train or unl_valid:
        notes.append(f"{unl_train + unl_valid} row(s) without a label left out ({unl_train} train, {unl_valid} valid)")
    if train.num_rows == 0:
        raise DataError(f"the training split has no labeled rows (target `{task.target}`)")
    if valid.num_rows == 0:
        raise DataError(f"the validation split has no labeled rows (target `{task.target}`)")
    if task.type == "binary" and np.unique(y).size < 2:
        raise DataError(f"the training split holds only one class of `{task.target}`; a classifier needs both")
    importance = None
    if tr.sampling.type == "importance":
        col = tr.sampling.weight_column
        if col is None or col not in train.column_names:
            raise SpecError(f"training.sampling.weight_column: column {col!r} is not in the table")
        importance = np.asarray(train.column(col).to_numpy(zero_copy_only=False), dtype=np.float64)
    weights = None
    negative_rate = None
    if not (sampled and tr.sampling.type == "reservoir"):
        sample = sample_training_rows(tr.sampling, y, task.type, tr.seed, importance)
        if len(sample.rows) < train.num_rows:
            train = train.take(pa.array(sample.rows))
            y = y[sample.rows]
        weights = sample.weights
        negative_rate = sample.negative_rate
        if sample.note:
            notes.append(sample.note)
    transform = FeaturePipeline.from_spec(spec.features, task=task)
    keep = transform.drop_mask(train)  # rows missing an `impute: drop` column are left out of fitting
    # wide text features (TF-IDF) stay sparse: models that accept it take the CSR matrix, the others densify it
    X = transform.fit_transform(train, y, sparse=True)
    if not keep.all():
        notes.append(f"{int((~keep).sum())} training row(s) missing a column declared `impute: drop` left out")
        y = y[keep]
        weights = weights[keep] if weights is not None else None
        train = train.filter(pa.array(keep))
    g_train = group_ids(train, task)
    vkeep = transform.drop_mask(valid)
    if not vkeep.all():
        valid, y_valid = valid.filter(pa.array(vkeep)), y_valid[vkeep]
    X_valid = transform.transform_batch(valid, sparse=True)
    g_valid = group_ids(valid, task)
    focal = None
    imb = tr.imbalance
    if imb.method != "none":
        if task.type not in ("binary", "multiclass"):
            raise SpecError(f"training.imbalance.method `{imb.method}` applies to classification, not `{task.type}`")
        if imb.method == "class_weight":
            weights = class_weights(y, weights)
            notes.append("class weights balance the classes")
        elif imb.method in ("oversample", "undersample"):
            rows = oversample(y, tr.seed) if imb.method == "oversample" else undersample(y, tr.seed)
            X, y = X[rows], y[rows]
            weights = weights[rows] if weights is not None else None
            notes.append(f"random {imb.method} to {len(rows)} training rows")
        else:
            if task.type != "binary":
                raise SpecError("training.imbalance: focal_loss applies to binary tasks")
            focal = imb.focal_gamma
            notes.append(f"focal loss (gamma {focal:g}); models without it use class weights")
    return TrainingData(
        spec=spec,
        transform=transform,
        X_train=_float64(X),
        y_train=y,
        w_train=weights,
        g_train=g_train,
        X_valid=_float64(X_valid),
        y_valid=y_valid,
        g_valid=g_valid,
        valid_table=valid,
        schema=train.schema,
        train_table=train_labeled,
        classes=classes,
        negative_rate=negative_rate,
        focal_gamma=focal,
        notes=notes,
        counts={"train_rows": len(y), "valid_rows": len(y_valid), "features": int(X.shape[1])},
    )


@dataclass
class CandidateResult:
    """One leaderboard row."""

    name: str
    model_type: str
    params: dict[str, Any]
    tuned: bool
    metric: str
    value: float | None = None
    ci: tuple[float, float] = (math.nan, math.nan)
    latency: Latency | None = None
    batch_latency: Latency | None = None
    size_bytes: int | None = None
    train_s: float = 0.0
    tune_s: float = 0.0
    n_trials: int = 0
    n_pruned: int = 0
    trials_planned: int = 0
    tuning_stopped_by: str | None = None
    eligible: bool = False
    reasons: list[str] = field(default_factory=list)
    error: str | None = None
    bundle: Bundle | None = None
    bundle_digest: str | None = None
    complexity: int = 5
    valid_scores: np.ndarray | None = None

    @property
    def size_mb(self) -> float | None:
        """Artifact size in MB (10^6 bytes)."""
        return None if self.size_bytes is None else self.size_bytes / 1e6

    def to_json(self) -> dict[str, Any]:
        """A JSON-able leaderboard row."""
        lat = self.latency
        return {
            "name": self.name,
            "model_type": self.model_type,
            "params": self.params,
            "tuned": self.tuned,
            "metric": self.metric,
            "value": self.value,
            "ci_low": None if math.isnan(self.ci[0]) else self.ci[0],
            "ci_high": None if math.isnan(self.ci[1]) else self.ci[1],
            "latency_p50_ms": lat.p50_ms if lat else None,
            "latency_p99_ms": lat.p99_ms if lat else None,
            "batch_latency_p99_ms": self.batch_latency.p99_ms if self.batch_latency else None,
            "latency_p99_spread_ms": lat.spread_ms if lat else None,
            "latency_wall_p99_ms": lat.wall_p99_ms if lat else None,
            "size_bytes": self.size_bytes,
            "size_mb": self.size_mb,
            "train_s": round(self.train_s, 4),
            "tune_s": round(self.tune_s, 4),
            "n_trials": self.n_trials,
            "n_pruned": self.n_pruned,
            "trials_planned": self.trials_planned,
            "tuning_stopped_by": self.tuning_stopped_by,
            "eligible": self.eligible,
            "reasons": self.reasons,
            "error": self.error,
            "bundle": self.bundle_digest,
        }


@dataclass
class Selection:
    """The outcome of selection: every candidate's row, the winner and why."""

    metric: Metric
    results: list[CandidateResult]
    winner: CandidateResult
    why: str
    notes: list[str] = field(default_factory=list)
    constraints: dict[str, Any] = field(default_factory=dict)
    # deployment_target on-device: the winner's ONNX file and the leaderboard's `on_device` section
    device_onnx: bytes | None = None
    on_device: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The leaderboard document (stored as the ``leaderboard`` artifact)."""
        order = sorted(self.results, key=lambda r: _rank_key(self.metric, r))
        extra = {"on_device": self.on_device} if self.on_device is not None else {}
        return {
            **extra,
            "metric": self.metric.name,
            "higher_is_better": self.metric.higher_is_better,
            "winner": self.winner.name,
            "why": self.why,
            "constraints": self.constraints,
            "latency_measurement": {
                "method": METHOD,
                "calls": next((r.latency.n for r in self.results if r.latency), 0),
                "rounds": next((r.latency.rounds for r in self.results if r.latency), 0),
                "tolerance": self.constraints.get("latency_tolerance"),
                "uncertainty": "latency_p99_spread_ms per candidate (max - min of the round p99s)",
            },
            "notes": self.notes,
            "candidates": [r.to_json() for r in order],
        }


def _rank_key(metric: Metric, r: CandidateResult) -> tuple[Any, ...]:
    v = r.value
    ok = v is not None and not math.isnan(v)
    return (not r.eligible, not ok, -metric.signed(v) if ok and v is not None else 0.0,
            r.latency.p99_ms if r.latency else math.inf)


def candidate_label(i: int, c: ModelCandidate) -> str:
    """Leaderboard label: the candidate's name, else its type."""
    return c.name or c.type


def validate_candidates(spec: Spec) -> list[tuple[str, type[BaseModel], dict[str, Any]]]:
    """Check every candidate (registered, handles the task, valid params) before training anything."""
    problems: list[str] = []
    out = []
    seen: set[str] = set()
    for i, c in enumerate(spec.training.candidates):
        label = candidate_label(i, c)
        where = f"training.candidates[{i}] ({label})"
        if label in seen:
            problems.append(f"{where}: the label `{label}` is used twice; give one a distinct `name`")
        seen.add(label)
        try:
            cls = model_class(c.type)
        except LoopMLError as exc:
            problems.append(f"{where}.type: {exc.message}")
            continue
        if spec.task.type not in cls.task_types:
            problems.append(
                f"{where}.type: `{c.type}` does not handle task `{spec.task.type}` "
                f"(it handles: {', '.join(sorted(cls.task_types))})"
            )
            continue
        try:
            validate_config(cls, c.params, where)
        except SpecError as exc:
            problems.extend(exc.problems or [exc.message])
            continue
        out.append((label, cls, dict(c.params)))
    if not spec.training.candidates:
        problems.append("training.candidates: no candidate models; name at least one (e.g. {type: lightgbm})")
    if problems:
        raise SpecError("invalid training candidates", problems)
    return out


def with_baseline(spec: Spec) -> tuple[Spec, str | None]:
    """The spec with its task's baseline among the candidates (added first when missing), and a note.

    Every model is judged against the baseline (``evaluation.baseline_gate``), so the baseline is
    always trained beside the spec's candidates. A ranking task without ``task.item_key`` has no
    most-popular baseline; the note says so and evaluation reports the gate as failed.
    """
    from loopml.training.models.baselines import BASELINE_MODELS, TASK_BASELINES

    base = TASK_BASELINES.get(spec.task.type)
    cands = spec.training.candidates
    if base is None or any(c.type in BASELINE_MODELS for c in cands):
        return spec, None
    if base == "most_popular" and spec.task.item_key is None:
        return spec, "no most_popular baseline: the task has no task.item_key"
    if any(candidate_label(i, c) == base for i, c in enumerate(cands)):
        return spec, f"no {base} baseline added: a candidate is already labelled `{base}`"
    tr = spec.training.model_copy(update={"candidates": [ModelCandidate(type=base), *cands]})
    note = f"baseline `{base}` added to the candidates (every model is judged against it)"
    return spec.model_copy(update={"training": tr}), note


def _fit_final(
    data: TrainingData, label: str, cls: type[BaseModel], params: dict[str, Any], *, use_valid: bool = True
) -> tuple[BaseModel, float]:
    tr = data.spec.training
    config = validate_config(cls, params, label)
    model = cls(config, task=data.task, seed=tr.seed)
    w = data.w_train
    focal = data.focal_gamma if model.supports_focal_loss else None
    if data.focal_gamma is not None and not model.supports_focal_loss:
        w = class_weights(data.y_train, w)
    ctx = FitContext(
        group=data.g_train, feature_names=data.feature_names, focal_gamma=focal,
        extra={"item_key": data.spec.task.item_key, "embedding_dims": data.embedding_dims,
               "ray_workers": tr.ray_workers if tr.executor == "ray" else 0, "ray_storage": data.scratch_dir},
    )
    if use_valid:  # early stopping, where configured, watches the validation split
        ctx.eval_X, ctx.eval_y, ctx.eval_group = data.X_valid, data.y_valid, data.g_valid
    t0 = time.perf_counter()
    model.fit(data.X_train, data.y_train, w, data.categorical, context=ctx)
    return model, time.perf_counter() - t0


def _fmt(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"


def prefer_simpler(
    metric: Metric, eligible: list[CandidateResult], best: CandidateResult, data: TrainingData, *, n_boot: int, seed: int
) -> tuple[CandidateResult, float | None]:
    """The least complex eligible candidate not significantly below ``best`` on the validation rows.

    A candidate is kept when the one-sided 95% paired bootstrap bound of ``best - candidate``
    reaches 0 (the validation split cannot tell them apart). Returns it and that bound.
    """
    if best.valid_scores is None:
        return best, None
    order = sorted(eligible, key=lambda r: (r.complexity, -metric.signed(r.value or 0.0)))
    for r in order:
        if r is best or r.complexity >= best.complexity:
            return best, None
        if r.valid_scores is None:
            continue
        gaps = paired_bootstrap_gap(metric, data.y_valid, best.valid_scores, r.valid_scores, data.g_valid,
                                    resamples=n_boot, seed=seed)
        if gaps.size and float(np.quantile(gaps, 0.05)) <= 0.0:
            return r, float(np.quantile(gaps, 0.05))
    return best, None


def explain(
    metric: Metric,
    results: list[CandidateResult],
    winner: CandidateResult,
    constraints: dict[str, Any],
    *,
    best: CandidateResult | None = None,
    gap: float | None = None,
) -> str:
    """One line on why the winner won (and what better-scoring candidates broke)."""
    budget_bits = []
    if constraints.get("latency_p99_ms") is not None:
        budget_bits.append(f"{constraints['latency_p99_ms']:g} ms p99")
    if constraints.get("max_model_size_mb") is not None:
        budget_bits.append(f"{constraints['max_model_size_mb']:g} MB")
    scored = [r for r in results if r.value is not None and not math.isnan(r.value)]
    where = f"among candidates under {' and '.join(budget_bits)}" if budget_bits else f"of {len(scored)} candidates"
    if best is not None and best is not winner:
        line = (
            f"{winner.name}: simplest candidate {where.replace('of ', 'among ')} whose {metric.name} ({_fmt(winner.value or 0.0)}) is not "
            f"significantly below the best, {best.name} ({_fmt(best.value or 0.0)}; paired bootstrap 95% lower bound "
            f"of the gap {gap if gap is not None else 0.0:+.4f})"
        )
    else:
        line = f"{winner.name}: best {metric.name} ({_fmt(winner.value or 0.0)}) {where}"
    better = [
        r for r in scored
        if not r.eligible and r is not winner and metric.better(r.value or 0.0, (best or winner).value or 0.0)
    ]
    if better:
        top = max(better, key=lambda r: metric.signed(r.value or 0.0))
        delta = abs((top.value or 0.0) - (winner.value or 0.0))
        line += f"; {top.name} was {delta:.3f} better but {top.reasons[0] if top.reasons else 'not eligible'}"
    elif best is None or best is winner:
        others = [r for r in scored if r is not winner and r.eligible]
        if others:
            nxt = max(others, key=lambda r: metric.signed(r.value or 0.0))
            delta = abs((winner.value or 0.0) - (nxt.value or 0.0))
            line += f"; next best {nxt.name} by {delta:.4f}"
    return line


def _eligibility(r: CandidateResult, constraints: dict[str, Any]) -> None:
    reasons = []
    if r.error:
        reasons.append(f"failed: {r.error}")
    lat_budget = constraints.get("latency_p99_ms")
    batch = int(constraints.get("latency_batch_size") or 1)
    lat = r.batch_latency if batch > 1 else r.latency
    tol = float(constraints.get("latency_tolerance") or 0.0)
    if lat_budget is not None and lat is not None and lat.p99_ms > lat_budget * (1.0 + tol):
        where = "CPU p99" if batch == 1 else f"CPU p99 at batch {batch}"
        reasons.append(f"{lat.p99_ms / lat_budget:.1f}x over the latency budget ({where} {lat.p99_ms:.2f} ms "
                       f"± {lat.spread_ms:.2f} > {lat_budget:g} ms + {round(100 * tol)}% tolerance)")
    size_budget = constraints.get("max_model_size_mb")
    if size_budget is not None and r.size_mb is not None and r.size_mb > size_budget:
        reasons.append(f"{r.size_mb / size_budget:.1f}x over the size budget ({r.size_mb:.2f} MB > {size_budget:g} MB)")
    if r.value is None or math.isnan(r.value):
        reasons.append("no validation score")
    r.reasons = reasons
    r.eligible = not reasons


def measure_all(results: list[CandidateResult], rows: list[dict[str, Any]], constraints: dict[str, Any],
                valid: pa.Table, latency_calls: int) -> None:
    """Measure every fitted candidate's latency in interleaved rounds (see :mod:`loopml.training.measure`)."""
    fitted = [r for r in results if r.bundle is not None and r.error is None]
    try:
        lats = measure_row_latencies([r.bundle for r in fitted if r.bundle is not None], rows, n_calls=latency_calls)
    except (LoopMLError, ValueError, RuntimeError) as exc:
        for r in fitted:
            r.error = f"latency measurement failed: {exc}".splitlines()[0][:300]
        return
    for r, lat in zip(fitted, lats):
        r.latency = lat
    bsize = int(constraints.get("latency_batch_size") or 1)
    if bsize > 1:
        for r in fitted:
            if r.bundle is not None:
                r.batch_latency = measure_batch_latency(r.bundle, valid, bsize)


def _unscorable_valid(data: TrainingData, metric: str, results: list[CandidateResult]) -> ModelError | None:
    """Why no candidate has a validation score when the cause is the data (one class in the split), else None."""
    if any(r.error or (r.value is not None and not math.isnan(r.value)) for r in results):
        return None
    if data.task not in ("binary", "multiclass") or len(data.y_valid) == 0:
        return None
    values, counts = np.unique(data.y_valid, return_counts=True)
    if values.size > 1:
        return None
    target = data.spec.task.target
    cls = data.classes[int(values[0])] if data.classes and 0 <= int(values[0]) < len(data.classes) else values[0]
    total = np.unique(np.concatenate([data.y_train, data.y_valid]), return_counts=True)
    seen = ", ".join(
        f"{data.classes[int(v)] if data.classes and 0 <= int(v) < len(data.classes) else v}: {int(c)}"
        for v, c in zip(*total)
    )
    return ModelError(
        f"no candidate can be scored: the validation split ({int(counts[0])} rows) holds a single class of "
        f"`{target}` ({cls!r}), so `{metric}` is undefined on it (rows per class in train + valid: {seen})",
        hint="collect more rows of the rare class, use training.split.type: stratified, or choose a metric "
        "defined on one class (training.tuning.metric: log_loss)",
    )


def _cv_folds(setting: int | str, n_train: int) -> int:
    if setting == "auto":
        return 5 if n_train <= 10_000 else 0
    k = int(setting)
    return k if k >= 2 else 0


def refit_winner(data: TrainingData, winner: CandidateResult) -> None:
    """Refit the winner's transform and model on train + valid with its chosen parameters.

    The number of boosting rounds (epochs) early stopping chose is kept, so no data is
    needed to stop the refit; the validation score in the leaderboard stays the one measured
    before the refit.
    """
    if winner.bundle is None:
        return
    combined = pa.concat_tables([data.training_table(), data.valid_table], promote_options="default")
    full = prepare_training_data(data.spec, combined, data.valid_table)
    full.scratch_dir = data.scratch_dir
    params = {**winner.params, **winner.bundle.model.fitted_params()}
    cls = model_class(winner.model_type)
    model, secs = _fit_final(full, winner.name, cls, params, use_valid=False)
    manifest = {**winner.bundle.manifest, "refit": {"rows": len(full.y_train), "params": params}}
    winner.bundle = Bundle(full.transform, model, manifest)
    winner.params = params
    winner.size_bytes = winner.bundle.size_bytes()
    winner.train_s += secs
    data.notes.append(f"winner refit on train + valid ({len(full.y_train)} rows) with {params}")


def select_model(
    data: TrainingData,
    *,
    budget_s: float | None = None,
    executor: str | None = None,
    record: Callable[[str, dict[str, Any]], None] | None = None,
    progress: Callable[[str, float], None] | None = None,
    latency_calls: int = 2000,
    bootstrap: int | None = None,
) -> Selection:
    """Train, tune, measure and choose among the spec's candidates.

    Parameters
    ----------
    data : from :func:`prepare_training_data`.
    budget_s : safety cap in wall-clock seconds on training and tuning every candidate
        (``training.tuning.time_budget_s`` when unset; the budget is ``training.tuning.n_trials``):
        fixed candidates are fitted first and the candidates with ``tune: true`` share what they
        leave. When it ends a search early, the leaderboard notes say so.
    executor : trial executor name (``training.executor`` when unset).
    record : ``record(kind, row)`` for every trial (kind ``trial``) and final fit (``final``).
    progress : ``progress(message, fraction_done)``.
    latency_calls : single-row calls timed per candidate (in interleaved rounds, see
        :mod:`loopml.training.measure`).
    bootstrap : bootstrap resamples for the CI (``evaluation.bootstrap_resamples`` when unset).
    """
    spec, base_note = with_baseline(data.spec)
    if base_note and base_note not in data.notes:
        data.notes.append(base_note)
    tr = spec.training
    cands = validate_candidates(spec)
    metric = metric_for(data.task, tr.tuning.metric)
    constraints = spec.requirements.constraints.model_dump(mode="json")
    budget = tr.tuning.time_budget_s if budget_s is None else budget_s
    n_boot = spec.evaluation.bootstrap_resamples if bootstrap is None else bootstrap
    rows = request_rows(data.valid_table, list(data.transform.input_columns), 200, seed=tr.seed)
    tuned_left = sum(1 for i, c in enumerate(tr.candidates) if c.tune)
    results: list[CandidateResult] = []
    ex = make_trial_executor(executor or tr.executor) if tuned_left else None
    say = progress or (lambda msg, frac: None)
    t_start = time.time()
    cv_k = _cv_folds(tr.tuning.cv_folds, len(data.y_train))
    if cv_k and tuned_left:
        data.notes.append(f"tuning trials scored by {cv_k}-fold cross-validation on the training split")
    with tempfile.TemporaryDirectory(prefix="loopml-trials-") as tmp:
        data_path = str(Path(tmp) / "data.npz")
        if ex is not None:
            save_trial_data(Path(data_path), {
                "X_train": data.X_train, "y_train": data.y_train, "w_train": data.w_train, "g_train": data.g_train,
                "X_valid": data.X_valid, "y_valid": data.y_valid, "g_valid": data.g_valid,
                "categorical": np.asarray(data.categorical, dtype=np.int64), "feature_names": data.feature_names,
                "folds": fold_ids(data.y_train, data.g_train, cv_k, tr.seed, data.task) if cv_k else None,
                "emb_cols": np.asarray(list(data.embedding_dims), dtype=np.int64),
                "emb_dims": np.asarray(list(data.embedding_dims.values()), dtype=np.int64),
            })
        try:
            # fixed candidates first: the tuned ones share whatever budget they leave
            order = sorted(range(len(cands)), key=lambda i: tr.candidates[i].tune)
            for k, i in enumerate(order):
                (label, cls, params), cand = cands[i], tr.candidates[i]
                say(f"{label}: fitting", k / len(cands))
                res = CandidateResult(label, cls.name, params, cand.tune, metric.name, complexity=cls.complexity)
                try:
                    if cand.tune and ex is not None:
                        share = None
                        if budget is not None:
                            share = max(0.0, budget - (time.time() - t_start)) / max(tuned_left, 1)
                        tuned_left -= 1

                        def on_trial(
                            rec: TrialRecord, label: str = label, cls: type[BaseModel] = cls, k: int = k
                        ) -> None:
                            say(f"{label}: trial {rec.number} {rec.result.state}"
                                + (f" {metric.name}={rec.result.value:.4f}" if rec.result.value is not None else ""),
                                k / len(cands))
                            if record is not None:
                                record("trial", {
                                    "candidate": label, "model_type": cls.name, "number": rec.number,
                                    "params": rec.params, "state": rec.result.state,
                                    "metrics": {metric.name: rec.result.value},
                                    "intermediate": rec.result.intermediate, "duration_s": rec.result.duration_s,
                                    "error": rec.result.error,
                                })

                        space = getattr(cls, "search_space", None)
                        tres = tune(
                            ex, data_path=data_path, candidate=label, model_type=cls.name, search_space=space,
                            fixed_params=params, task=data.task, seed=tr.seed, metric=metric, budget_s=share,
                            n_trials=tr.tuning.n_trials, focal_gamma=data.focal_gamma,
                            item_key=spec.task.item_key, negative_rate=data.negative_rate, on_trial=on_trial,
                            cv=bool(cv_k),
                        )
                        res.params, res.tune_s = tres.best_params, tres.seconds
                        res.n_trials, res.n_pruned = len(tres.trials), tres.n_pruned
                        res.trials_planned, res.tuning_stopped_by = tres.planned, tres.stopped_by
                        if tres.cut_short:
                            data.notes.append(
                                f"tuning of {label} cut short by the time cap after {len(tres.trials)} of "
                                f"{tres.planned} trials (training.tuning.time_budget_s = {budget:g} s): "
                                "a rerun may choose differently; raise the cap or lower training.tuning.n_trials")
                        if cv_k:  # rounds/epochs chosen by the folds; the validation split stays unseen
                            res.params = {**res.params, **tres.fitted_params}
                    model, res.train_s = _fit_final(data, label, cls, res.params,
                                                    use_valid=not (cand.tune and cv_k))
                    if tr.executor == "ray" and cls.name == "lightgbm":
                        how = ("in this process (sparse features stay off Ray)" if sp.issparse(data.X_train)
                               else f"data-parallel on Ray Train, {tr.ray_workers} worker(s)")
                        data.notes.append(f"{label}: fitted {how}")
                    score = model.score(data.X_valid)
                    if data.negative_rate is not None and data.task == "binary":
                        score = recalibrate(score, data.negative_rate)
                    res.value = metric.fn(data.y_valid, score, data.g_valid)
                    res.valid_scores = score
                    res.ci = bootstrap_ci(metric, data.y_valid, score, data.g_valid, resamples=n_boot, seed=tr.seed)
                    manifest = make_manifest(
                        data.transform, model, schema=data.schema, classes=data.classes,
                        negative_rate=data.negative_rate,
                        extra={"candidate": label, "validation": {metric.name: res.value}},
                    )
                    res.bundle = Bundle(data.transform, model, manifest)
                    res.size_bytes = res.bundle.size_bytes()
                except SpecError:
                    raise
                except (LoopMLError, ValueError, RuntimeError, MemoryError) as exc:
                    res.error = str(exc) if isinstance(exc, LoopMLError) else f"{type(exc).__name__}: {exc}"
                    res.error = res.error.splitlines()[0][:300]
                    if not isinstance(exc, LoopMLError):
                        res.error += " | " + traceback.format_exc(limit=2).splitlines()[-1][:200]
                results.append(res)
        finally:
            if ex is not None:
                ex.shutdown()
    say("measuring latency (interleaved rounds, CPU time)", 0.95)
    measure_all(results, rows, constraints, data.valid_table, latency_calls)
    for res in results:
        _eligibility(res, constraints)
        if record is not None:
            record("final", {
                "candidate": res.name, "model_type": res.model_type, "number": -1, "params": res.params,
                "state": "failed" if res.error else "complete",
                "metrics": {metric.name: res.value, "ci_low": res.ci[0], "ci_high": res.ci[1],
                            "latency_p99_ms": res.latency.p99_ms if res.latency else None,
                            "size_bytes": res.size_bytes},
                "intermediate": [], "duration_s": res.train_s, "error": res.error,
            })
    results.sort(key=lambda r: [c[0] for c in cands].index(r.name))
    if constraints.get("deployment_target") == "on-device":
        return _select_on_device(data, results, metric, constraints, n_boot, rows, latency_calls, say)
    eligible = [r for r in results if r.eligible]
    if not eligible:
        unscorable = _unscorable_valid(data, metric.name, results)
        if unscorable is not None:
            raise unscorable
        lines = [f"{r.name}: {'; '.join(r.reasons)}" for r in results]
        raise ModelError(
            "no candidate meets the requirements:\n  " + "\n  ".join(lines),
            hint="relax requirements.constraints, or add a smaller/faster candidate (e.g. logistic, lightgbm with fewer trees)",
        )
    best = min(eligible, key=lambda r: _rank_key(metric, r))
    winner, gap = best, None
    if tr.prefer_simpler:
        winner, gap = prefer_simpler(metric, eligible, best, data, n_boot=max(n_boot, 200), seed=tr.seed)
    why = explain(metric, results, winner, constraints, best=best, gap=gap)
    if tr.refit and winner.bundle is not None:
        say(f"{winner.name}: refitting on train + valid", 0.99)
        refit_winner(data, winner)
    say(why, 1.0)
    return Selection(metric, results, winner, why, list(data.notes), constraints)


def _select_on_device(data: TrainingData, results: list[CandidateResult], metric: Metric, constraints: dict[str, Any],
                      n_boot: int, rows: list[dict[str, Any]], latency_calls: int,
                      say: Callable[[str, float], None]) -> Selection:
    """``deployment_target: on-device``: the best compressed variant whose exported file fits (:mod:`loopml.export.device`).

    The cloud candidates are fitted and measured as usual; the budgets are then judged on each variant's ONNX
    file in ONNX Runtime (size of the file, single-row p99 on one thread), not on the Python bundle.
    """
    from loopml.export.device import choose_on_device
    from loopml.training.models.baselines import BASELINE_MODELS

    scored = [r for r in results if r.error is None and r.value is not None and r.bundle is not None]
    if not scored:
        raise ModelError("no candidate could be trained:\n  " + "\n  ".join(f"{r.name}: {r.error}" for r in results))
    baseline = next((r for r in scored if r.model_type in BASELINE_MODELS), None)
    models = [r for r in scored if r is not baseline] or scored
    cloud = max(models, key=lambda r: metric.signed(r.value or 0.0))
    say("on-device: exporting, compressing and measuring variants in ONNX Runtime", 0.96)
    tr = data.spec.training
    choice = choose_on_device(data, results, metric, constraints, cloud, baseline=baseline, n_boot=n_boot,
                              seed=tr.seed)
    v, m = choice.variant, choice.measured
    manifest = make_manifest(
        data.transform, v.bundle.model, schema=data.schema, classes=data.classes, negative_rate=data.negative_rate,
        extra={"candidate": v.name, "validation": {metric.name: m.value},
               "device": {"variant": v.name, "technique": v.technique, "base": v.base, "size_bytes": len(v.onnx),
                          "p99_ms": m.p99_ms, "runtime": "onnxruntime"}},
    )
    winner = CandidateResult(
        name=v.name, model_type=v.bundle.model.name, params=v.bundle.model.config.model_dump(mode="json"),
        tuned=False, metric=metric.name, value=m.value, ci=m.interval, size_bytes=len(v.onnx), eligible=True,
        bundle=Bundle(data.transform, v.bundle.model, manifest),
        complexity=getattr(type(v.bundle.model), "complexity", 5),
    )
    measure_all([winner], rows, constraints, data.valid_table, latency_calls)
    if all(r.name != winner.name for r in results):
        results.append(winner)
    else:  # the plain export of a cloud candidate won: its row is the winner
        winner = next(r for r in results if r.name == winner.name)
        winner.bundle = Bundle(data.transform, winner.bundle.model, manifest) if winner.bundle else None
        winner.eligible = True
        winner.reasons = []
    for r in results:
        if r is not winner and r.name in {x["name"] for x in choice.section["variants"]}:
            row = next(x for x in choice.section["variants"] if x["name"] == r.name)
            r.eligible = bool(row["fits"])
            r.reasons = list(row["reasons"])
    say(choice.why, 1.0)
    return Selection(metric, results, winner, choice.why, list(data.notes), constraints,
                     device_onnx=v.onnx, on_device=choice.section)
