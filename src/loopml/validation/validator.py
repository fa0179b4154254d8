"""Validate a table against a schema and a reference profile.

Row-level checks give boolean masks over the columns the profile already converted; dataset
checks read the profile. The result is a :class:`ValidationReport`, the rows to keep and the
quarantine (one row per failing (row, check) pair, built column-wise).

>>> import pyarrow as pa
>>> from loopml.spec.data import Verification
>>> from loopml.validation.profile import profile_table
>>> from loopml.validation.schema import infer_schema
>>> ref = pa.table({"x": [1, 2, 3, 4]})
>>> schema = infer_schema(profile_table(ref))
>>> out = validate_table(pa.table({"x": [1, 2, 99, 3]}), schema, None, Verification())
>>> out.report.quarantined_rows, out.kept.num_rows
(1, 3)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopml.spec.data import Verification
from loopml.validation.checks import (
    CHECKS,
    SEVERITY_RANK,
    CheckContext,
    CheckResult,
    RowPredicate,
)
from loopml.validation.columnar import Columns
from loopml.validation.profile import Profile, profile_table
from loopml.validation.schema import DataSchema


@dataclass
class ValidationReport:
    """Everything a validation found."""

    snapshot: str | None
    rows: int
    kept_rows: int
    quarantined_rows: int
    checks: list[CheckResult]
    profile: Profile
    reference: Profile | None
    fail_on: str
    schema_path: str | None = None
    schema_inferred: bool = False
    #: row accounting per source file: file, rows (read), kept, quarantined
    sources: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    duration_s: float = 0.0

    def failing(self) -> list[CheckResult]:
        """Failed checks whose severity stops the pipeline (per ``fail_on``)."""
        if self.fail_on == "never":
            return []
        floor = SEVERITY_RANK[self.fail_on]
        return [c for c in self.checks if not c.passed and SEVERITY_RANK[c.severity] >= floor]

    @property
    def passed(self) -> bool:
        """Whether the table may go downstream."""
        return not self.failing()

    def ordered_checks(self) -> list[CheckResult]:
        """Failing checks first (most severe first), then passing ones."""
        return sorted(self.checks, key=lambda c: (c.passed, -SEVERITY_RANK[c.severity], c.check, c.column or ""))

    def to_json(self) -> dict[str, Any]:
        """Plain data (the JSON report)."""
        return {
            "snapshot": self.snapshot,
            "passed": self.passed,
            "rows": self.rows,
            "kept_rows": self.kept_rows,
            "quarantined_rows": self.quarantined_rows,
            "fail_on": self.fail_on,
            "schema_path": self.schema_path,
            "schema_inferred": self.schema_inferred,
            "sources": self.sources,
            "created_at": self.created_at,
            "duration_s": self.duration_s,
            "counts": {
                "checks": len(self.checks),
                "failed": sum(not c.passed for c in self.checks),
                "errors": sum(not c.passed and c.severity == "error" for c in self.checks),
                "warnings": sum(not c.passed and c.severity == "warning" for c in self.checks),
            },
            "checks": [c.to_json() for c in self.ordered_checks()],
            "profile": self.profile.to_json(),
            "reference": self.reference.to_json() if self.reference is not None else None,
        }


QUARANTINE_SCHEMA = pa.schema(
    [("row_index", pa.int64()), ("check", pa.string()), ("column", pa.string()), ("value", pa.string()),
     ("reason", pa.string()), ("location", pa.string())]
)

#: columns of a provenance table (one row per table row): source file, line (text formats) and
#: record number within the file (1-based; Parquet and SQL rows have no line)
PROVENANCE_SCHEMA = pa.schema([("file", pa.string()), ("line", pa.int64()), ("record", pa.int64())])


def locations(provenance: pa.Table | None, idx: pa.Array) -> pa.Array:
    """``FILE line N`` (or ``FILE row N``) of some rows, vectorised; ``row N`` without provenance."""
    if provenance is None:
        return pc.binary_join_element_wise("row ", pc.cast(idx, pa.string()), "")
    p = provenance.take(idx)
    line = pc.binary_join_element_wise(pc.cast(p.column("file"), pa.string()), " line ",
                                       pc.cast(p.column("line"), pa.string()), "")
    row = pc.binary_join_element_wise(pc.cast(p.column("file"), pa.string()), " row ",
                                      pc.cast(p.column("record"), pa.string()), "")
    return pc.coalesce(line, row, pc.binary_join_element_wise("row ", pc.cast(idx, pa.string()), ""))


def source_accounting(provenance: pa.Table | None, keep: np.ndarray, label: str = "table") -> list[dict[str, Any]]:
    """Per source file: rows read = rows kept + rows quarantined (vectorised over the file codes)."""
    n = len(keep)
    if provenance is None or provenance.num_rows != n:
        return [{"file": label, "rows": n, "kept": int(keep.sum()), "quarantined": int(n - keep.sum())}]
    enc = pc.dictionary_encode(provenance.column("file").combine_chunks())
    codes = np.asarray(pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    names = [label if v is None else v for v in enc.dictionary.to_pylist()]
    if (codes < 0).any():
        names.append(label)
        codes = np.where(codes < 0, len(names) - 1, codes)
    rows = np.bincount(codes, minlength=len(names))
    kept = np.bincount(codes, weights=keep.astype(np.float64), minlength=len(names)).astype(np.int64)
    return [{"file": f, "rows": int(r), "kept": int(k), "quarantined": int(r - k)}
            for f, r, k in zip(names, rows, kept)]


@dataclass
class ValidationOutcome:
    """Report, the rows kept and the quarantine (one row per failing (row, check) pair)."""

    report: ValidationReport
    table: pa.Table  # the validated table, all rows
    keep: np.ndarray  # True for rows that passed every row-level check
    quarantine: pa.Table  # QUARANTINE_SCHEMA
    failed_rows: pa.Table  # the failing rows themselves, with their row index in ``__row``
    schema: DataSchema | None = None

    @cached_property
    def kept(self) -> pa.Table:
        """The rows that passed every row-level check, with numbers stored as text converted to the
        schema's type (copied only when asked for)."""
        kept = self.table if bool(self.keep.all()) else self.table.filter(pa.array(self.keep))
        return conform(kept, self.schema) if self.schema is not None else kept

    def entries(self) -> list[dict[str, Any]]:
        """Quarantine entries as dicts, each with the whole failing row (for the metadata table)."""
        if self.quarantine.num_rows == 0:
            return []
        index = self.failed_rows.column("__row").to_pylist()
        rows = dict(zip(index, self.failed_rows.drop_columns(["__row"]).to_pylist()))
        return [{**e, "row": rows[e["row_index"]]} for e in self.quarantine.to_pylist()]


