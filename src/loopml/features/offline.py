"""The offline feature store: entity feature tables and point-in-time correct joins, in DuckDB.

A feature table holds, per entity and event time, the value of each aggregate over the
trailing window ending at that event, stamped with

- ``event_time``: the time the value describes, and
- ``created_at``: when it could first have been computed, i.e. the latest arrival time
  (``created_timestamp`` of the source, or its event time) of any source row in its window.
  A late backfill of an old event therefore makes every value that includes it "created" late.

An example at time ``t`` sees, per table, the value with the greatest event time among those
whose event time *and* creation time are at or before ``t`` (and, with a TTL, whose event
time is at most ``ttl_seconds`` before ``t``). Values that were recomputed later never leak
into earlier examples; an example falls back to the newest value that existed at its time.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from loopml.errors import DataError, SpecError
from loopml.spec.features import FeatureTable

EVENT = "event_time"
CREATED = "created_at"


def q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


#: DuckDB's working memory per connection, in MB, unless a stage's memory cap asks for less: beyond it, sorts,
#: joins and windows spill to a temporary folder instead of holding (DuckDB's own default is 80% of the
#: machine's memory, far more than a bounded stage may hold).
DUCKDB_MEMORY_MB = 1024


#: DuckDB's working memory per thread in :func:`connect`, in MB
MB_PER_THREAD = 1024


def duckdb_threads(memory_mb: float) -> int:
    """Threads for a DuckDB connection with ``memory_mb`` of working memory (see :func:`connect`).

    >>> duckdb_threads(1024), duckdb_threads(300), duckdb_threads(10**6) == (os.cpu_count() or 1)
    (1, 1, True)
    """
    return max(1, min(os.cpu_count() or 1, int(memory_mb // MB_PER_THREAD)))


def connect(memory_mb: float | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection working in UTC, with at most ``memory_mb`` (default :data:`DUCKDB_MEMORY_MB`) of
    working memory; what does not fit spills to a folder of its own under the system's temporary folder
    (made when needed, removed by DuckDB when the connection closes).

    It runs one thread per :data:`MB_PER_THREAD` of that memory (at least one, at most the cores): the
    windows of the feature tables sort whole entity partitions, and threads sharing too little memory
    thrash, spilling and compressing the same blocks again and again. Measured on the demo's
    ``user_history`` at 10.5M rows (its largest user has 2.5M rows): 1 GB and 2 threads ran over 300 s,
    1 GB and 1 thread 38 s, 2 GB and 2 threads 36 s; at 1M rows 1 or 2 threads make no difference (1.6-1.8 s).
    """
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    limit = max(64, int(memory_mb if memory_mb is not None else DUCKDB_MEMORY_MB))
    con.execute(f"SET memory_limit = '{limit}MB'")
    con.execute(f"SET threads = {duckdb_threads(limit)}")
    spill = Path(tempfile.gettempdir()) / f"loopml-duckdb-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    con.execute("SET temp_directory = " + "'" + str(spill).replace("'", "''") + "'")
    return con


def _arrow(rel: Any) -> pa.Table:
    out = rel.arrow() if hasattr(rel, "arrow") else rel.fetch_arrow_table()
    return out.read_all() if hasattr(out, "read_all") else out


def _ts_expr(con: duckdb.DuckDBPyConnection, view: str, col: str) -> str:
    rows = con.execute(f"SELECT typeof({q(col)}) FROM {view} LIMIT 1").fetchall()
    typ = rows[0][0] if rows else "TIMESTAMP"
    if typ in ("BIGINT", "INTEGER", "DOUBLE", "FLOAT", "HUGEINT", "UBIGINT", "SMALLINT"):
        return f"to_timestamp(CAST({q(col)} AS DOUBLE))::TIMESTAMP"
    if typ.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"CAST({q(col)} AS TIMESTAMP)"  # session time zone is UTC
    return f"CAST({q(col)} AS TIMESTAMP)"


