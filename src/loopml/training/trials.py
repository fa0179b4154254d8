"""Trials: one model fit with given parameters, scored on the validation split.

A trial is a plain, picklable :class:`TrialJob` (the data lives in an npz file the worker
opens itself), so the same job runs in this process, in a local process pool, or on Ray.
Executors follow the same shape as the pipeline's (``loopml.pipeline.executors``): a
``name`` and one required method, ``submit(job) -> Future``.

Pruning follows the median rule: a trial whose intermediate validation score falls below
the median of the completed trials at the same step stops early (Optuna's MedianPruner
semantics, evaluated against a snapshot so that it works in any worker).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loopml.pipeline.executors import EXECUTORS, Executor, make_executor


class TrialPruned(Exception):
    """Raised inside a fit when the trial should stop (median rule)."""


class TrialCapped(TrialPruned):
    """Raised inside a fit when the tuning time cap has passed (the result then depends on timing)."""


@dataclass(frozen=True)
class PruneRule:
    """Median stopping rule against the completed trials' intermediate scores."""

    curves: dict[int, list[float]] = field(default_factory=dict)
    n_startup_trials: int = 3
    n_warmup_steps: int = 20
    deadline: float | None = None  # time.time() after which the trial stops

    def over_time(self) -> bool:
        """Whether the tuning time cap has passed."""
        return self.deadline is not None and time.time() > self.deadline

    def should_prune(self, step: int, value: float) -> bool:
        """Whether a trial scoring ``value`` (higher is better) at ``step`` should stop (median rule)."""
        if step < self.n_warmup_steps:
            return False
        seen = self.curves.get(step)
        if seen is None or len(seen) < self.n_startup_trials:
            return False
        return bool(value < float(np.median(seen)))


@dataclass(frozen=True)
class TrialJob:
    """A picklable trial: which model, which parameters, where the data is."""

    data_path: str
    candidate: str
    model_type: str
    params: dict[str, Any]
    task: str
    seed: int
    metric: str
    number: int = 0
    focal_gamma: float | None = None
    item_key: str | None = None
    rule: PruneRule | None = None
    negative_rate: float | None = None


@dataclass
class TrialResult:
    """What a trial produced."""

    number: int
    state: str  # complete, pruned, capped (by the time cap), failed
    value: float | None
    intermediate: list[tuple[int, float]]
    duration_s: float
    error: str | None = None
    fitted_params: dict[str, Any] = field(default_factory=dict)
    fold_values: list[float] = field(default_factory=list)


_DATA: dict[str, dict[str, Any]] = {}


def save_trial_data(path: Path, data: dict[str, Any]) -> None:
    """Write the training and validation arrays a trial needs (npz, no pickle)."""
    arrays = {k: np.asarray(v) for k, v in data.items() if v is not None and k not in ("feature_names",)}
    arrays["feature_names"] = np.asarray(data.get("feature_names") or [], dtype=str)
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


def load_trial_data(path: str) -> dict[str, Any]:
    """The arrays of a trial data file (cached per process)."""
    if path not in _DATA:
        with np.load(path, allow_pickle=False) as z:
            d: dict[str, Any] = {k: z[k] for k in z.files}
        d["feature_names"] = [str(s) for s in d.get("feature_names", [])]
        _DATA.clear()  # one data set per process at a time
        _DATA[path] = d
    return _DATA[path]


