"""Crafted bad files: every error names the file, the line, the column, the value and what was expected."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from loopml.data.etl import build_examples
from loopml.data.sources import read_source
from loopml.errors import DataError
from loopml.spec import parse_spec_text
from loopml.spec.data import CsvSource, JsonlSource, ParquetSource


def _csv(tmp_path: Path, name: str, data: bytes | str, **kw: object) -> tuple[CsvSource, Path]:
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return CsvSource(type="csv", path=name, **kw), p  # type: ignore[arg-type]


def test_malformed_line_names_file_line_and_content(tmp_path: Path) -> None:
    src, p = _csv(tmp_path, "m.csv", "a,b,c\n1,2,3\n4,5\n6,7,8\n")
    with pytest.raises(DataError) as err:
        read_source("m", src, tmp_path)
    msg = str(err.value)
    assert str(p) in msg and "line 3" in msg and "'4,5'" in msg
    assert "Expected Number of Columns: 3 Found: 2" in msg


def test_too_many_fields_line(tmp_path: Path) -> None:
    src, _p = _csv(tmp_path, "t.csv", "a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match=r"t\.csv line 3: malformed line '3,4,5'"):
        read_source("t", src, tmp_path)


def test_wrong_type_against_declared_type(tmp_path: Path) -> None:
    src, p = _csv(tmp_path, "w.csv", "id,amount\n1,10\n2,ten\n3,30\n", types={"amount": "BIGINT"})
    with pytest.raises(DataError) as err:
        read_source("w", src, tmp_path)
    msg = str(err.value)
    assert f"{p} line 3, column `amount`: value 'ten' is not BIGINT" in msg
    assert "declared" in msg


def test_mixed_types_in_one_column(tmp_path: Path) -> None:
    rows = ["k,v"] + [f"{i},{i}" for i in range(30_000)] + ["30000,oops", "30001,1"]
    src, _p = _csv(tmp_path, "mixed.csv", "\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        read_source("mixed", src, tmp_path)
    msg = str(err.value)
    assert "line 30002, column `v`: value 'oops' is not BIGINT" in msg
    assert "mixed types in one column" in msg
    assert "VARCHAR" in (err.value.hint or "")


def test_empty_file(tmp_path: Path) -> None:
    src, p = _csv(tmp_path, "e.csv", b"")
    with pytest.raises(DataError, match=rf"{p} is empty \(0 bytes\)"):
        read_source("e", src, tmp_path)


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    src, _p = _csv(tmp_path, "h.csv", "a,b\n")
    with pytest.raises(DataError, match=r"holds no data rows \(columns: a, b\)"):
        read_source("h", src, tmp_path)


def test_missing_file_and_empty_glob(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"source `x`: file not found 'nope\.csv'"):
        read_source("x", CsvSource(type="csv", path="nope.csv"), tmp_path)
    with pytest.raises(DataError, match=r"no file matches the glob 'logs/\*\.csv'"):
        read_source("x", CsvSource(type="csv", path="logs/*.csv"), tmp_path)


def test_unknown_encoding(tmp_path: Path) -> None:
    src, _ = _csv(tmp_path, "u.csv", "a\n1\n", encoding="klingon-8")
    with pytest.raises(DataError, match=r"unknown encoding 'klingon-8'"):
        read_source("u", src, tmp_path)


def test_bytes_invalid_in_declared_encoding(tmp_path: Path) -> None:
    src, p = _csv(tmp_path, "l.csv", "name,n\nok,1\ncaf\xe9,2\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_source("l", src, tmp_path)
    msg = str(err.value)
    assert str(p) in msg and "line 3" in msg and "not valid utf-8" in msg


def test_bytes_invalid_in_transcoded_encoding(tmp_path: Path) -> None:
    src, p = _csv(tmp_path, "s.csv", b"a\n1\n\xff\xfe\xfa\n", encoding="shift_jis")
    with pytest.raises(DataError, match=rf"{p} line 3: bytes .* are not valid shift_jis"):
        read_source("s", src, tmp_path)


def test_declared_type_for_missing_column(tmp_path: Path) -> None:
    src, _ = _csv(tmp_path, "c.csv", "a,b\n1,2\n", types={"zz": "BIGINT"})
    with pytest.raises(DataError, match=r"column\(s\) zz declared in `types` do not exist"):
        read_source("c", src, tmp_path)


def test_missing_column_in_label_rule(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user,item,stars\n1,2,5\n")
    spec = parse_spec_text(
        "data:\n  sources:\n    r: {type: csv, path: r.csv}\n"
        "  labels: {type: threshold, column: rating, op: '>=', value: 4}\n"
    )
    with pytest.raises(DataError, match=r"column\(s\) `rating` not found in `examples` \(columns: user, item, stars"):
        build_examples(spec, tmp_path)


def test_missing_column_in_privacy_rule(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user,item\n1,2\n")
    spec = parse_spec_text(
        "requirements: {privacy: {coarsen: [{column: zip, method: prefix, step: 3}]}}\n"
        "data:\n  sources:\n    r: {type: csv, path: r.csv}\n"
    )
    with pytest.raises(DataError, match=r"privacy: column\(s\) `zip` .* not in the example table"):
        build_examples(spec, tmp_path)


def test_bad_jsonl_line(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_text('{"a": 1}\n{"a": 2\n{"a": 3}\n')
    with pytest.raises(DataError, match=r"b\.jsonl line \d+: not valid JSON lines"):
        read_source("b", JsonlSource(type="jsonl", path="b.jsonl"), tmp_path)


def test_not_a_parquet_file(tmp_path: Path) -> None:
    (tmp_path / "good.parquet").write_bytes(b"")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1]}), tmp_path / "good.parquet")
    (tmp_path / "bad.parquet").write_text("this is not parquet")
    with pytest.raises(DataError, match=r"bad\.parquet is not a readable Parquet file"):
        read_source("p", ParquetSource(type="parquet", path="*.parquet"), tmp_path)


def test_transform_error_names_sources(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x\n1\n")
    spec = parse_spec_text(
        "data:\n  sources:\n    a: {type: csv, path: a.csv}\n  transform: SELECT y FROM a\n"
    )
    with pytest.raises(DataError, match=r"data.transform failed: .*y"):
        build_examples(spec, tmp_path)


def test_mixed_types_in_a_sqlite_column(tmp_path: Path) -> None:
    import sqlite3

    from loopml.spec.data import SqlSource

    with sqlite3.connect(tmp_path / "m.db") as conn:
        conn.execute("CREATE TABLE t (v)")  # SQLite columns accept any type
        conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), ("three",)])
    with pytest.raises(DataError, match=r"row 3, column `v`: value 'three' is str, but earlier values are int"):
        read_source("m", SqlSource(type="sql", url="sqlite:///m.db", query="SELECT v FROM t"), tmp_path)


@pytest.mark.parametrize("names", [["a", "b"], ["a", "b", "c", "d"]])
def test_declared_columns_must_match_the_fields(tmp_path: Path, names: list[str]) -> None:
    src, p = _csv(tmp_path, "t.tsv", "1\t2\t3\n4\t5\t6\n", delimiter="\\t", header=False, columns=names)
    with pytest.raises(DataError, match=rf"`columns` names {len(names)} column\(s\) .* but {p} has 3 field\(s\)"):
        read_source("t", src, tmp_path)


def test_mixed_types_in_json_lines(tmp_path: Path) -> None:
    # numbers and strings in one field are read as text (validation types it and quarantines odd values);
    # a field mixing numbers with arrays or objects is refused, named with its line
    (tmp_path / "m.jsonl").write_text('{"a": 1, "b": "x"}\n{"a": null, "b": "y"}\n{"a": "two", "b": "z"}\n')
    assert read_source("m", JsonlSource(type="jsonl", path="m.jsonl"), tmp_path).column("a").to_pylist() == [
        "1", None, "two"]
    (tmp_path / "n.jsonl").write_text('{"a": 1, "b": "x"}\n{"a": null, "b": "y"}\n{"a": ["two"], "b": "z"}\n')
    with pytest.raises(DataError) as err:
        read_source("n", JsonlSource(type="jsonl", path="n.jsonl"), tmp_path)
    msg = str(err.value)
    assert 'n.jsonl line 3, column `a`: value ["two"] is a array, but earlier values are numbers' in msg