def feature_columns(spec: FeatureTable, table: pa.Table | None = None) -> list[str]:
    """Names of the feature columns a table definition produces."""
    if spec.sql is None:
        return [a.name for a in spec.aggregations]
    if table is None:
        return []
    skip = {*spec.entity, EVENT, CREATED}
    return [c for c in table.column_names if c not in skip]


def _check_columns(name: str, source_cols: list[str], needed: list[str], what: str) -> None:
    missing = [c for c in needed if c not in source_cols]
    if missing:
        raise SpecError(
            f"features.tables.{name}: {what} {', '.join(f'`{c}`' for c in missing)} not in the source "
            f"(columns: {', '.join(source_cols[:30])})"
        )


def compute_feature_table(name: str, spec: FeatureTable, source: pa.Table,
                          con: duckdb.DuckDBPyConnection | None = None, delay_seconds: float | None = None) -> pa.Table:
    """Entity feature table (entity keys, event_time, created_at, features) computed with window SQL.

    ``delay_seconds`` (default: the table's ``delay_seconds``, else 0) is added to each source
    row's event time to get the earliest time it can be known.
    """
    con = con or connect()
    delay = spec.delay_seconds if delay_seconds is None else delay_seconds
    lag = f" + to_microseconds({round((delay or 0.0) * 1e6)})" if delay else ""
    con.register("__src", source)
    cols = source.column_names
    if spec.sql is not None:
        con.execute("CREATE OR REPLACE TEMP VIEW source AS SELECT * FROM __src")
        try:
            out = _arrow(con.sql(spec.sql))
        except duckdb.Error as exc:
            raise SpecError(f"features.tables.{name}.sql failed: {exc}") from None
        _check_columns(name, out.column_names, [*spec.entity, spec.timestamp], "the sql result lacks")
        con.register("__custom", out)
        created: str = spec.timestamp
        if spec.created_timestamp is not None and spec.created_timestamp in out.column_names:
            created = spec.created_timestamp
        feats = [c for c in out.column_names if c not in {*spec.entity, spec.timestamp, created}]
        ev = _ts_expr(con, "__custom", spec.timestamp)
        cr = _ts_expr(con, "__custom", created)
        keys = ", ".join(q(k) for k in spec.entity)
        sql = (f"SELECT {keys}, {ev} AS {EVENT}, greatest({cr}, {ev}{lag}) AS {CREATED}, "
               f"{', '.join(q(f) for f in feats)} FROM __custom WHERE {ev} IS NOT NULL "
               f"AND {' AND '.join(f'{q(k)} IS NOT NULL' for k in spec.entity)}")
        return _arrow(con.sql(sql))
    if not spec.aggregations:
        raise SpecError(f"features.tables.{name}: declare `aggregations` or `sql`")
    needed = [*spec.entity, spec.timestamp, *(a.column for a in spec.aggregations if a.column)]
    if spec.created_timestamp:
        needed.append(spec.created_timestamp)
    _check_columns(name, cols, needed, "columns")
    ev = _ts_expr(con, "__src", spec.timestamp)
    cr = _ts_expr(con, "__src", spec.created_timestamp) if spec.created_timestamp else ev
    part = ", ".join(q(k) for k in spec.entity)
    windows: dict[str, str] = {}
    selects = []
    for a in spec.aggregations:
        if a.function != "count" and a.column is None:
            raise SpecError(f"features.tables.{name}.aggregations.{a.name}: `{a.function}` needs a `column`")
        if a.window_days is None:
            frame = "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
            wname = "w_all"
        else:
            us = round(a.window_days * 86400e6)
            frame = f"RANGE BETWEEN to_microseconds({us}) PRECEDING AND CURRENT ROW"
            wname = f"w_{us}"
        windows[wname] = f"{wname} AS (PARTITION BY {part} ORDER BY __ev {frame})"
        col = q(a.column) if a.column else None
        fn = {
            "count": f"count({col})" if col else "count(*)",
            "sum": f"sum(CAST({col} AS DOUBLE))",
            "mean": f"avg(CAST({col} AS DOUBLE))",
            "min": f"min(CAST({col} AS DOUBLE))",
            "max": f"max(CAST({col} AS DOUBLE))",
            "rate": f"avg(CAST({col} AS DOUBLE))",
        }[a.function]
        selects.append(f"CAST({fn} OVER {wname} AS DOUBLE) AS {q(a.name)}")
    # Without a creation-time column, a row is known at its event time (+ delay): the latest arrival in
    # any window ending at this row is this row's own, so no window is needed for it.
    created = ("greatest(" + ", ".join(f"max(__cr) OVER {w}" for w in windows) + ")"
               if spec.created_timestamp else "__cr")
    key_cols = ", ".join(q(k) for k in spec.entity)
    carried = sorted({a.column for a in spec.aggregations if a.column} - set(spec.entity))
    carry = "".join(f", {q(c)}" for c in carried)
    sql = f"""
        WITH src AS (
            SELECT {key_cols}, {ev} AS __ev, greatest({cr}, {ev}{lag}) AS __cr{carry}
            FROM __src
            WHERE {ev} IS NOT NULL AND {' AND '.join(f'{q(k)} IS NOT NULL' for k in spec.entity)}
        )
        SELECT DISTINCT ON ({key_cols}, {EVENT}) * FROM (
            SELECT {key_cols}, __ev AS {EVENT}, {created} AS {CREATED}, {', '.join(selects)}
            FROM src
            WINDOW {', '.join(windows.values())}
        )
    """
    try:
        return _arrow(con.sql(sql))
    except duckdb.Error as exc:
        raise DataError(f"features.tables.{name}: computing the table failed: {exc}") from None


