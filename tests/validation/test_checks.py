"""Each check on crafted data, and a contract over every registered check."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from loopml.spec.data import Verification
from loopml.validation.checks import CHECKS, SEVERITY_RANK
from loopml.validation.profile import profile_table
from loopml.validation.schema import infer_schema
from loopml.validation.validator import validate_table

REF = pa.table(
    {
        "id": pa.array(range(1, 1001), pa.int64()),
        "amount": pa.array(np.linspace(0, 100, 1000)),
        "color": pa.array(["red", "green", "blue", "red"] * 250),
        "score": pa.array([None if i % 10 == 0 else float(i % 7) + 0.5 for i in range(1000)]),
        "ts": pa.array([dt.datetime(2024, 1, 1) + dt.timedelta(hours=i) for i in range(1000)], pa.timestamp("us")),
    }
)


def _validate(table: pa.Table, **settings: object) -> object:
    ref_profile = profile_table(REF)
    schema = infer_schema(ref_profile, unique_keys=["id"], timestamp="ts")
    return validate_table(table, schema, ref_profile, Verification(**settings))  # type: ignore[arg-type]


def _failed(out: object, check: str) -> list:  # type: ignore[type-arg]
    return [c for c in out.report.checks if c.check == check and not c.passed]  # type: ignore[attr-defined]


def test_reference_passes_every_check() -> None:
    out = _validate(REF)
    assert out.report.passed and out.report.quarantined_rows == 0  # type: ignore[attr-defined]
    assert {c.check for c in out.report.checks} >= {"columns", "missing_rate", "row_count", "psi", "type"}  # type: ignore[attr-defined]


def test_range_and_domain_rows_are_quarantined() -> None:
    t = REF.set_column(1, "amount", pa.array([500.0, *list(np.linspace(0, 100, 999))]))
    t = t.set_column(2, "color", pa.array(["purple"] + ["red", "green", "blue", "red"] * 249 + ["red", "red", "red"]))
    out = _validate(t)
    rng = _failed(out, "range")
    dom = _failed(out, "domain")
    assert rng[0].column == "amount" and rng[0].failing_rows == 1
    assert dom[0].column == "color" and dom[0].failing_rows == 1
    assert out.report.quarantined_rows == 1 and out.kept.num_rows == 999  # type: ignore[attr-defined]
    reasons = {e["check"]: e for e in out.entries()}  # type: ignore[attr-defined]
    assert float(reasons["range"]["value"]) == 500.0 and "expected a value in [0" in reasons["range"]["reason"]
    assert reasons["domain"]["value"] == "purple" and reasons["domain"]["row"]["id"] == 1
    assert out.report.passed  # type: ignore[attr-defined]  # 0.1% quarantined is below max_quarantine_rate


def test_too_many_bad_rows_is_an_error() -> None:
    t = REF.set_column(1, "amount", pa.array(np.linspace(0, 100, 1000) * 3))
    out = _validate(t)
    rng = _failed(out, "range")[0]
    assert rng.severity == "error" and rng.failing_rows > 600
    assert not out.report.passed  # type: ignore[attr-defined]


def test_type_check_on_text_in_numeric_column() -> None:
    bad = pa.array([*[str(v) for v in np.linspace(0, 100, 1000)][:-1], "n/a"])
    out = _validate(REF.set_column(1, "amount", bad))
    tc = _failed(out, "type")[0]
    assert tc.column == "amount" and tc.failing_rows == 1
    assert out.entries()[0]["value"] == "n/a"  # type: ignore[attr-defined]


def test_nullability_and_key_duplicates() -> None:
    ids = list(range(1, 1001))
    ids[5] = 1  # duplicate key
    t = REF.set_column(0, "id", pa.array(ids, pa.int64()))
    t = t.set_column(2, "color", pa.array([None] + ["red", "green", "blue", "red"] * 249 + ["red"] * 3))
    out = _validate(t)
    dup = _failed(out, "key_duplicates")[0]
    assert dup.failing_rows == 1 and dup.column == "id"
    assert [e["row_index"] for e in out.entries() if e["check"] == "key_duplicates"] == [5]  # type: ignore[attr-defined]
    assert _failed(out, "nullability")[0].column == "color"


def test_missing_rate_increase() -> None:
    score = REF.column("score").to_pylist()
    score = [None if i % 2 == 0 else v for i, v in enumerate(score)]
    out = _validate(REF.set_column(3, "score", pa.array(score)))
    mr = _failed(out, "missing_rate")[0]
    assert mr.column == "score" and mr.evidence["missing_rate"] == pytest.approx(0.5, abs=0.01)
    assert not out.report.passed  # type: ignore[attr-defined]


def test_missing_and_new_columns() -> None:
    out = _validate(REF.drop_columns(["color"]).append_column("extra", pa.array([1] * 1000)))
    msgs = {c.column: c for c in _failed(out, "columns")}
    assert msgs["color"].severity == "error" and "missing" in msgs["color"].message
    assert msgs["extra"].severity == "warning"


def test_freshness() -> None:
    stale = _validate(REF, freshness_hours=24)
    assert _failed(stale, "freshness")[0].evidence["age_hours"] > 24
    fresh_ts = pa.array([dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=1000 - i)
                         for i in range(1000)], pa.timestamp("us"))
    out = _validate(REF.set_column(4, "ts", fresh_ts), freshness_hours=24)
    assert not _failed(out, "freshness")


def test_row_count_change_warns() -> None:
    out = _validate(REF.slice(0, 300))
    rc = _failed(out, "row_count")[0]
    assert rc.severity == "warning" and rc.evidence["change"] == pytest.approx(-0.7)


def test_psi_detects_a_shift_and_severity_override() -> None:
    shifted = REF.set_column(2, "color", pa.array(["blue"] * 900 + ["red"] * 100))
    out = _validate(shifted)
    p = _failed(out, "psi")
    assert p and p[0].column == "color" and p[0].evidence["psi"] > 0.25 and p[0].severity == "error"
    relaxed = _validate(shifted, severities={"psi": "warning"})
    assert _failed(relaxed, "psi")[0].severity == "warning" and relaxed.report.passed  # type: ignore[attr-defined]


def test_fail_on_never_lets_everything_through() -> None:
    out = _validate(REF.drop_columns(["color"]), fail_on="never")
    assert out.report.passed  # type: ignore[attr-defined]


def test_real_data_shift_bike_sharing(datasets: Path) -> None:
    hours = duckdb.sql(f"SELECT * FROM read_csv('{datasets}/bike_sharing/hour.csv')").to_arrow_table()
    first_year = hours.filter(pa.compute.equal(hours.column("yr"), 0))
    second_year = hours.filter(pa.compute.equal(hours.column("yr"), 1))
    ref = profile_table(first_year, top_k=50)
    schema = infer_schema(ref, unique_keys=["instant"])
    out = validate_table(second_year, schema, ref, Verification())
    failed = {(c.check, c.column) for c in out.report.checks if not c.passed}
    assert ("domain", "yr") in failed  # yr=1 never seen in the reference year
    assert ("range", "dteday") in failed and ("psi", "cnt") in failed  # demand grew in 2012
    assert not out.report.passed


# -- contract over every registered check ------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CHECKS))
def test_check_contract(name: str) -> None:
    cls = CHECKS[name]
    assert cls.name == name and cls.description
    assert cls.default_severity in SEVERITY_RANK
    assert isinstance(cls.row_level, bool)
    ref_profile = profile_table(REF)
    schema = infer_schema(ref_profile, unique_keys=["id"], timestamp="ts")
    out = validate_table(REF, schema, ref_profile, Verification(freshness_hours=1e9), checks=[name])
    assert all(c.check in (name, "row_count") for c in out.report.checks)  # row_count may report "no rows"
    assert all(c.passed for c in out.report.checks), [c.message for c in out.report.checks]
    assert out.kept.num_rows == REF.num_rows and out.quarantine.num_rows == 0


def test_mixed_types_in_a_text_column() -> None:
    vals = [str(i) for i in range(990)] + ["n/a"] * 10
    t = REF.append_column("code", pa.array(vals))
    out = _validate(t)
    mt = _failed(out, "mixed_types")[0]
    assert mt.column == "code" and mt.severity == "warning" and mt.evidence["row"] == 990
    assert "'n/a'" in mt.message
    assert not _failed(_validate(REF), "mixed_types")  # real text columns are left alone