def validate_table(
    table: pa.Table,
    schema: DataSchema,
    reference: Profile | None,
    settings: Verification,
    *,
    snapshot: str | None = None,
    profile: Profile | None = None,
    now: dt.datetime | None = None,
    checks: list[str] | None = None,
    provenance: pa.Table | None = None,
) -> ValidationOutcome:
    """Run every registered check (or ``checks``) on ``table``.

    Parameters
    ----------
    table
        The data to validate.
    schema
        The schema (inferred or edited).
    reference
        Reference profile (bins for PSI); PSI is skipped when None.
    settings
        The spec's ``data.verification`` settings (thresholds, severities).
    snapshot
        Snapshot id, recorded in the report and quarantine.
    profile
        A profile of ``table`` computed with ``reference`` (computed here when omitted).
    now
        Current time for freshness (UTC now when omitted).
    checks
        Names of the checks to run (all registered checks by default).
    provenance
        Where each row comes from (:data:`PROVENANCE_SCHEMA`, aligned with ``table``): quarantine
        reasons then name the file and line, and the report counts rows per source file.
    """
    t0 = time.perf_counter()
    now = now or dt.datetime.now(dt.UTC)
    if settings.non_finite == "missing":
        table = nonfinite_to_null(table)
    columns = Columns(table)
    profile = profile or profile_table(table, reference=reference, columns=columns)
    columns.release_sorted()
    ctx = CheckContext(table, profile, schema, reference, settings, now, columns)
    instances = [CHECKS[n]() for n in (checks or list(CHECKS))]
    results: list[CheckResult] = []
    preds: list[RowPredicate] = []
    owner: list[Any] = []
    for chk in instances:
        if chk.row_level:
            ps = chk.predicates(ctx)
            preds.extend(ps)
            owner.extend([chk] * len(ps))
        else:
            results.extend(chk.run(ctx))
    parts: list[pa.Table] = []
    fail_idx = np.zeros(0, dtype=np.int64)
    if preds:
        any_fail = np.zeros(table.num_rows, dtype=bool)
        for p in preds:
            any_fail |= p.mask
        fail_idx = np.flatnonzero(any_fail)
        n = max(table.num_rows, 1)
        for p, chk in zip(preds, owner):
            k = int(p.mask.sum())
            rate = k / n
            sev = ctx.severity(chk) if rate > settings.max_quarantine_rate else "warning"
            example = ""
            if k:
                part = _quarantine_part(table, p, provenance)
                parts.append(part)
                first = part.slice(0, 1).to_pylist()[0]
                example = f" (first: {first['location']}: {first['value']!r})"
            results.append(
                CheckResult(
                    p.check,
                    p.column,
                    k == 0,
                    sev if k else ctx.severity(chk),
                    f"{k:,} row(s) ({rate:.2%}) not {p.expected}; quarantined{example}" if k
                    else f"all rows {p.expected}",
                    failing_rows=k,
                    evidence={"rate": rate, "expected": p.expected,
                              "max_quarantine_rate": settings.max_quarantine_rate},
                )
            )
    keep = np.ones(table.num_rows, dtype=bool)
    keep[fail_idx] = False
    failed = table.take(pa.array(fail_idx, pa.int64())).append_column("__row", pa.array(fail_idx, pa.int64()))
    quarantine = (pa.concat_tables(parts).sort_by([("row_index", "ascending")]) if parts
                  else QUARANTINE_SCHEMA.empty_table())
    report = ValidationReport(
        snapshot=snapshot,
        rows=table.num_rows,
        kept_rows=int(keep.sum()),
        quarantined_rows=len(fail_idx),
        checks=results,
        profile=profile,
        reference=reference,
        fail_on=settings.fail_on,
        sources=source_accounting(provenance, keep, snapshot or "table"),
        duration_s=time.perf_counter() - t0,
    )
    return ValidationOutcome(report, table, keep, quarantine, failed, schema)


