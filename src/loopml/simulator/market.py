"""The simulated market (who exists and how popular they are) and the known click model.

Every impression gets a true click probability::

    logit P(click) = b[depth, position]                       position bias and page depth
                   + anonymous ? a_anon : (p_user + α · <u_user, v_ad> / √k)
                   + q_ad + q_advertiser                       ad and advertiser quality
                   + ρ · <t_query, t_ad> / 2                    query–ad relevance (match type is its noisy view)
                   + e_device + A · cos(2π (hour − 20) / 24)  context
                   + drift shift

The per-id values (``p_user``, ``u_user``, ``v_ad``, ``q_ad``, ...) are pure functions of the seed
and the id (:mod:`loopml.simulator.randomness`). The intercepts ``b`` and ``a_anon`` are solved so
that the click rates per cell and of anonymous users equal the calibration targets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from loopml.simulator.calibration import KDD_MARGINALS
from loopml.simulator.config import SimulatorConfig
from loopml.simulator.randomness import ZipfSampler, hash_normal, hash_normal_matrix, hash_uniform

CELLS: tuple[tuple[int, int], ...] = ((1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3))
TOPIC_DIM = 4
MATCH_TYPES = ("broad", "phrase", "exact")

# streams of the counter-based generator (one per kind of per-id value)
S_USER_PROP, S_USER_VEC, S_AD_QUAL, S_AD_VEC, S_AD_TOPIC, S_ADV_QUAL, S_QUERY_TOPIC, S_AD_ADVERTISER = range(1, 9)


def per_id(ids: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` evaluated once per distinct id and gathered back (popular ids repeat many times a day)."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    return np.asarray(fn(uniq)[inverse])


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


@dataclass
class Impressions:
    """One batch of impressions as popularity ranks and context (before ids are made public)."""

    user_rank: np.ndarray  # -1 for anonymous
    ad_rank: np.ndarray
    query_rank: np.ndarray
    keyword_rank: np.ndarray
    depth: np.ndarray
    position: np.ndarray
    device: np.ndarray  # int codes into Market.devices
    hour: np.ndarray  # float hour of day in [0, 24)
    new_ad: np.ndarray  # bool: the ad belongs to a drifted batch of new ads
    new_user: np.ndarray  # bool: the user belongs to a drifted new cohort


class Market:
    """Users, ads, advertisers, queries and keywords with Zipf popularity and per-id latent values."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.seed = config.seed
        self.users = ZipfSampler(config.users.size, config.users.exponent)
        self.ads = ZipfSampler(config.ads.size, config.ads.exponent)
        self.advertisers = ZipfSampler(config.advertisers.size, config.advertisers.exponent)
        self.queries = ZipfSampler(config.queries.size, config.queries.exponent)
        self.keywords = ZipfSampler(config.keywords.size, config.keywords.exponent)
        self.devices = list(config.device_share)

    def advertiser_of(self, ad_rank: np.ndarray) -> np.ndarray:
        """The advertiser rank of each ad (fixed per ad; popular advertisers own more ads)."""
        return self.advertisers.ranks_from_uniform(hash_uniform(ad_rank, self.seed, S_AD_ADVERTISER))


