"""Importing the real KDD Cup 2012 (track 2) click log as the event logs the simulator writes.

The published sample (``kdd2012_click_small``, OpenML 1220) is one row per ad shown to a user
for a query: ``click``, ``impression`` (how many sessions the row aggregates), ``ad_id``,
``advertiser_id``, ``depth``, ``position``, ``query_id``, ``keyword_id``, ``title_id``,
``description_id``, ``url_hash`` and ``user_id`` (0 = unidentified). It has no timestamps, no
separate click log, no device and no match type. :func:`read_kdd_log` checks such a file (CSV as
shipped, TSV or Parquet with the same columns, or the competition's headerless ``training.txt``;
it is read into memory, so cap a large one with ``rows``) and :func:`event_days` turns it into the SAME
shape :class:`~loopml.simulator.TrafficSimulator` produces, so the ``ad_clicks`` template spec
(natural label = a click within 600 s) runs on it unchanged:

* **impressions** ``impression_id, ts, user_id, ad_id, advertiser_id, query_id, keyword_id,
  depth, position, device, match_type`` (:data:`~loopml.simulator.IMPRESSION_SCHEMA`) plus
  ``impression``, the row's session count, kept as an extra column (the template does not use
  it; its values stay inside the inferred range, so it quarantines nothing);
* **clicks** ``impression_id, click_ts`` (:data:`~loopml.simulator.CLICK_SCHEMA`).

Decisions, because the file cannot tell (they are recorded in ``import.json`` beside the logs
and in the design document):

* ``impression_id`` is the row's 1-based position among the file's data rows, so every
  quarantine reason points back to a row of the source file.
* **No timestamps.** The rows are spread over ``days`` consecutive days (from
  :attr:`SimulatorConfig.start_date <loopml.simulator.SimulatorConfig>`) in file order: day
  ``d`` holds an equal share of consecutive rows, evenly spaced over the 24 hours with a seeded
  jitter (deterministic). The file's order carries no time (its click rate, anonymous share and
  page depth are flat along it), so **a time split of the imported log is in effect a random
  split**, the hour and weekday features carry no signal, and the "days" are slices, not days.
* **No device, no match type.** Both are filled with ``"unknown"`` (:data:`UNKNOWN`), a plain
  category: the template's one-hot puts it in its own column and the ordinal match type maps
  it to the unknown code 0; validation infers a one-value domain that later days keep.
* **Clicks.** A row with ``click >= 1`` (the file has 0/1; the original log has counts) becomes
  one click event ``click_delay`` seconds after the impression: log-normal with a median of
  25 s, clipped to ``[1, max_click_delay_s]`` (540 s by default, inside the template's 600 s
  window), so the natural label equals the file's label row for row (16.8% positives).
* The non-clicks of the sample were down-sampled about 5:1 by its publisher: its click rate is
  not Tencent's, and a model's probabilities are calibrated to the sample, not to live traffic.

>>> import pyarrow as pa
>>> t = pa.table({"click": [0, 1, 0, 1], "impression": [1, 2, 1, 1], "ad_id": [7, 7, 8, 9],
...               "advertiser_id": [1, 1, 2, 2], "depth": [2, 2, 1, 3], "position": [1, 2, 1, 3],
...               "query_id": [5, 6, 5, 6], "keyword_id": [3, 3, 4, 4], "user_id": [0, 11, 12, 11]})
>>> log = read_kdd_log(t)
>>> days = event_days(log, days=2)
>>> [d.impressions.num_rows for d in days], [d.clicks.num_rows for d in days]
([2, 2], [1, 1])
>>> days[0].impressions.column("device").to_pylist()
['unknown', 'unknown']
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from loopml.errors import DataError
from loopml.simulator.config import SimulatorConfig
from loopml.simulator.drift import DayConditions
from loopml.simulator.logs import LogFormat, write_day
from loopml.simulator.traffic import CLICK_SCHEMA, IMPRESSION_SCHEMA, TRUTH_SCHEMA, DayLog

#: The columns an importable click log must have (any order; other columns are ignored).
REQUIRED_COLUMNS = ("click", "ad_id", "advertiser_id", "depth", "position", "query_id", "keyword_id", "user_id")
#: Column order of the original ``training.txt`` of KDD Cup 2012 track 2 (tab-separated, no header line).
ORIGINAL_COLUMNS = ("click", "impression", "url_hash", "ad_id", "advertiser_id", "depth", "position",
                    "query_id", "keyword_id", "title_id", "description_id", "user_id")
#: Kept when present: the number of sessions the row aggregates (>= 1, and >= click).
COUNT_COLUMN = "impression"
#: The value of the columns the log lacks (``device``, ``match_type``).
UNKNOWN = "unknown"
#: Name of the manifest written beside the imported logs.
MANIFEST = "import.json"

IMPORTED_SCHEMA = IMPRESSION_SCHEMA.append(pa.field(COUNT_COLUMN, pa.int64()))
CLICK_DELAY_MEDIAN_S = 25.0
CLICK_DELAY_SIGMA = 1.0
_DAY_US = 86_400_000_000


@dataclass
class KDDLog:
    """A checked KDD click log: one int64 column per field, in file order.

    Attributes
    ----------
    source
        The file read (or ``"<table>"`` for an in-memory table).
    table
        ``click``, ``ad_id``, ``advertiser_id``, ``depth``, ``position``, ``query_id``,
        ``keyword_id``, ``user_id`` and ``impression`` (1 when the file has no such column), int64.
    capped
        Whether a row cap stopped the read before the end of the file.
    sha256
        Digest of the file (``None`` for a table).
    """

    source: str
    table: pa.Table
    capped: bool = False
    sha256: str | None = None

    @property
    def rows(self) -> int:
        """Number of rows read."""
        return int(self.table.num_rows)

    @property
    def ctr(self) -> float:
        """Share of rows with a click."""
        return float(pc.mean(pc.greater_equal(self.table.column("click"), 1).cast(pa.float64())).as_py() or 0.0)


@dataclass
class ImportResult:
    """What :func:`import_kdd` wrote."""

    log: KDDLog
    days: list[DayLog]
    out: Path
    written: list[dict[str, Any]] = field(default_factory=list)
    manifest: Path | None = None


# -- reading ---------------------------------------------------------------------------------
def read_kdd_log(source: str | Path | pa.Table, *, rows: int | None = None) -> KDDLog:
    """Read and check a KDD click log.

    Parameters
    ----------
    source
        A CSV (as shipped: quoted header, blank lines ignored; ``.gz`` works), a TSV (tab
        separated, detected from the header line), the original headerless ``training.txt`` of
        the competition (:data:`ORIGINAL_COLUMNS`; clicks are counts there) or a Parquet file;
        or a ``pyarrow.Table``.
    rows
        Read at most this many data rows (from the top of the file).

    Raises
    ------
    DataError
        The file is missing or unreadable, lacks a column, or holds a value that is not a
        non-negative integer (ids, counts), a click count below 0 or above the row's
        ``impression`` count, a depth below 1 or a position outside ``1..depth``. The message
        names the file, the column, the row (and the line, for text files), the value, what was
        expected and how many rows are affected.
    """
    if rows is not None and rows < 1:
        raise DataError(f"the row cap must be at least 1, got {rows}")
    text_file, header_lines = None, 1
    if isinstance(source, pa.Table):
        name, digest = "<table>", None
        table, capped = (source.slice(0, rows) if rows is not None else source), rows is not None and source.num_rows > rows
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(
                f"{path}: click log not found",
                hint="pass the path of Click_prediction_small.csv (or a TSV/Parquet of the same columns)",
            )
        name, digest = str(path), _sha256(path)
        if _is_parquet(path):
            table, capped = _read_parquet(path, rows)
        else:
            table, capped, has_header = _read_text(path, rows)
            text_file, header_lines = path, int(has_header)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(
            f"{name}: the click log lacks the column(s) {', '.join(f'`{c}`' for c in missing)}; "
            f"found {', '.join(f'`{c}`' for c in table.column_names) or 'no columns'}",
            hint=f"a KDD Cup 2012 click log needs {', '.join(REQUIRED_COLUMNS)}",
        )
    where = _Locator(name, text_file, header_lines=header_lines)
    cols = {c: _as_int64(table.column(c), c, where) for c in REQUIRED_COLUMNS}
    if COUNT_COLUMN in table.column_names:
        cols[COUNT_COLUMN] = _as_int64(table.column(COUNT_COLUMN), COUNT_COLUMN, where)
    else:
        cols[COUNT_COLUMN] = np.ones(table.num_rows, dtype=np.int64)
    _check_ranges(cols, where, has_count=COUNT_COLUMN in table.column_names)
    out = pa.table({c: pa.array(v, type=pa.int64()) for c, v in cols.items()})
    return KDDLog(source=name, table=out, capped=capped, sha256=digest)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    with open(path, "rb") as f:
        return f.read(4) == b"PAR1"


def _read_parquet(path: Path, rows: int | None) -> tuple[pa.Table, bool]:
    try:
        pf = pq.ParquetFile(path)
        if rows is None:
            return pf.read(), False
        batches, n = [], 0
        for batch in pf.iter_batches(batch_size=min(rows, 65_536)):
            batches.append(batch)
            n += batch.num_rows
            if n >= rows:
                break
        table = pa.Table.from_batches(batches, schema=pf.schema_arrow).slice(0, rows)
        return table, n >= rows and pf.metadata.num_rows > rows
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from e


def _open_text(path: Path) -> Any:
    return gzip.open(path, "rt", encoding="utf-8", errors="replace") if path.suffix.lower() == ".gz" else open(
        path, encoding="utf-8", errors="replace"
    )


def _header(path: Path) -> tuple[str, list[str], bool]:
    """The delimiter, the column names and whether the file has a header line.

    Tab when the first line has a tab and no comma, else comma. A first line of numbers only is
    data: the file is then read as the original ``training.txt`` of KDD Cup 2012 track 2, whose 12
    columns have no header (:data:`ORIGINAL_COLUMNS`).
    """
    import csv
    import re

    with _open_text(path) as f:
        for line in f:
            if line.strip():
                delim = "\t" if ("\t" in line and "," not in line) else ","
                fields = [c.strip() for c in next(csv.reader([line], delimiter=delim))]
                if not all(re.fullmatch(r"[-+]?[0-9][0-9.eE+-]*", c) for c in fields):
                    return delim, fields, True
                if len(fields) != len(ORIGINAL_COLUMNS):
                    raise DataError(
                        f"{path}: line 1 holds {len(fields)} numbers and no column names; expected a header line, "
                        f"or the {len(ORIGINAL_COLUMNS)} columns of the original KDD Cup 2012 training.txt "
                        f"({', '.join(ORIGINAL_COLUMNS)})"
                    )
                return delim, list(ORIGINAL_COLUMNS), False
    raise DataError(f"{path}: the click log is empty (no header line)")


def _read_text(path: Path, rows: int | None) -> tuple[pa.Table, bool, bool]:
    delim, names, has_header = _header(path)
    kind = "TSV" if delim == "\t" else "CSV"
    # every column as text: the checks name a bad value instead of pyarrow guessing a type
    convert = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False)
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=None if has_header else names),
            parse_options=pacsv.ParseOptions(delimiter=delim),
            convert_options=convert,
        )
        batches, n, capped = [], 0, False
        for batch in reader:
            batches.append(batch)
            n += batch.num_rows
            if rows is not None and n >= rows:
                capped = n > rows or _has_more(reader)
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except pa.ArrowInvalid as e:
        raise DataError(f"{path}: not a readable {kind} file ({e})") from e
    if rows is not None:
        table = table.slice(0, rows)
    return table, capped, has_header


def _has_more(reader: Any) -> bool:
    try:
        return bool(reader.read_next_batch().num_rows)
    except StopIteration:
        return False


class _Locator:
    """Turns a 0-based data row into 'row R (line L)' for messages; lines only when asked."""

    def __init__(self, name: str, text_file: Path | None, header_lines: int = 1) -> None:
        self.name, self.text_file, self.header_lines = name, text_file, header_lines

    def __call__(self, index: int) -> str:
        row = f"row {index + 1:,}"
        if self.text_file is None:
            return row
        # pyarrow skips blank lines: the data row is the (index + 1 + header)-th non-blank line
        seen = 0
        with _open_text(self.text_file) as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    seen += 1
                    if seen == index + 1 + self.header_lines:
                        return f"{row} (line {lineno:,})"
        return row


def _as_int64(col: pa.ChunkedArray, name: str, where: _Locator) -> np.ndarray:
    """A column as non-negative int64, or a DataError naming the first bad value."""
    t = col.type
    if pa.types.is_integer(t):
        nulls = col.null_count
        if nulls:
            _fail(where, name, col, pc.is_null(col), "an empty value", "a non-negative integer")
        arr = col.to_numpy().astype(np.int64)
    elif pa.types.is_floating(t):
        vals = col.to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(vals) | (vals != np.floor(vals))
        if bad.any():
            _fail(where, name, col, pa.array(bad), "", "a whole number")
        arr = vals.astype(np.int64)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        text = pc.utf8_trim_whitespace(col)
        ok = pc.match_substring_regex(text, r"^\+?[0-9]{1,18}$")
        bad = pc.invert(pc.fill_null(ok, False))
        if pc.any(bad).as_py():
            _fail(where, name, col, bad, "", "a non-negative integer (an id or a count)")
        arr = pc.cast(text, pa.int64()).to_numpy()
    else:
        raise DataError(f"{where.name}: column `{name}` has type {t}, expected integers (ids and counts)")
    return np.asarray(arr, dtype=np.int64)


def _fail(where: _Locator, name: str, col: pa.ChunkedArray | np.ndarray, bad: Any, what: str, expected: str) -> None:
    mask = np.asarray(bad.to_numpy(zero_copy_only=False) if hasattr(bad, "to_numpy") else bad, dtype=bool)
    idx = np.flatnonzero(mask)
    first = int(idx[0])
    value = col[first].as_py() if isinstance(col, (pa.ChunkedArray, pa.Array)) else col[first].item()
    shown = what or repr(value)
    raise DataError(
        f"{where.name}: column `{name}`, {where(first)}: {shown} is not {expected}; {idx.size:,} row(s) like it"
    )


def _check_ranges(cols: dict[str, np.ndarray], where: _Locator, *, has_count: bool) -> None:
    click, depth, pos = cols["click"], cols["depth"], cols["position"]
    for name in REQUIRED_COLUMNS:
        neg = cols[name] < 0
        if neg.any():
            _fail(where, name, cols[name], neg, "", "a non-negative integer")
    if has_count:
        count = cols[COUNT_COLUMN]
        if (count < 1).any():
            _fail(where, COUNT_COLUMN, count, count < 1, "", "a session count of at least 1")
        over = click > count
        if over.any():
            i = int(np.flatnonzero(over)[0])
            raise DataError(
                f"{where.name}: column `click`, {where(i)}: {int(click[i])} clicks is more than the row's "
                f"`impression` count {int(count[i])}; {int(over.sum()):,} row(s) like it"
            )
    if (depth < 1).any():
        _fail(where, "depth", depth, depth < 1, "", "a page depth of at least 1 (ads on the page)")
    off = (pos < 1) | (pos > depth)
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise DataError(
            f"{where.name}: column `position`, {where(i)}: {int(pos[i])} is not a slot of a page of depth "
            f"{int(depth[i])} (expected 1..{int(depth[i])}); {int(off.sum()):,} row(s) like it"
        )


# -- event logs ------------------------------------------------------------------------------
def event_days(
    log: KDDLog,
    days: int,
    *,
    start_date: dt.date | None = None,
    seed: int = 0,
    max_click_delay_s: float = 540.0,
) -> list[DayLog]:
    """Spread the log over ``days`` days in file order, as impression and click event logs.

    Parameters
    ----------
    days
        Number of consecutive days; day ``d`` gets rows ``[d*n/days, (d+1)*n/days)``.
    start_date
        Date of day 0 (default: the simulator's ``start_date``).
    seed
        Seed of the jitter inside a day and of the click delays.
    max_click_delay_s
        Upper bound of a click's delay after its impression; keep it below the spec's label
        window so that the natural label equals the file's click label.

    Returns
    -------
    list of DayLog
        One per day, with ``conditions.kind == "none"`` (real data, no synthetic drift) and a
        ``truth`` table of the observed clicks (``p_click`` is unknown: null).
    """
    n = log.rows
    if days < 1:
        raise DataError(f"days must be at least 1, got {days}")
    if n < days:
        raise DataError(f"{log.source}: {n} row(s) cannot be spread over {days} days (at least one row per day)")
    if not max_click_delay_s >= 1.0:  # also refuses NaN
        raise DataError(f"max_click_delay_s must be at least 1 second, got {max_click_delay_s}")
    start = start_date or SimulatorConfig.model_fields["start_date"].default
    bounds = (np.arange(days + 1, dtype=np.int64) * n) // days
    t = log.table
    out = []
    for d in range(days):
        lo, hi = int(bounds[d]), int(bounds[d + 1])
        out.append(_day(t.slice(lo, hi - lo), lo, d, start + dt.timedelta(days=d), seed, max_click_delay_s, log.source))
    return out


def _day(part: pa.Table, first_row: int, index: int, date: dt.date, seed: int, max_delay: float, source: str) -> DayLog:
    m = part.num_rows
    rng = np.random.default_rng([seed, index, 20_120_000])
    day0_us = int(dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC).timestamp() * 1_000_000)
    # evenly spaced slots over the day, each row at a seeded point inside its own slot: file order kept
    ts = day0_us + ((np.arange(m) + rng.random(m)) * (_DAY_US / m)).astype(np.int64)
    ids = np.arange(first_row + 1, first_row + m + 1, dtype=np.int64)
    unknown = pa.array([UNKNOWN] * m, type=pa.string())
    col = part.column
    impressions = pa.table(
        {
            "impression_id": ids,
            "ts": pa.array(ts, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "user_id": col("user_id"),
            "ad_id": col("ad_id"),
            "advertiser_id": col("advertiser_id"),
            "query_id": col("query_id"),
            "keyword_id": col("keyword_id"),
            "depth": col("depth"),
            "position": col("position"),
            "device": unknown,
            "match_type": unknown,
            COUNT_COLUMN: col(COUNT_COLUMN),
        },
        schema=IMPORTED_SCHEMA,
    )
    clicked = col("click").to_numpy() >= 1
    k = int(clicked.sum())
    delay_s = np.clip(np.exp(np.log(CLICK_DELAY_MEDIAN_S) + CLICK_DELAY_SIGMA * rng.standard_normal(k)), 1.0, max_delay)
    clicks = pa.table(
        {
            "impression_id": ids[clicked],
            "click_ts": pa.array(ts[clicked] + (delay_s * 1_000_000).astype(np.int64), type=pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
        },
        schema=CLICK_SCHEMA,
    )
    truth = pa.table(
        {"impression_id": ids, "p_click": pa.nulls(m, pa.float64()), "clicked": clicked.astype(np.int8)},
        schema=TRUTH_SCHEMA,
    )
    stats = {
        "day_index": index,
        "date": date.isoformat(),
        "drift": "none",
        "impressions": m,
        "clicks": k,
        "ctr": round(k / m, 5) if m else 0.0,
        "first_row": first_row + 1,
        "last_row": first_row + m,
        "anonymous_share": round(float(np.mean(col("user_id").to_numpy() == 0)), 5) if m else 0.0,
    }
    cond = DayConditions(kind="none", notes=[f"rows {first_row + 1:,}-{first_row + m:,} of {source}"])
    return DayLog(index, date, cond, impressions, clicks, truth, stats)


# -- writing ---------------------------------------------------------------------------------
def decisions(days: int, max_click_delay_s: float) -> list[str]:
    """The import's assumptions in plain words (written to ``import.json``; the design document quotes them)."""
    return [
        f"No timestamps in the log: its rows were spread over {days} consecutive days in file order, evenly "
        "over each day with a seeded jitter. The file's order carries no time, so the spec's time split "
        "is in effect a random split, and the hour and weekday features carry no signal.",
        f"No device and no match type in the log: both are the category `{UNKNOWN}`.",
        f"A row with click >= 1 became one click event 1-{max_click_delay_s:.0f} s after its impression "
        "(inside the 600 s label window), so the natural label equals the file's click label.",
        "impression_id is the row's 1-based position among the file's data rows; the row's session count is "
        f"kept as `{COUNT_COLUMN}` (not a model input of the template).",
        "The publisher down-sampled the non-clicks about 5:1: the click rate is the sample's, not live traffic's.",
    ]


def write_manifest(
    out: Path,
    log: KDDLog,
    days: list[DayLog],
    *,
    max_click_delay_s: float,
    held_out: int = 0,
    notes: list[str] | None = None,
) -> Path:
    """Write ``OUT/import.json``: the source file (path, sha256, rows), the decisions and every day's figures."""
    doc = {
        "kind": "kdd2012_click_log",
        "source": {"path": log.source, "sha256": log.sha256, "rows_read": log.rows, "capped": log.capped,
                   "ctr": round(log.ctr, 5)},
        "days_total": len(days),
        "held_out_days": held_out,
        "decisions": [*decisions(len(days), max_click_delay_s), *(notes or [])],
        "days": [{**d.stats, "held_out": i >= len(days) - held_out} for i, d in enumerate(days)],
    }
    path = out / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)
    return path


