"""The classic off-policy check on the Open Bandit Dataset (ZOZO, Saito et al. 2021).

Estimate the Bernoulli Thompson-sampling policy's CTR from the uniform-random logs of a campaign
(IPS, SNIPS, DR) and compare it with the CTR observed on-policy in the Thompson-sampling logs of
the same campaign. An action is an (item, position) pair; the context is the position. The
target policy is the Thompson-sampling policy averaged over the logging week: its probability
of showing an item in a position is the share of that pair among its logged impressions in that
position (its parameters changed during the week, so one row's propensity is not the week's).

Reads only the columns it needs, through DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
from scipy import stats

from loopml.errors import DataError, NotFound
from loopml.experiments.offpolicy import Estimate, cross_fit_action_means, doubly_robust, ips, snips

CAMPAIGNS = ("all", "men", "women")
COLUMNS = ("item_id", "position", "click", "propensity_score")


@dataclass(frozen=True)
class OpenBanditCheck:
    """Off-policy estimates of the Thompson-sampling CTR next to the CTR it had on-policy."""

    campaign: str
    random_rows: int
    random_clicks: int
    bts_rows: int
    bts_clicks: int
    on_policy: Estimate  #: the CTR observed in the Thompson-sampling logs (Wilson interval)
    estimates: tuple[Estimate, ...]  #: IPS, SNIPS, DR from the uniform-random logs

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields."""
        return {**{k: v for k, v in self.__dict__.items() if k not in ("on_policy", "estimates")},
                "on_policy": self.on_policy.as_dict(), "estimates": [e.as_dict() for e in self.estimates]}


def read_logs(root: Path, policy: str, campaign: str) -> dict[str, np.ndarray]:
    """The needed columns of ``<root>/<policy>/<campaign>/<campaign>.csv`` as numpy arrays."""
    path = root / policy / campaign / f"{campaign}.csv"
    if not path.is_file():
        raise NotFound(f"Open Bandit log not found: {path}", hint="the sample lives in datasets/open_bandit_sample")
    con = duckdb.connect()
    try:
        cols = con.execute(f"SELECT {', '.join(COLUMNS)} FROM read_csv_auto(?)", [str(path)]).fetchnumpy()
    except duckdb.Error as exc:
        raise DataError(f"{path}: cannot read the columns {', '.join(COLUMNS)}: {exc}") from exc
    finally:
        con.close()
    out = {k: np.asarray(cols[k]) for k in COLUMNS}
    bad = np.flatnonzero(~((out["propensity_score"] > 0) & (out["propensity_score"] <= 1)))
    if bad.size:
        raise DataError(f"{path}: line {int(bad[0]) + 2}, column propensity_score: {out['propensity_score'][bad[0]]!r} "
                        "is not a probability in (0, 1]")
    return out


def check_campaign(root: Path, campaign: str = "all", confidence: float = 0.95, seed: int = 0) -> OpenBanditCheck:
    """Estimate Thompson sampling's CTR from the random logs of ``campaign`` and observe it in its own logs."""
    if campaign not in CAMPAIGNS:
        raise NotFound(f"unknown Open Bandit campaign `{campaign}` (expected one of {', '.join(CAMPAIGNS)})")
    rnd = read_logs(root, "random", campaign)
    bts = read_logs(root, "bts", campaign)
    n_items = int(max(rnd["item_id"].max(), bts["item_id"].max())) + 1
    positions = int(max(rnd["position"].max(), bts["position"].max()))
    n_actions = n_items * positions

    def action(logs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray((logs["position"].astype(np.int64) - 1) * n_items + logs["item_id"].astype(np.int64))

    # target policy per position: the week's share of each item among the TS impressions in that position
    counts = np.bincount(action(bts), minlength=n_actions).reshape(positions, n_items).astype(float)
    per_position = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    a = action(rnd)
    pos = rnd["position"].astype(np.int64) - 1
    r = rnd["click"].astype(float)
    pi = per_position.reshape(-1)[a]
    p_log = rnd["propensity_score"].astype(float)
    q = cross_fit_action_means(a, r, n_actions, seed=seed).reshape(a.size, positions, n_items)
    rows = np.arange(a.size)
    q_logged = q[rows, pos, rnd["item_id"].astype(np.int64)]
    q_target = np.einsum("ij,ij->i", q[rows, pos, :], per_position[pos])
    estimates = (ips(r, p_log, pi, confidence), snips(r, p_log, pi, confidence),
                 doubly_robust(r, p_log, pi, q_logged, q_target, confidence))
    clicks, n = int(bts["click"].sum()), int(bts["click"].size)
    ci = stats.binomtest(clicks, n).proportion_ci(confidence_level=confidence, method="wilson")
    on = Estimate("on_policy", clicks / n, float(ci.low), float(ci.high), float(np.sqrt(clicks / n * (1 - clicks / n) / n)),
                  n, confidence)
    return OpenBanditCheck(campaign, int(r.size), int(r.sum()), n, clicks, on, estimates)


__all__ = ["CAMPAIGNS", "OpenBanditCheck", "check_campaign", "read_logs"]
