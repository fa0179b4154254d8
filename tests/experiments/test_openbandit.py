"""Off-policy evaluation on real logged data: the Open Bandit Dataset sample (ZOZO)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loopml.errors import NotFound
from loopml.experiments import ips
from loopml.experiments.openbandit import CAMPAIGNS, check_campaign, read_logs


@pytest.mark.parametrize("campaign", CAMPAIGNS)
def test_thompson_sampling_ctr_from_random_logs_matches_its_own_logs(datasets: Path, campaign: str) -> None:
    res = check_campaign(datasets / "open_bandit_sample", campaign)
    on = res.on_policy
    print(f"\n{campaign}: on-policy TS CTR {on.value:.5f} [{on.ci_low:.5f}, {on.ci_high:.5f}] ({res.bts_clicks} clicks)")
    assert res.random_rows == res.bts_rows == 10_000
    for e in res.estimates:
        print(f"  {e.estimator:>5}: {e.value:.5f} [{e.ci_low:.5f}, {e.ci_high:.5f}]")
        assert e.ci_low < e.value < e.ci_high and e.n == res.random_rows
        assert e.ci_low <= on.value <= e.ci_high  # the off-policy interval holds the CTR TS had on-policy
        assert e.ci_high - e.ci_low < 0.01  # and says something (the CTRs are about 0.005)


def test_evaluating_the_logging_policy_gives_its_own_ctr(datasets: Path) -> None:
    logs = read_logs(datasets / "open_bandit_sample", "random", "men")
    r = logs["click"].astype(float)
    est = ips(r, logs["propensity_score"], logs["propensity_score"])
    assert est.value == pytest.approx(float(np.mean(r)))


def test_unknown_campaign_is_named(datasets: Path) -> None:
    with pytest.raises(NotFound, match="kids"):
        check_campaign(datasets / "open_bandit_sample", "kids")
