"""Malformed data on the first run, in CSV, JSON lines and Parquet written by the tests.

Each run ends with the bad rows quarantined and counted (file, line or row, column, value and
reason in the quarantine) or with a clear error naming them; never with silent acceptance or a
raw traceback. Rows are accounted per source file: read = kept + quarantined.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loopml.validation.columnar import Columns
from loopml.validation.quarantine import quarantine_file
from loopml.validation.schema import load_schema
from tests.data.helpers import make_ws, run_stages

FORMATS = ["csv", "jsonl", "parquet"]


def _rows(n: int = 40, start_age: int = 30) -> list[dict[str, Any]]:
    return [{"row_id": i, "age": start_age + i % 30, "workclass": ["Private", "State-gov"][i % 2],
             "hours_per_week": 40.0 + i % 5} for i in range(n)]


def _write(project: Path, fmt: str, rows: list[dict[str, Any]], name: str = "data") -> Path:
    """Write rows as the format; values are written as given (text stays text)."""
    path = project / f"{name}.{fmt}"
    if fmt == "csv":
        cols = list(rows[0])
        path.write_text(",".join(cols) + "\n" + "".join(",".join(_csv_cell(r[c]) for c in cols) + "\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
    else:
        cols = list(rows[0])
        arrays = {}
        for c in cols:
            values = [r[c] for r in rows]
            arrays[c] = pa.array(values, pa.string() if any(isinstance(v, str) for v in values) and c == "age"
                                 else None)
        pq.write_table(pa.table(arrays), path)
    return path


def _csv_cell(v: Any) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return str(v)


def _spec(fmt: str, extra: str = "") -> str:
    return (f"data:\n  sources:\n    people: {{type: {fmt}, path: 'data.{fmt}'}}\n"
            f"  verification: {{max_quarantine_rate: 0.2{extra}}}\n")


def _accounting(summary: dict[str, Any], rows: int, kept: int, quarantined: int) -> None:
    files = summary["files"]
    assert [(f["rows"], f["kept"], f["quarantined"]) for f in files] == [(rows, kept, quarantined)]
    assert all(f["rows"] == f["kept"] + f["quarantined"] for f in files)


def _ingest_accounting(summary: dict[str, Any], rows: int) -> None:
    (entry,) = summary["files"]["people"]
    assert (entry["rows"], entry["kept"], entry["quarantined"]) == (rows, rows, 0)


def _quarantine(project: Path, ws: Any, snapshot: str) -> list[dict[str, Any]]:
    return pq.read_table(quarantine_file(ws, snapshot)).to_pylist()


def _where(project: Path, fmt: str, index: int) -> str:
    """How a row at 0-based ``index`` of data.FMT is named: line for text formats, row for Parquet."""
    unit = {"csv": f"line {index + 2}", "jsonl": f"line {index + 1}", "parquet": f"row {index + 1}"}[fmt]
    return f"{project / ('data.' + fmt)} {unit}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_numbers_with_odd_values_are_typed_numeric_and_odd_rows_quarantined(project: Path, fmt: str) -> None:
    rows = _rows()
    rows = [{**r, "age": str(r["age"])} for r in rows] if fmt != "csv" else rows  # JSON/Parquet: text numbers
    rows[3]["age"], rows[17]["age"] = "n/a", "thirty"
    _write(project, fmt, rows)
    ws = make_ws(project, _spec(fmt))
    rep = run_stages(ws)
    assert rep.status == "success", rep.outcomes[-1].error
    ingest, validate = rep.outcomes
    _ingest_accounting(ingest.summary, 40)
    _accounting(validate.summary, 40, 38, 2)
    schema = load_schema(project / "schema.yaml")
    assert schema.columns["age"].type == "int64"
    assert "age" in schema.inference.numbers_from_text  # type: ignore[union-attr]
    assert "typed int64" in (project / "schema.yaml").read_text()
    q = _quarantine(project, ws, validate.summary["snapshot"])
    assert [(e["check"], e["column"], e["value"], e["location"]) for e in q] == [
        ("type", "age", "n/a", _where(project, fmt, 3)), ("type", "age", "thirty", _where(project, fmt, 17))]
    assert q[0]["reason"].startswith(_where(project, fmt, 3) + ": type: column `age` is 'n/a', expected")
    kept = pq.read_table(ws.artifacts.open_verified(validate.outputs["table"]))
    assert kept.column("age").type == pa.int64() and kept.num_rows == 38  # typed, not a string column


def test_jsonl_numbers_mixed_with_odd_strings_are_quarantined(project: Path) -> None:
    rows = _rows()
    rows[3]["age"], rows[17]["age"] = "n/a", "thirty"  # the others stay JSON numbers
    _write(project, "jsonl", rows)
    ws = make_ws(project, _spec("jsonl"))
    rep = run_stages(ws)
    assert rep.status == "success", rep.outcomes[-1].error
    assert any("mix JSON numbers and strings" in n for n in rep.outcomes[0].summary["notes"])
    _accounting(rep.outcomes[1].summary, 40, 38, 2)
    q = _quarantine(project, ws, rep.outcomes[1].summary["snapshot"])
    assert [(e["value"], e["location"]) for e in q] == [("n/a", _where(project, "jsonl", 3)),
                                                        ("thirty", _where(project, "jsonl", 17))]
    kept = pq.read_table(ws.artifacts.open_verified(rep.outcomes[1].outputs["table"]))
    assert kept.column("age").type == pa.int64()


@pytest.mark.parametrize("fmt", FORMATS)
def test_control_bytes_are_quarantined_with_the_byte_shown(project: Path, fmt: str) -> None:
    rows = _rows()
    rows[5]["workclass"] = "Pri\x00vate"
    rows[9]["workclass"] = "State\x1b-gov"
    _write(project, fmt, rows)
    ws = make_ws(project, _spec(fmt))
    rep = run_stages(ws)
    assert rep.status == "success", rep.outcomes[-1].error
    _accounting(rep.outcomes[1].summary, 40, 38, 2)
    q = _quarantine(project, ws, rep.outcomes[1].summary["snapshot"])
    assert [(e["check"], e["value"], e["location"]) for e in q] == [
        ("control_bytes", "Pri\\x00vate", _where(project, fmt, 5)), ("control_bytes", "State\\x1b-gov", _where(project, fmt, 9))]
    kept = pq.read_table(ws.artifacts.open_verified(rep.outcomes[1].outputs["table"]))
    assert not any("\x00" in v for v in kept.column("workclass").to_pylist())


def _nonfinite_rows(fmt: str) -> list[dict[str, Any]]:
    rows = _rows()
    bad: list[Any] = [math.inf, -math.inf, math.nan, "1e309"] if fmt == "csv" else [math.inf, -math.inf, math.nan,
                                                                                   math.inf]
    for i, v in zip((2, 11, 23, 30), bad):
        rows[i]["hours_per_week"] = v
    return rows


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_finite_numbers_are_quarantined_by_default(project: Path, fmt: str) -> None:
    _write(project, fmt, _nonfinite_rows(fmt))
    ws = make_ws(project, _spec(fmt))
    rep = run_stages(ws)
    assert rep.status == "success", rep.outcomes[-1].error
    _accounting(rep.outcomes[1].summary, 40, 36, 4)
    q = _quarantine(project, ws, rep.outcomes[1].summary["snapshot"])
    assert {e["check"] for e in q} == {"non_finite"} and [e["location"] for e in q] == [
        _where(project, fmt, i) for i in (2, 11, 23, 30)]
    kept = pq.read_table(ws.artifacts.open_verified(rep.outcomes[1].outputs["table"]))
    v = np.asarray(kept.column("hours_per_week").to_numpy(zero_copy_only=False), dtype=float)
    assert np.isfinite(v).all() and pa.types.is_floating(kept.column("hours_per_week").type)


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_finite_numbers_read_as_missing_when_the_spec_says_so(project: Path, fmt: str) -> None:
    _write(project, fmt, _nonfinite_rows(fmt))
    ws = make_ws(project, _spec(fmt, ", non_finite: missing"))
    rep = run_stages(ws)
    assert rep.status == "success", rep.outcomes[-1].error
    _accounting(rep.outcomes[1].summary, 40, 40, 0)
    kept = pq.read_table(ws.artifacts.open_verified(rep.outcomes[1].outputs["table"]))
    col = kept.column("hours_per_week")
    assert col.null_count == 4 and pa.types.is_floating(col.type)
    assert np.isfinite(np.asarray(col.drop_null().to_numpy(), dtype=float)).all()


def test_profile_of_infinities_does_not_crash() -> None:
    t = pa.table({"x": pa.array([1.0, math.inf, -math.inf, math.nan, None, 2.0])})
    from loopml.validation.profile import profile_table

    p = profile_table(t).columns["x"]
    assert (p.min, p.max, p.missing) == (1.0, 2.0, 4)
    c = Columns(t).get("x")
    assert c.nonfinite.tolist() == [False, True, True, True, False, False]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_schema_from_20_rows_accepts_the_next_20_clean_rows(project: Path, fmt: str) -> None:
    _write(project, fmt, _rows(20))
    ws = make_ws(project, _spec(fmt).replace("max_quarantine_rate: 0.2", "max_quarantine_rate: 0.05"))
    assert run_stages(ws).status == "success"
    schema_text = (project / "schema.yaml").read_text()
    assert "# Inferred from 20 rows." in schema_text and "only types were inferred" in schema_text
    nxt = [{**r, "age": 70 + i, "workclass": "Self-emp", "hours_per_week": 10.0 + i} for i, r in enumerate(_rows(20))]
    _write(project, fmt, nxt)  # older people, a new class, other hours: clean, only unlike the tiny sample
    rep = run_stages(ws)
    assert rep.status == "success", rep.outcomes[-1].error
    _accounting(rep.outcomes[1].summary, 20, 20, 0)
    assert rep.outcomes[1].summary["failed_checks"] == 0


def test_the_same_20_rows_are_rejected_when_limits_come_from_any_sample(project: Path) -> None:
    """The counterpart: with `min_inference_rows: 0` the tiny sample's range and domain reject them."""
    _write(project, "csv", _rows(20))
    ws = make_ws(project, _spec("csv", ", min_inference_rows: 0"))
    run_stages(ws)
    _write(project, "csv", [{**r, "age": 70 + i, "workclass": "Self-emp"} for i, r in enumerate(_rows(20))])
    rep = run_stages(ws)
    assert rep.status == "failed"
    err = rep.outcomes[-1].error or ""
    assert "domain[workclass]" in err and "20 rows read = 0 kept + 20 quarantined" in err


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_compressed_and_utf16_files_go_through_the_pipeline(project: Path, fmt: str) -> None:
    import gzip

    _write(project, fmt, _rows())
    p = project / f"data.{fmt}"
    p.write_bytes(gzip.compress(p.read_text().encode("utf-16")))
    ws = make_ws(project, _spec(fmt))
    rep = run_stages(ws)
    assert rep.status == "success", rep.outcomes[-1].error
    notes = rep.outcomes[0].summary["notes"]
    assert any("gzip-compressed" in n for n in notes) and any("UTF-16" in n for n in notes)
    _ingest_accounting(rep.outcomes[0].summary, 40)
    _accounting(rep.outcomes[1].summary, 40, 40, 0)


