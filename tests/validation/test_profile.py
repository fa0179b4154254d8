"""Profiles against exact numpy/Arrow computations on real data, and the PSI statistic."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from loopml.validation.profile import OTHER, Profile, profile_table, psi


@pytest.fixture(scope="module")
def hours(datasets: Path) -> pa.Table:
    return duckdb.sql(f"SELECT * FROM read_csv('{datasets}/bike_sharing/hour.csv')").to_arrow_table()


def test_numeric_stats_match_numpy(hours: pa.Table) -> None:
    p = profile_table(hours)
    assert p.rows == 17_379
    cnt = hours.column("cnt").to_numpy()
    c = p.columns["cnt"]
    assert c.kind == "numeric" and c.missing == 0 and c.count == 17_379
    assert c.min == cnt.min() == 1 and c.max == cnt.max() == 977
    assert c.mean == pytest.approx(cnt.mean())
    assert c.std == pytest.approx(cnt.std(ddof=1))
    assert c.quantiles["p50"] == pytest.approx(np.median(cnt), rel=0.05)
    assert sum(c.histogram["counts"]) == 17_379 and len(c.histogram["counts"]) == 20
    exact, _ = np.histogram(cnt, bins=np.asarray(c.histogram["edges"]))
    assert np.abs(exact - np.asarray(c.histogram["counts"])).sum() <= 2  # only edge placement may differ


def test_top_values_and_distinct_are_exact_for_small_domains(hours: pa.Table) -> None:
    p = profile_table(hours)
    season = p.columns["season"]
    vc = {d["values"]: d["counts"] for d in pc.value_counts(hours.column("season")).to_pylist()}
    assert dict((v, n) for v, n in season.top) == vc
    assert season.distinct == 4
    assert p.columns["dteday"].kind == "temporal" and p.columns["dteday"].min == "2011-01-01"


def test_categorical_profile_german_credit(datasets: Path) -> None:
    t = duckdb.sql(f"SELECT * FROM read_csv('{datasets}/german_credit/credit-g.csv', quote='''')").to_arrow_table()
    p = profile_table(t)
    ps = p.columns["personal_status"]
    assert ps.kind == "string" and ps.top[0] == ["male single", 548]
    h = dict(zip(ps.histogram["values"], ps.histogram["counts"]))
    assert h["female div/dep/mar"] == 310 and h[OTHER] == 0


def test_missing_values_and_roundtrip() -> None:
    t = pa.table({"x": [1.0, None, 3.0, None], "s": ["a", None, "b", "b"], "b": [True, False, None, True]})
    p = profile_table(t)
    assert p.columns["x"].missing == 2 and p.columns["x"].missing_rate == 0.5
    assert p.columns["s"].missing == 1 and p.columns["b"].kind == "boolean"
    assert p.columns["b"].mean == pytest.approx(2 / 3)
    again = Profile.from_json(p.to_json())
    assert again == p


def test_reference_bins_are_reused(hours: pa.Table) -> None:
    ref = profile_table(hours)
    cur = profile_table(hours.slice(0, 5000), reference=ref)
    assert cur.columns["cnt"].histogram["edges"] == ref.columns["cnt"].histogram["edges"]
    assert cur.columns["cnt"].psi_bins["edges"] == ref.columns["cnt"].psi_bins["edges"]


def test_psi_is_zero_for_identical_and_large_for_shifted() -> None:
    assert psi([10, 20, 30], [10, 20, 30]) == pytest.approx(0.0)
    assert psi([100, 100, 100], [1, 1, 298]) > 1.0
    assert 0 < psi([100, 100, 100], [90, 100, 110]) < 0.02


def test_a_profile_keeps_shared_conversions_and_releases_its_own(hours: pa.Table, monkeypatch: pytest.MonkeyPatch) -> None:
    from loopml.validation import columnar

    held: list[int] = []
    real_get = columnar.Columns.get

    def counting_get(self: columnar.Columns, name: str) -> columnar.ColumnData:
        col = real_get(self, name)
        held.append(len(self._cache))
        return col

    monkeypatch.setattr(columnar.Columns, "get", counting_get)
    shared = columnar.Columns(hours)
    profile_table(hours, columns=shared, threads=1)  # the validator reuses these for its row-level checks
    assert len(shared._cache) == hours.num_columns
    held.clear()
    alone = profile_table(hours, threads=1)  # its own conversions: one column held at a time
    assert max(held) == 1 and len(held) == hours.num_columns
    assert alone.columns["cnt"].mean == pytest.approx(hours.column("cnt").to_numpy().mean())