def _visible(name: str, spec: FeatureTable, feats: list[str], con: duckdb.DuckDBPyConnection) -> str:
    """SQL of the rows of a feature table that can ever be 'the latest known' value, with ``__avail``.

    A row is available at the greater of its event and creation time. For entities with late rows,
    rows are ordered by availability and a row that, when it becomes available, is older by event
    time than one already available is dropped (it can never be the answer). What remains has
    non-decreasing event time in availability order, so an ASOF join on availability returns the
    greatest event time known at ``t``. Entities without late rows keep every row as is.
    """
    t = q("__ft_" + name)
    if not con.execute(f"SELECT count(*) FROM {t} WHERE {CREATED} > {EVENT}").fetchall()[0][0]:
        return f"(SELECT *, {EVENT} AS __avail FROM {t})"
    keys = ", ".join(q(k) for k in spec.entity)
    cols = ", ".join([*(q(k) for k in spec.entity), EVENT, CREATED, *(q(f) for f in feats)])
    return f"""(
        WITH late AS (SELECT DISTINCT {keys} FROM {t} WHERE {CREATED} > {EVENT}),
        late_rows AS (SELECT {cols}, greatest({EVENT}, {CREATED}) AS __avail FROM {t} SEMI JOIN late USING ({keys})),
        pruned AS (
            SELECT {cols}, __avail FROM (
                SELECT *, max({EVENT}) OVER (PARTITION BY {keys} ORDER BY __avail, {EVENT}
                                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS __best
                FROM late_rows
            )
            WHERE {EVENT} >= __best
            QUALIFY row_number() OVER (PARTITION BY {keys}, __avail ORDER BY {EVENT} DESC) = 1
        )
        SELECT {cols}, {EVENT} AS __avail FROM {t} ANTI JOIN late USING ({keys})
        UNION ALL
        SELECT * FROM pruned
    )"""


