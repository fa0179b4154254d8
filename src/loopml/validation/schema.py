"""The data schema: inferred from a reference snapshot into an editable, commented YAML file.

The schema holds, per column, the type, nullability, the allowed missing rate, the range and
(for low-cardinality columns) the category domain; plus the key columns that must be unique
and the timestamp column checked for freshness. The reference profile (histograms, bins for
PSI) lives beside it in ``<schema>.profile.json`` so that both can be committed together.

>>> import pyarrow as pa
>>> from loopml.validation.profile import profile_table
>>> s = infer_schema(profile_table(pa.table({"k": [1, 2, 3], "c": ["a", "b", "a"]})), unique_keys=["k"])
>>> s.columns["c"].domain, s.columns["k"].min, s.unique_keys
(['a', 'b'], 1, ['k'])
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from loopml.errors import NotFound, SpecError
from loopml.spec.base import StrictModel
from loopml.validation.columnar import kind_of
from loopml.validation.profile import Profile

SCHEMA_VERSION = 1
#: numeric columns get a domain only with this many distinct values at most (codes such as hour of
#: day or weather type); beyond, a range is the right constraint (a new month count is not an error)
NUMERIC_DOMAIN_MAX = 25
#: first-run inference gives a column a domain only when at most this share of its rows hold a value
#: seen once (Good–Turing: the chance that the next row brings a value the sample never showed)
MAX_UNSEEN_SHARE = 0.01


class ColumnSchema(StrictModel):
    """What one column must look like."""

    type: str = Field(description="Arrow type name (int64, double, string, bool, date32[day], timestamp[us], ...).")
    nullable: bool = Field(default=True, description="Whether missing values are allowed at all.")
    max_missing_rate: float | None = Field(
        default=None, ge=0, le=1, description="Largest allowed share of missing values (none: no limit)."
    )
    min: int | float | str | None = Field(default=None, description="Smallest allowed value (numbers, dates, timestamps).")
    max: int | float | str | None = Field(default=None, description="Largest allowed value (numbers, dates, timestamps).")
    domain: list[Any] | None = Field(default=None, description="Allowed values of a categorical column.")


class Inference(StrictModel):
    """What the schema's inference could learn from the reference, and from how many rows."""

    rows: int = Field(ge=0, description="Rows the schema was inferred from.")
    min_rows: int = Field(
        default=0, ge=0, description="Rows needed before ranges, domains, non-nullability and drift are inferred."
    )
    limits: bool = Field(
        default=True, description="Whether ranges, domains, non-nullability and missing-rate limits were inferred."
    )
    drift: bool = Field(default=True, description="Whether the reference profile is used for drift (PSI) checks.")
    range_tolerance: float = Field(default=0.0, ge=0, description="Share of its width each range was widened by.")
    numbers_from_text: dict[str, str] = Field(
        default_factory=dict,
        description="Text columns typed numeric because almost all values are numbers, with what the others are.",
    )


class DataSchema(StrictModel):
    """The schema of the example table."""

    version: int = Field(default=SCHEMA_VERSION, description="Schema file format version.")
    reference_snapshot: str | None = Field(default=None, description="Snapshot the schema was inferred from.")
    rows: int | None = Field(default=None, ge=0, description="Row count of the reference snapshot.")
    inference: Inference | None = Field(
        default=None, description="What was inferred from how many rows (written by inference; informative)."
    )
    unique_keys: list[str] = Field(default_factory=list, description="Columns that together identify one row.")
    timestamp: str | None = Field(default=None, description="Event-time column checked for freshness.")
    columns: dict[str, ColumnSchema] = Field(default_factory=dict, description="Columns, by name.")


def _round_range(v: Any, kind: str) -> Any:
    if v is None:
        return None
    if kind == "temporal":
        return str(v)
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    return float(v)


def open_range_columns(spec: Any) -> list[str]:
    """The spec's key columns (entity, item, group, unique keys): never given a range."""
    task = spec.task
    keys = [*task.entity_keys, *(k for k in (task.item_key, task.group_key) if k)]
    return [*keys, *spec.data.verification.unique_keys]