# -- through the CLI -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_run_quarantines_and_counts(cli, project: Path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    rows = _rows()
    rows = [{**r, "age": str(r["age"])} for r in rows] if fmt != "csv" else rows
    rows[3]["age"] = "n/a"
    rows[8]["workclass"] = "Pri\x00vate"
    _write(project, fmt, rows)
    (project / "loopml.yaml").write_text(_spec(fmt))
    r = cli("run", "-p", str(project), "--until", "validate")
    assert r.returncode == 0, r.stderr
    flat = " ".join(r.stderr.split())
    assert "40 rows read = 40 kept + 0 quarantined" in flat  # ingest
    assert "Traceback" not in r.stderr
    report = json.loads(next((project / ".loopml" / "reports").glob("validation-*.json")).read_text())
    assert [(s["rows"], s["kept"], s["quarantined"]) for s in report["sources"]] == [(40, 38, 2)]
    assert report["sources"][0]["file"].endswith(f"data.{fmt}")
    html = next((project / ".loopml" / "reports").glob("validation-*.html")).read_text()
    assert "Rows per source file" in html and f"data.{fmt}" in html
    q = cli("data", "quarantine", "-p", str(project), "--json", check=True).stdout
    reasons = [json.loads(line)["reason"] for line in q.splitlines()]
    assert any(x.startswith(_where(project, fmt, 3) + ": type: column `age` is 'n/a'") for x in reasons)
    assert any(x.startswith(_where(project, fmt, 8) + ": control_bytes: column `workclass` is 'Pri\\x00vate'")
               for x in reasons)


