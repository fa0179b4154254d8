"""The traffic simulator: calibration on the real KDD Cup 2012 sample, the click model, drift, logs, CLI."""

from __future__ import annotations

import json
import math

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from loopml.errors import DataError, SpecError
from loopml.simulator import (
    DRIFTS,
    KDD_MARGINALS,
    SimulatorConfig,
    TrafficSimulator,
    compare,
    drift_conditions,
    fit_zipf,
    measure_marginals,
    simulate,
)
from loopml.simulator.calibration import expected_distinct
from loopml.simulator.randomness import ZipfSampler, hash_normal, permute_ids

KDD_FILE = "kdd2012_click_small/Click_prediction_small.csv"


@pytest.fixture(scope="module")
def real(datasets):
    return measure_marginals(datasets / KDD_FILE)


@pytest.fixture(scope="module")
def kdd_sized_day():
    """One simulated day with exactly the volume of the KDD sample (id repetition depends on volume)."""
    sim = TrafficSimulator(SimulatorConfig(impressions_per_day=KDD_MARGINALS["rows"], seed=3))
    day = sim.day(0)
    return measure_marginals(day.impressions.append_column("click", day.truth["clicked"]))


@pytest.fixture(scope="module")
def big_day():
    """A large day: click rates measured with little simulation noise."""
    sim = TrafficSimulator(SimulatorConfig(impressions_per_day=300_000, seed=5))
    return sim, sim.day(0)


def test_published_marginals_are_those_of_the_real_file(real):
    """KDD_MARGINALS (used to calibrate) are what the real file measures today."""
    assert real.rows == KDD_MARGINALS["rows"]
    assert real.ctr == pytest.approx(KDD_MARGINALS["ctr"], abs=1e-4)
    for cell, v in KDD_MARGINALS["ctr_by_cell"].items():
        assert real.ctr_by_cell[cell] == pytest.approx(v, abs=1e-4), cell
    assert real.anonymous_share == pytest.approx(KDD_MARGINALS["anonymous_share"], abs=1e-4)
    assert real.anonymous_ctr == pytest.approx(KDD_MARGINALS["anonymous_ctr"], abs=1e-4)
    assert real.distinct == KDD_MARGINALS["distinct"]
    assert real.top_count == KDD_MARGINALS["top_count"]


def test_click_rates_match_the_real_data_by_position_and_depth(real, big_day):
    _, day = big_day
    tab = day.impressions.append_column("click", day.truth["clicked"])
    sim = measure_marginals(tab)
    for cell, r in real.ctr_by_cell.items():
        n_real = real.rows * real.share_by_depth[cell[0]]  # rows of that depth in the real file (upper bound)
        se = math.sqrt(r * (1 - r) / (n_real / int(cell[0])))  # standard error of the real cell rate
        assert abs(sim.ctr_by_cell[cell] - r) < 4 * se + 0.005, (cell, sim.ctr_by_cell[cell], r)
    # the shape the real data shows: clicks fall with position on deep pages
    assert sim.ctr_by_cell["3,1"] > sim.ctr_by_cell["3,2"] > sim.ctr_by_cell["3,3"]
    assert sim.ctr == pytest.approx(real.ctr, rel=0.03)
    assert sim.anonymous_share == pytest.approx(real.anonymous_share, abs=0.01)
    assert sim.anonymous_ctr == pytest.approx(real.anonymous_ctr, rel=0.05)
    for d, share in real.share_by_depth.items():
        assert sim.share_by_depth[d] == pytest.approx(share, abs=0.01)


def test_id_frequencies_match_the_real_data_at_its_volume(real, kdd_sized_day):
    diffs = compare(real, kdd_sized_day)
    for col in real.distinct:
        assert abs(diffs[f"distinct[{col}]"]) < 0.05, (col, kdd_sized_day.distinct[col], real.distinct[col])
    # the heavy head: the most frequent ad/advertiser/keyword has about the real count
    for col in ("ad_id", "advertiser_id", "keyword_id"):
        ratio = kdd_sized_day.top_count[col] / real.top_count[col]
        assert 0.7 < ratio < 1.4, (col, ratio)