def _open_ended(name: str, cp: Any, timestamp: str | None, open_range: list[str] | None) -> bool:
    """Whether a column's values grow with new data (ids, event time), so a range is wrong."""
    if name in (open_range or []) or name == timestamp:
        return True
    lname = name.lower()
    if lname == "id" or lname.endswith("_id"):
        return True
    integral = cp.kind == "numeric" and "int" in str(cp.type)
    return bool(integral and cp.count > 1000 and cp.distinct >= 0.9 * cp.count)


def _widen(lo: Any, hi: Any, kind: str, tolerance: float) -> tuple[Any, Any]:
    """A range widened by ``tolerance`` of its width on each side; non-negative stays non-negative."""
    if kind != "numeric" or tolerance <= 0 or lo is None or hi is None:
        return lo, hi
    pad = (float(hi) - float(lo)) * tolerance or abs(float(hi)) * tolerance
    new_lo, new_hi = float(lo) - pad, float(hi) + pad
    if float(lo) >= 0:
        new_lo = max(0.0, new_lo)
    if isinstance(lo, int) and isinstance(hi, int):
        return math.floor(new_lo), math.ceil(new_hi)
    return new_lo, new_hi


def infer_schema(
    profile: Profile,
    *,
    unique_keys: list[str] | None = None,
    timestamp: str | None = None,
    max_domain_size: int = 50,
    missing_slack: float = 0.1,
    reference_snapshot: str | None = None,
    open_range: list[str] | None = None,
    min_rows: int = 0,
    range_tolerance: float = 0.0,
    max_unseen_share: float = 1.0,
) -> DataSchema:
    """A schema from a reference profile.

    Parameters
    ----------
    profile
        Profile of the reference data.
    unique_keys
        Columns that together identify one row.
    timestamp
        Event-time column (freshness).
    max_domain_size
        Columns with at most this many distinct values (all of them among the profile's top
        values) get a category domain; numeric columns only up to ``NUMERIC_DOMAIN_MAX`` distinct
        values and never with fractions.
    missing_slack
        ``max_missing_rate`` is the reference rate plus this slack (capped at 1).
    reference_snapshot
        Id of the snapshot profiled, recorded in the file.
    open_range
        Columns that get no min/max because their values grow with new data: the spec's keys.
        Besides these, the event-time column, any column named ``id`` or ``*_id`` and integer
        columns whose values are nearly all distinct are treated as open-ended: tomorrow's ids
        and timestamps are outside today's range by construction, and a range would quarantine
        every new day of an event log.
    min_rows
        Below this many rows only types are inferred: no range, domain, non-nullability or
        missing-rate limit (from a small sample they would reject clean data).
    range_tolerance
        Each inferred range is widened by this share of its width on each side.
    max_unseen_share
        A domain is inferred only when the Good–Turing estimate of the chance that a new row holds
        an unseen value (values seen once / rows) is at most this: a column with many one-off
        values has more values than the sample shows.
    """
    cols: dict[str, ColumnSchema] = {}
    limits = profile.rows >= min_rows
    for name, cp in profile.columns.items():
        if not limits:
            cols[name] = ColumnSchema(type=cp.type)
            continue
        domain = None
        top_values = [v for v, _ in cp.top]
        covered = sum(c for _, c in cp.top)
        is_fractional = cp.kind == "numeric" and any(isinstance(v, float) and not float(v).is_integer()
                                                     for v in top_values)
        limit = min(max_domain_size, NUMERIC_DOMAIN_MAX) if cp.kind == "numeric" else max_domain_size
        if (
            cp.kind in ("string", "boolean", "numeric")
            and 0 < cp.distinct <= limit
            and covered == cp.count
            and not is_fractional
            and len(top_values) <= max_domain_size
            and sum(1 for _, c in cp.top if c == 1) <= max_unseen_share * cp.count
        ):
            domain = sorted(top_values, key=lambda v: (str(type(v)), v))
        ranged = cp.kind in ("numeric", "temporal") and not _open_ended(name, cp, timestamp, open_range)
        lo, hi = (_widen(_round_range(cp.min, cp.kind), _round_range(cp.max, cp.kind), cp.kind,
                         0.0 if domain else range_tolerance)  # a domain already bounds the values
                  if ranged else (None, None))
        cols[name] = ColumnSchema(
            type=cp.type,
            nullable=cp.missing > 0,
            max_missing_rate=min(1.0, round(cp.missing_rate + missing_slack, 6)) if cp.missing > 0 else 0.0,
            min=lo if ranged else None,
            max=hi if ranged else None,
            domain=domain,
        )
    keys = [k for k in (unique_keys or []) if k in cols]
    return DataSchema(
        reference_snapshot=reference_snapshot,
        rows=profile.rows,
        inference=Inference(rows=profile.rows, min_rows=min_rows, limits=limits, drift=limits,
                            range_tolerance=range_tolerance if limits else 0.0),
        unique_keys=keys,
        timestamp=timestamp if timestamp in cols else None,
        columns=cols,
    )