def import_kdd(
    source: str | Path,
    out: str | Path,
    *,
    days: int = 7,
    rows: int | None = None,
    hold_out: int = 0,
    seed: int = 0,
    max_click_delay_s: float = 540.0,
    fmt: LogFormat = "parquet",
    on_day: Callable[[DayLog], None] | None = None,
) -> ImportResult:
    """Read a KDD click log and write it as ``OUT/impressions/DATE.*`` and ``OUT/clicks/DATE.*``.

    Parameters
    ----------
    days
        Days the rows are spread over (see :func:`event_days`).
    rows
        Read at most this many rows.
    hold_out
        The last ``hold_out`` days are returned but not written (the demo replays them through
        the service; the logging system then lands them).
    fmt
        ``parquet`` (what the ``ad_clicks`` template reads) or ``csv``.

    Returns
    -------
    ImportResult
        The checked log, every day (written or held out), the figures written and the manifest.

    Examples
    --------
    >>> import tempfile, pyarrow as pa, pyarrow.parquet as pq
    >>> folder = Path(tempfile.mkdtemp())
    >>> pq.write_table(pa.table({"click": [0, 1, 0], "ad_id": [7, 7, 8], "advertiser_id": [1, 1, 2],
    ...     "depth": [2, 2, 1], "position": [1, 2, 1], "query_id": [5, 6, 5], "keyword_id": [3, 3, 4],
    ...     "user_id": [0, 11, 12]}), folder / "log.parquet")
    >>> res = import_kdd(folder / "log.parquet", folder / "data", days=3, hold_out=1)
    >>> sorted(p.name for p in (folder / "data" / "impressions").iterdir()), res.days[2].impressions.num_rows
    (['2026-11-02.parquet', '2026-11-03.parquet'], 1)
    """
    if not 0 <= hold_out < days:
        raise DataError(f"hold_out must be between 0 and days - 1 ({days - 1}), got {hold_out}")
    if fmt not in ("parquet", "csv"):
        raise DataError(f"log format must be 'parquet' or 'csv', got {fmt!r}")
    log = read_kdd_log(source, rows=rows)
    all_days = event_days(log, days, seed=seed, max_click_delay_s=max_click_delay_s)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for day in all_days[: days - hold_out]:
        write_day(day, root, fmt, logs=("impressions", "clicks"))
        written.append(day.stats)
        if on_day is not None:
            on_day(day)
    manifest = write_manifest(root, log, all_days, max_click_delay_s=max_click_delay_s, held_out=hold_out)
    return ImportResult(log=log, days=all_days, out=root, written=written, manifest=manifest)
