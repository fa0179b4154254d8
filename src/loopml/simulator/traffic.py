"""Days of ad traffic as event logs: impressions, clicks (with delays) and the true click probability.

>>> from loopml.simulator import SimulatorConfig, TrafficSimulator
>>> sim = TrafficSimulator(SimulatorConfig(impressions_per_day=2000, seed=1))
>>> day = sim.day(0)
>>> day.impressions.num_rows > 0 and day.clicks.num_rows > 0
True
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from loopml.simulator.config import SimulatorConfig
from loopml.simulator.drift import DayConditions, drift_conditions
from loopml.simulator.market import CELLS, MATCH_TYPES, ClickModel, Impressions, Market
from loopml.simulator.randomness import ZipfSampler, permute_ids

#: Share of page views per hour of day (UTC), an assumption: quiet nights, a midday and an evening peak.
HOURLY_PROFILE = np.array(
    [1.0, 0.7, 0.5, 0.4, 0.4, 0.5, 0.9, 1.6, 2.3, 2.7, 2.9, 3.0,
     3.1, 3.0, 2.9, 2.8, 2.9, 3.1, 3.4, 3.7, 3.8, 3.3, 2.4, 1.6]
)  # fmt: skip
CALIBRATION_SAMPLE = 150_000
DAY_STRIDE = 100_000_000  # impression ids are day * stride + sequence

IMPRESSION_SCHEMA = pa.schema(
    [
        ("impression_id", pa.int64()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.int64()),
        ("ad_id", pa.int64()),
        ("advertiser_id", pa.int64()),
        ("query_id", pa.int64()),
        ("keyword_id", pa.int64()),
        ("depth", pa.int64()),
        ("position", pa.int64()),
        ("device", pa.string()),
        ("match_type", pa.string()),
    ]
)
CLICK_SCHEMA = pa.schema([("impression_id", pa.int64()), ("click_ts", pa.timestamp("us", tz="UTC"))])
TRUTH_SCHEMA = pa.schema([("impression_id", pa.int64()), ("p_click", pa.float64()), ("clicked", pa.int8())])


@dataclass
class DayLog:
    """One simulated day: the impression log, the click log and the ground truth (kept apart)."""

    day_index: int
    date: dt.date
    conditions: DayConditions
    impressions: pa.Table
    clicks: pa.Table
    truth: pa.Table
    stats: dict[str, Any] = field(default_factory=dict)


class TrafficSimulator:
    """Generates days of traffic from one market with a calibrated, known click model.

    Parameters
    ----------
    config
        The market and traffic settings; the defaults are calibrated on the KDD Cup 2012 sample.

    Notes
    -----
    A day is a pure function of ``(config, day index, drift kind, strength)``: rerunning gives
    the same log, and the same user keeps the same tastes on every day.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.market = Market(self.config)
        self.click_model = ClickModel(self.market)
        rng = np.random.default_rng([self.config.seed, 7_777_777])
        calib = self.draw(rng, CALIBRATION_SAMPLE, DayConditions())
        self.click_model.calibrate(calib, self.click_model.context_logit(calib))

    # -- drawing ------------------------------------------------------------------------------
    def draw(self, rng: np.random.Generator, n: int, cond: DayConditions) -> Impressions:
        """Draw ``n`` impressions (ranks and context, no outcome yet).

        Rows are independent draws, like the rows of the KDD sample (a random subsample of the
        full log in which two slots of one page rarely both appear): the page cell
        ``(depth, position)`` comes from the measured cell shares.
        """
        cfg, mk = self.config, self.market
        cells = list(cfg.cell_share)
        cell_p = np.array([cfg.cell_share[c] for c in cells])
        cell_idx = rng.choice(len(cells), size=n, p=cell_p / cell_p.sum())
        depth = np.array([int(c.split(",")[0]) for c in cells])[cell_idx]
        position = np.array([int(c.split(",")[1]) for c in cells])[cell_idx]
        anon_share = min(0.95, max(0.0, cfg.anonymous_share + cond.anonymous_share_shift))
        anon = rng.random(n) < anon_share
        new_user = (~anon) & (rng.random(n) < cond.new_user_share)
        user_rank = mk.users.sample(rng, n)
        if new_user.any():
            cohort = ZipfSampler(cond.new_users, cfg.users.exponent)
            user_rank[new_user] = cfg.users.size + cohort.sample(rng, int(new_user.sum()))
        user_rank[anon] = -1
        dev_share = dict(cfg.device_share)
        if cond.mobile_shift and "mobile" in dev_share:
            moved = min(cond.mobile_shift, dev_share.get("desktop", 0.0))  # desktop users move to mobile
            dev_share["desktop"] = dev_share.get("desktop", 0.0) - moved
            dev_share["mobile"] += moved
        dev_p = np.array([dev_share.get(d, 0.0) for d in mk.devices])
        device = rng.choice(len(mk.devices), size=n, p=dev_p / dev_p.sum())
        query_rank = mk.queries.sample(rng, n)
        if cond.query_rotation:
            query_rank = (query_rank + int(cond.query_rotation * cfg.queries.size)) % cfg.queries.size
        profile = np.roll(HOURLY_PROFILE, round(cond.hour_shift))
        hour = rng.choice(24, size=n, p=profile / profile.sum()) + rng.random(n)
        ad_rank = mk.ads.sample(rng, n)
        new_ad = rng.random(n) < cond.new_ad_share
        if new_ad.any():
            fresh = ZipfSampler(cond.new_ads, cfg.ads.exponent)
            ad_rank[new_ad] = cfg.ads.size + fresh.sample(rng, int(new_ad.sum()))
        return Impressions(
            user_rank=user_rank,
            ad_rank=ad_rank,
            query_rank=query_rank,
            keyword_rank=mk.keywords.sample(rng, n),
            depth=depth,
            position=position,
            device=device,
            hour=hour,
            new_ad=new_ad,
            new_user=new_user,
        )

    # -- a day --------------------------------------------------------------------------------
    def day(self, index: int, drift: str | None = None, strength: float = 1.0) -> DayLog:
        """Simulate day ``index`` (0 = ``config.start_date``), optionally under a drift kind."""
        cfg = self.config
        cond = drift_conditions(drift, strength)
        kind_code = zlib.crc32(cond.kind.encode())
        rng = np.random.default_rng([cfg.seed, index, kind_code, int(strength * 1000)])
        n = int(rng.poisson(cfg.impressions_per_day * cond.volume_factor))
        imp = self.draw(rng, max(n, 1), cond)
        ctx = self.click_model.context_logit(
            imp,
            new_ad_shift=cond.new_ad_quality_shift,
            new_user_shift=cond.new_user_propensity_shift,
            ctr_shift=cond.ctr_logit_shift,
        )
        p = self.click_model.probability(imp, ctx)
        clicked = rng.random(p.shape[0]) < p
        rel = self.click_model.relevance(imp)
        noisy = rel + 0.6 * rng.standard_normal(rel.shape[0])
        match = np.where(noisy > 1.0, 2, np.where(noisy > 0.0, 1, 0))
        date = cfg.start_date + dt.timedelta(days=index)
        day0_us = int(dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC).timestamp() * 1_000_000)
        ts = day0_us + (imp.hour * 3_600_000_000).astype(np.int64) + imp.position
        order = np.argsort(ts, kind="stable")
        ids = (index + 1) * DAY_STRIDE + np.arange(order.shape[0], dtype=np.int64)
        seed = cfg.seed
        user_id = np.where(imp.user_rank < 0, 0, permute_ids(np.maximum(imp.user_rank, 0), seed + 11))
        adv_rank = self.market.advertiser_of(imp.ad_rank)
        devices = np.array(self.market.devices, dtype=object)
        impressions = pa.table(
            {
                "impression_id": ids,
                "ts": pa.array(ts[order], type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                "user_id": user_id[order],
                "ad_id": permute_ids(imp.ad_rank, seed + 12)[order],
                "advertiser_id": permute_ids(adv_rank, seed + 13)[order],
                "query_id": permute_ids(imp.query_rank, seed + 14)[order],
                "keyword_id": permute_ids(imp.keyword_rank, seed + 15)[order],
                "depth": imp.depth[order].astype(np.int64),
                "position": imp.position[order].astype(np.int64),
                "device": pa.array(devices[imp.device[order]].tolist(), type=pa.string()),
                "match_type": pa.array(np.array(MATCH_TYPES, dtype=object)[match[order]].tolist(), type=pa.string()),
            },
            schema=IMPRESSION_SCHEMA,
        )
        clicked_o = clicked[order]
        delay_s = np.exp(np.log(cfg.click_delay_median_s) + cfg.click_delay_sigma * rng.standard_normal(int(clicked_o.sum())))
        click_ts = ts[order][clicked_o] + (delay_s * 1_000_000).astype(np.int64)
        clicks = pa.table(
            {
                "impression_id": ids[clicked_o],
                "click_ts": pa.array(click_ts, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            },
            schema=CLICK_SCHEMA,
        )
        truth = pa.table(
            {"impression_id": ids, "p_click": p[order], "clicked": clicked_o.astype(np.int8)}, schema=TRUTH_SCHEMA
        )
        stats = day_stats(imp, p, clicked, delay_s)
        stats.update({"day_index": index, "date": date.isoformat(), "drift": cond.kind, "strength": strength})
        return DayLog(index, date, cond, impressions, clicks, truth, stats)


def oracle_auc(p: np.ndarray, y: np.ndarray) -> float:
    """ROC-AUC of the true probabilities: the best any model can reach on this traffic."""
    pos = y.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    r = ((ends - counts + 1 + ends) / 2.0)[inverse]  # average ranks of ties
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def day_stats(imp: Impressions, p: np.ndarray, clicked: np.ndarray, delay_s: np.ndarray) -> dict[str, Any]:
    """Summary figures of a day: volume, click rates per cell, oracle quality, late clicks."""
    y = clicked.astype(np.float64)
    eps = 1e-12
    by_cell = {}
    for d, pos in CELLS:
        m = (imp.depth == d) & (imp.position == pos)
        if m.any():
            by_cell[f"{d},{pos}"] = round(float(y[m].mean()), 5)
    return {
        "impressions": int(p.shape[0]),
        "clicks": int(y.sum()),
        "ctr": float(y.mean()) if y.size else 0.0,
        "mean_p_click": float(p.mean()) if p.size else 0.0,
        "ctr_by_cell": by_cell,
        "oracle_auc": oracle_auc(p, y),
        "oracle_log_loss": float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))) if y.size else 0.0,
        "clicks_later_than_10min": int((delay_s > 600).sum()),
    }