def numbers_from_text(table: pa.Table, share: float) -> dict[str, tuple[pa.DataType, str]]:
    """Text columns that are almost all numbers: column -> (numeric type, what the other values are).

    A column qualifies when at least ``share`` of its present values read as numbers and some
    do not (or are not finite): a column of only numeric text was written as text on purpose
    (zip codes, codes with leading zeros) and stays text. Evaluated over distinct values.
    """
    from loopml.validation.columnar import Columns

    cols = Columns(table)
    out: dict[str, tuple[pa.DataType, str]] = {}
    for f in table.schema:
        if kind_of(f.type) != "string":
            continue
        col = cols.get(f.name)
        present = int(col.present.sum())
        if present == 0:
            continue
        v, is_num = col.numbers
        n_num = int(is_num.sum())
        finite = is_num & np.isfinite(v)
        if n_num < share * present or int(finite.sum()) == present:
            continue
        fv = v[finite]
        integral = bool(fv.size) and bool(np.all(fv == np.round(fv))) and bool(np.all(np.abs(fv) < 2**53))
        odd = col.array.filter(pa.array(col.present & ~is_num))
        odd_values = pc.unique(odd).to_pylist()[:5]
        nonfin = int((is_num & ~finite).sum())
        what = []
        if present - n_num:
            what.append(f"{present - n_num:,} of {present:,} values are not numbers (e.g. "
                        f"{', '.join(repr(x) for x in odd_values)})")
        if nonfin:
            what.append(f"{nonfin:,} are not finite (inf/NaN)")
        out[f.name] = (pa.int64() if integral else pa.float64(), "; ".join(what))
    return out


def typed_view(table: pa.Table, typed: dict[str, tuple[pa.DataType, str]]) -> pa.Table:
    """The table with the given text columns read as numbers (other values missing)."""
    from loopml.validation.columnar import Columns

    cols = Columns(table)
    for name, (t, _) in typed.items():
        v, is_num = cols.get(name).numbers
        ok = is_num & np.isfinite(v)
        arr = pa.array(np.where(ok, v, 0.0), mask=~ok)
        table = table.set_column(table.schema.get_field_index(name), name, pc.cast(arr, t))
    return table


def infer_from_table(
    table: pa.Table, settings: Any, *, timestamp: str | None = None, open_range: list[str] | None = None,
    reference_snapshot: str | None = None,
) -> tuple[DataSchema, Profile]:
    """Schema and reference profile of a table under the spec's ``data.verification`` settings.

    Text columns that are almost all numbers are typed numeric (their odd values are then
    quarantined by the type check, with their file and line); limits and the drift reference
    need ``settings.min_inference_rows`` rows.
    """
    from loopml.validation.profile import profile_table

    typed = numbers_from_text(table, settings.numeric_text_share)
    view = typed_view(table, typed) if typed else table
    profile = profile_table(view, top_k=max(10, settings.max_domain_size))
    schema = infer_schema(
        profile,
        unique_keys=settings.unique_keys,
        timestamp=timestamp,
        max_domain_size=settings.max_domain_size,
        missing_slack=settings.max_missing_rate_increase,
        open_range=open_range,
        reference_snapshot=reference_snapshot,
        min_rows=settings.min_inference_rows,
        range_tolerance=settings.range_tolerance,
        max_unseen_share=MAX_UNSEEN_SHARE,
    )
    if schema.inference is not None:
        schema.inference.numbers_from_text = {n: f"{t}: {what}" for n, (t, what) in typed.items()}
    return schema, profile