class ClickModel:
    """The known click model of :mod:`loopml.simulator.market`; ``calibrate`` fits the intercepts."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.cfg = market.config.click_model
        self.intercept = {cell: -1.6 for cell in CELLS}
        self.anonymous_offset = 0.0
        self.device_effect = np.array([self.cfg.device_effect.get(d, 0.0) for d in market.devices])

    # -- the terms ------------------------------------------------------------------------------
    def relevance(self, imp: Impressions) -> np.ndarray:
        """Standardised query–ad relevance (mean 0, sd 1 over random pairs)."""
        seed = self.market.seed
        q = per_id(imp.query_rank, lambda u: hash_normal_matrix(u, seed, S_QUERY_TOPIC, TOPIC_DIM))
        a = per_id(imp.ad_rank, lambda u: hash_normal_matrix(u, seed, S_AD_TOPIC, TOPIC_DIM))
        return np.asarray((q * a).sum(axis=1) / np.sqrt(TOPIC_DIM))

    def context_logit(
        self, imp: Impressions, *, new_ad_shift: float = 0.0, new_user_shift: float = 0.0, ctr_shift: float = 0.0
    ) -> np.ndarray:
        """Every logit term except the cell intercept and the anonymous offset (anonymous rows get no user term)."""
        cfg, seed = self.cfg, self.market.seed
        k = cfg.factors
        anon = imp.user_rank < 0
        users = np.where(anon, 0, imp.user_rank)
        ad_q = cfg.ad_quality_sd * per_id(imp.ad_rank, lambda u: hash_normal(u, seed, S_AD_QUAL))
        ad_q = ad_q + new_ad_shift * imp.new_ad
        adv_q = cfg.advertiser_quality_sd * per_id(
            imp.ad_rank, lambda u: hash_normal(self.market.advertiser_of(u), seed, S_ADV_QUAL)
        )
        u = per_id(users, lambda x: hash_normal_matrix(x, seed, S_USER_VEC, k))
        v = per_id(imp.ad_rank, lambda x: hash_normal_matrix(x, seed, S_AD_VEC, k))
        affinity = cfg.affinity_scale * (u * v).sum(axis=1) / np.sqrt(k)
        prop = cfg.user_propensity_sd * per_id(users, lambda x: hash_normal(x, seed, S_USER_PROP))
        prop = prop + new_user_shift * imp.new_user
        user_term = np.where(anon, 0.0, prop + affinity)
        hour = cfg.hour_amplitude * np.cos(2 * np.pi * (imp.hour - 20.0) / 24.0)
        rel = cfg.relevance_scale * self.relevance(imp)
        return np.asarray(user_term + ad_q + adv_q + rel + self.device_effect[imp.device] + hour + ctr_shift)

    def probability(self, imp: Impressions, context: np.ndarray) -> np.ndarray:
        """True P(click) of each impression given its context logit."""
        b = np.zeros(imp.depth.shape[0])
        for (d, p), val in self.intercept.items():
            b[(imp.depth == d) & (imp.position == p)] = val
        return sigmoid(b + context + self.anonymous_offset * (imp.user_rank < 0))

    # -- calibration ----------------------------------------------------------------------------
    def targets(self) -> tuple[dict[tuple[int, int], float], float]:
        """Click rate targets per cell and for anonymous users (KDD marginals unless configured)."""
        by_cell = self.cfg.target_ctr or KDD_MARGINALS["ctr_by_cell"]
        cells = {(int(k.split(",")[0]), int(k.split(",")[1])): float(v) for k, v in by_cell.items()}
        anon = self.cfg.target_anonymous_ctr or float(KDD_MARGINALS["anonymous_ctr"])
        return cells, anon

    def calibrate(self, imp: Impressions, context: np.ndarray, rounds: int = 6) -> None:
        """Solve the cell intercepts and the anonymous offset so that the click rates hit the targets.

        Alternates two monotone one-dimensional problems (cell intercepts given the offset, the
        offset given the intercepts), each solved by vectorised bisection.
        """
        cells, anon_target = self.targets()
        anon = imp.user_rank < 0
        masks = {c: (imp.depth == c[0]) & (imp.position == c[1]) for c in cells}
        for _ in range(rounds):
            for cell, target in cells.items():
                m = masks[cell]
                if not m.any():
                    continue
                base = context[m] + self.anonymous_offset * anon[m]
                self.intercept[cell] = _solve_shift(base, target)
            if anon.any():
                b = np.zeros(imp.depth.shape[0])
                for cell, val in self.intercept.items():
                    b[masks.get(cell, np.zeros_like(anon))] = val
                self.anonymous_offset = _solve_shift((b + context)[anon], anon_target)


def _solve_shift(logits: np.ndarray, target: float, lo: float = -15.0, hi: float = 15.0) -> float:
    """The shift ``s`` with mean(sigmoid(logits + s)) == target (bisection; the mean is increasing in s)."""
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(sigmoid(logits + mid).mean()) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
