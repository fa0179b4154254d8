"""Bandit policies that return every choice with its propensity (the probability it had of being chosen).

The propensity is what makes the logs usable for off-policy evaluation
(:mod:`loopml.experiments.offpolicy`). Thompson sampling's choice probabilities ("the arm is the
posterior maximum") have no closed form; they are estimated from ``draws`` posterior samples, and
the arm is then drawn from those estimated probabilities, so the logged propensity is exactly the
probability with which the logged arm was drawn.

>>> ts = ThompsonSampling(3, seed=0)
>>> c = ts.choose()
>>> 0 <= c.arm < 3 and abs(sum(c.probabilities) - 1) < 1e-9 and c.propensity == c.probabilities[c.arm]
True
>>> round(EpsilonGreedy(4, epsilon=0.2, seed=0).choose().propensity, 6)
0.85
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from loopml.errors import LoopMLError


@dataclass(frozen=True)
class Choice:
    """One served choice: the arm, its propensity and the whole distribution it was drawn from."""

    arm: int
    propensity: float
    probabilities: tuple[float, ...]


class _Bandit:
    """Shared state: per-arm pulls and reward sums of a Bernoulli (or [0, 1]) reward."""

    def __init__(self, n_arms: int, seed: int | None) -> None:
        if n_arms < 1:
            raise LoopMLError(f"The 'n_arms' parameter must be >= 1. Got {n_arms} instead.")
        self.n_arms = n_arms
        self.pulls_ = np.zeros(n_arms)
        self.rewards_ = np.zeros(n_arms)
        self._rng = np.random.default_rng(seed)

    def probabilities(self) -> NDArray[np.float64]:  # pragma: no cover - each policy defines it
        raise NotImplementedError

    def choose(self) -> Choice:
        """Draw an arm from the policy's current distribution."""
        p = self.probabilities()
        arm = int(self._rng.choice(self.n_arms, p=p))
        return Choice(arm, float(p[arm]), tuple(float(x) for x in p))

    def update(self, arm: int, reward: float) -> None:
        """Record the reward of one served arm."""
        if not 0 <= arm < self.n_arms:
            raise LoopMLError(f"arm must be in [0, {self.n_arms}); got {arm}")
        self.pulls_[arm] += 1
        self.rewards_[arm] += reward

    def update_many(self, arms: ArrayLike, rewards: ArrayLike) -> None:
        """Record a batch of rewards (e.g. the feedback that arrived since the last update)."""
        a = np.asarray(arms, dtype=np.int64)
        np.add.at(self.pulls_, a, 1.0)
        np.add.at(self.rewards_, a, np.asarray(rewards, dtype=float))


class ThompsonSampling(_Bandit):
    """Bernoulli Thompson sampling with a Beta(prior_alpha, prior_beta) prior per arm."""

    def __init__(self, n_arms: int, prior_alpha: float = 1.0, prior_beta: float = 1.0, draws: int = 4_000,
                 seed: int | None = None) -> None:
        super().__init__(n_arms, seed)
        self.prior_alpha, self.prior_beta, self.draws = prior_alpha, prior_beta, draws

    def probabilities(self) -> NDArray[np.float64]:
        """P(arm is the posterior maximum), estimated from ``draws`` posterior samples."""
        a = self.prior_alpha + self.rewards_
        b = self.prior_beta + self.pulls_ - self.rewards_
        samples = self._rng.beta(a, b, size=(self.draws, self.n_arms))
        counts = np.bincount(samples.argmax(axis=1), minlength=self.n_arms).astype(float)
        return np.asarray(counts / counts.sum())


class EpsilonGreedy(_Bandit):
    """The best arm so far with probability 1 - ε + ε/K, every other arm with ε/K."""

    def __init__(self, n_arms: int, epsilon: float = 0.1, seed: int | None = None) -> None:
        if not 0 <= epsilon <= 1:
            raise LoopMLError(f"The 'epsilon' parameter must be in [0, 1]. Got {epsilon} instead.")
        super().__init__(n_arms, seed)
        self.epsilon = epsilon

    def probabilities(self) -> NDArray[np.float64]:
        """ε/K everywhere plus 1 - ε on the arm with the best mean reward (ties: the lowest index)."""
        means = np.divide(self.rewards_, self.pulls_, out=np.zeros(self.n_arms), where=self.pulls_ > 0)
        p = np.full(self.n_arms, self.epsilon / self.n_arms)
        p[int(np.argmax(means))] += 1.0 - self.epsilon
        return p


__all__ = ["Choice", "EpsilonGreedy", "ThompsonSampling"]
