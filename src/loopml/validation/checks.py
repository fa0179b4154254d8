"""Validation checks, registered by name, each with a default severity.

Two kinds of checks share one small protocol (:class:`Check`, one required method):

- **row-level** checks (``row_level = True``) return boolean masks of failing rows, computed
  vectorised (numpy / Arrow compute) on the columns the profile already converted; the
  validator quarantines every row that fails any of them;
- **dataset** checks compare the profile with the schema and the reference profile.

>>> sorted(CHECKS)  # doctest: +NORMALIZE_WHITESPACE
['columns', 'control_bytes', 'domain', 'freshness', 'key_duplicates', 'missing_rate', 'mixed_types',
 'non_finite', 'nullability', 'psi', 'range', 'row_count', 'type']
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopml.spec.data import Verification
from loopml.validation.columnar import CONTROL_BYTES, ColumnData, Columns, kind_of, to_seconds
from loopml.validation.profile import Profile, psi
from loopml.validation.schema import ColumnSchema, DataSchema

Severity = Literal["error", "warning", "info"]
SEVERITY_RANK = {"error": 3, "warning": 2, "info": 1}


@dataclass
class CheckResult:
    """The outcome of one check on one column (or on the whole table when ``column`` is None)."""

    check: str
    column: str | None
    passed: bool
    severity: Severity
    message: str
    failing_rows: int = 0
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain data."""
        return {
            "check": self.check,
            "column": self.column,
            "passed": self.passed,
            "severity": self.severity,
            "message": self.message,
            "failing_rows": self.failing_rows,
            "evidence": self.evidence,
        }


@dataclass
class RowPredicate:
    """Rows failing a row-level check (``mask`` is True for a failing row), with what was expected."""

    check: str
    column: str | None
    mask: np.ndarray
    expected: str
    #: how a failing value is shown (``None``: the value as text); e.g. control bytes escaped
    show: Any = None


@dataclass
class CheckContext:
    """What checks look at: the table, its profile, the schema and the reference profile."""

    table: pa.Table
    profile: Profile
    schema: DataSchema
    reference: Profile | None
    settings: Verification
    now: dt.datetime
    columns: Columns | None = None

    def col(self, name: str) -> ColumnData:
        """The converted column ``name`` (shared with the profile)."""
        if self.columns is None:
            self.columns = Columns(self.table)
        return self.columns.get(name)

    def severity(self, check: Check) -> Severity:
        """The configured severity of a check (spec override or the check's default)."""
        return self.settings.severities.get(check.name, check.default_severity)

    def present(self) -> list[tuple[str, ColumnSchema, str]]:
        """Schema columns present in the table: (name, column schema, actual Arrow kind)."""
        fields = {f.name: f.type for f in self.table.schema}
        return [(n, c, kind_of(fields[n])) for n, c in self.schema.columns.items() if n in fields]


class Check(Protocol):
    """A validation check. Required: ``run`` (dataset checks) or ``predicates`` (row-level checks)."""

    name: ClassVar[str]
    row_level: ClassVar[bool]
    default_severity: ClassVar[Severity]
    description: ClassVar[str]

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        """Dataset-level results (row-level checks return [] here)."""
        ...

    def predicates(self, ctx: CheckContext) -> list[RowPredicate]:
        """Row-level failure predicates (dataset checks return [])."""
        ...


CHECKS: dict[str, type[Check]] = {}


def register_check(cls: type[Any]) -> type[Any]:
    """Class decorator: make a check available by its ``name``."""
    CHECKS[cls.name] = cls
    return cls


class _RowCheck:
    row_level: ClassVar[bool] = True
    default_severity: ClassVar[Severity] = "error"

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        return []


class _DatasetCheck:
    row_level: ClassVar[bool] = False

    def predicates(self, ctx: CheckContext) -> list[RowPredicate]:
        return []


def schema_kind(type_name: str) -> str:
    """Kind (int/numeric/boolean/temporal/string) of an Arrow type name from a schema file."""
    t = type_name.lower()
    if t.startswith(("int", "uint", "double", "float", "halffloat", "decimal")):
        return "int" if t.startswith(("int", "uint")) else "numeric"
    if t.startswith("bool"):
        return "boolean"
    if t.startswith(("date", "timestamp")):
        return "temporal"
    if t.startswith(("string", "large_string", "dictionary")):
        return "string"
    return "other"


