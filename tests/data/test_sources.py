"""Source readers on the real datasets and on every supported format, read into Arrow."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loopml.data.sources import READERS, read_source, source_fingerprint
from loopml.errors import DataError
from loopml.spec.data import CsvSource, JsonlSource, ParquetSource, SqlSource


def test_kdd2012_click_csv_with_quoted_header_and_blank_line(datasets: Path) -> None:
    src = CsvSource(type="csv", path=str(datasets / "kdd2012_click_small" / "Click_prediction_small.csv"))
    t = read_source("clicks", src, datasets)
    assert t.num_rows == 39_948
    assert t.column_names[:3] == ["click", "impression", "url_hash"]
    assert pa.types.is_integer(t.schema.field("ad_id").type)
    clicks = pa.compute.sum(t.column("click")).as_py()
    assert clicks == 6_728


def test_movielens_tab_separated_without_header(datasets: Path) -> None:
    src = CsvSource(type="csv", path=str(datasets / "movielens_100k" / "u.data"), delimiter="\\t", header=False,
                    columns=["user_id", "item_id", "rating", "ts"])
    t = read_source("ratings", src, datasets)
    assert t.num_rows == 100_000
    assert t.column_names == ["user_id", "item_id", "rating", "ts"]
    counts = dict(zip(*[c.to_pylist() for c in pa.compute.value_counts(t.column("rating")).flatten()]))
    assert counts == {1: 6110, 2: 11370, 3: 27145, 4: 34174, 5: 21201}


def test_movielens_latin1_item_file(datasets: Path) -> None:
    src = CsvSource(type="csv", path=str(datasets / "movielens_100k" / "u.item"), delimiter="|", header=False,
                    encoding="latin-1", quote="")
    t = read_source("items", src, datasets)
    assert t.num_rows == 1682
    titles = t.column(1).to_pylist()
    assert any("é" in s for s in titles)  # decoded, not mojibake


def test_davidson_quoted_multiline_tweets(datasets: Path) -> None:
    src = CsvSource(type="csv", path=str(datasets / "davidson_hate_speech" / "labeled_data.csv"))
    t = read_source("tweets", src, datasets)
    assert t.num_rows == 24_783
    assert "tweet" in t.column_names and pa.types.is_string(t.schema.field("tweet").type)
    classes = pa.compute.value_counts(t.column("class")).to_pylist()
    assert {d["values"]: d["counts"] for d in classes} == {0: 1430, 1: 19190, 2: 4163}


def test_bike_sharing_dates_parsed(datasets: Path) -> None:
    t = read_source("hours", CsvSource(type="csv", path=str(datasets / "bike_sharing" / "hour.csv")), datasets)
    assert t.num_rows == 17_379
    assert pa.types.is_date(t.schema.field("dteday").type)


def test_german_credit_arff_quotes_stripped_with_single_quote(datasets: Path) -> None:
    src = CsvSource(type="csv", path=str(datasets / "german_credit" / "credit-g.csv"), quote="'")
    t = read_source("credit", src, datasets)
    assert t.num_rows == 1000
    statuses = set(t.column("personal_status").to_pylist())
    assert statuses == {"male single", "female div/dep/mar", "male mar/wid", "male div/sep"}
    assert "<0" in set(t.column("checking_status").to_pylist())


def test_german_credit_default_quote_keeps_arff_quotes(datasets: Path) -> None:
    t = read_source("credit", CsvSource(type="csv", path=str(datasets / "german_credit" / "credit-g.csv")), datasets)
    assert "'male single'" in set(t.column("personal_status").to_pylist())


def test_glob_over_many_files_and_declared_types(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"part-{i}.csv").write_text(f"id,v\n{i},{i * 1.5}\n{i + 10},2\n")
    src = CsvSource(type="csv", path="part-*.csv", types={"id": "VARCHAR"})
    t = read_source("parts", src, tmp_path)
    assert t.num_rows == 6
    assert pa.types.is_string(t.schema.field("id").type)
    assert sorted(t.column("id").to_pylist()) == sorted(["0", "10", "1", "11", "2", "12"])


def test_cp1252_encoding_is_transcoded(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_bytes("name,price\ncafé,5\nnaïve,€\n".encode("cp1252"))
    t = read_source("w", CsvSource(type="csv", path="w.csv", encoding="cp1252"), tmp_path)
    assert t.column("name").to_pylist() == ["café", "naïve"]
    assert t.column("price").to_pylist() == ["5", "€"]


def test_parquet_and_jsonl_globs(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "p1.parquet")
    pq.write_table(pa.table({"a": [3], "b": ["x"]}), tmp_path / "p2.parquet")
    t = read_source("p", ParquetSource(type="parquet", path="p*.parquet"), tmp_path)
    assert t.num_rows == 3 and set(t.column_names) == {"a", "b"}
    (tmp_path / "e1.jsonl").write_text('{"k": 1, "s": "a"}\n{"k": 2, "s": "b"}\n')
    (tmp_path / "e2.jsonl").write_text('{"k": 3, "s": null}\n')
    j = read_source("j", JsonlSource(type="jsonl", path="e*.jsonl"), tmp_path)
    assert j.column("k").to_pylist() == [1, 2, 3]
    assert j.column("s").null_count == 1


def test_sql_sqlite_and_duckdb(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER, name TEXT, score REAL)")
        conn.executemany("INSERT INTO users VALUES (?, ?, ?)", [(1, "ann", 0.5), (2, "bob", None), (3, "cy", 2.0)])
    t = read_source("u", SqlSource(type="sql", url="sqlite:///app.db", query="SELECT * FROM users WHERE id > 1"),
                    tmp_path)
    assert t.column("name").to_pylist() == ["bob", "cy"]
    assert t.column("score").null_count == 1
    ddb = tmp_path / "w.duckdb"
    con = duckdb.connect(str(ddb))
    con.execute("CREATE TABLE ev AS SELECT range AS i, range * 2 AS j FROM range(5)")
    con.close()
    d = read_source("e", SqlSource(type="sql", url="duckdb:///w.duckdb", query="SELECT sum(j) AS s FROM ev"), tmp_path)
    assert d.column("s").to_pylist() == [20]


def test_sql_bad_query_names_source(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    sqlite3.connect(db).close()
    with pytest.raises(DataError, match=r"source `u`: query failed.*no such table"):
        read_source("u", SqlSource(type="sql", url="sqlite:///app.db", query="SELECT * FROM nope"), tmp_path)


@pytest.mark.service
def test_sql_postgresql(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    from tests.services import postgres_server

    with postgres_server() as url:
        eng = create_engine(url)
        with eng.begin() as conn:
            conn.execute(text("CREATE TABLE imp (id int, ad text, ts timestamptz)"))
            conn.execute(text("INSERT INTO imp VALUES (1, 'a', now()), (2, 'b', now()), (3, NULL, now())"))
        eng.dispose()
        plain = url.replace("postgresql+psycopg://", "postgresql://")
        t = read_source("imp", SqlSource(type="sql", url=plain, query="SELECT * FROM imp ORDER BY id"), tmp_path)
        assert t.column("id").to_pylist() == [1, 2, 3]
        assert t.column("ad").null_count == 1
        assert pa.types.is_timestamp(t.schema.field("ts").type)


# -- contract over every registered reader -------------------------------------------------------------

def _sample(kind: str, d: Path) -> object:
    if kind == "csv":
        (d / "s.csv").write_text("a,b\n1,x\n2,y\n")
        return CsvSource(type="csv", path="s.csv")
    if kind == "parquet":
        pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), d / "s.parquet")
        return ParquetSource(type="parquet", path="s.parquet")
    if kind == "jsonl":
        (d / "s.jsonl").write_text('{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n')
        return JsonlSource(type="jsonl", path="s.jsonl")
    db = d / "s.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE s (a INTEGER, b TEXT)")
        conn.executemany("INSERT INTO s VALUES (?, ?)", [(1, "x"), (2, "y")])
    return SqlSource(type="sql", url="sqlite:///s.db", query="SELECT a, b FROM s ORDER BY a")


@pytest.mark.parametrize("kind", sorted(READERS))
def test_reader_contract_reads_arrow_and_fingerprints(kind: str, tmp_path: Path) -> None:
    src = _sample(kind, tmp_path)
    reader = READERS[kind]
    t = reader.read("s", src, tmp_path)
    assert isinstance(t, pa.Table)
    assert t.column("a").to_pylist() == [1, 2] and t.column("b").to_pylist() == ["x", "y"]
    files = reader.files("s", src, tmp_path)
    assert all(f.exists() for f in files)
    fp1 = source_fingerprint("s", src, tmp_path)
    assert fp1 == source_fingerprint("s", src, tmp_path)  # file sources: stable while unchanged
    assert isinstance(reader.supports_incremental, bool)


@pytest.mark.parametrize("kind", sorted(READERS))
def test_reader_contract_missing_file_is_a_data_error(kind: str, tmp_path: Path) -> None:
    src = _sample(kind, tmp_path)
    for f in tmp_path.iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"source `s`.*(not found|no file)"):
        READERS[kind].read("s", src, tmp_path)


def test_csv_null_values(tmp_path: Path) -> None:
    (tmp_path / "n.csv").write_text("a,b\n1,x\n?,y\n3,\nNA,z\n")
    t = read_source("n", CsvSource(type="csv", path="n.csv", null_values=["?", "NA"]), tmp_path)
    assert t.column("a").to_pylist() == [1, None, 3, None]
    assert t.column("b").to_pylist() == ["x", "y", None, "z"]