def test_cli_run_fails_clearly_when_too_many_rows_are_bad(cli, project: Path) -> None:  # type: ignore[no-untyped-def]
    rows = _rows()
    for i in (1, 4, 9, 12, 20):
        rows[i]["hours_per_week"] = math.inf
    _write(project, "csv", rows)
    (project / "loopml.yaml").write_text(_spec("csv").replace("0.2", "0.05"))
    r = cli("run", "-p", str(project), "--until", "validate")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    flat = " ".join(r.stderr.split())
    assert "non_finite[hours_per_week]" in flat and f"{project / 'data.csv'} line 3: 'inf'" in flat
    assert "data.csv: 40 rows read = 35 kept + 5 quarantined" in flat


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("dup", "row_id,age,age\n1,2,3\n", "data.csv line 1: the header names column `age` twice (columns 2 and 3)"),
        ("quote", 'row_id,w\n1,a\n2,"b\n3,c\n', "data.csv line 3: a quote (\") opens here and is never closed"),
        ("delim", "row_id;age\n1;2\n", "the delimiter looks like `;`"),
        ("long", "row_id,w\n" + "1,a\n" * 9 + "2," + "x" * (3 * 1024 * 1024) + "\n3,c\n", "data.csv line 11 is"),
    ],
)
def test_cli_read_errors_name_file_and_line(cli, project: Path, name: str, text: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    (project / "data.csv").write_text(text)
    (project / "loopml.yaml").write_text(_spec("csv"))
    r = cli("run", "-p", str(project), "--until", "validate")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert expected in " ".join(r.stderr.split()), r.stderr


# -- unit level ------------------------------------------------------------------------------------------


def test_text_of_only_numbers_stays_text_and_mostly_numbers_becomes_numeric() -> None:
    from loopml.validation.schema import numbers_from_text

    t = pa.table({"zip": ["02134", "10001", "94105"] * 10, "age": ["39", "41", "n/a"] + ["50"] * 27,
                  "word": ["a", "b", "3"] * 10, "rate": ["0.5", "1e309", "2.25"] + ["1.0"] * 27})
    typed = numbers_from_text(t, 0.9)
    assert set(typed) == {"age", "rate"}  # zip: all numbers, written as text on purpose; word: mostly words
    assert typed["age"][0] == pa.int64() and "'n/a'" in typed["age"][1]
    assert typed["rate"][0] == pa.float64() and "not finite" in typed["rate"][1]


def test_validate_table_names_file_and_line_and_counts_per_file() -> None:
    from loopml.spec.data import Verification
    from loopml.validation.schema import infer_from_table
    from loopml.validation.validator import validate_table

    t = pa.table({"age": ["30", "31", "n/a", "33", "34", "35"], "w": ["a", "b\x00", "c", "d", "e", "f"]})
    prov = pa.table({"file": ["a.csv"] * 3 + ["b.parquet"] * 3, "line": pa.array([2, 3, 4, None, None, None],
                                                                                 pa.int64()),
                     "record": pa.array([1, 2, 3, 1, 2, 3], pa.int64())})
    settings = Verification(max_quarantine_rate=0.5, numeric_text_share=0.8)
    schema, _ = infer_from_table(t, settings)
    out = validate_table(t, schema, None, settings, provenance=prov)
    assert out.quarantine.column("location").to_pylist() == ["a.csv line 3", "a.csv line 4"]
    assert out.report.sources == [{"file": "a.csv", "rows": 3, "kept": 1, "quarantined": 2},
                                  {"file": "b.parquet", "rows": 3, "kept": 3, "quarantined": 0}]
    assert out.kept.column("age").to_pylist() == [30, 33, 34, 35]


def test_a_new_file_in_a_glob_is_named_in_its_delta_validation(project: Path) -> None:
    (project / "in").mkdir()
    for i in range(2):
        rows = _rows(20)
        (project / "in" / f"day{i}.csv").write_text(
            "row_id,age,workclass,hours_per_week\n" + "".join(
                f"{r['row_id'] + 20 * i},{r['age']},{r['workclass']},{r['hours_per_week']}\n" for r in rows))
    ws = make_ws(project, "data:\n  sources:\n    people: {type: csv, path: 'in/*.csv'}\n"
                          "  verification: {max_quarantine_rate: 0.2}\n")
    assert run_stages(ws).status == "success"
    (project / "in" / "day2.csv").write_text("row_id,age,workclass,hours_per_week\n40,50,Pri\x00vate,40.0\n"
                                             "41,51,Private,40.0\n")
    rep = run_stages(ws)
    assert rep.status == "success", rep.outcomes[-1].error
    assert rep.outcomes[0].summary["kind"] == "delta"
    files = {Path(f["file"]).name: (f["rows"], f["kept"], f["quarantined"]) for f in rep.outcomes[1].summary["files"]}
    assert files == {"day0.csv": (20, 20, 0), "day1.csv": (20, 20, 0), "day2.csv": (2, 1, 1)}
    q = _quarantine(project, ws, rep.outcomes[1].summary["snapshot"])
    assert [e["location"] for e in q] == [f"{project / 'in' / 'day2.csv'} line 2"]


def test_a_domain_needs_no_one_off_values() -> None:
    from loopml.spec.data import Verification
    from loopml.validation.schema import infer_from_table

    common = ["a", "b", "c"] * 200
    t = pa.table({"steady": common + ["a"] * 10, "rare": common + [f"once{i}" for i in range(10)]})
    schema, _ = infer_from_table(t, Verification())
    assert schema.columns["steady"].domain == ["a", "b", "c"]
    assert schema.columns["rare"].domain is None  # 10 of 610 rows hold a value seen once: more exist