def test_every_impression_has_a_true_probability_that_predicts_clicks(big_day):
    _, day = big_day
    p = day.truth["p_click"].to_numpy()
    y = day.truth["clicked"].to_numpy()
    assert np.all((p > 0) & (p < 1))
    assert day.stats["oracle_auc"] > 0.75
    # calibrated: observed rate within deciles of p follows p
    edges = np.quantile(p, np.linspace(0, 1, 11))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    for b in range(10):
        m = idx == b
        assert abs(y[m].mean() - p[m].mean()) < 0.02
    # impressions and truth are aligned and clicks refer to impressions, after them
    assert day.truth["impression_id"].equals(day.impressions["impression_id"])
    con = duckdb.connect()
    con.register("imp", day.impressions)
    con.register("clk", day.clicks)
    bad = con.execute(
        "SELECT count(*) FROM clk LEFT JOIN imp USING (impression_id) WHERE imp.ts IS NULL OR clk.click_ts < imp.ts"
    ).fetchone()[0]
    assert bad == 0
    assert day.clicks.num_rows == int(y.sum())


def test_a_day_is_deterministic_and_days_differ():
    cfg = SimulatorConfig(impressions_per_day=3000, seed=11)
    a = TrafficSimulator(cfg).day(2)
    b = TrafficSimulator(cfg).day(2)
    assert a.impressions.equals(b.impressions) and a.clicks.equals(b.clicks)
    c = TrafficSimulator(cfg).day(3)
    assert not np.array_equal(a.impressions["ad_id"].to_numpy()[:100], c.impressions["ad_id"].to_numpy()[:100])
    # the same ad has the same advertiser on every day
    pairs = {}
    for day in (a, c):
        for ad, adv in zip(day.impressions["ad_id"].to_pylist(), day.impressions["advertiser_id"].to_pylist()):
            assert pairs.setdefault(ad, adv) == adv


def test_new_ads_drift_brings_unseen_ads_that_click_better():
    sim = TrafficSimulator(SimulatorConfig(impressions_per_day=20_000, seed=2))
    base, drifted = sim.day(0), sim.day(1, "new_ads")
    seen = set(sim.day(1).impressions["ad_id"].to_pylist()) | set(base.impressions["ad_id"].to_pylist())
    ads = drifted.impressions["ad_id"].to_numpy()
    catalogue_ids = set(permute_ids(np.arange(sim.config.ads.size), sim.config.seed + 12).tolist())
    unseen_share = np.mean([a not in catalogue_ids for a in ads])
    assert 0.45 < unseen_share < 0.55
    assert np.mean([a in seen for a in ads]) < 0.55
    assert drifted.stats["ctr"] > base.stats["ctr"] + 0.01


def test_user_shift_and_seasonal_drift_change_what_they_say():
    sim = TrafficSimulator(SimulatorConfig(impressions_per_day=20_000, seed=4))
    base, users, season = sim.day(0), sim.day(1, "user_shift"), sim.day(1, "seasonal")

    def share(day, col, value):
        return float(np.mean(np.asarray(day.impressions[col].to_pylist(), dtype=object) == value))

    assert share(users, "device", "mobile") > share(base, "device", "mobile") + 0.25
    assert share(users, "user_id", 0) > share(base, "user_id", 0) + 0.1
    assert users.stats["ctr"] < base.stats["ctr"] - 0.01
    assert season.impressions.num_rows > 1.2 * base.impressions.num_rows
    assert season.stats["ctr"] > base.stats["ctr"] + 0.02
    hours = lambda d: np.asarray([t.hour for t in d.impressions["ts"].to_pylist()])  # noqa: E731
    assert np.mean(hours(season) < 6) > np.mean(hours(base) < 6) + 0.03  # the peak moved late into the night
    assert set(DRIFTS) >= {"none", "new_ads", "user_shift", "seasonal"}


def test_unknown_drift_and_bad_config_are_clear_errors():
    with pytest.raises(SpecError, match=r"unknown drift kind `winter`.*seasonal"):
        drift_conditions("winter")
    with pytest.raises(ValueError, match="sum to 1"):
        SimulatorConfig(device_share={"desktop": 0.5})
    with pytest.raises(ValueError, match="depth,position"):
        SimulatorConfig(cell_share={"4,1": 1.0})
    with pytest.raises(ValueError, match="extra"):
        SimulatorConfig(impresions_per_day=10)


def test_zipf_sampler_matches_its_expected_distinct_count():
    rng = np.random.default_rng(0)
    for size, s in ((50_000, 0.7), (4_000_000, 0.5)):  # exact and continuous samplers
        z = ZipfSampler(size, s)
        draws = z.sample(rng, 40_000)
        assert draws.min() >= 0 and draws.max() < size
        expected, _ = expected_distinct(size, s, 40_000)
        assert len(np.unique(draws)) == pytest.approx(expected, rel=0.03)


