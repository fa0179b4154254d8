"""Online experiments: the statistics behind shadow, canary, A/B, interleaving and bandit rollouts.

Small modules, one per question::

    sequential     always-valid A/B inference (mSPRT, normal mixture): look after every batch
    planning       sample size from a minimum detectable effect (relative lift)
    srm            sample-ratio mismatch (chi-square)
    cuped          variance reduction with a pre-experiment covariate
    interleaving   team-draft interleaving of two rankers and the preference test
    bandits        Thompson sampling and ε-greedy, every choice with its propensity
    offpolicy      IPS, SNIPS and doubly robust estimates of a policy's value, with intervals
    openbandit     the check on the Open Bandit Dataset (ZOZO): Thompson sampling's CTR from random logs
"""

from loopml.experiments.bandits import Choice, EpsilonGreedy, ThompsonSampling
from loopml.experiments.cuped import cuped_adjust, cuped_theta
from loopml.experiments.interleaving import Preference, credit, preference_test, team_draft
from loopml.experiments.offpolicy import Estimate, cross_fit_action_means, doubly_robust, ips, snips
from loopml.experiments.planning import Plan, fixed_horizon_size, plan_sample_size, sequential_power
from loopml.experiments.sequential import SequentialResult, SequentialTest, first_rejection
from loopml.experiments.srm import SRMResult, srm_check

__all__ = [
    "Choice",
    "EpsilonGreedy",
    "Estimate",
    "Plan",
    "Preference",
    "SRMResult",
    "SequentialResult",
    "SequentialTest",
    "ThompsonSampling",
    "credit",
    "cross_fit_action_means",
    "cuped_adjust",
    "cuped_theta",
    "doubly_robust",
    "first_rejection",
    "fixed_horizon_size",
    "ips",
    "plan_sample_size",
    "preference_test",
    "sequential_power",
    "snips",
    "srm_check",
    "team_draft",
]
