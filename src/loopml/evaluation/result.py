"""The evaluation result: metrics with intervals, comparisons, slices, fairness, curves, analysis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loopml.evaluation.bootstrap import Interval
from loopml.evaluation.fairness import FairnessResult


def _num(x: Any) -> Any:
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


@dataclass
class MetricResult:
    """One metric of one model: point value, bootstrap interval, and the online metric it stands for."""

    key: str
    description: str
    higher_is_better: bool
    interval: Interval
    online_metric: str | None = None
    online_source: str | None = None  # "spec", "task" or "registry default"
    samples: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    @property
    def value(self) -> float:
        """The point estimate."""
        return self.interval.value

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (no bootstrap samples)."""
        return {
            **self.interval.to_json(),
            "higher_is_better": self.higher_is_better,
            "description": self.description,
            "online_metric": self.online_metric,
            "online_source": self.online_source,
        }


@dataclass
class Comparison:
    """Candidate minus a reference model on the same examples (paired bootstrap)."""

    metric: str
    reference: str
    candidate_value: float
    reference_value: float
    difference: Interval
    p_value: float
    significant: bool
    higher_is_better: bool
    samples: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    @property
    def verdict(self) -> str:
        """``better``, ``worse`` or ``no significant difference`` for the candidate."""
        if not self.significant or not np.isfinite(self.difference.value):
            return "no significant difference"
        up = self.difference.value > 0
        return "better" if up == self.higher_is_better else "worse"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (no bootstrap samples)."""
        return {
            "metric": self.metric,
            "reference": self.reference,
            "candidate": _num(self.candidate_value),
            "reference_value": _num(self.reference_value),
            "difference": self.difference.to_json(),
            "p_value": _num(self.p_value),
            "significant": self.significant,
            "verdict": self.verdict,
        }


@dataclass
class SliceResult:
    """Metrics of one slice of the test rows."""

    column: str
    label: str
    kind: str
    n: int
    metrics: dict[str, float]
    primary: Interval
    vs_production: Comparison | None = None
    intervals: dict[str, Interval] = field(default_factory=dict)  # every metric (evaluation.slice_intervals: all)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON."""
        return {
            "column": self.column,
            "slice": self.label,
            "kind": self.kind,
            "n": self.n,
            "metrics": {k: _num(v) for k, v in self.metrics.items()},
            "primary": self.primary.to_json(),
            "intervals": {k: iv.to_json() for k, iv in self.intervals.items()},
            "vs_production": None if self.vs_production is None else self.vs_production.to_json(),
        }


@dataclass
class EvaluationResult:
    """Everything measured about a candidate model on a test set.

    ``to_json()`` gives the machine-readable report; bootstrap samples stay in memory for gates.
    """

    task: str
    n: int
    units: int
    primary_metric: str
    confidence: float
    resamples: int
    method: str
    seed: int
    threshold: float | None
    metrics: dict[str, MetricResult]
    references: dict[str, dict[str, MetricResult]] = field(default_factory=dict)
    comparisons: dict[str, dict[str, Comparison]] = field(default_factory=dict)
    slices: list[SliceResult] = field(default_factory=list)
    fairness: dict[str, FairnessResult] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)
    confusion: dict[str, Any] | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def worse_slices(self) -> list[SliceResult]:
        """Slices where the candidate's primary metric is worse than production's, most worse first."""
        out = [s for s in self.slices if s.vs_production is not None and _is_worse(s.vs_production)]
        return sorted(out, key=lambda s: _badness(s.vs_production), reverse=True)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        """The machine-readable report body (gates are added by the caller)."""
        return {
            "task": self.task,
            "rows": self.n,
            "bootstrap_units": self.units,
            "primary_metric": self.primary_metric,
            "confidence": self.confidence,
            "bootstrap": {"resamples": self.resamples, "method": self.method, "seed": self.seed},
            "threshold": self.threshold,
            "metrics": {k: m.to_json() for k, m in self.metrics.items()},
            "pairing": [
                {"offline": k, "online": m.online_metric, "source": m.online_source}
                for k, m in self.metrics.items()
                if m.online_metric
            ],
            "references": {r: {k: m.to_json() for k, m in ms.items()} for r, ms in self.references.items()},
            "comparisons": {r: {k: c.to_json() for k, c in cs.items()} for r, cs in self.comparisons.items()},
            "slices": [s.to_json() for s in self.slices],
            "worse_than_production": [
                {"column": s.column, "slice": s.label, "n": s.n, **s.vs_production.to_json()}  # type: ignore[union-attr]
                for s in self.worse_slices
            ],
            "fairness": {c: f.to_json() for c, f in self.fairness.items()},
            "curves": self.curves,
            "confusion_matrix": self.confusion,
            "thresholds": self.thresholds,
            "analysis": self.analysis,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


def _is_worse(c: Comparison) -> bool:
    d = c.difference.value
    if not np.isfinite(d):
        return False
    return (d < 0) if c.higher_is_better else (d > 0)


def _badness(c: Comparison) -> float:
    return -c.difference.value if c.higher_is_better else c.difference.value
