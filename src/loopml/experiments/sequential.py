"""Always-valid A/B inference on a difference of means: the mixture sequential probability ratio test.

mSPRT with a normal mixture over the effect (Johari, Pekelis, Walsh, "Always valid inference", 2017):
with ``d`` the observed difference of the arm means, ``s2`` its variance and ``tau2`` the mixing
variance, the likelihood ratio against "no difference" is::

    Λ = sqrt(s2 / (s2 + tau2)) · exp(tau2 · d² / (2 · s2 · (s2 + tau2)))

``Λ`` is a martingale under the null, so by Ville's inequality ``P(sup Λ ≥ 1/α) ≤ α``: the test
may be looked at after every batch and stopped at any time without inflating false positives.
The always-valid p-value is ``min over looks of 1/Λ``; the confidence sequence is the set of effects
the test would not reject, intersected over looks. Every function works on numpy arrays, so 500
simulated experiments run as one array operation.

>>> t = SequentialTest(alpha=0.05, tau=0.01)
>>> r = t.update(400, 10_000, 520, 10_000)
>>> r.significant, round(r.lift, 4)
(True, 0.012)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from loopml.errors import LoopMLError

FloatArray = NDArray[np.float64]


def log_likelihood_ratio(diff: ArrayLike, var: ArrayLike, tau2: float) -> FloatArray:
    """log Λ of the normal-mixture SPRT for an observed difference ``diff`` with variance ``var``."""
    d = np.asarray(diff, dtype=float)
    v = np.maximum(np.asarray(var, dtype=float), 1e-300)
    return np.asarray(0.5 * np.log(v / (v + tau2)) + tau2 * d * d / (2.0 * v * (v + tau2)))


def radius(var: ArrayLike, tau2: float, alpha: float) -> FloatArray:
    """Half-width of the (1 - alpha) confidence sequence at one look: |d| ≥ radius ⇔ Λ ≥ 1/alpha."""
    v = np.maximum(np.asarray(var, dtype=float), 1e-300)
    return np.asarray(np.sqrt(v * (v + tau2) / tau2 * (2.0 * np.log(1.0 / alpha) + np.log((v + tau2) / v))))


def proportion_variance(clicks_c: ArrayLike, n_c: ArrayLike, clicks_t: ArrayLike, n_t: ArrayLike) -> FloatArray:
    """Variance of the CTR difference under the null (pooled rate), so an arm with 0 clicks is not 'certain'."""
    cc, nc, ct, nt = (np.asarray(x, dtype=float) for x in (clicks_c, n_c, clicks_t, n_t))
    p = (cc + ct) / np.maximum(nc + nt, 1.0)
    return np.asarray(p * (1.0 - p) * (1.0 / np.maximum(nc, 1.0) + 1.0 / np.maximum(nt, 1.0)))


def first_rejection(clicks_c: ArrayLike, n_c: ArrayLike, clicks_t: ArrayLike, n_t: ArrayLike,
                    tau: float, alpha: float) -> NDArray[np.int64]:
    """Index of the first look at which the mSPRT rejects, per experiment (-1: never).

    The arrays are cumulative counts of shape ``(experiments, looks)``.
    """
    cc, nc, ct, nt = (np.asarray(x, dtype=float) for x in (clicks_c, n_c, clicks_t, n_t))
    diff = ct / np.maximum(nt, 1.0) - cc / np.maximum(nc, 1.0)
    llr = log_likelihood_ratio(diff, proportion_variance(cc, nc, ct, nt), tau * tau)
    hit = llr >= np.log(1.0 / alpha)
    return np.where(hit.any(axis=-1), hit.argmax(axis=-1), -1).astype(np.int64)


@dataclass(frozen=True)
class SequentialResult:
    """The state of a sequential A/B test after one look."""

    n_control: int
    n_treatment: int
    mean_control: float
    mean_treatment: float
    lift: float  #: treatment minus control (absolute)
    relative_lift: float
    ci_low: float  #: always-valid confidence sequence, intersected over looks
    ci_high: float
    p_value: float  #: always-valid p-value (running minimum of 1/Λ)
    significant: bool
    alpha: float

    def as_dict(self) -> dict[str, float | int | bool]:
        """JSON-ready fields."""
        return dict(self.__dict__)


class SequentialTest:
    """An mSPRT A/B test that may be looked at after every batch.

    Parameters
    ----------
    alpha
        False-positive level, valid over any number of looks.
    tau
        Standard deviation of the normal mixture over the effect; set it near the smallest effect
        worth detecting (``plan_sample_size`` uses the absolute MDE).
    """

    def __init__(self, alpha: float = 0.05, tau: float = 0.01) -> None:
        if not 0 < alpha < 1:
            raise LoopMLError(f"The 'alpha' parameter of SequentialTest must be in (0, 1). Got {alpha} instead.")
        if tau <= 0:
            raise LoopMLError(f"The 'tau' parameter of SequentialTest must be > 0. Got {tau} instead.")
        self.alpha = alpha
        self.tau = tau
        self.p_value_ = 1.0
        self.ci_ = (-np.inf, np.inf)

    def update_means(self, mean_c: float, var_c: float, n_c: int, mean_t: float, var_t: float,
                     n_t: int) -> SequentialResult:
        """One look at cumulative arm means and per-unit variances (any metric, e.g. CUPED-adjusted)."""
        var = var_c / max(n_c, 1) + var_t / max(n_t, 1)
        diff = mean_t - mean_c
        tau2 = self.tau * self.tau
        llr = float(log_likelihood_ratio(diff, var, tau2))
        self.p_value_ = min(self.p_value_, float(np.exp(-llr)) if llr > 0 else 1.0)
        r = float(radius(var, tau2, self.alpha))
        self.ci_ = (max(self.ci_[0], diff - r), min(self.ci_[1], diff + r))
        return SequentialResult(
            n_control=int(n_c), n_treatment=int(n_t), mean_control=float(mean_c), mean_treatment=float(mean_t),
            lift=float(diff), relative_lift=float(diff / mean_c) if mean_c else float("nan"),
            ci_low=float(self.ci_[0]), ci_high=float(self.ci_[1]), p_value=self.p_value_,
            significant=self.p_value_ <= self.alpha, alpha=self.alpha,
        )

    def update(self, clicks_c: int, n_c: int, clicks_t: int, n_t: int) -> SequentialResult:
        """One look at cumulative click counts of a binary metric (e.g. CTR)."""
        var = float(proportion_variance(clicks_c, n_c, clicks_t, n_t))
        pc, pt = clicks_c / max(n_c, 1), clicks_t / max(n_t, 1)
        unit = var / (1.0 / max(n_c, 1) + 1.0 / max(n_t, 1))
        return self.update_means(pc, unit, n_c, pt, unit, n_t)


__all__ = ["SequentialResult", "SequentialTest", "first_rejection", "log_likelihood_ratio", "proportion_variance",
           "radius"]
