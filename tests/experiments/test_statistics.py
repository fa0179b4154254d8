"""The experiment statistics on the traffic simulator, whose true click probabilities are known.

Every experiment draws impressions from one simulated day and clicks from their true probabilities
(a treatment with a relative lift multiplies each probability), vectorised over experiments.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from scipy import stats

import loopml.experiments as ex
from loopml.errors import LoopMLError
from loopml.experiments import bandits, cuped, interleaving, offpolicy, planning, sequential, srm
from loopml.simulator import SimulatorConfig, TrafficSimulator

ALPHA = 0.05
EXPERIMENTS = 500


@pytest.fixture(scope="module")
def p_click() -> np.ndarray:
    """True click probabilities of one simulated day."""
    day = TrafficSimulator(SimulatorConfig(impressions_per_day=20_000, seed=3)).day(0)
    return day.truth.column("p_click").to_numpy()


def run_experiments(p: np.ndarray, lift: float, looks: int, batch: int, seed: int) -> tuple[np.ndarray, ...]:
    """Cumulative (clicks_c, n, clicks_t, n) of EXPERIMENTS experiments, shape (EXPERIMENTS, looks)."""
    rng = np.random.default_rng(seed)
    cc = np.empty((EXPERIMENTS, looks))
    ct = np.empty((EXPERIMENTS, looks))
    for k in range(looks):
        for out, mult in ((cc, 1.0), (ct, 1.0 + lift)):
            probs = p[rng.integers(0, p.size, size=(EXPERIMENTS, batch))] * mult
            out[:, k] = (rng.random((EXPERIMENTS, batch)) < probs).sum(axis=1)
    n = np.broadcast_to(np.arange(1, looks + 1, dtype=float) * batch, cc.shape)
    return np.cumsum(cc, axis=1), n, np.cumsum(ct, axis=1), n


def mc_error(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def test_doctests() -> None:
    from loopml.experiments import analysis, gate

    for mod in (sequential, planning, srm, cuped, interleaving, bandits, offpolicy, analysis, gate):
        res = doctest.testmod(mod)
        assert res.failed == 0 and res.attempted > 0, mod.__name__


def test_aa_false_positives_stay_at_alpha_when_checked_after_every_batch(p_click: np.ndarray) -> None:
    plan = ex.plan_sample_size(float(p_click.mean()), 0.05, alpha=ALPHA, power=0.8)
    looks = 2 * plan.per_arm // plan.batch_size  # twice the planned length, a look after every batch
    cc, n, ct, _ = run_experiments(p_click, 0.0, looks, plan.batch_size, seed=11)
    rej = ex.first_rejection(cc, n, ct, n, plan.tau, ALPHA)
    share = float(np.mean(rej >= 0))
    bound = ALPHA + 2 * mc_error(ALPHA, EXPERIMENTS)
    # the same data under a naive z-test peeked at every batch: the inflation the mSPRT avoids
    pooled = (cc + ct) / (2 * n)
    z = (ct - cc) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    naive = float(np.mean((np.abs(z) > stats.norm.ppf(1 - ALPHA / 2)).any(axis=1)))
    print(f"\nA/A: {EXPERIMENTS} experiments x {looks} looks: mSPRT false-positive share {share:.3f} "
          f"(bound {bound:.3f}); naive z-test peeked every batch {naive:.3f}")
    assert share <= bound
    assert naive > bound  # the check can fail: peeking a fixed-horizon test does inflate


def test_ab_lift_detected_at_planned_power(p_click: np.ndarray) -> None:
    base = float(p_click.mean())
    plan = ex.plan_sample_size(base, 0.05, alpha=ALPHA, power=0.8)
    print("\n" + plan.describe())
    looks = plan.per_arm // plan.batch_size
    cc, n, ct, _ = run_experiments(p_click, 0.05, looks, plan.batch_size, seed=12)
    rej = ex.first_rejection(cc, n, ct, n, plan.tau, ALPHA)
    power = float(np.mean(rej >= 0))
    # tolerance: 3 sigma of the simulation's and the plan's Monte-Carlo errors
    tol = 3 * math.hypot(mc_error(0.8, EXPERIMENTS), mc_error(0.8, 4_000))
    print(f"A/B +5%: detected in {power:.3f} of {EXPERIMENTS} experiments (planned 0.80 ± {tol:.3f})")
    assert abs(power - 0.8) <= tol
    # the test's final state on one experiment: its confidence sequence holds the true lift
    t = ex.SequentialTest(ALPHA, plan.tau)
    for k in range(looks):
        r = t.update(int(cc[0, k]), int(n[0, k]), int(ct[0, k]), int(n[0, k]))
    assert r.ci_low <= 0.05 * base <= r.ci_high


def test_srm_flags_a_broken_split_only() -> None:
    rng = np.random.default_rng(0)
    fine = [srm.srm_check(rng.multinomial(20_000, [0.5, 0.5]), [0.5, 0.5]).mismatch for _ in range(200)]
    assert sum(fine) <= 3  # threshold 0.001
    assert srm.srm_check([10_000, 10_500], [0.5, 0.5]).mismatch
    with pytest.raises(LoopMLError):
        srm.srm_check([1, 2], [0.5, 0.6])


def test_cuped_keeps_the_effect_and_shrinks_the_variance() -> None:
    rng = np.random.default_rng(1)
    pre = rng.gamma(2.0, 1.0, size=40_000)  # pre-period clicks per user
    arm = rng.integers(0, 2, size=pre.size)
    post = 0.8 * pre + rng.normal(size=pre.size) + 0.05 * arm
    theta = ex.cuped_theta(post, pre)
    adj = ex.cuped_adjust(post, pre, theta)
    raw_diff = post[arm == 1].mean() - post[arm == 0].mean()
    adj_diff = adj[arm == 1].mean() - adj[arm == 0].mean()
    assert abs(adj_diff - 0.05) < abs(raw_diff - 0.05) + 0.02
    assert adj.var() < 0.6 * post.var()


def test_interleaving_picks_the_better_ranker_with_fewer_queries_than_ab(p_click: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    k, shown = 20, 10
    examine = 1.0 / np.arange(1, shown + 1)  # position bias

    def query() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rel = p_click[rng.integers(0, p_click.size, size=k)]
        good = np.argsort(-(rel + rng.normal(0, 0.05, k)))  # ranker A: less noise, truly better
        bad = np.argsort(-(rel + rng.normal(0, 0.10, k)))  # ranker B
        return rel, good, bad

    def clicks(rel: np.ndarray, items: list[int] | np.ndarray) -> np.ndarray:
        return rng.random(len(items)) < examine[: len(items)] * rel[np.asarray(items)]

    # effect sizes on 20,000 queries: per-query clicks of each ranker (A/B) and interleaved wins
    m = 20_000
    ab_a, ab_b, wins = np.empty(m), np.empty(m), np.empty(m, dtype=int)
    for i in range(m):
        rel, good, bad = query()
        ab_a[i] = clicks(rel, good[:shown]).sum()
        ab_b[i] = clicks(rel, bad[:shown]).sum()
        items, team = ex.team_draft(list(good), list(bad), shown, rng)
        wins[i] = ex.credit(team, clicks(rel, items))
    assert ab_a.mean() > ab_b.mean()  # A is truly better on the online metric
    za, zb = stats.norm.ppf(1 - ALPHA / 2), stats.norm.ppf(0.8)
    delta = ab_a.mean() - ab_b.mean()
    ab_queries = 2 * math.ceil((za + zb) ** 2 * (ab_a.var() + ab_b.var()) / delta**2)
    decisive = float(np.mean(wins >= 0))
    q = float(np.mean(wins[wins >= 0] == 0))  # share of decisive queries A wins
    il_queries = math.ceil(((za * 0.5 + zb * math.sqrt(q * (1 - q))) / (q - 0.5)) ** 2 / decisive)
    ratio = ab_queries / il_queries
    print(f"\nqueries for power 0.8: A/B {ab_queries:,}, interleaving {il_queries:,} (A/B needs {ratio:.1f}x more)")
    assert ratio > 1.0
    # a fresh interleaving experiment of the planned size picks A
    fresh = []
    for _ in range(il_queries * 2):
        rel, good, bad = query()
        items, team = ex.team_draft(list(good), list(bad), shown, rng)
        fresh.append(ex.credit(team, clicks(rel, items)))
    pref = ex.preference_test(fresh, ALPHA)
    assert pref.winner == "A", pref


def test_team_draft_is_fair_and_complete() -> None:
    rng = np.random.default_rng(2)
    first = []
    for _ in range(2_000):
        items, team = ex.team_draft([1, 2, 3, 4], [1, 2, 3, 4], 4, rng)
        assert items == [1, 2, 3, 4] and abs(team.count(0) - team.count(1)) <= 1
        first.append(team[0])
    assert 0.45 < np.mean(first) < 0.55  # same lists: neither team is favoured
    items, team = ex.team_draft([1, 2], [3, 4, 5, 6], 5, rng)  # a short list: the other fills
    assert sorted(items) == [1, 2, 3, 4, 5] and len(team) == 5


def test_bandits_log_the_probability_they_drew_from() -> None:
    ts = ex.ThompsonSampling(3, seed=0)
    ts.update_many([0] * 50 + [1] * 50, [1] * 10 + [0] * 40 + [1] * 30 + [0] * 20)
    picks = [ts.choose() for _ in range(3_000)]
    share1 = np.mean([c.arm == 1 for c in picks])
    mean_prop = np.mean([c.probabilities[1] for c in picks])
    assert abs(share1 - mean_prop) < 4 * mc_error(mean_prop, 3_000) and mean_prop > 0.5
    eg = ex.EpsilonGreedy(4, epsilon=0.2, seed=1)
    eg.update_many([2, 2, 1], [1, 1, 0])
    p = eg.probabilities()
    assert np.allclose(p, [0.05, 0.05, 0.85, 0.05])
    c = eg.choose()
    assert c.propensity == pytest.approx(p[c.arm])


def test_off_policy_intervals_cover_the_true_ctr(p_click: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    arms = 10
    pools = [p_click[rng.integers(0, p_click.size, 2_000)] for _ in range(arms)]  # impressions of each ad
    true_ctr = np.array([pool.mean() for pool in pools])
    # an epsilon-greedy logger favouring arm 0; the target: Thompson sampling after 300 pulls per arm
    logger = ex.EpsilonGreedy(arms, epsilon=0.5, seed=0)
    logger.update_many([0], [1])
    p_log = logger.probabilities()
    ts = ex.ThompsonSampling(arms, seed=1)
    ts.update_many(np.repeat(np.arange(arms), 300), np.concatenate([rng.random(300) < c for c in true_ctr]))
    pi = ts.probabilities()
    truth = float(pi @ true_ctr)
    n, reps = 10_000, 200
    cover = {"ips": 0, "snips": 0, "dr": 0}
    for _ in range(reps):
        a = rng.choice(arms, size=n, p=p_log)
        probs = np.empty(n)
        for j in range(arms):
            sel = a == j
            probs[sel] = pools[j][rng.integers(0, pools[j].size, sel.sum())]
        r = (rng.random(n) < probs).astype(float)
        q = ex.cross_fit_action_means(a, r, arms, seed=int(rng.integers(1 << 30)))
        ests = (ex.ips(r, p_log[a], pi[a]), ex.snips(r, p_log[a], pi[a]),
                ex.doubly_robust(r, p_log[a], pi[a], q[np.arange(n), a], q @ pi))
        for e in ests:
            cover[e.estimator] += e.covers(truth)
    shares = {k: v / reps for k, v in cover.items()}
    print(f"\nOPE 95% intervals cover the true CTR {truth:.4f} in {shares} of {reps} repetitions")
    assert all(s >= 0.90 for s in shares.values())


def test_off_policy_refuses_bad_propensities() -> None:
    with pytest.raises(LoopMLError, match="row 1"):
        ex.ips([1, 0], [0.5, 0.0], [0.5, 0.5])


def test_slo_check_catches_a_candidate_with_five_percent_errors() -> None:
    from loopml.experiments.analysis import slo_check
    from loopml.serving.metrics import Metrics

    def metrics(challenger_error_rate: float, slow: bool = False) -> str:
        m = Metrics()
        rng = np.random.default_rng(0)
        for version, route, err in (("v1", "production", 0.002), ("v2", "canary", challenger_error_rate)):
            for _ in range(2_000):
                code = 503 if rng.random() < err else 200
                m.observe("/v1/predict", version, route, code, 0.2 if slow and version == "v2" else 0.001, 1)
        return m.render()

    broken = slo_check(metrics(0.05), "v1", "v2", latency_p99_ms=50)
    assert broken["breached"] and "v2 error rate" in broken["reasons"][0], broken
    assert broken["versions"]["v2"]["requests"] == 2_000
    healthy = slo_check(metrics(0.002), "v1", "v2", latency_p99_ms=50)
    assert not healthy["breached"], healthy
    slow = slo_check(metrics(0.002, slow=True), "v1", "v2", latency_p99_ms=50)
    assert slow["breached"] and "p99 latency" in slow["reasons"][0]