def test_fit_zipf_recovers_a_known_catalogue():
    d, top = expected_distinct(20_000, 0.8, 30_000)
    size, s = fit_zipf(30_000, d, top, max_size=200_000, exponents=np.arange(0.5, 1.1, 0.05))
    assert s == pytest.approx(0.8, abs=0.06)
    assert 15_000 < size < 27_000


def test_ids_are_a_bijection_and_latent_values_are_stable():
    ranks = np.arange(200_000)
    ids = permute_ids(ranks, 7)
    assert len(np.unique(ids)) == ranks.size
    x = hash_normal(ranks, 1, 2)
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    assert np.array_equal(x[:10], hash_normal(ranks[:10], 1, 2))


def test_simulate_writes_event_logs_and_a_manifest(tmp_path):
    out = tmp_path / "traffic"
    cfg = SimulatorConfig(impressions_per_day=2000, seed=1)
    stats = simulate(out, 2, config=cfg)
    simulate(out, 1, config=cfg, start_day=2, drift="new_ads", fmt="csv")
    assert sorted(p.name for p in (out / "impressions").iterdir()) == [
        "2026-11-02.parquet", "2026-11-03.parquet", "2026-11-04.csv"
    ]
    assert not list(out.rglob(".*.tmp"))
    imp = pq.read_table(out / "impressions" / "2026-11-02.parquet")
    assert imp.num_rows == stats[0]["impressions"]
    assert "p_click" not in imp.column_names  # the truth never sits beside the inputs
    manifest = json.loads((out / "simulation.json").read_text())
    assert [d["drift"] for d in manifest["days"]] == ["none", "none", "new_ads"]
    csv_rows = duckdb.connect().execute(f"SELECT count(*) FROM read_csv_auto('{out}/impressions/2026-11-04.csv')").fetchone()[0]
    assert csv_rows == manifest["days"][2]["impressions"]
    with pytest.raises(DataError, match="at least 1"):
        simulate(out, 0, config=cfg)


def test_measure_marginals_names_a_missing_column(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("click,depth\n1,1\n")
    with pytest.raises(DataError, match=r"bad.csv.*position"):
        measure_marginals(bad)


def test_cli_simulate(cli, tmp_path):
    out = tmp_path / "logs"
    proc = cli("simulate", "--out", str(out), "--days", "2", "--impressions-per-day", "1500", "--drift", "seasonal")
    assert proc.returncode == 0, proc.stderr
    assert "seasonal" in proc.stdout and "oracle AUC" in proc.stdout
    assert len(list((out / "clicks").glob("*.parquet"))) == 2
    bad = cli("simulate", "--out", str(out), "--drift", "winter")
    assert bad.returncode == 2 and "winter" in bad.stderr and "seasonal" in bad.stderr


def test_cli_simulate_prints_the_calibration_against_the_real_log(cli, tmp_path, datasets):
    proc = cli("simulate", "--out", str(tmp_path / "o"), "--days", "1", "--impressions-per-day", "500",
               "--compare-to", str(datasets / KDD_FILE))
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "distinct ad_id" in ln)
    real, simulated = (int(x.replace(",", "")) for x in line.split("│")[2:4])
    assert real == KDD_MARGINALS["distinct"]["ad_id"] and abs(simulated / real - 1) < 0.05


NEUTRAL = drift_conditions("none")


def _fields(c):
    from dataclasses import asdict

    d = asdict(c)
    d.pop("kind"), d.pop("notes")
    return d


@pytest.mark.parametrize("kind", sorted(DRIFTS))
def test_drift_contract(kind):
    """Every registered drift: strength 0 is the calibrated market, strength 1 changes it, a day simulates."""
    from loopml.simulator import IMPRESSION_SCHEMA

    drift = DRIFTS[kind]()
    assert drift.name == kind and drift.description
    assert _fields(drift.conditions(0.0)) == _fields(NEUTRAL)
    if kind != "none":
        assert _fields(drift.conditions(1.0)) != _fields(NEUTRAL)
        assert drift.conditions(1.0).kind == kind
    sim = TrafficSimulator(SimulatorConfig(impressions_per_day=800, seed=1))
    day = sim.day(3, kind)
    assert day.impressions.schema.equals(IMPRESSION_SCHEMA)
    assert day.stats["drift"] == kind and day.impressions.num_rows > 0
    assert sim.day(3, kind).impressions.equals(day.impressions)  # deterministic
