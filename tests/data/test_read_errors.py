"""Reading malformed files the tests write: each gives a clear error naming the file and line, or is read
correctly with a note (compression, byte-order mark), and every row keeps its file and line."""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loopml.data.provenance import record_lines
from loopml.data.sources import read_source_located
from loopml.errors import DataError
from loopml.spec.data import CsvSource, JsonlSource, ParquetSource

HEADER = "row_id,age,workclass,hours_per_week\n"


def _rows(n: int = 20) -> list[dict[str, object]]:
    return [{"row_id": i, "age": 30 + i, "workclass": "Private", "hours_per_week": 40} for i in range(n)]


def _csv_text(rows: list[dict[str, object]]) -> str:
    return HEADER + "".join(f"{r['row_id']},{r['age']},{r['workclass']},{r['hours_per_week']}\n" for r in rows)


def _jsonl_text(rows: list[dict[str, object]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _read(tmp_path: Path, name: str, data: bytes, **kw: object):  # type: ignore[no-untyped-def]
    (tmp_path / name).write_bytes(data)
    if name.endswith(".jsonl"):
        return read_source_located("s", JsonlSource(type="jsonl", path=name), tmp_path)
    return read_source_located("s", CsvSource(type="csv", path=name, **kw), tmp_path)  # type: ignore[arg-type]


# -- clear errors -----------------------------------------------------------------------------------


def test_duplicate_header_names_both_positions(tmp_path: Path) -> None:
    text = _csv_text(_rows()).replace("hours_per_week", "age", 1)
    with pytest.raises(DataError) as err:
        _read(tmp_path, "dup.csv", text.encode())
    msg = str(err.value)
    assert "dup.csv line 1" in msg and "column `age` twice (columns 2 and 4)" in msg
    assert "age_1" not in msg


def test_duplicate_parquet_column_names(tmp_path: Path) -> None:
    pq.write_table(pa.table([pa.array([1, 2]), pa.array([3, 4])], names=["age", "age"]), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d\.parquet: the schema names column `age` twice \(columns 1 and 2\)"):
        read_source_located("s", ParquetSource(type="parquet", path="d.parquet"), tmp_path)


def test_unterminated_quote_names_the_line_it_opened(tmp_path: Path) -> None:
    lines = _csv_text(_rows()).splitlines(keepends=True)
    lines[6] = '5,35,"Priv,40\n'  # line 7 opens a quote that never closes
    with pytest.raises(DataError) as err:
        _read(tmp_path, "q.csv", "".join(lines).encode())
    msg = str(err.value)
    assert "q.csv line 7: a quote (\") opens here and is never closed" in msg
    assert "sniffing" not in msg


def test_a_five_mib_line_is_named_with_its_own_number(tmp_path: Path) -> None:
    lines = _csv_text(_rows()).splitlines(keepends=True)
    lines[10] = "9,39," + "x" * (5 * 1024 * 1024) + ",40\n"  # line 11
    with pytest.raises(DataError) as err:
        _read(tmp_path, "long.csv", "".join(lines).encode())
    msg = str(err.value)
    assert "long.csv line 11 is 5,242,888 bytes long" in msg and "line 1 " not in msg


@pytest.mark.parametrize(("delim", "label"), [(";", ";"), ("|", "|"), ("\t", "tab")])
def test_one_column_whose_name_holds_another_delimiter(tmp_path: Path, delim: str, label: str) -> None:
    text = _csv_text(_rows()).replace(",", delim)
    with pytest.raises(DataError) as err:
        _read(tmp_path, "semi.csv", text.encode())
    assert f"the delimiter looks like `{label}`" in str(err.value) and "semi.csv line 1" in str(err.value)


def test_jsonl_numbers_and_strings_in_one_field_read_as_text_with_a_note(tmp_path: Path) -> None:
    rows = _rows()
    rows[4]["age"] = "n/a"
    got = _read(tmp_path, "m.jsonl", _jsonl_text(rows).encode())
    assert got.table.column("age").to_pylist()[3:6] == ["33", "n/a", "35"]
    assert any("field(s) age mix JSON numbers and strings" in n for n in got.notes)


# -- read correctly, with a note --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize(("kind", "pack"), [("gzip", gzip.compress), ("bz2", bz2.compress), ("zstd", None)])
def test_compressed_files_detected_by_magic_bytes(tmp_path: Path, fmt: str, kind: str, pack: object) -> None:
    text = (_csv_text if fmt == "csv" else _jsonl_text)(_rows()).encode()
    if pack is None:
        out = pa.BufferOutputStream()
        with pa.CompressedOutputStream(out, "zstd") as z:
            z.write(text)
        data = out.getvalue().to_pybytes()
    else:
        data = pack(text)  # type: ignore[operator]
    got = _read(tmp_path, f"packed.{fmt}", data)  # named like plain text on purpose
    assert got.table.num_rows == 20 and got.table.column("age").to_pylist()[:2] == [30, 31]
    assert any(f"{kind}-compressed" in n and "packed" in n for n in got.notes)
    assert got.provenance.column("line").to_pylist()[:2] == ([2, 3] if fmt == "csv" else [1, 2])


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("codec", ["utf-16", "utf-32", "utf-16-be", "utf-8-sig"])
def test_byte_order_marks_decode_the_file(tmp_path: Path, fmt: str, codec: str) -> None:
    rows = _rows()
    rows[3]["workclass"] = "Privé"
    text = (_csv_text if fmt == "csv" else _jsonl_text)(rows)
    data = text.encode(codec)
    if codec == "utf-16-be":
        data = b"\xfe\xff" + data
    got = _read(tmp_path, f"bom.{fmt}", data)
    assert got.table.num_rows == 20 and got.table.column("workclass").to_pylist()[3] == "Privé"
    assert got.table.column_names[0] == "row_id"  # the mark is not part of the first name
    if codec != "utf-8-sig":
        assert any("byte-order mark" in n for n in got.notes)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_blank_trailing_lines_are_ignored(tmp_path: Path, fmt: str) -> None:
    text = (_csv_text if fmt == "csv" else _jsonl_text)(_rows()) + "\n  \n\t\r\n\n"
    got = _read(tmp_path, f"blank.{fmt}", text.encode())
    assert got.table.num_rows == 20 and got.files[0]["rows"] == 20
    assert got.table.column("age").type == pa.int64()


def test_extra_columns_of_a_later_file_are_named(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(_csv_text(_rows(5)))
    (tmp_path / "b.csv").write_text(HEADER.strip() + ",bonus\n" + "5,35,Private,40,1\n")
    got = read_source_located("s", CsvSource(type="csv", path="*.csv"), tmp_path)
    assert got.table.num_rows == 6
    assert any("b.csv has column(s) bonus" in n for n in got.notes)
    assert [f["rows"] for f in got.files] == [5, 1]


def test_extra_parquet_columns_are_named(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "1.parquet")
    pq.write_table(pa.table({"a": [3], "more": ["x"]}), tmp_path / "2.parquet")
    got = read_source_located("s", ParquetSource(type="parquet", path="*.parquet"), tmp_path)
    assert any("2.parquet has column(s) more" in n for n in got.notes)
    assert got.provenance.column("record").to_pylist() == [1, 2, 1]
    assert got.provenance.column("line").null_count == 3  # Parquet rows have no line


# -- provenance: the right line for any row ------------------------------------------------------------


def test_lines_follow_quoted_line_breaks_and_blank_lines(tmp_path: Path) -> None:
    text = 'id,text\n1,"two\nlines"\n\n2,plain\n3,"a ""quoted"" word"\n4,last\n'
    got = _read(tmp_path, "ml.csv", text.encode())
    assert got.table.column("id").to_pylist() == [1, 2, 3, 4]
    assert got.provenance.column("line").to_pylist() == [2, 5, 6, 7]


def test_record_lines_none_when_the_structure_disagrees(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("a\n1\n2\n")
    assert record_lines(p, header=True, quote='"', n=2).tolist() == [2, 3]  # type: ignore[union-attr]
    assert record_lines(p, header=True, quote='"', n=5) is None


def test_a_long_line_later_in_a_file_keeps_its_number(tmp_path: Path) -> None:
    lines = _csv_text(_rows()).splitlines(keepends=True)
    lines[10] = '9,39,"' + "y" * 300_000 + '",40\n'  # long but within the reader's limit
    got = _read(tmp_path, "ok.csv", "".join(lines).encode())
    assert got.provenance.column("line").to_pylist()[9:11] == [11, 12]


@pytest.mark.parametrize(("bad", "problem"), [('{"row_id": 10, "age": oops}', "Expecting value at column 23"),
                                              ('{"row_id": 10, "w": "unclosed}', "at column"),
                                              ("[1, 2]", "is a array, but earlier values are objects")])
def test_jsonl_bad_line_has_its_own_number(tmp_path: Path, bad: str, problem: str) -> None:
    lines = _jsonl_text(_rows()).splitlines(keepends=True)
    lines[10] = bad + "\n"  # line 11 (DuckDB itself reports line 12)
    with pytest.raises(DataError) as err:
        _read(tmp_path, "bad.jsonl", "".join(lines).encode())
    msg = str(err.value)
    assert "bad.jsonl line 11" in msg and problem in msg


def test_jsonl_five_mib_line_keeps_later_line_numbers(tmp_path: Path) -> None:
    rows = _rows()
    rows[10]["workclass"] = "y" * (5 * 1024 * 1024)
    lines = _jsonl_text(rows).splitlines(keepends=True)
    lines[14] = '{"row_id": 14, "age": oops}\n'
    with pytest.raises(DataError, match=r"bad\.jsonl line 15: not valid JSON lines"):
        _read(tmp_path, "bad.jsonl", "".join(lines).encode())


def test_extra_jsonl_fields_of_a_later_file_are_named(tmp_path: Path) -> None:
    (tmp_path / "1.jsonl").write_text(_jsonl_text(_rows(3)))
    (tmp_path / "2.jsonl").write_text(_jsonl_text([{**r, "bonus": 1} for r in _rows(2)]))
    got = read_source_located("s", JsonlSource(type="jsonl", path="*.jsonl"), tmp_path)
    assert got.table.num_rows == 5 and [f["rows"] for f in got.files] == [3, 2]
    assert any("2.jsonl has field(s) bonus" in n for n in got.notes)


def test_provenance_follows_interleaved_files() -> None:
    from loopml.data.provenance import provenance_from_files

    files = pa.array(["b", "a", "b", "a", "a"])
    lines = [np.array([2, 3, 5]), None]  # a.csv: lines known; b.parquet: rows only
    p = provenance_from_files(files, ["a", "b"], ["a.csv", "b.parquet"], lines)
    assert p.column("file").to_pylist() == ["b.parquet", "a.csv", "b.parquet", "a.csv", "a.csv"]
    assert p.column("record").to_pylist() == [1, 1, 2, 2, 3]
    assert p.column("line").to_pylist() == [None, 2, None, 3, 5]
