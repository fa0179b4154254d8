"""Off-policy evaluation: the value (e.g. CTR) a target policy would have had, from logs of another policy.

Each logged row holds the action the logging policy took, its propensity ``p_log`` and the reward.
With ``w = π(a | x) / p_log``:

- **IPS**: mean of ``w · r`` (unbiased when every action π takes had a positive propensity);
- **SNIPS**: ``Σ w r / Σ w`` (self-normalised: a little biased, far less variance);
- **DR** (doubly robust): mean of ``q̂_π(x) + w · (r − q̂(x, a))`` with a reward model ``q̂`` and
  ``q̂_π(x) = Σ_a π(a | x) q̂(x, a)``: unbiased if either the propensities or the model are right.

Intervals are normal intervals on the per-row terms (SNIPS: delta method).

>>> import numpy as np
>>> r = np.array([1, 0, 0, 1.0]); p = np.full(4, 0.5); pi = np.array([1, 0, 1, 0.0])
>>> round(ips(r, p, pi).value, 3), round(snips(r, p, pi).value, 3)
(0.5, 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from loopml.errors import LoopMLError


@dataclass(frozen=True)
class Estimate:
    """A policy value with its confidence interval."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    std_error: float
    n: int
    confidence: float

    def covers(self, truth: float) -> bool:
        """Whether the interval holds ``truth``."""
        return self.ci_low <= truth <= self.ci_high

    def as_dict(self) -> dict[str, float | int | str]:
        """JSON-ready fields."""
        return dict(self.__dict__)


def _weights(rewards: ArrayLike, logging_propensity: ArrayLike,
             target_propensity: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    r = np.asarray(rewards, dtype=float)
    p = np.asarray(logging_propensity, dtype=float)
    pi = np.asarray(target_propensity, dtype=float)
    if not r.shape == p.shape == pi.shape or r.ndim != 1 or r.size == 0:
        raise LoopMLError(f"rewards, logging and target propensities must be 1-D of one length; got {r.shape}, "
                          f"{p.shape}, {pi.shape}")
    bad = np.flatnonzero(~(p > 0) | ~(p <= 1))
    if bad.size:
        raise LoopMLError(f"logging propensity must be in (0, 1]; row {int(bad[0])} has {p[bad[0]]!r} "
                          f"({bad.size} such rows)")
    return r, pi / p


def _normal(name: str, terms: NDArray[np.float64], value: float, confidence: float) -> Estimate:
    n = terms.size
    se = float(np.std(terms, ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    return Estimate(name, value, value - z * se, value + z * se, se, n, confidence)


def ips(rewards: ArrayLike, logging_propensity: ArrayLike, target_propensity: ArrayLike,
        confidence: float = 0.95) -> Estimate:
    """Inverse propensity scoring."""
    r, w = _weights(rewards, logging_propensity, target_propensity)
    terms = w * r
    return _normal("ips", terms, float(terms.mean()), confidence)


def snips(rewards: ArrayLike, logging_propensity: ArrayLike, target_propensity: ArrayLike,
          confidence: float = 0.95) -> Estimate:
    """Self-normalised IPS; the interval by the delta method."""
    r, w = _weights(rewards, logging_propensity, target_propensity)
    sw = float(w.sum())
    if sw == 0:
        raise LoopMLError("SNIPS is undefined: the target policy gives zero probability to every logged action")
    value = float((w * r).sum() / sw)
    terms = w * (r - value) / w.mean()
    est = _normal("snips", terms, value, confidence)
    return est


def doubly_robust(rewards: ArrayLike, logging_propensity: ArrayLike, target_propensity: ArrayLike,
                  reward_hat_logged: ArrayLike, reward_hat_target: ArrayLike, confidence: float = 0.95) -> Estimate:
    """Doubly robust: the reward model's value for π, corrected by IPS on its residuals.

    ``reward_hat_logged`` is q̂(x, a) of each logged action, ``reward_hat_target`` Σ_a π(a|x) q̂(x, a).
    Fit q̂ on other rows than it is applied to (:func:`cross_fit_action_means`) for honest intervals.
    """
    r, w = _weights(rewards, logging_propensity, target_propensity)
    qa = np.asarray(reward_hat_logged, dtype=float)
    qpi = np.asarray(reward_hat_target, dtype=float)
    if qa.shape != r.shape or qpi.shape != r.shape:
        raise LoopMLError(f"reward model arrays must have one value per row ({r.size}); got {qa.shape}, {qpi.shape}")
    terms = qpi + w * (r - qa)
    return _normal("dr", terms, float(terms.mean()), confidence)


def cross_fit_action_means(actions: ArrayLike, rewards: ArrayLike, n_actions: int, folds: int = 2,
                           prior_strength: float = 10.0, seed: int = 0) -> NDArray[np.float64]:
    """A reward model per action: each row gets the action means (shrunk toward the overall mean with
    ``prior_strength`` pseudo-observations) fitted on the other folds. Shape ``(rows, n_actions)``."""
    a = np.asarray(actions, dtype=np.int64)
    r = np.asarray(rewards, dtype=float)
    fold = np.random.default_rng(seed).integers(0, folds, size=a.size)
    out = np.empty((a.size, n_actions))
    for f in range(folds):
        train = fold != f
        base = float(r[train].mean()) if train.any() else 0.0
        n = np.bincount(a[train], minlength=n_actions).astype(float)
        s = np.bincount(a[train], weights=r[train], minlength=n_actions)
        out[fold == f] = (s + prior_strength * base) / (n + prior_strength)
    return out


__all__ = ["Estimate", "cross_fit_action_means", "doubly_robust", "ips", "snips"]
