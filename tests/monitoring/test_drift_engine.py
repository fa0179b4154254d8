"""The drift engine's contract: every statistic, the decision rule, missing values, categories, errors,
and the multivariate domain classifier."""

from __future__ import annotations

import typing

import numpy as np
import pyarrow as pa
import pytest

from loopml.errors import DataError
from loopml.monitoring.drift import STATISTICS, DriftEngine
from loopml.spec.monitoring import Drift, DriftMethod


def _tables(n: int = 20000, shift: float = 0.0, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    cats = np.array(["a", "b", "c", "d"])
    ref = pa.table({"x": rng.normal(size=n), "c": cats[rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])]})
    s = min(shift, 0.3)
    p_cur = np.array([0.4 - s, 0.3, 0.2, 0.1 + s])
    cur = pa.table({"x": rng.normal(shift, 1, size=n), "c": cats[rng.choice(4, n, p=p_cur)]})
    return ref, cur


def test_every_spec_method_is_a_known_statistic() -> None:
    assert set(typing.get_args(DriftMethod)) == set(STATISTICS)
    assert set(Drift().methods) == set(STATISTICS)


@pytest.mark.parametrize("method", sorted(STATISTICS))
def test_each_statistic_is_near_zero_without_shift_and_grows_with_it(method: str) -> None:
    engine = DriftEngine(methods=[method])
    values = []
    for shift in (0.0, 0.05, 0.2):
        ref, cur = _tables(shift=shift)
        rep = engine.compare(engine.profile(ref), cur)
        x, c = rep.feature("x"), rep.feature("c")
        attr = {"psi": ("psi", "psi"), "ks": ("effect", None), "chi2": (None, "effect"), "js": ("js", "js"),
                "wasserstein": ("wasserstein", None)}[method]
        values.append(sum(getattr(f, a) for f, a in ((x, attr[0]), (c, attr[1])) if a))
    assert values[0] < 0.03
    assert values[0] < values[1] < values[2]


@pytest.mark.parametrize("method", sorted(STATISTICS))
def test_decision_with_only_one_method_still_flags_a_large_shift(method: str) -> None:
    ref, cur = _tables(shift=0.5)
    engine = DriftEngine(methods=[method])
    rep = engine.compare(engine.profile(ref), cur)
    if method in ("js", "wasserstein"):  # descriptive only: no test and no PSI to decide with
        assert rep.drifted == []
    elif method == "ks":
        assert rep.drifted == ["x"]
    elif method == "chi2":
        assert rep.drifted == ["c"]
    else:
        assert set(rep.drifted) == {"x", "c"}


def test_significant_but_negligible_change_is_not_drift() -> None:
    """1M rows: a 0.01 sd shift is 'significant' but below the effect floor."""
    rng = np.random.default_rng(5)
    ref = pa.table({"x": rng.normal(size=1_000_000)})
    cur = pa.table({"x": rng.normal(0.012, 1, size=1_000_000)})
    rep = DriftEngine().compare(DriftEngine().profile(ref), cur)
    f = rep.feature("x")
    assert f.p_value < rep.alpha and not f.drifted and "effect" in f.reason


def test_new_categories_and_missing_values_are_counted() -> None:
    ref = pa.table({"c": ["a", "b"] * 500})
    cur = pa.table({"c": ["a", "b", "z", None] * 250})
    rep = DriftEngine().compare(DriftEngine().profile(ref), cur)
    f = rep.feature("c")
    assert f.new_category_share == pytest.approx(0.25)
    assert f.missing_current == pytest.approx(0.25)
    assert f.drifted


def test_integer_codes_logged_as_floats_match_the_reference_categories() -> None:
    ref = pa.table({"k": pa.array([1, 2, 3] * 400, pa.int64())})
    cur = pa.table({"k": pa.array([1.0, 2.0, 3.0] * 400, pa.float64())})
    rep = DriftEngine().compare(DriftEngine().profile(ref), cur)
    assert rep.feature("k").kind == "categorical"
    assert rep.feature("k").new_category_share == 0.0 and not rep.feature("k").drifted


def test_missing_reference_column_is_a_clear_error() -> None:
    ref, _ = _tables()
    with pytest.raises(DataError, match="column\\(s\\) nope not found"):
        DriftEngine().profile(ref, columns=["x", "nope"], source="ref.parquet")
    with pytest.raises(DataError, match="none of the reference columns"):
        DriftEngine().compare(DriftEngine().profile(ref), pa.table({"other": [1.0]}))


def test_sampling_keeps_the_verdict() -> None:
    ref, cur = _tables(n=50000, shift=0.2)
    full = DriftEngine().compare(DriftEngine().profile(ref), cur)
    sampled = DriftEngine(sample_rows=10000).compare(DriftEngine(sample_rows=10000).profile(ref), cur)
    assert sampled.n_current == 10000 and set(sampled.drifted) == set(full.drifted) == {"x", "c"}


def test_domain_classifier_sees_a_joint_shift_the_marginals_hide() -> None:
    """x and y keep their marginals, but their correlation flips: only the multivariate check can see it."""
    rng = np.random.default_rng(7)
    n = 6000
    a = rng.normal(size=n)
    b = rng.normal(size=n)
    ref = pa.table({"x": a, "y": 0.9 * a + np.sqrt(1 - 0.81) * b})
    a2, b2 = rng.normal(size=n), rng.normal(size=n)
    cur = pa.table({"x": a2, "y": -0.9 * a2 + np.sqrt(1 - 0.81) * b2})
    engine = DriftEngine(multivariate=True)
    rep = engine.compare(engine.profile(ref), cur)
    assert rep.drifted == []
    mv = engine.domain_classifier(ref, cur, ["x", "y"])
    assert mv.drifted and mv.auc > 0.9
    same = engine.domain_classifier(ref, _tables(n)[0].select([]).append_column("x", pa.array(rng.normal(size=n)))
                                    .append_column("y", pa.array(0.9 * rng.normal(size=n))), ["x"])
    assert same.auc < 0.6


def test_file_comparison_reads_column_by_column_and_matches_the_table_path(tmp_path) -> None:
    import pyarrow.parquet as pq

    ref, cur = _tables(n=30000, shift=0.05)
    ref = ref.append_column("when", pa.array(np.arange(30000).astype("datetime64[s]")))  # not watched
    pq.write_table(ref, tmp_path / "ref.parquet")
    pq.write_table(cur, tmp_path / "cur.parquet")
    engine = DriftEngine()
    by_table = engine.compare(engine.profile(ref), cur)
    by_file = engine.compare_files(tmp_path / "ref.parquet", tmp_path / "cur.parquet")
    assert [(f.name, f.p_value, f.psi, f.drifted) for f in by_file.features] == [
        (f.name, f.p_value, f.psi, f.drifted) for f in by_table.features
    ]
    assert by_file.alpha == by_table.alpha
    with pytest.raises(DataError, match="not found"):
        engine.compare_files(tmp_path / "ref.parquet", tmp_path / "cur.parquet", columns=["nope"])
