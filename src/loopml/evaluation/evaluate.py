"""``evaluate_predictions``: every metric with intervals, paired comparisons, slices and fairness.

This is the array-level entry point (no workspace, no model): the ``evaluate`` stage and the
CLI score a model and call it; tests and notebooks can call it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from loopml.errors import DataError, SpecError
from loopml.evaluation.bootstrap import (
    BootstrapMethod,
    bootstrap_samples,
    evaluate_kernels,
    percentile_interval,
    point_estimates,
)
from loopml.evaluation.curves import calibration_curve, confusion_matrix, pr_curve, roc_curve, threshold_for
from loopml.evaluation.data import EvalData
from loopml.evaluation.fairness import fairness_for_column
from loopml.evaluation.gates import gate_metrics, parse_gates
from loopml.evaluation.kernels import Kernel
from loopml.evaluation.metrics import DEFAULT_METRICS, build_kernel, canonical_key, metric_key, resolve_metric
from loopml.evaluation.result import Comparison, EvaluationResult, MetricResult, SliceResult
from loopml.evaluation.slices import define_slices
from loopml.spec.evaluation import Evaluation

REFERENCES = ("production", "baseline")


def metric_plan(task: str, spec_eval: Evaluation, online_metric: str | None = None) -> list[tuple[str, str | None, str | None]]:
    """``[(metric key, online metric, where the pairing comes from)]`` for a task; the first is primary."""
    out: list[tuple[str, str | None, str | None]] = []
    if spec_eval.metrics:
        for i, mp in enumerate(spec_eval.metrics):
            # `{name: ndcg, k: 10}` and `{name: ndcg@10}` are the same metric
            raw = mp.name if "@" in mp.name or mp.k is None else metric_key(mp.name, mp.k)
            mdef, k = resolve_metric(canonical_key(raw, task), task)
            key = metric_key(mdef.name, k)
            if mp.online_metric:
                out.append((key, mp.online_metric, "spec"))
            elif i == 0 and online_metric:
                out.append((key, online_metric, "task"))
            else:
                out.append((key, mdef.online_metric, "registry default" if mdef.online_metric else None))
    else:
        for i, raw in enumerate(DEFAULT_METRICS[task]):
            mdef, k = resolve_metric(raw, task)
            key = metric_key(mdef.name, k)
            if i == 0 and online_metric:
                out.append((key, online_metric, "task"))
            else:
                out.append((key, mdef.online_metric, "registry default" if mdef.online_metric else None))
    unique: dict[str, tuple[str, str | None, str | None]] = {}
    for entry in out:  # a metric listed twice is reported once, with its first pairing
        unique.setdefault(entry[0], entry)
    return list(unique.values())


def _p_value(diff: np.ndarray) -> float:
    d = diff[np.isfinite(diff)]
    if d.size == 0:
        return float("nan")
    lo = (np.count_nonzero(d <= 0) + 1) / (d.size + 1)
    hi = (np.count_nonzero(d >= 0) + 1) / (d.size + 1)
    return float(min(1.0, 2 * min(lo, hi)))


def compare(
    metric: str,
    reference: str,
    cand_value: float,
    ref_value: float,
    cand_samples: np.ndarray,
    ref_samples: np.ndarray,
    confidence: float,
    higher_is_better: bool,
) -> Comparison:
    """Paired comparison from bootstrap samples computed on the same resamples."""
    diff = cand_samples - ref_samples
    interval = percentile_interval(cand_value - ref_value, diff, confidence)
    significant = bool(
        np.isfinite(interval.lower) and np.isfinite(interval.upper) and (interval.lower > 0 or interval.upper < 0)
    )
    return Comparison(metric, reference, cand_value, ref_value, interval, _p_value(diff), significant,
                      higher_is_better, diff)


def evaluate_predictions(
    task: str,
    y_true: Any,
    y_score: Any,
    *,
    slices: Mapping[str, Any] | None = None,
    sensitive: Mapping[str, Any] | None = None,
    production_score: Any | None = None,
    baseline_score: Any | None = None,
    spec_eval: Evaluation | None = None,
    groups: Any | None = None,
    items: Any | None = None,
    catalogue_size: int | None = None,
    online_metric: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Evaluate a candidate's predictions: metrics with bootstrap intervals, comparisons, slices, fairness.

    Parameters
    ----------
    task
        ``binary``, ``multiclass``, ``regression``, ``ranking`` or ``text``.
    y_true, y_score
        Labels and the candidate's scores (see :class:`~loopml.evaluation.data.EvalData`).
    slices
        ``{column: values per row}`` to report metrics per value / numeric bucket.
    sensitive
        ``{column: values per row}`` of protected attributes for fairness (binary tasks).
    production_score, baseline_score
        Scores of the production and baseline models on the same rows, for paired comparisons.
    spec_eval
        The spec's ``evaluation`` section (metrics, resamples, confidence, thresholds...).
    groups, items, catalogue_size
        Ranking: query of each row, item of each row, catalogue size for coverage.
    online_metric
        The task's online metric (``task.online_metric``), paired with the primary metric.
    progress
        Called with a short message as each phase starts.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400)
    >>> s = np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1)
    >>> r = evaluate_predictions("binary", y, s, spec_eval=Evaluation(bootstrap_resamples=50))
    >>> r.metrics["roc_auc"].interval.lower < r.metrics["roc_auc"].value < r.metrics["roc_auc"].interval.upper
    True
    """
    t0 = time.perf_counter()
    ev = spec_eval or Evaluation()
    say = progress or (lambda msg: None)
    plan = metric_plan(task, ev, online_metric)
    for g in gate_metrics(parse_gates(ev.gates)):
        try:
            mdef, k = resolve_metric(canonical_key(g, task), task)
        except SpecError as exc:
            raise SpecError(f"evaluation gate on `{g}`: {exc.message}") from None
        if metric_key(mdef.name, k) not in [p[0] for p in plan]:
            plan.append((metric_key(mdef.name, k), None, None))
    keys = [k for k, _, _ in plan]
    primary = keys[0]
    cand = EvalData(task, y_true, y_score, threshold=ev.threshold, groups=_arr(groups), items=_arr(items),
                    catalogue_size=catalogue_size, calibration_bins=ev.calibration_bins)
    notes: list[str] = []
    thresholds: dict[str, Any] = {}
    if task == "binary" and (ev.target_precision is not None or ev.target_recall is not None):
        chosen = threshold_for(cand, precision=ev.target_precision, recall=ev.target_recall)
        thresholds["chosen"] = chosen
        if chosen.get("reachable"):
            cand = cand.with_score(cand.score, "candidate")
            cand.threshold = float(chosen["threshold"])
        else:
            notes.append(f"target {chosen['target']} {chosen['value']} is not reachable on the test set; "
                         f"kept threshold {ev.threshold}")
    refs: dict[str, EvalData] = {}
    for name, sc in (("production", production_score), ("baseline", baseline_score)):
        if sc is not None:
            refs[name] = cand.with_score(sc, name)
            refs[name].threshold = cand.threshold
    models = {"candidate": cand, **refs}

    say("metrics and bootstrap intervals")
    kernels: dict[str, Kernel] = {}
    for m, d in models.items():
        for key in keys:
            kernels[f"{m}\x00{key}"] = build_kernel(key, d)
    units = cand.units
    method: BootstrapMethod = ev.bootstrap_method
    point, samples = evaluate_kernels(kernels, units, ev.bootstrap_resamples, seed=ev.seed, method=method)

    def result_for(m: str) -> dict[str, MetricResult]:
        out = {}
        for k, online, source in plan:
            mdef, _ = resolve_metric(k, task)
            kk = f"{m}\x00{k}"
            out[k] = MetricResult(k, mdef.description, mdef.higher_is_better,
                                  percentile_interval(point[kk], samples[kk], ev.confidence),
                                  online if m == "candidate" else None, source if m == "candidate" else None,
                                  samples[kk])
        return out

    metrics = result_for("candidate")
    references = {r: result_for(r) for r in refs}
    comparisons = {
        r: {
            k: compare(k, r, point[f"candidate\x00{k}"], point[f"{r}\x00{k}"], samples[f"candidate\x00{k}"],
                       samples[f"{r}\x00{k}"], ev.confidence, metrics[k].higher_is_better)
            for k in keys
        }
        for r in refs
    }
    if "production" not in refs:
        notes.append("no production model: comparisons with production are skipped")

    result = EvaluationResult(
        task=task, n=cand.n, units=units, primary_metric=primary, confidence=ev.confidence,
        resamples=ev.bootstrap_resamples,
        method=("multinomial" if units <= 200_000 else "poisson") if method == "auto" else method,
        seed=ev.seed, threshold=cand.threshold if task == "binary" else None, metrics=metrics,
        references=references, comparisons=comparisons, thresholds=thresholds, notes=notes,
    )
    if slices:
        say("slices")
        result.slices = evaluate_slices(cand, refs.get("production"), slices, keys, ev)
    if sensitive:
        if task != "binary":
            notes.append(f"fairness metrics are defined for binary tasks; skipped for a {task} task "
                         "(see the slices of the sensitive columns instead)")
        else:
            say("fairness")
            for col, vals in sensitive.items():
                _check_len(col, vals, cand.n)
                result.fairness[col] = fairness_for_column(
                    cand, col, np.asarray(vals), threshold=ev.fairness.threshold,
                    resamples=ev.bootstrap_resamples, confidence=ev.confidence, seed=ev.seed,
                    bins=ev.bins.get(col), buckets=ev.slice_buckets, min_group_size=ev.fairness.min_group_size,
                )
    say("curves")
    result.curves = curves_for(cand, refs)
    if task in ("binary", "multiclass"):
        result.confusion = confusion_matrix(cand)
    if task == "binary":
        for target in ("precision", "recall"):
            want = getattr(ev, f"target_{target}")
            if want is not None:
                result.thresholds[f"target_{target}"] = threshold_for(cand, **{target: want})
    result.seconds = time.perf_counter() - t0
    return result