_DUCK = {"int": "DOUBLE", "numeric": "DOUBLE", "temporal": "TIMESTAMP", "boolean": "BOOLEAN"}


def _try_cast(arr: pa.Array, skind: str) -> pa.Array:
    """The column cast to the schema kind with DuckDB's TRY_CAST (null where it cannot be converted)."""
    from loopml.data.sources import duck_connect

    con = duck_connect()
    try:
        con.register("c", pa.table({"v": arr}))
        return con.sql(f"SELECT TRY_CAST(v AS {_DUCK[skind]}) AS v FROM c").to_arrow_table().column("v").combine_chunks()
    finally:
        con.close()


def as_schema_values(ctx: CheckContext, name: str, skind: str) -> np.ndarray:
    """float64 values of a column read as the schema's kind (NaN where missing or not convertible)."""
    col = ctx.col(name)
    if (skind in ("int", "numeric") and col.kind == "numeric") or (skind == "temporal" and col.kind == "temporal"):
        return col.values
    if skind in ("int", "numeric") and col.kind == "string":
        return col.numbers[0]
    cast = _try_cast(col.array, skind)
    if skind == "temporal":
        return to_seconds(cast)
    return np.asarray(pc.cast(cast, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def bound_value(v: Any, skind: str) -> float:
    """A schema bound as float64 (ISO dates and timestamps as epoch seconds, UTC when naive)."""
    if skind == "temporal":
        moment = dt.datetime.fromisoformat(str(v))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.timestamp()
    return float(v)


@register_check
class TypeCheck(_RowCheck):
    """Values must have the schema's type: rows whose value cannot be read as that type fail."""

    name: ClassVar[str] = "type"
    description: ClassVar[str] = "value has the schema type"

    def predicates(self, ctx: CheckContext) -> list[RowPredicate]:
        out = []
        for name, cs, actual in ctx.present():
            sk = schema_kind(cs.type)
            if sk in ("other", "string") or (sk == "numeric" and actual == "numeric") or sk == actual:
                continue
            col = ctx.col(name)
            if sk == "int" and actual == "numeric":
                v = col.values
                mask = np.isfinite(v) & (v != np.round(v))
            elif sk in ("int", "numeric") and actual == "string":  # numbers stored as text: odd values fail
                v, is_num = col.numbers
                mask = col.present & ~is_num
                if sk == "int":
                    mask |= np.isfinite(v) & (v != np.round(v))
            else:
                cast = _try_cast(col.array, sk)
                mask = col.valid & ~np.asarray(cast.is_valid().to_numpy(zero_copy_only=False))
            out.append(RowPredicate(self.name, name, mask, f"a value of type {cs.type}"))
        return out


@register_check
class NullabilityCheck(_RowCheck):
    """Columns the schema marks ``nullable: false`` must not be missing."""

    name: ClassVar[str] = "nullability"
    description: ClassVar[str] = "non-nullable column has a value"

    def predicates(self, ctx: CheckContext) -> list[RowPredicate]:
        return [
            RowPredicate(self.name, n, ~ctx.col(n).present, "a value (column is not nullable)")
            for n, cs, _ in ctx.present()
            if not cs.nullable
        ]


@register_check
class RangeCheck(_RowCheck):
    """Numeric and temporal values must lie within the schema's ``[min, max]``."""

    name: ClassVar[str] = "range"
    description: ClassVar[str] = "value within [min, max]"

    def predicates(self, ctx: CheckContext) -> list[RowPredicate]:
        out = []
        for name, cs, _ in ctx.present():
            sk = schema_kind(cs.type)
            if (cs.min is None and cs.max is None) or sk not in ("int", "numeric", "temporal"):
                continue
            v = as_schema_values(ctx, name, sk)
            with np.errstate(invalid="ignore"):
                mask = np.zeros(v.size, dtype=bool)
                if cs.min is not None:
                    mask |= v < bound_value(cs.min, sk)
                if cs.max is not None:
                    mask |= v > bound_value(cs.max, sk)
                if sk != "temporal":  # infinities are the non_finite check's
                    mask &= np.isfinite(v)
            out.append(RowPredicate(self.name, name, mask, f"a value in [{cs.min}, {cs.max}]"))
        return out


@register_check
class DomainCheck(_RowCheck):
    """Categorical values must belong to the schema's ``domain``."""

    name: ClassVar[str] = "domain"
    description: ClassVar[str] = "value in the category domain"

    def predicates(self, ctx: CheckContext) -> list[RowPredicate]:
        out = []
        for name, cs, actual in ctx.present():
            if not cs.domain:
                continue
            sk = schema_kind(cs.type)
            shown = ", ".join(map(str, cs.domain[:8])) + (", ..." if len(cs.domain) > 8 else "")
            col = ctx.col(name)
            if sk in ("int", "numeric"):
                v = as_schema_values(ctx, name, sk)
                mask = np.isfinite(v) & ~np.isin(v, np.asarray([float(x) for x in cs.domain]))
            else:
                labels = pa.array([str(x).lower() if isinstance(x, bool) else str(x) for x in cs.domain])
                text = col.array if actual == "string" and not pa.types.is_dictionary(col.array.type) else pc.cast(
                    col.array, pa.string())
                inside = pc.is_in(text, value_set=labels).to_numpy(zero_copy_only=False)
                mask = col.valid & ~np.asarray(inside, dtype=bool)
            out.append(RowPredicate(self.name, name, mask, f"one of {{{shown}}}"))
        return out


@register_check
class KeyDuplicatesCheck(_RowCheck):
    """The schema's ``unique_keys`` identify one row: later duplicates fail (the first is kept)."""

    name: ClassVar[str] = "key_duplicates"
    description: ClassVar[str] = "key columns identify one row"

    def predicates(self, ctx: CheckContext) -> list[RowPredicate]:
        keys = [k for k in ctx.schema.unique_keys if k in ctx.table.column_names]
        if not keys:
            return []
        n = ctx.table.num_rows
        mask = np.zeros(n, dtype=bool)
        if len(keys) == 1:
            col = ctx.col(keys[0])
            key = col.values if col.kind in ("numeric", "temporal") else col.codes[0]
            order = np.argsort(key, kind="stable")  # stable: the first row of a key comes first
            s = key[order]
            mask[order[1:][s[1:] == s[:-1]]] = True
        else:
            t = ctx.table.select(keys).append_column("__row", pa.array(np.arange(n, dtype=np.int64)))
            firsts = t.group_by(keys, use_threads=False).aggregate([("__row", "min")]).column("__row_min")
            mask[:] = True
            mask[firsts.to_numpy()] = False
        return [RowPredicate(self.name, ",".join(keys), mask, f"a unique ({', '.join(keys)})")]


@register_check
class NonFiniteCheck(_RowCheck):
    """Numbers must be finite: inf, -inf, overflowing text (``1e309``) and NaN fail.

    The spec's ``data.verification.non_finite: missing`` reads them as missing values instead
    (the validator turns them into nulls before any check runs).
    """

    name: ClassVar[str] = "non_finite"
    description: ClassVar[str] = "number is finite"

    def predicates(self, ctx: CheckContext) -> list[RowPredicate]:
        if ctx.settings.non_finite != "quarantine":
            return []
        out = []
        typed = {n: schema_kind(cs.type) for n, cs, _ in ctx.present()}
        for f in ctx.table.schema:
            kind = kind_of(f.type)
            col = ctx.col(f.name)
            if kind == "numeric":
                mask = col.nonfinite
            elif kind == "string" and typed.get(f.name) in ("int", "numeric"):
                v, is_num = col.numbers
                mask = is_num & ~np.isfinite(v)
            else:
                continue
            out.append(RowPredicate(self.name, f.name, mask, "a finite number (`non_finite: missing` reads it as "
                                    "missing)"))
        return out


def escape_control(arr: pa.Array) -> pa.Array:
    """Text with its control bytes written as ``\\xNN`` (visible in a report)."""
    out = pc.cast(arr, pa.string())
    for code in [*range(0, 9), 11, 12, *range(14, 32), 127]:
        out = pc.replace_substring(out, chr(code), f"\\x{code:02x}")
    return out


@register_check
class ControlBytesCheck(_RowCheck):
    """Text must not hold control bytes (NUL and the other C0 controls but tab, newline and return)."""

    name: ClassVar[str] = "control_bytes"
    description: ClassVar[str] = "text has no control bytes"

    def predicates(self, ctx: CheckContext) -> list[RowPredicate]:
        out = []
        for f in ctx.table.schema:
            if kind_of(f.type) != "string":
                continue
            mask = ctx.col(f.name).text_mask(CONTROL_BYTES)
            out.append(RowPredicate(self.name, f.name, mask, "text without control bytes (e.g. NUL \\x00)",
                                    show=escape_control))
        return out


@register_check
class ColumnsCheck(_DatasetCheck):
    """Every schema column must be present; new columns are reported."""

    name: ClassVar[str] = "columns"
    default_severity: ClassVar[Severity] = "error"
    description: ClassVar[str] = "schema columns present"

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        have = set(ctx.table.column_names)
        out = []
        for n, cs in ctx.schema.columns.items():
            if n not in have:
                out.append(CheckResult(self.name, n, False, ctx.severity(self), f"column `{n}` ({cs.type}) is missing"))
        for n in ctx.table.column_names:
            if n not in ctx.schema.columns:
                out.append(CheckResult(self.name, n, False, "warning", f"column `{n}` is not in the schema"))
        if not out:
            out.append(CheckResult(self.name, None, True, ctx.severity(self), "all schema columns present"))
        return out


@register_check
class MissingRateCheck(_DatasetCheck):
    """A column's missing rate must stay at or below ``max_missing_rate``."""

    name: ClassVar[str] = "missing_rate"
    default_severity: ClassVar[Severity] = "error"
    description: ClassVar[str] = "missing rate within limit"

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        out = []
        for n, cs, _ in ctx.present():
            if cs.max_missing_rate is None or not cs.nullable:
                continue
            rate = ctx.profile.columns[n].missing_rate
            ref = ctx.reference.columns[n].missing_rate if ctx.reference and n in ctx.reference.columns else None
            ok = rate <= cs.max_missing_rate + 1e-12
            out.append(
                CheckResult(
                    self.name,
                    n,
                    ok,
                    ctx.severity(self),
                    f"missing rate {rate:.2%} (limit {cs.max_missing_rate:.2%}"
                    + (f", reference {ref:.2%})" if ref is not None else ")"),
                    evidence={"missing_rate": rate, "limit": cs.max_missing_rate, "reference": ref},
                )
            )
        return out


@register_check
class FreshnessCheck(_DatasetCheck):
    """The newest timestamp must be at most ``freshness_hours`` old."""

    name: ClassVar[str] = "freshness"
    default_severity: ClassVar[Severity] = "error"
    description: ClassVar[str] = "newest timestamp recent enough"

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        hours = ctx.settings.freshness_hours
        col = ctx.settings.timestamp or ctx.schema.timestamp
        if hours is None or not col:
            return []
        if col not in ctx.profile.columns:
            return [CheckResult(self.name, col, False, ctx.severity(self), f"timestamp column `{col}` is missing")]
        newest = ctx.profile.columns[col].max
        if newest is None:
            return [CheckResult(self.name, col, False, ctx.severity(self), f"timestamp column `{col}` is empty")]
        try:
            ts = dt.datetime.fromisoformat(str(newest))
        except ValueError:
            return [CheckResult(self.name, col, False, ctx.severity(self), f"`{col}` is not a timestamp ({newest})")]
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=dt.UTC)
        age_h = (ctx.now - ts).total_seconds() / 3600
        return [
            CheckResult(
                self.name,
                col,
                age_h <= hours,
                ctx.severity(self),
                f"newest `{col}` is {ts.isoformat()} ({age_h:.1f} h old; limit {hours:g} h)",
                evidence={"newest": ts.isoformat(), "age_hours": age_h, "limit_hours": hours},
            )
        ]


@register_check
class RowCountCheck(_DatasetCheck):
    """The row count must not change by more than ``max_row_count_change`` against the reference."""

    name: ClassVar[str] = "row_count"
    default_severity: ClassVar[Severity] = "warning"
    description: ClassVar[str] = "row count close to the reference"

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        ref = ctx.schema.rows or (ctx.reference.rows if ctx.reference else None)
        n = ctx.profile.rows
        if n == 0:
            return [CheckResult(self.name, None, False, "error", "the table has no rows")]
        if not ref:
            return []
        change = (n - ref) / ref
        limit = ctx.settings.max_row_count_change
        return [
            CheckResult(
                self.name,
                None,
                abs(change) <= limit,
                ctx.severity(self),
                f"{n:,} rows vs {ref:,} in the reference ({change:+.1%}; limit ±{limit:.0%})",
                evidence={"rows": n, "reference_rows": ref, "change": change, "limit": limit},
            )
        ]


@register_check
class PsiCheck(_DatasetCheck):
    """Distribution change per column: population stability index against the reference bins."""

    name: ClassVar[str] = "psi"
    default_severity: ClassVar[Severity] = "error"
    description: ClassVar[str] = "distribution close to the reference (PSI)"

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        if ctx.reference is None:
            return []
        need = ctx.settings.min_inference_rows
        inf = ctx.schema.inference
        small = min(ctx.reference.rows, ctx.profile.rows)
        if (inf is not None and not inf.drift) or small < need:
            return [CheckResult(
                self.name, None, True, "info",
                f"PSI not computed: the reference has {ctx.reference.rows:,} rows and this table {ctx.profile.rows:,} "
                f"(drift needs {need:,} on each side: `min_inference_rows`)",
            )]
        out = []
        for n, cp in ctx.profile.columns.items():
            ref = ctx.reference.columns.get(n)
            if ref is None or not ref.psi_bins.get("counts") or not cp.psi_bins.get("counts"):
                continue
            if ref.kind != cp.kind:
                continue
            # a column the schema lets be missing without limit (e.g. one the prediction log does not carry,
            # left empty in exported feedback rows) is compared on its present values only
            cs = ctx.schema.columns.get(n)
            free = cs is not None and cs.nullable and cs.max_missing_rate is None
            e = list(ref.psi_bins["counts"]) + ([ref.psi_bins.get("missing", 0)] if "edges" in ref.psi_bins and not free else [])
            a = list(cp.psi_bins["counts"]) + ([cp.psi_bins.get("missing", 0)] if "edges" in cp.psi_bins and not free else [])
            if len(e) != len(a):
                continue
            value = psi(e, a)
            warn, err = ctx.settings.psi_warn, ctx.settings.psi_error
            if value >= err:
                sev: Severity = ctx.severity(self)
                ok = False
            elif value >= warn:
                sev, ok = "warning", False
            else:
                sev, ok = ctx.severity(self), True
            labels = ref.psi_bins.get("values") or ref.psi_bins.get("edges")
            out.append(
                CheckResult(
                    self.name,
                    n,
                    ok,
                    sev,
                    f"PSI {value:.3f} (warn ≥ {warn:g}, error ≥ {err:g})",
                    evidence={"psi": value, "bins": labels, "reference": e, "current": a},
                )
            )
        return out


_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


@register_check
class MixedTypesCheck(_DatasetCheck):
    """A text column whose values are mostly numbers holds mixed types (e.g. '12', '7', 'n/a')."""

    name: ClassVar[str] = "mixed_types"
    default_severity: ClassVar[Severity] = "warning"
    description: ClassVar[str] = "text column not mostly numbers"

    def run(self, ctx: CheckContext) -> list[CheckResult]:
        out = []
        typed = {n: schema_kind(cs.type) for n, cs, _ in ctx.present()}
        for f in ctx.table.schema:
            col = ctx.col(f.name)
            if col.kind != "string" or col.n - col.missing == 0 or typed.get(f.name) in ("int", "numeric"):
                continue
            values, counts = col.uniques, col.counts  # distinct values only: cheap
            numeric = np.asarray(
                pc.match_substring_regex(values, _NUMBER.pattern).to_numpy(zero_copy_only=False), dtype=bool
            )
            share = float(counts[numeric].sum() / counts.sum())
            if not 0.5 <= share < 1.0:
                continue
            odd_pos = np.flatnonzero(~numeric)[np.argmax(counts[~numeric])]
            odd = values[int(odd_pos)].as_py()
            row = int(pc.index(col.array, odd).as_py())
            out.append(
                CheckResult(
                    self.name, f.name, False, ctx.severity(self),
                    f"{share:.1%} of values are numbers but e.g. row {row} holds {odd!r} "
                    f"({int(counts[~numeric].sum()):,} non-numeric values): mixed types in one column",
                    evidence={"numeric_share": share, "example": odd, "row": row},
                )
            )
        return out


__all__ = [
    "CHECKS",
    "SEVERITY_RANK",
    "Check",
    "CheckContext",
    "CheckResult",
    "RowPredicate",
    "register_check",
    "schema_kind",
]