def _quarantine_part(table: pa.Table, p: RowPredicate, provenance: pa.Table | None = None) -> pa.Table:
    """Quarantine rows of one failing predicate, built column-wise: where, check, column, value, reason."""
    idx = pa.array(np.flatnonzero(p.mask), pa.int64())
    cols = (p.column or "").split(",")
    shown = p.show or (lambda a: a)
    texts = [pc.fill_null(shown(pc.cast(table.column(c).take(idx), pa.string())), "null") for c in cols]
    value = texts[0] if len(texts) == 1 else pc.binary_join_element_wise(*texts, ", ")
    where = locations(provenance, idx)
    quoted = pc.binary_join_element_wise("'", value, "'", "") if pa.types.is_string(
        table.schema.field(cols[0]).type) and len(cols) == 1 else value
    reason = pc.binary_join_element_wise(
        where, pa.scalar(f": {p.check}: column `{p.column}` is "), quoted, pa.scalar(f", expected {p.expected}"), ""
    )
    n = len(idx)
    return pa.table(
        [idx, pa.array([p.check] * n, pa.string()), pa.array([p.column] * n, pa.string()), value, reason, where],
        schema=QUARANTINE_SCHEMA,
    )


def nonfinite_to_null(table: pa.Table) -> pa.Table:
    """Float columns with NaN and infinities read as missing (``non_finite: missing``)."""
    for i, f in enumerate(table.schema):
        if not pa.types.is_floating(f.type):
            continue
        col = table.column(i)
        finite = pc.is_finite(col)
        if pc.all(pc.or_kleene(finite, pc.is_null(col))).as_py() is not False:
            continue
        table = table.set_column(i, f.name, pc.if_else(finite, col, pa.scalar(None, f.type)))
    return table


def conform(table: pa.Table, schema: DataSchema) -> pa.Table:
    """Text columns the schema types as numbers converted to that type (non-numbers become missing)."""
    from loopml.validation.checks import schema_kind
    from loopml.validation.columnar import Columns

    cols = Columns(table)
    for i, f in enumerate(table.schema):
        cs = schema.columns.get(f.name)
        if cs is None or (not pa.types.is_string(f.type) and not pa.types.is_large_string(f.type)):
            continue
        sk = schema_kind(cs.type)
        if sk not in ("int", "numeric"):
            continue
        v, is_num = cols.get(f.name).numbers
        ok = is_num & np.isfinite(v)
        arr = pa.array(np.where(ok, v, 0.0), mask=~ok)
        target = pa.int64() if sk == "int" else pa.float64()
        with contextlib.suppress(ValueError, KeyError):
            target = pa.type_for_alias(cs.type)
        table = table.set_column(i, f.name, pc.cast(arr, target, safe=False))
    return table


__all__ = [
    "PROVENANCE_SCHEMA",
    "QUARANTINE_SCHEMA",
    "ValidationOutcome",
    "ValidationReport",
    "conform",
    "locations",
    "nonfinite_to_null",
    "source_accounting",
    "validate_table",
]
