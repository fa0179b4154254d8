"""Natural labels declared in the spec (no user code) and hand labels joined from a file.

Rules compile to DuckDB SQL over the example table, so millions of impressions take seconds.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from loopml.errors import DataError
from loopml.spec.data import ClickWithinWindow, HandLabels, LabelRule, ThresholdLabel


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def columns_of(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    """Column name -> DuckDB type of a table or view."""
    return {r[0]: str(r[1]) for r in con.sql(f"DESCRIBE {relation}").fetchall()}


def require_columns(con: duckdb.DuckDBPyConnection, relation: str, needed: list[str], what: str) -> dict[str, str]:
    """Raise a DataError naming the missing columns (and those available) if any is absent."""
    cols = columns_of(con, relation)
    missing = [c for c in needed if c not in cols]
    if missing:
        raise DataError(
            f"{what}: column(s) {', '.join(f'`{m}`' for m in missing)} not found in `{relation}` "
            f"(columns: {', '.join(cols)})"
        )
    return cols


def _epoch(expr: str, dtype: str) -> str:
    """Seconds since the epoch of a timestamp, date or numeric column."""
    t = dtype.upper()
    if t.startswith("TIMESTAMP") or t == "DATE":
        return f"epoch({expr})"
    if any(t.startswith(k) for k in ("BIGINT", "INTEGER", "DOUBLE", "FLOAT", "DECIMAL", "SMALLINT", "HUGEINT", "UBIGINT")):
        return f"CAST({expr} AS DOUBLE)"
    return f"epoch(CAST({expr} AS TIMESTAMP))"


def apply_label_rule(con: duckdb.DuckDBPyConnection, base: str, rule: LabelRule) -> str:
    """Create view ``labelled`` = ``base`` plus the label column; returns its name."""
    if isinstance(rule, ThresholdLabel):
        cols = require_columns(con, base, [rule.column], f"label rule `threshold` on `{rule.column}`")
        c = ident(rule.column)
        op = "=" if rule.op == "==" else rule.op
        keep = f"* EXCLUDE ({ident(rule.label)})" if rule.label in cols else "*"
        con.sql(
            f"CREATE OR REPLACE TEMP VIEW labelled AS SELECT {keep}, "
            f"CASE WHEN {c} IS NULL THEN NULL ELSE CAST({c} {op} {rule.value!r} AS INTEGER) END "
            f"AS {ident(rule.label)} FROM {base}"
        )
        return "labelled"
    return _window_label(con, base, rule)


def _window_label(con: duckdb.DuckDBPyConnection, base: str, rule: ClickWithinWindow) -> str:
    what = f"label rule `event_within_window` ({rule.impressions} → {rule.events})"
    icols = require_columns(con, base, [*rule.keys, rule.impression_time], what)
    ecols = require_columns(con, ident(rule.events), [*rule.keys, rule.event_time], what)
    it = _epoch(f"i.{ident(rule.impression_time)}", icols[rule.impression_time])
    et = _epoch(f"e.{ident(rule.event_time)}", ecols[rule.event_time])
    on = " AND ".join(f"e.{ident(k)} = i.{ident(k)}" for k in rule.keys)
    exclude = f" EXCLUDE ({ident(rule.label)})" if rule.label in icols else ""
    con.sql(
        f"CREATE OR REPLACE TEMP VIEW labelled AS SELECT i.*{exclude}, "
        f"CAST(EXISTS (SELECT 1 FROM {ident(rule.events)} e WHERE {on} AND {et} >= {it} "
        f"AND {et} <= {it} + {float(rule.window_seconds)!r}) AS INTEGER) AS {ident(rule.label)} "
        f"FROM {base} i"
    )
    return "labelled"


def join_hand_labels(con: duckdb.DuckDBPyConnection, base: str, hand: HandLabels, project_dir: Path) -> str:
    """Create view ``hand_labelled``: hand labels joined by key; they override a natural label where present."""
    from loopml.data.sources import _q

    path = Path(hand.path) if Path(hand.path).is_absolute() else project_dir / hand.path
    if not path.is_file():
        raise DataError(f"hand labels: file {path} not found")
    fn = "read_parquet" if path.suffix.lower() in (".parquet", ".pq") else "read_csv_auto"
    try:
        con.sql(f"CREATE OR REPLACE TEMP VIEW hand_raw AS SELECT * FROM {fn}({_q(str(path))})")
        require_columns(con, "hand_raw", [*hand.keys, hand.label], f"hand labels {path}")
    except duckdb.Error as exc:
        raise DataError(f"hand labels: cannot read {path}: {str(exc).splitlines()[0]}") from None
    require_columns(con, base, hand.keys, f"hand labels {path}")
    found = con.execute(
        f"SELECT {', '.join(ident(k) for k in hand.keys)}, count(*) n FROM hand_raw GROUP BY ALL HAVING n > 1 LIMIT 1"
    ).fetchall()
    dups = found[0] if found else None
    if dups is not None:
        raise DataError(
            f"hand labels {path}: key {dict(zip(hand.keys, dups[:-1]))} appears {dups[-1]} times; "
            "each example may have one hand label"
        )
    keys = ", ".join(ident(k) for k in hand.keys)
    lab = ident(hand.label)
    if hand.label in columns_of(con, base):
        sel = f"SELECT b.* REPLACE (COALESCE(h.{lab}, b.{lab}) AS {lab})"
    else:
        sel = f"SELECT b.*, h.{lab} AS {lab}"
    con.sql(
        f"CREATE OR REPLACE TEMP VIEW hand_labelled AS {sel} FROM {base} b "
        f"LEFT JOIN (SELECT {keys}, {lab} FROM hand_raw) h USING ({keys})"
    )
    return "hand_labelled"


__all__ = ["apply_label_rule", "columns_of", "ident", "join_hand_labels", "require_columns"]