def _register_with_key_types(con: duckdb.DuckDBPyConnection, name: str, ft: pa.Table, spec: FeatureTable,
                             examples: pa.Table) -> None:
    """Register a feature table as ``__ft_<name>``, its entity keys cast to the examples' key types.

    A table computed from another source may hold ``user_id`` as text while the examples hold it
    as an integer (or the reverse); the join must still match them.
    """
    con.register(f"__ftraw_{name}", ft)
    casts = []
    for k in spec.entity:
        want, have = examples.schema.field(k).type, ft.schema.field(k).type
        if want != have:
            sql_type = {pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.string(): "VARCHAR",
                        pa.large_string(): "VARCHAR", pa.float64(): "DOUBLE"}.get(want)
            if sql_type is None:
                raise DataError(f"features.tables.{name}: entity key `{k}` is {have} in the table but {want} in "
                                "the examples; cast one of them")
            casts.append(f"TRY_CAST({q(k)} AS {sql_type}) AS {q(k)}")
    replace = f" REPLACE ({', '.join(casts)})" if casts else ""
    con.execute(f"CREATE OR REPLACE TEMP VIEW {q('__ft_' + name)} AS SELECT *{replace} FROM {q('__ftraw_' + name)}")


def point_in_time_join(examples: pa.Table, timestamp: str, tables: Mapping[str, tuple[FeatureTable, pa.Table]],
                       con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """Examples with, per table, the feature values known at each example's time (rows keep their order).

    The examples' own columns are passed through as they are (same Arrow types); the feature columns follow.
    """
    con = con or connect()
    schema, parts = _joined_parts(examples, timestamp, tables, con, 1 << 20)
    return pa.Table.from_batches([b for part in parts for b in part.to_batches()], schema=schema)


def write_point_in_time_join(path: str | Path, examples: pa.Table, timestamp: str,
                             tables: Mapping[str, tuple[FeatureTable, pa.Table]],
                             con: duckdb.DuckDBPyConnection | None = None, batch_rows: int = 65_536) -> pa.Schema:
    """:func:`point_in_time_join` written to a Parquet file (zstd) as DuckDB streams it, in record batches of
    ``batch_rows``: the joined table is never held whole. Returns its schema."""
    con = con or connect()
    schema, parts = _joined_parts(examples, timestamp, tables, con, batch_rows)
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        for part in parts:
            writer.write_table(part)
    return schema


def _joined_parts(examples: pa.Table, timestamp: str, tables: Mapping[str, tuple[FeatureTable, pa.Table]],
                  con: duckdb.DuckDBPyConnection, batch_rows: int) -> tuple[pa.Schema, Iterator[pa.Table]]:
    """The joined schema, and the joined rows in order as tables of about ``batch_rows`` rows.

    DuckDB joins only what the join needs (each example's row number, time and entity keys) and returns
    the feature values in example order; each batch is set beside the matching slice of the examples,
    which are never copied into DuckDB nor sorted there.
    """
    sql = _point_in_time_sql(con, examples, timestamp, tables)
    try:
        rel = con.sql(sql)
        reader = rel.to_arrow_reader(batch_rows) if hasattr(rel, "to_arrow_reader") else rel.fetch_record_batch(batch_rows)
    except duckdb.Error as exc:
        con.execute("DROP TABLE IF EXISTS __ex")
        raise DataError(f"point-in-time join failed: {exc}") from None
    schema = pa.schema([*examples.schema, *list(reader.schema)[1:]])

    def parts() -> Iterator[pa.Table]:
        offset = 0
        try:
            for batch in reader:
                n = batch.num_rows
                rows = batch.column(0)
                if n and (rows[0].as_py() != offset + 1 or rows[n - 1].as_py() != offset + n):
                    raise DataError(f"point-in-time join: rows {offset + 1}-{offset + n} came back out of order "
                                    f"(got {rows[0].as_py()}-{rows[n - 1].as_py()})")
                part = examples.slice(offset, n)
                cols = [*part.columns, *(pa.chunked_array([c]) for c in batch.columns[1:])]
                yield pa.Table.from_arrays(cols, schema=schema)
                offset += n
        except duckdb.Error as exc:
            raise DataError(f"point-in-time join failed: {exc}") from None
        finally:
            con.execute("DROP TABLE IF EXISTS __ex")  # the examples' keys and times inside DuckDB
        if offset != examples.num_rows:
            raise DataError(f"point-in-time join returned {offset:,} rows for {examples.num_rows:,} examples")

    return schema, parts()


def _point_in_time_sql(con: duckdb.DuckDBPyConnection, examples: pa.Table, timestamp: str,
                       tables: Mapping[str, tuple[FeatureTable, pa.Table]]) -> str:
    """Register the examples' keys and times and the tables on ``con``; the SQL of the point-in-time join.

    Its result is ``__row`` (1-based example row) and the feature columns, ordered by ``__row``.
    """
    if timestamp not in examples.column_names:
        raise SpecError(f"task.timestamp `{timestamp}` is not a column of the examples "
                        f"(columns: {', '.join(examples.column_names[:30])})")
    taken = set(examples.column_names)
    keys: list[str] = []
    for name, (spec, ft) in tables.items():
        missing = [k for k in spec.entity if k not in examples.column_names]
        if missing:
            raise SpecError(f"features.tables.{name}: entity key(s) {', '.join(missing)} are not columns of the "
                            "examples, so they cannot be joined")
        clash = [f for f in feature_columns(spec, ft) if f in taken]
        if clash:
            raise SpecError(f"features.tables.{name}: feature name(s) {', '.join(clash)} already exist in the "
                            "examples or another table; rename them")
        taken |= set(feature_columns(spec, ft))
        keys += [k for k in spec.entity if k not in keys]
    needed = [c for c in examples.column_names if c in keys or c == timestamp]
    con.register("__ex_raw", examples.select(needed))
    ex_ts = _ts_expr(con, "__ex_raw", timestamp)
    carried = "".join(f"{q(k)}, " for k in keys)
    con.execute(f"CREATE OR REPLACE TEMP TABLE __ex AS SELECT {carried}{ex_ts} AS __t, row_number() OVER () AS __row "
                "FROM __ex_raw")
    con.unregister("__ex_raw")
    select = ["e.__row"]
    joins = []
    for i, (name, (spec, ft)) in enumerate(tables.items()):
        feats = feature_columns(spec, ft)
        _register_with_key_types(con, name, ft, spec, examples)
        alias = f"f{i}"
        on = " AND ".join(f"e.{q(k)} = {alias}.{q(k)}" for k in spec.entity)
        same_time = spec.include_same_time if spec.include_same_time is not None else spec.source is not None
        op = ">=" if same_time else ">"
        joins.append(f"ASOF LEFT JOIN {_visible(name, spec, feats, con)} {alias} ON {on} AND e.__t {op} {alias}.__avail")
        for f in feats:
            if spec.ttl_seconds is None:
                select.append(f"{alias}.{q(f)} AS {q(f)}")
            else:
                ttl_us = round(spec.ttl_seconds * 1e6)
                select.append(f"CASE WHEN e.__t - {alias}.{EVENT} <= to_microseconds({ttl_us}) "
                              f"THEN {alias}.{q(f)} END AS {q(f)}")
    return f"SELECT {', '.join(select)} FROM __ex e {' '.join(joins)} ORDER BY e.__row"


def latest_values(name: str, spec: FeatureTable, ft: pa.Table, as_of: Any | None = None,
                  con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """Per entity, the row with the greatest event time available at ``as_of`` (all rows when None)."""
    con = con or connect()
    con.register(f"__lv_{name}", ft)
    part = ", ".join(q(k) for k in spec.entity)
    where = ""
    if as_of is not None:
        con.execute("SET VARIABLE __as_of = CAST(? AS TIMESTAMP)", [as_of])
        where = f"WHERE greatest({EVENT}, {CREATED}) <= getvariable('__as_of')"
    sql = (f"SELECT * FROM {q('__lv_' + name)} {where} "
           f"QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY {EVENT} DESC, {CREATED} DESC) = 1")
    return _arrow(con.sql(sql))
