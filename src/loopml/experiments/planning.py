"""Sample-size planning from a minimum detectable effect (relative lift) of a binary online metric.

Two numbers: the classic fixed-horizon size (one look at the end; normal approximation, as in
every A/B calculator), and the size an always-valid test (:mod:`loopml.experiments.sequential`)
needs when it is looked at after every batch, found by simulating the test under the
normal approximation of the batch counts (paths seeded, so a plan is reproducible).

>>> plan = plan_sample_size(baseline=0.05, relative_mde=0.10, batch_size=2_000, simulations=500)
>>> plan.fixed_horizon_per_arm
31231
>>> plan.per_arm > plan.fixed_horizon_per_arm
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from loopml.errors import LoopMLError
from loopml.experiments.sequential import first_rejection


@dataclass(frozen=True)
class Plan:
    """A planned A/B test: units per arm for the sequential test and for one final look."""

    baseline: float
    relative_mde: float
    alpha: float
    power: float
    tau: float  #: mixture standard deviation of the sequential test (the absolute MDE)
    batch_size: int  #: units per arm between two looks
    per_arm: int  #: sequential test looked at after every batch
    fixed_horizon_per_arm: int  #: a single look at the end (not valid if peeked at)

    def describe(self) -> str:
        """One line for a report or a test log."""
        return (f"planned sample size: {self.per_arm:,} per arm ({self.per_arm // self.batch_size} looks of "
                f"{self.batch_size:,}) to detect a {self.relative_mde:+.1%} relative lift on a {self.baseline:.4f} "
                f"baseline with power {self.power:.0%} at alpha {self.alpha} (fixed horizon, one look: "
                f"{self.fixed_horizon_per_arm:,} per arm)")


def fixed_horizon_size(baseline: float, relative_mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Units per arm of a two-sided two-proportion z-test with a single look."""
    p1, p2 = baseline, baseline * (1.0 + relative_mde)
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    var = p1 * (1 - p1) + p2 * (1 - p2)
    return int(math.ceil((za + zb) ** 2 * var / (p2 - p1) ** 2))  # noqa: RUF046 (numpy float)


def _check(baseline: float, relative_mde: float, alpha: float, power: float) -> None:
    if not 0 < baseline < 1:
        raise LoopMLError(f"The 'baseline' rate must be in (0, 1). Got {baseline} instead.")
    if relative_mde == 0 or not 0 < baseline * (1 + relative_mde) < 1:
        raise LoopMLError(f"The 'relative_mde' must be non-zero and keep the rate in (0, 1). Got {relative_mde} instead.")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise LoopMLError(f"'alpha' and 'power' must be in (0, 1). Got alpha={alpha}, power={power} instead.")


def sequential_power(baseline: float, relative_lift: float, per_arm: int, batch_size: int, alpha: float,
                     tau: float, simulations: int = 2_000, seed: int = 0) -> float:
    """Share of simulated sequential tests (looked at every batch) that reject within ``per_arm`` units."""
    looks = max(1, per_arm // batch_size)
    rej = _simulate(baseline, relative_lift, looks, batch_size, alpha, tau, simulations, seed)
    return float(np.mean((rej >= 0) & (rej < looks)))


def _simulate(baseline: float, lift: float, looks: int, batch: int, alpha: float, tau: float, sims: int,
              seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pc, pt = baseline, baseline * (1 + lift)
    n = np.arange(1, looks + 1, dtype=float) * batch
    cc = np.cumsum(rng.normal(batch * pc, math.sqrt(batch * pc * (1 - pc)), (sims, looks)), axis=1)
    ct = np.cumsum(rng.normal(batch * pt, math.sqrt(batch * pt * (1 - pt)), (sims, looks)), axis=1)
    return first_rejection(cc, n, ct, n, tau, alpha)


def plan_sample_size(baseline: float, relative_mde: float, alpha: float = 0.05, power: float = 0.8,
                     batch_size: int | None = None, tau: float | None = None, simulations: int = 4_000,
                     seed: int = 0) -> Plan:
    """Units per arm so that an mSPRT looked at after every batch detects ``relative_mde`` with ``power``.

    ``batch_size`` defaults to 1/50 of the fixed-horizon size; ``tau`` to the absolute MDE.
    """
    _check(baseline, relative_mde, alpha, power)
    fixed = fixed_horizon_size(baseline, relative_mde, alpha, power)
    batch = int(batch_size or max(1, fixed // 50))
    mix = float(tau or abs(baseline * relative_mde))
    looks = max(4, 4 * fixed // batch)
    for _ in range(6):
        rej = _simulate(baseline, relative_mde, looks, batch, alpha, mix, simulations, seed)
        hits = np.sort(rej[rej >= 0])
        need = math.ceil(power * simulations)
        if hits.size >= need:
            return Plan(baseline, relative_mde, alpha, power, mix, batch, int(hits[need - 1] + 1) * batch, fixed)
        looks *= 2
    raise LoopMLError(f"no sample size up to {looks * batch:,} per arm reaches power {power}")


__all__ = ["Plan", "fixed_horizon_size", "plan_sample_size", "sequential_power"]
