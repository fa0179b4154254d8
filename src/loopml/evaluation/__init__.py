"""Evaluation: a model is approved by evidence, not by one number.

Metrics with bootstrap confidence intervals (one vectorised engine), paired comparisons with
the production and baseline models, slices, fairness, gates, analysis tools and the report.

>>> import numpy as np
>>> from loopml.evaluation import evaluate_predictions, check_gates
>>> from loopml.spec.evaluation import Evaluation
>>> y = np.array([0, 1] * 100)
>>> s = np.where(y == 1, 0.8, 0.3)
>>> result = evaluate_predictions("binary", y, s, spec_eval=Evaluation(bootstrap_resamples=50))
>>> [v.passed for v in check_gates(["roc_auc >= 0.75"], result)]
[True]
"""

from loopml.evaluation.bootstrap import Interval, bootstrap_samples, point_estimates, resample_counts
from loopml.evaluation.data import EvalData
from loopml.evaluation.evaluate import evaluate_predictions
from loopml.evaluation.fairness import FairnessResult
from loopml.evaluation.gates import (
    Gate,
    GateContext,
    GateSyntaxError,
    GateVerdict,
    approved,
    baseline_gate,
    check_gates,
    parse_gate,
    parse_gates,
)
from loopml.evaluation.metrics import DEFAULT_METRICS, METRICS, MetricDef, compute_metric, register_metric
from loopml.evaluation.report import build_report, render_html, summary_tables
from loopml.evaluation.result import Comparison, EvaluationResult, MetricResult, SliceResult

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "Comparison",
    "EvalData",
    "EvaluationResult",
    "FairnessResult",
    "Gate",
    "GateContext",
    "GateSyntaxError",
    "GateVerdict",
    "Interval",
    "MetricDef",
    "MetricResult",
    "SliceResult",
    "approved",
    "baseline_gate",
    "bootstrap_samples",
    "build_report",
    "check_gates",
    "compute_metric",
    "evaluate_predictions",
    "parse_gate",
    "parse_gates",
    "point_estimates",
    "register_metric",
    "render_html",
    "resample_counts",
    "summary_tables",
]
