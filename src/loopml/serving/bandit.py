"""The bandit updater: `loopml serve` moves a bandit's traffic share by the rewards it has seen.

While the routing policy is ``bandit`` with a version in state canary, a task on the event loop wakes
every ``deployment.routing.update_seconds`` (never on the request path), reads the labelled predictions
of the experiment since this process started it (in a worker thread: the prediction log joined with the
feedback log, only the columns needed) and sets the challenger's share
(:meth:`loopml.serving.routing.BanditPolicy.set_share`):

- ``thompson``: the posterior probability that the challenger's reward rate is the higher one, with a
  Beta(1, 1) prior per arm (:class:`loopml.experiments.bandits.ThompsonSampling`, seeded draws, so the same
  rewards give the same share);
- ``epsilon_greedy``: 1 - epsilon/2 for the arm with the better mean reward, epsilon/2 for the other.

Rewards are the feedback labels and must lie in [0, 1] (a click, a conversion); other labels stop the
update with a message naming the value. Every answered request logs the share in force as its propensity,
so off-policy estimates (:func:`loopml.experiments.analysis.analyse`: ``policy_values``) stay unbiased.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from typing import Any

import numpy as np

from loopml.errors import DataError, LoopMLError
from loopml.serving.routing import BanditPolicy
from loopml.serving.sources import describe_error

COLUMNS = ["request_id", "route", "experiment"]


def _say(msg: str) -> None:
    sys.stderr.write(f"loopml serve: bandit: {msg}\n")


def rewards_by_arm(labelled: Any, experiment: str) -> tuple[np.ndarray, np.ndarray]:
    """``(pulls, rewards)`` of [production, canary] from labelled rows (``route``, ``experiment``, ``label``).

    >>> import pyarrow as pa
    >>> t = pa.table({"route": ["production", "canary", "canary"], "experiment": ["e", "e", "e"],
    ...               "label": [1.0, 0.0, 1.0]})
    >>> rewards_by_arm(t, "e")
    (array([1., 2.]), array([1., 1.]))
    """
    pulls, rewards = np.zeros(2), np.zeros(2)
    if labelled.num_rows == 0:
        return pulls, rewards
    exp = np.asarray(labelled.column("experiment").to_pylist(), dtype=object)
    route = np.asarray(labelled.column("route").to_pylist(), dtype=object)
    label = np.asarray(labelled.column("label").to_numpy(zero_copy_only=False), dtype=float)
    keep = (exp == experiment) & np.isin(route, ("production", "canary"))
    route, label = route[keep], label[keep]
    bad = np.flatnonzero(~((label >= 0) & (label <= 1)))
    if bad.size:
        raise DataError(f"bandit rewards are the feedback labels and must lie in [0, 1]; experiment {experiment} "
                        f"has label {float(label[bad[0]]):g} ({bad.size} such labels)")
    arm = (route == "canary").astype(np.int64)
    np.add.at(pulls, arm, 1.0)
    np.add.at(rewards, arm, label)
    return pulls, rewards


def share_of_challenger(pulls: np.ndarray, rewards: np.ndarray, config: Any) -> float:
    """The challenger's share under ``config`` (a :class:`loopml.serving.routing.BanditConfig`).

    >>> from loopml.serving.routing import BanditConfig
    >>> import numpy as np
    >>> round(share_of_challenger(np.array([500., 500.]), np.array([50., 150.]), BanditConfig()), 3)
    1.0
    >>> share_of_challenger(np.array([500., 500.]), np.array([150., 50.]),
    ...                     BanditConfig(algorithm="epsilon_greedy", epsilon=0.2))
    0.1
    """
    from loopml.experiments.bandits import EpsilonGreedy, ThompsonSampling

    bandit: Any = (ThompsonSampling(2, draws=20_000, seed=config.seed) if config.algorithm == "thompson"
                   else EpsilonGreedy(2, epsilon=config.epsilon, seed=config.seed))
    bandit.pulls_ = np.asarray(pulls, dtype=float).copy()
    bandit.rewards_ = np.asarray(rewards, dtype=float).copy()
    return float(bandit.probabilities()[1])


class BanditUpdater:
    """Updates the bandit of ``app`` (a :class:`loopml.serving.app.ServingApp`) on a timer; see the module."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def _policy(self) -> BanditPolicy | None:
        p = self.app.state.policy
        return p if isinstance(p, BanditPolicy) and p.state is not None else None

    async def run_forever(self) -> None:
        """Update, then sleep ``update_seconds`` (1 s while no bandit is served), until cancelled."""
        while True:
            p = self._policy()
            await asyncio.sleep(p.config.update_seconds if p is not None else 1.0)
            try:
                await self.update()
            except LoopMLError as exc:
                _say(f"update failed, will retry: {exc}")
            except Exception as exc:
                _say(f"update crashed, will retry: {describe_error(exc)}")

    def _counts(self, policy: BanditPolicy) -> tuple[np.ndarray, np.ndarray]:
        from loopml.errors import NotFound
        from loopml.monitoring.logs import read_labelled

        if policy.state is None or policy.experiment is None:  # no challenger: no rewards to count
            return np.zeros(2), np.zeros(2)
        start = dt.datetime.fromtimestamp(policy.state.started, dt.UTC)
        try:
            labelled = read_labelled(self.app.registry.ws, start, columns=COLUMNS)
        except NotFound:
            return np.zeros(2), np.zeros(2)
        return rewards_by_arm(labelled, policy.experiment)

    async def update(self) -> float | None:
        """Recompute and set the challenger's share from the rewards so far; returns it (None: no bandit)."""
        policy = self._policy()
        if policy is None or self.app.registry is None:
            return None
        loop = asyncio.get_running_loop()
        pulls, rewards = await loop.run_in_executor(None, self._counts, policy)
        if self.app.state.policy is not policy:
            return None  # reloaded while the log was read: the next update uses the new policy
        if pulls.min() == 0 and policy.state is not None and policy.state.updates == 0:
            return float(policy.fraction)  # no reward on one arm yet: keep the even start
        share = policy.set_share(share_of_challenger(pulls, rewards, policy.config))
        if policy.state is not None:
            policy.state.updates += 1
        self.app.metrics.canary = {(policy.experiment, str(policy.challenger)): (0, share)}
        return float(share)


__all__ = ["BanditUpdater", "rewards_by_arm", "share_of_challenger"]