def run_trial(job: TrialJob) -> TrialResult:
    """Fit one model with ``job.params`` and score it on the validation split."""
    from loopml.training.metrics import METRICS
    from loopml.training.models import FitContext, make_model

    t0 = time.perf_counter()
    curve: list[tuple[int, float]] = []

    def report(step: int, value: float) -> None:
        curve.append((step, value))
        if job.rule is not None and job.rule.over_time():
            raise TrialCapped(f"stopped by the time cap at step {step}")
        if job.rule is not None and job.rule.should_prune(step, value):
            raise TrialPruned(f"pruned at step {step}")

    try:
        d = load_trial_data(job.data_path)
        if d.get("folds") is not None and d["folds"].size:
            value, fitted, folds = _cross_validate(job, d, report)
            return TrialResult(job.number, "complete", value, curve, time.perf_counter() - t0, fitted_params=fitted,
                               fold_values=folds)
        model = make_model(job.model_type, task=job.task, seed=job.seed, where=job.candidate, **job.params)
        ctx = FitContext(
            group=d.get("g_train"),
            eval_X=d["X_valid"],
            eval_y=d["y_valid"],
            eval_group=d.get("g_valid"),
            feature_names=d["feature_names"],
            report=report,
            focal_gamma=job.focal_gamma if model.supports_focal_loss else None,
            extra={"item_key": job.item_key, "embedding_dims": _emb_dims(d)},
        )
        w = d.get("w_train")
        if job.focal_gamma is not None and not model.supports_focal_loss:
            from loopml.training.imbalance import class_weights

            w = class_weights(d["y_train"], w)
        model.fit(d["X_train"], d["y_train"], w, [int(c) for c in d["categorical"]], context=ctx)
        s = model.score(d["X_valid"])
        if job.negative_rate is not None and job.task == "binary":
            from loopml.training.sampling import recalibrate

            s = recalibrate(s, job.negative_rate)
        value = METRICS[job.metric].fn(d["y_valid"], s, d.get("g_valid"))
        return TrialResult(job.number, "complete", float(value), curve, time.perf_counter() - t0,
                           fitted_params=model.fitted_params())
    except TrialCapped:
        return TrialResult(job.number, "capped", None, curve, time.perf_counter() - t0)
    except TrialPruned:
        return TrialResult(job.number, "pruned", None, curve, time.perf_counter() - t0)
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return TrialResult(job.number, "failed", None, curve, time.perf_counter() - t0, error=detail)


def _emb_dims(d: dict[str, Any]) -> dict[int, int]:
    cols, dims = d.get("emb_cols"), d.get("emb_dims")
    if cols is None or dims is None:
        return {}
    return {int(c): int(k) for c, k in zip(cols, dims)}


def _aggregate(params: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of numeric fitted parameters over folds (rounded for integers), else the first value."""
    out: dict[str, Any] = {}
    for key in params[0] if params else {}:
        vals: list[Any] = [p.get(key) for p in params]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            out[key] = max(1, round(float(np.mean(vals))))
        elif all(isinstance(v, float) for v in vals):
            out[key] = float(np.mean(vals))
        else:
            out[key] = vals[0]
    return out


def _cross_validate(job: TrialJob, d: dict[str, Any], report: Any) -> tuple[float, dict[str, Any], list[float]]:
    """k-fold score of ``job.params`` on the training rows (fold ids in ``d['folds']``)."""
    from loopml.training.imbalance import class_weights
    from loopml.training.metrics import METRICS
    from loopml.training.models import FitContext, make_model

    metric = METRICS[job.metric]
    X, y, folds = d["X_train"], d["y_train"], d["folds"]
    g, w = d.get("g_train"), d.get("w_train")
    cats = [int(c) for c in d["categorical"]]
    values, fitted = [], []
    for f in range(int(folds.max()) + 1):
        tr, te = folds != f, folds == f
        model = make_model(job.model_type, task=job.task, seed=job.seed, where=job.candidate, **job.params)
        wf = w[tr] if w is not None else None
        if job.focal_gamma is not None and not model.supports_focal_loss:
            wf = class_weights(y[tr], wf)
        ctx = FitContext(
            group=g[tr] if g is not None else None,
            eval_X=X[te], eval_y=y[te], eval_group=g[te] if g is not None else None,
            feature_names=d["feature_names"],
            focal_gamma=job.focal_gamma if model.supports_focal_loss else None,
            extra={"item_key": job.item_key, "embedding_dims": _emb_dims(d)},
        )
        model.fit(X[tr], y[tr], wf, cats, context=ctx)
        s = model.score(X[te])
        if job.negative_rate is not None and job.task == "binary":
            from loopml.training.sampling import recalibrate

            s = recalibrate(s, job.negative_rate)
        values.append(float(metric.fn(y[te], s, g[te] if g is not None else None)))
        fitted.append(model.fitted_params())
        report(f + 1, metric.signed(float(np.nanmean(values))))
    return float(np.nanmean(values)), _aggregate(fitted), values


#: trials run on the pipeline's executors (``inprocess``, ``process``, ``ray``): one interface for both
TrialExecutor = Executor
TRIAL_EXECUTORS = EXECUTORS


def make_trial_executor(name: str) -> TrialExecutor:
    """A trial executor by registered name (the pipeline's executors)."""
    return make_executor(name, field="training.executor")
