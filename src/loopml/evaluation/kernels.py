"""Weighted metric kernels: the one core behind point estimates and the vectorised bootstrap.

Every metric is written once, as a function of per-example *weights*. The point estimate uses
weight 1 for every example; a bootstrap resample uses the number of times each example was
drawn. Evaluating a kernel on a ``(B, n)`` weight matrix gives ``B`` metric values at once.

Three kinds of kernel cover every metric:

- :class:`SumKernel`: the metric is a function of weighted column sums (log loss, Brier,
  precision, recall, F1, ECE, MSE, R², per-query ranking metrics, BLEU statistics, fairness
  rates). All sum kernels of an evaluation share one matrix product ``W @ columns``.
- :class:`RankKernel`: the metric needs the examples ordered by score (ROC-AUC, PR-AUC). The
  order is computed once; per resample only weighted cumulative counts are needed, which one
  integer ``cumsum`` gives (positives and all examples packed into one int64).
- :class:`CustomKernel`: anything else (catalogue coverage), given the weight matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

FloatArray = np.ndarray

# The packed cumulative count: all-examples count in the low bits, positives in the high bits.
_PACK_SHIFT = 32  # all-examples count below 2**32, positives above: exact in int64 while totals < 2**31
_PACK_MASK = (1 << _PACK_SHIFT) - 1


@dataclass(eq=False)
class SumKernel:
    """A metric computed from weighted sums of per-example columns.

    Parameters
    ----------
    columns
        ``(n, k)`` float64 matrix of per-example values.
    finalize
        Maps the ``(B, k)`` weighted sums to ``B`` metric values.

    Examples
    --------
    >>> import numpy as np
    >>> k = SumKernel(np.array([[1.0, 2.0], [1.0, 4.0]]), lambda s: s[:, 1] / s[:, 0])
    >>> k.evaluate(np.ones((1, 2)))
    array([3.])
    """

    columns: FloatArray
    finalize: Callable[[FloatArray], FloatArray]

    def evaluate(self, weights: np.ndarray) -> FloatArray:
        """Metric values for each row of ``weights`` (shape ``(B, n)``)."""
        return self.finalize(np.asarray(weights, dtype=np.float64) @ self.columns)


@dataclass(eq=False)
class RankOrder:
    """Examples ordered by descending score, with tie groups; shared by the kernels of one score vector.

    Parameters
    ----------
    score
        Score per example (higher means more likely positive).
    label
        Binary label per example (0/1).
    """

    score: np.ndarray
    label: np.ndarray
    order: np.ndarray = field(init=False)
    sorted_label: np.ndarray = field(init=False)
    tie_ends: np.ndarray | None = field(init=False)
    ends: np.ndarray = field(init=False)
    coef: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        s = np.asarray(self.score, dtype=np.float64)
        self.order = np.argsort(-s, kind="stable")
        ss = s[self.order]
        self.sorted_label = np.asarray(self.label, dtype=bool)[self.order]
        # last index of each group of equal scores (the curve thresholds); None when every score is distinct
        if ss.size > 1 and bool(np.any(ss[1:] == ss[:-1])):
            self.tie_ends = np.flatnonzero(np.append(ss[1:] != ss[:-1], True))
        else:
            self.tie_ends = None
        # The groups the metrics are summed over. A run of consecutive groups holding only negatives
        # can be merged into its last group: within it the true-positive count is constant, so
        # ROC-AUC (Σ negatives × positives above) and average precision (a sum over positives)
        # are unchanged. With few positives (click data) this shrinks the work per resample a lot.
        base = self.tie_ends if self.tie_ends is not None else np.arange(ss.size)
        if base.size:
            cum_pos = np.cumsum(self.sorted_label)[base]
            has_pos = np.diff(cum_pos, prepend=0) > 0
            keep = has_pos.copy()
            keep[:-1] |= has_pos[1:]  # the end of a negative run, just before a group with positives
            keep[-1] = True
            self.ends = base[keep]
        else:
            self.ends = base
        self.coef = np.where(self.sorted_label, (1 << _PACK_SHIFT) + 1, 1).astype(np.int64)

    def stats(self, weights: np.ndarray, *, in_order: bool = False) -> RankStats:
        """Weighted cumulative counts per tie group for each row of ``weights``.

        ``weights`` are in the examples' original order unless ``in_order`` says they are
        already in this ranking's order.
        """
        w = weights if in_order else np.take(weights, self.order, axis=1)
        if w.dtype.kind == "f":
            if np.any(w != np.round(w)) or np.any(w < 0):
                return self._stats_float(np.asarray(w, dtype=np.float64))
            w = w.astype(np.int64)
        # uint8 counts over fewer than 2**23 examples cannot overflow the packing; otherwise check
        small = w.dtype == np.uint8 and w.shape[1] < (1 << 23)
        if w.size and not small and int(w.sum(axis=1, dtype=np.int64).max()) >= (1 << 31) - 1:
            return self._stats_float(np.asarray(w, dtype=np.float64))
        packed = np.multiply(w, self.coef, dtype=np.int64)
        np.cumsum(packed, axis=1, out=packed)
        if self.ends.size < packed.shape[1]:
            packed = packed[:, self.ends]
        tp = (packed >> _PACK_SHIFT).astype(np.float64)
        cw = (packed & _PACK_MASK).astype(np.float64)
        return RankStats.from_cumulative(tp, cw)

    def _stats_float(self, w: np.ndarray) -> RankStats:
        tp = np.cumsum(w * self.sorted_label, axis=1)
        cw = np.cumsum(w, axis=1)
        if self.ends.size < tp.shape[1]:
            tp, cw = tp[:, self.ends], cw[:, self.ends]
        return RankStats.from_cumulative(tp, cw)


def _diff0(a: FloatArray) -> FloatArray:
    """Row-wise first difference with an implicit leading 0 (no temporary concatenation)."""
    out = np.empty_like(a)
    out[:, :1] = a[:, :1]
    np.subtract(a[:, 1:], a[:, :-1], out=out[:, 1:])
    return out


@dataclass
class RankStats:
    """Weighted counts per tie group, in descending score order (rows are resamples)."""

    tp: FloatArray  # cumulative positives up to and including the group
    cw: FloatArray  # cumulative weight (positives + negatives)
    pos: FloatArray  # positives in the group
    neg: FloatArray  # negatives in the group

    @classmethod
    def from_cumulative(cls, tp: FloatArray, cw: FloatArray) -> RankStats:
        """Build from cumulative positive and total counts."""
        pos = _diff0(tp)
        neg = _diff0(cw)
        neg -= pos
        return cls(tp, cw, pos, neg)

    @property
    def positives(self) -> FloatArray:
        """Total positive weight per row."""
        return self.tp[:, -1]

    @property
    def negatives(self) -> FloatArray:
        """Total negative weight per row."""
        return np.asarray(self.cw[:, -1] - self.tp[:, -1])


@dataclass(eq=False)
class RankKernel:
    """A metric computed from :class:`RankStats` of one :class:`RankOrder`."""

    ranking: RankOrder
    finalize: Callable[[RankStats], FloatArray]

    def evaluate(self, weights: np.ndarray) -> FloatArray:
        """Metric values for each row of ``weights`` (shape ``(B, n)``, original order)."""
        return self.finalize(self.ranking.stats(weights))


@dataclass(eq=False)
class CustomKernel:
    """A metric computed directly from the weight matrix (rare: e.g. catalogue coverage)."""

    compute: Callable[[np.ndarray], FloatArray]

    def evaluate(self, weights: np.ndarray) -> FloatArray:
        """Metric values for each row of ``weights``."""
        return np.asarray(self.compute(weights), dtype=np.float64)


Kernel = SumKernel | RankKernel | CustomKernel


def safe_div(num: FloatArray, den: FloatArray) -> FloatArray:
    """``num / den`` with NaN where ``den`` is 0 (an undefined metric, not an error)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(num, dtype=np.float64) / np.asarray(den, dtype=np.float64)
    return np.where(np.asarray(den) == 0, np.nan, out)


def roc_auc_from_stats(st: RankStats) -> FloatArray:
    """ROC-AUC (Mann-Whitney, ties count one half) from rank statistics."""
    num = np.einsum("ij,ij->i", st.neg, st.tp) - 0.5 * np.einsum("ij,ij->i", st.neg, st.pos)
    return safe_div(num, st.positives * st.negatives)


def average_precision_from_stats(st: RankStats) -> FloatArray:
    """Average precision (area under the step PR curve, scikit-learn's definition)."""
    # tp <= cw, so where cw is 0 so is tp and the precision term is 0
    prec = np.maximum(st.cw, 1e-300)
    np.divide(st.tp, prec, out=prec)
    return safe_div(np.einsum("ij,ij->i", st.pos, prec), st.positives)
