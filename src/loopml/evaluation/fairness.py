"""Fairness of a binary classifier across the groups of sensitive columns.

For each sensitive column (numeric ones bucketed, see :mod:`loopml.evaluation.slices`):

- demographic parity difference: largest minus smallest selection rate P(ŷ=1 | group);
- equalised odds difference: the larger of the TPR range and the FPR range across groups
  (fairlearn's definition);
- per-group calibration: mean predicted probability against the observed positive rate, the
  group's expected calibration error and its calibration curve.

The two difference metrics get bootstrap intervals from the same vectorised engine as every
other metric (group rates are weighted sums).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from loopml.evaluation.bootstrap import Interval, evaluate_kernels, percentile_interval
from loopml.evaluation.curves import calibration_curve
from loopml.evaluation.data import EvalData
from loopml.evaluation.kernels import SumKernel
from loopml.evaluation.slices import SliceDef, define_slices


@dataclass
class GroupStats:
    """Rates of one group of a sensitive column."""

    group: str
    n: int
    base_rate: float
    selection_rate: float
    tpr: float | None
    fpr: float | None
    mean_score: float
    calibration_gap: float
    ece: float
    calibration: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON."""
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in self.__dict__.items()}


@dataclass
class FairnessResult:
    """Fairness metrics of one sensitive column."""

    column: str
    threshold: float
    groups: list[GroupStats]
    demographic_parity_difference: Interval
    equalized_odds_difference: Interval
    demographic_parity_ratio: float
    equal_opportunity_difference: float
    max_calibration_gap: float
    excluded_groups: list[str] = field(default_factory=list)
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def metric(self, name: str) -> Interval | float:
        """A fairness metric by name (gate references such as ``demographic_parity_difference``)."""
        if name not in FAIRNESS_METRICS:
            raise KeyError(name)
        return getattr(self, name)  # type: ignore[no-any-return]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON."""

        def num(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        return {
            "column": self.column,
            "threshold": self.threshold,
            "demographic_parity_difference": self.demographic_parity_difference.to_json(),
            "equalized_odds_difference": self.equalized_odds_difference.to_json(),
            "demographic_parity_ratio": num(self.demographic_parity_ratio),
            "equal_opportunity_difference": num(self.equal_opportunity_difference),
            "max_calibration_gap": num(self.max_calibration_gap),
            "groups": [g.to_json() for g in self.groups],
            "excluded_groups": self.excluded_groups,
        }


FAIRNESS_METRICS = (
    "demographic_parity_difference",
    "equalized_odds_difference",
    "demographic_parity_ratio",
    "equal_opportunity_difference",
    "max_calibration_gap",
)


def _range(a: np.ndarray) -> np.ndarray:
    """Max minus min across groups (columns), ignoring undefined groups; NaN if fewer than one defined."""
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(a)
        hi = np.where(finite, a, -np.inf).max(axis=1)
        lo = np.where(finite, a, np.inf).min(axis=1)
    return np.where(finite.any(axis=1), hi - lo, np.nan)


def _group_kernels(d: EvalData, groups: list[SliceDef]) -> dict[str, SumKernel]:
    g = len(groups)
    code = np.full(d.n, -1, dtype=np.int64)
    for i, s in enumerate(groups):
        code[s.mask] = i
    rows = np.flatnonzero(code >= 0)
    c = code[rows]
    y, p = d.y[rows], d.pred[rows]
    parts = [np.ones_like(y), p, y, y * p, 1 - y, (1 - y) * p]
    m = sp.csr_matrix(
        (np.concatenate(parts), (np.tile(rows, 6), np.concatenate([c + j * g for j in range(6)]))),
        shape=(d.n, 6 * g),
    )

    def rates(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            sel = s[:, g:2 * g] / s[:, :g]
            tpr = s[:, 3 * g:4 * g] / s[:, 2 * g:3 * g]
            fpr = s[:, 5 * g:6 * g] / s[:, 4 * g:5 * g]
        return sel, tpr, fpr

    def dpd(s: np.ndarray) -> np.ndarray:
        return _range(rates(s)[0])

    def eod(s: np.ndarray) -> np.ndarray:
        _, tpr, fpr = rates(s)
        return np.asarray(np.fmax(_range(tpr), _range(fpr)))

    return {"demographic_parity_difference": SumKernel(m, dpd), "equalized_odds_difference": SumKernel(m, eod)}


def fairness_for_column(
    d: EvalData,
    column: str,
    values: Any,
    *,
    threshold: float,
    resamples: int,
    confidence: float,
    seed: int = 0,
    bins: list[float] | None = None,
    buckets: int = 4,
    min_group_size: int = 1,
) -> FairnessResult:
    """Fairness metrics of a binary classifier for one sensitive column.

    Parameters
    ----------
    d
        Labels and the candidate's scores (binary task).
    column
        Name of the sensitive column.
    values
        Its value per row.
    threshold
        Decision threshold defining a positive decision.
    resamples, confidence, seed
        Bootstrap settings for the intervals.
    bins, buckets
        Bucketing of a numeric column (explicit edges, or quantile buckets).
    min_group_size
        Groups with fewer rows are reported but excluded from the difference metrics.
    """
    dd = d.with_score(d.score, d.name)
    dd.threshold = threshold
    groups = define_slices(column, values, bins=bins, buckets=buckets)
    counted = [g for g in groups if g.n >= min_group_size]
    kernels = _group_kernels(dd, counted)
    point, samples = evaluate_kernels(kernels, dd.n, resamples, seed=seed)
    stats: list[GroupStats] = []
    for s in groups:
        y, sc, p = dd.y[s.mask], dd.score[s.mask], dd.pred[s.mask]
        pos, neg = y.sum(), (1 - y).sum()
        cal = calibration_curve(y, sc, dd.calibration_bins)
        ece = float(np.abs(np.bincount(np.minimum((sc * dd.calibration_bins).astype(np.int64), dd.calibration_bins - 1),
                                       weights=y - sc, minlength=dd.calibration_bins)).sum() / max(len(y), 1))
        stats.append(GroupStats(
            group=s.label,
            n=s.n,
            base_rate=float(y.mean()),
            selection_rate=float(p.mean()),
            tpr=float((p * y).sum() / pos) if pos else None,
            fpr=float((p * (1 - y)).sum() / neg) if neg else None,
            mean_score=float(sc.mean()),
            calibration_gap=float(sc.mean() - y.mean()),
            ece=ece,
            calibration=cal,
        ))
    big = [g for g in stats if g.n >= min_group_size]
    sel = np.array([g.selection_rate for g in big])
    tprs = np.array([np.nan if g.tpr is None else g.tpr for g in big])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = float(sel.min() / sel.max()) if sel.size and sel.max() > 0 else float("nan")
    return FairnessResult(
        column=column,
        threshold=threshold,
        groups=stats,
        demographic_parity_difference=percentile_interval(
            point["demographic_parity_difference"], samples["demographic_parity_difference"], confidence),
        equalized_odds_difference=percentile_interval(
            point["equalized_odds_difference"], samples["equalized_odds_difference"], confidence),
        demographic_parity_ratio=ratio,
        equal_opportunity_difference=float(_range(tprs[None, :])[0]),
        max_calibration_gap=float(max((abs(g.calibration_gap) for g in big), default=float("nan"))),
        excluded_groups=[g.group for g in stats if g.n < min_group_size],
        samples=samples,
    )