def _arr(x: Any) -> np.ndarray | None:
    return None if x is None else np.asarray(x)


def _check_len(col: str, vals: Any, n: int) -> None:
    if len(vals) != n:
        raise DataError(f"column `{col}` has {len(vals)} values for {n} test rows; expected one per row")


def curves_for(cand: EvalData, refs: Mapping[str, EvalData]) -> dict[str, Any]:
    """Downsampled curves for the report (candidate and references)."""
    out: dict[str, Any] = {}
    if cand.task == "binary":
        out["roc"] = {m: roc_curve(d) for m, d in {"candidate": cand, **refs}.items()}
        out["pr"] = {m: pr_curve(d) for m, d in {"candidate": cand, **refs}.items()}
        out["calibration"] = {m: calibration_curve(d.y, d.score, d.calibration_bins)
                              for m, d in {"candidate": cand, **refs}.items()}
    elif cand.task == "regression":
        # binned predicted vs actual (deciles of the prediction): a regression calibration curve
        q = np.unique(np.quantile(cand.score, np.linspace(0, 1, 11)))
        b = np.clip(np.searchsorted(q, cand.score, side="right") - 1, 0, max(q.size - 2, 0))
        cnt = np.bincount(b).astype(np.float64)
        keep = cnt > 0
        out["predicted_vs_actual"] = {
            "mean_predicted": (np.bincount(b, weights=cand.score)[keep] / cnt[keep]).round(6).tolist(),
            "mean_actual": (np.bincount(b, weights=cand.y)[keep] / cnt[keep]).round(6).tolist(),
            "count": cnt[keep].astype(int).tolist(),
        }
    return out


