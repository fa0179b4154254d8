"""Drift detection on real data: UCI bike sharing (hourly, 2011-2012).

* shifts injected into known columns of a random half are all caught, and the untouched
  columns raise no alarm (also over several random splits with no injection);
* the seasonal drift is visible: 2012 against 2011 (demand grew), and monthly windows of
  2012 against a winter reference (temperature drifts with the seasons).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scipy import stats

from loopml.monitoring.drift import DriftEngine, ReferenceProfile
from tests.monitoring.logdata import bike

COLUMNS = ["season", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit", "temp", "atemp", "hum", "windspeed"]
INJECTED = {"temp", "hum", "weathersit", "windspeed"}


@pytest.fixture(scope="module")
def hours(datasets: Path) -> pa.Table:
    return bike(datasets)


def _split(t: pa.Table, seed: int) -> tuple[pa.Table, pa.Table]:
    m = np.random.default_rng(seed).uniform(size=t.num_rows) < 0.5
    return t.filter(pa.array(m)), t.filter(pa.array(~m))


def _inject(cur: pa.Table, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = cur.num_rows
    temp = cur.column("temp").to_numpy() + 0.05  # +0.26 sd: a warmer season than the reference
    hum = cur.column("hum").to_numpy() * 0.9  # a humidity sensor reading 10% low
    ws = cur.column("weathersit").to_numpy().copy()
    ws[(ws == 1) & (rng.uniform(size=n) < 0.2)] = 2  # a fifth of clear hours reported as misty
    wind = cur.column("windspeed").to_numpy().astype(float)
    wind_mask = rng.uniform(size=n) < 0.1  # an anemometer dropping out 10% of the time
    out = cur
    for name, arr, mask in (("temp", temp, None), ("hum", hum, None), ("weathersit", ws, None), ("windspeed", wind, wind_mask)):
        i = out.column_names.index(name)
        out = out.set_column(i, name, pa.array(arr, mask=mask))
    return out


def test_injected_shifts_are_all_caught_and_untouched_columns_stay_quiet(hours: pa.Table) -> None:
    ref, cur = _split(hours.select(COLUMNS), seed=0)
    engine = DriftEngine()
    report = engine.compare(engine.profile(ref), _inject(cur))
    assert set(report.drifted) == INJECTED, [(f.name, f.reason) for f in report.features]
    # the worst-first order puts every injected column before every untouched one
    assert {f.name for f in report.features[: len(INJECTED)]} == INJECTED
    wind = report.feature("windspeed")
    assert wind.missing_current == pytest.approx(0.1, abs=0.02) and wind.missing_reference == 0.0
    assert wind.test == "chi2(missing)"
    assert report.feature("weathersit").kind == "categorical" and report.feature("temp").kind == "numeric"


@pytest.mark.parametrize("seed", range(6))
def test_no_false_alarm_between_random_halves_of_real_data(hours: pa.Table, seed: int) -> None:
    ref, cur = _split(hours.select(COLUMNS), seed=100 + seed)
    engine = DriftEngine()
    report = engine.compare(engine.profile(ref), cur)
    assert report.drifted == [], [(f.name, f.reason) for f in report.features if f.drifted]


def test_binned_ks_matches_exact_ks_on_real_columns(hours: pa.Table) -> None:
    ref, cur = _split(hours.select(["temp", "hum", "windspeed", "cnt"]), seed=1)
    cur = _inject(cur.append_column("weathersit", pa.array(np.ones(cur.num_rows, dtype=np.int64)))).drop_columns(
        ["weathersit"]
    )
    engine = DriftEngine(max_int_categories=0)
    report = engine.compare(engine.profile(ref), cur)
    for name in ("temp", "hum", "cnt"):
        exact = stats.ks_2samp(ref.column(name).to_numpy(), cur.column(name).to_numpy())
        assert report.feature(name).statistic == pytest.approx(exact.statistic, abs=2e-3), name


def test_profile_survives_a_json_round_trip(hours: pa.Table) -> None:
    ref, cur = _split(hours.select(COLUMNS), seed=2)
    engine = DriftEngine()
    prof = engine.profile(ref)
    again = ReferenceProfile.from_json(__import__("json").loads(__import__("json").dumps(prof.to_json())))
    a, b = engine.compare(prof, _inject(cur)), engine.compare(again, _inject(cur))
    assert [(f.name, f.psi, f.p_value) for f in a.features] == [(f.name, f.psi, f.p_value) for f in b.features]


def test_demand_grew_from_2011_to_2012(hours: pa.Table) -> None:
    y2011 = hours.filter(pc.equal(hours.column("yr"), 0))
    y2012 = hours.filter(pc.equal(hours.column("yr"), 1))
    engine = DriftEngine()
    report = engine.compare(engine.profile(y2011.select([*COLUMNS, "cnt"])), y2012)
    cnt = report.feature("cnt")
    assert cnt.drifted and cnt.psi >= 0.2 and report.features[0].name == "cnt"
    # the calendar columns cover both years alike
    for name in ("mnth", "hr", "weekday", "season"):
        assert not report.feature(name).drifted


def test_seasonal_drift_of_temperature_is_visible_month_by_month(hours: pa.Table) -> None:
    yr, mnth = hours.column("yr"), hours.column("mnth")
    winter = hours.filter(pc.and_(pc.equal(yr, 0), pc.less_equal(mnth, 3))).select(["temp"])
    engine = DriftEngine()
    prof = engine.profile(winter)
    psi_by_month = {}
    for m in range(1, 13):
        cur = hours.filter(pc.and_(pc.equal(yr, 1), pc.equal(mnth, m))).select(["temp"])
        psi_by_month[m] = engine.compare(prof, cur).feature("temp").psi
    summer = min(psi_by_month[m] for m in (6, 7, 8))
    assert psi_by_month[1] < 0.2 < summer, psi_by_month
    # it rises into summer and falls back toward winter
    assert psi_by_month[1] < psi_by_month[4] < psi_by_month[7] and psi_by_month[12] < psi_by_month[9]
