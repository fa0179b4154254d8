"""Schema inference from a reference profile, and the editable YAML file."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from loopml.errors import NotFound, SpecError
from loopml.validation.profile import profile_table
from loopml.validation.schema import infer_schema, load_reference, load_schema, profile_path, save_schema


@pytest.fixture(scope="module")
def credit(datasets: Path) -> pa.Table:
    return duckdb.sql(f"SELECT * FROM read_csv('{datasets}/german_credit/credit-g.csv', quote='''')").to_arrow_table()


def test_infer_types_ranges_domains(credit: pa.Table) -> None:
    s = infer_schema(profile_table(credit, top_k=50), unique_keys=["nope"], max_domain_size=20)
    assert s.rows == 1000 and s.unique_keys == []  # unknown key columns are ignored
    age = s.columns["age"]
    assert age.type == "int64" and age.min == 19 and age.max == 75 and not age.nullable
    assert sorted(s.columns["class"].domain or []) == ["bad", "good"]
    assert set(s.columns["personal_status"].domain or []) == {
        "male single", "female div/dep/mar", "male mar/wid", "male div/sep"}
    assert s.columns["credit_amount"].domain is None  # too many values


def test_nullable_and_missing_slack() -> None:
    t = pa.table({"x": [1.0, None, 2.5, 3.5], "k": [1, 2, 3, 4]})
    s = infer_schema(profile_table(t), unique_keys=["k"], missing_slack=0.05)
    assert s.columns["x"].nullable and s.columns["x"].max_missing_rate == pytest.approx(0.3)
    assert s.columns["x"].domain is None  # fractional numbers never get a domain
    assert s.unique_keys == ["k"]


def test_yaml_roundtrip_with_header_and_reference(tmp_path: Path, credit: pa.Table) -> None:
    p = profile_table(credit)
    s = infer_schema(p, reference_snapshot="v1-abc")
    path = tmp_path / "schema.yaml"
    save_schema(s, path, p)
    text = path.read_text()
    assert text.startswith("# Data schema") and "reference_snapshot: v1-abc" in text
    assert load_schema(path) == s
    assert load_reference(path) == p
    assert profile_path(path).name == "schema.profile.json"


def test_edited_schema_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text("columns:\n  age: {type: int64, nullabel: false}\n")
    with pytest.raises(SpecError) as err:
        load_schema(path)
    assert any("columns.age.nullabel" in p for p in err.value.problems)
    with pytest.raises(NotFound, match="infer-schema"):
        load_schema(tmp_path / "missing.yaml")