def evaluate_slices(
    cand: EvalData,
    production: EvalData | None,
    columns: Mapping[str, Any],
    keys: list[str],
    ev: Evaluation,
) -> list[SliceResult]:
    """Metrics per slice (worst first by the primary metric), each with the slice's row count."""
    primary = keys[0]
    mdef, _ = resolve_metric(primary, cand.task)
    out: list[SliceResult] = []
    for col, vals in columns.items():
        _check_len(col, vals, cand.n)
        for s in define_slices(col, np.asarray(vals), buckets=ev.slice_buckets, max_values=ev.slice_max_values,
                               bins=ev.bins.get(col)):
            sub = cand.subset(s.mask)
            kernels: dict[str, Kernel] = {}
            for k in keys:
                try:
                    kernels[k] = build_kernel(k, sub)
                except (DataError, SpecError, ValueError):
                    continue
            prod = production.subset(s.mask, "production") if production is not None else None
            if prod is not None:
                kernels["\x00production"] = build_kernel(primary, prod)
            units = sub.units
            point = point_estimates(kernels, units)
            boot = {primary: kernels[primary]}
            if ev.slice_intervals == "all":
                boot = {k: v for k, v in kernels.items() if not k.startswith("\x00")}
            if prod is not None:
                boot["\x00production"] = kernels["\x00production"]
            samp = bootstrap_samples(boot, units, ev.bootstrap_resamples, seed=ev.seed, method=ev.bootstrap_method)
            vs = None
            if prod is not None:
                vs = compare(primary, "production", point[primary], point["\x00production"], samp[primary],
                             samp["\x00production"], ev.confidence, mdef.higher_is_better)
            intervals = {k: percentile_interval(point[k], samp[k], ev.confidence) for k in boot
                         if not k.startswith("\x00")}
            out.append(SliceResult(
                col, s.label, s.kind, s.n, {k: v for k, v in point.items() if not k.startswith("\x00")},
                intervals[primary], vs, intervals if ev.slice_intervals == "all" else {},
            ))

    def worst_first(r: SliceResult) -> tuple[int, float]:
        v = r.primary.value
        if not np.isfinite(v):
            return (1, 0.0)
        return (0, v if mdef.higher_is_better else -v)

    return sorted(out, key=worst_first)