HEADER = """\
# Data schema for loopml validation, inferred from a reference snapshot.
# Edit and commit it: loosen a range, add a value to a domain, mark a column non-nullable.
# Per column: type (Arrow), nullable, max_missing_rate, min/max (range), domain (allowed values).
# Row-level failures (type, nullability, range, domain, key duplicates) are quarantined;
# `loopml data infer-schema --force` regenerates this file from the latest snapshot.
"""


def inference_comment(schema: DataSchema) -> str:
    """Comment lines saying what was inferred from how many rows."""
    inf = schema.inference
    if inf is None:
        return ""
    lines = [f"# Inferred from {inf.rows:,} rows."]
    if inf.limits:
        lines.append(f"# Ranges (widened by {inf.range_tolerance:.0%} of their width), domains, non-nullability, "
                     "missing-rate limits and the drift (PSI) reference were inferred.")
    else:
        lines.append(f"# Fewer than {inf.min_rows:,} rows (`data.verification.min_inference_rows`): only types "
                     "were inferred; no ranges, domains, non-nullability, missing-rate limits or drift checks.")
    for col, note in inf.numbers_from_text.items():
        lines.append(f"# `{col}` is typed {note} (quarantined by the type check).")
    return "\n".join(lines) + "\n"


def profile_path(schema_path: Path) -> Path:
    """Where the reference profile of a schema file lives."""
    return schema_path.with_name(schema_path.stem + ".profile.json")


def save_schema(schema: DataSchema, path: Path, reference: Profile | None = None) -> None:
    """Write the schema YAML (and the reference profile JSON beside it) atomically."""
    y = YAML()
    y.width = 4096
    buf = io.StringIO()
    data = CommentedMap(schema.model_dump(mode="json", exclude_none=True, exclude={"columns", "unique_keys"}))
    keys = CommentedSeq(schema.unique_keys)
    keys.fa.set_flow_style()
    data["unique_keys"] = keys
    columns = CommentedMap()
    for n, cs in schema.columns.items():
        entry = CommentedMap(cs.model_dump(mode="json", exclude_none=True))
        entry.fa.set_flow_style()
        columns[n] = entry
    data["columns"] = columns
    y.dump(data, buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(HEADER + inference_comment(schema) + buf.getvalue(), encoding="utf-8")
    tmp.replace(path)
    if reference is not None:
        pp = profile_path(path)
        tmp = pp.with_name(pp.name + ".tmp")
        tmp.write_text(json.dumps(reference.to_json(), default=str), encoding="utf-8")
        tmp.replace(pp)


def load_schema(path: Path) -> DataSchema:
    """Read a schema file; every problem is reported with its key path."""
    if not path.exists():
        raise NotFound(f"schema file {path} not found", hint="`loopml data infer-schema` creates it")
    try:
        raw = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
    except Exception as exc:  # ruamel raises several parser errors
        raise SpecError(f"schema file {path} is not valid YAML: {exc}") from None
    try:
        return DataSchema.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()]
        raise SpecError(f"schema file {path} is invalid", problems) from None


def load_reference(path: Path) -> Profile | None:
    """The reference profile stored beside a schema file, if any."""
    pp = profile_path(path)
    if not pp.exists():
        return None
    return Profile.from_json(json.loads(pp.read_text(encoding="utf-8")))


__all__ = [
    "ColumnSchema",
    "DataSchema",
    "Inference",
    "infer_from_table",
    "infer_schema",
    "load_reference",
    "load_schema",
    "numbers_from_text",
    "profile_path",
    "save_schema",
    "typed_view",
]
