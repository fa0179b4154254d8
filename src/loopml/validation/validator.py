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
     ("reason", pa.string())]
)


@dataclass
class ValidationOutcome:
    """Report, the rows kept and the quarantine (one row per failing (row, check) pair)."""

    report: ValidationReport
    table: pa.Table  # the validated table, all rows
    keep: np.ndarray  # True for rows that passed every row-level check
    quarantine: pa.Table  # QUARANTINE_SCHEMA
    failed_rows: pa.Table  # the failing rows themselves, with their row index in ``__row``

    @cached_property
    def kept(self) -> pa.Table:
        """The rows that passed every row-level check (copied only when asked for)."""
        return self.table if bool(self.keep.all()) else self.table.filter(pa.array(self.keep))

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
    """
    t0 = time.perf_counter()
    now = now or dt.datetime.now(dt.UTC)
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
            results.append(
                CheckResult(
                    p.check,
                    p.column,
                    k == 0,
                    sev if k else ctx.severity(chk),
                    f"{k:,} row(s) ({rate:.2%}) not {p.expected}; quarantined" if k else f"all rows {p.expected}",
                    failing_rows=k,
                    evidence={"rate": rate, "expected": p.expected,
                              "max_quarantine_rate": settings.max_quarantine_rate},
                )
            )
            if k:
                parts.append(_quarantine_part(table, p))
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
        duration_s=time.perf_counter() - t0,
    )
    return ValidationOutcome(report, table, keep, quarantine, failed)


def _quarantine_part(table: pa.Table, p: RowPredicate) -> pa.Table:
    """Quarantine rows of one failing predicate, built column-wise."""
    idx = pa.array(np.flatnonzero(p.mask), pa.int64())
    cols = (p.column or "").split(",")
    texts = [pc.fill_null(pc.cast(table.column(c).take(idx), pa.string()), "null") for c in cols]
    value = texts[0] if len(texts) == 1 else pc.binary_join_element_wise(*texts, ", ")
    reason = pc.binary_join_element_wise(
        pa.scalar(f"{p.check}: column `{p.column}` is "), value, pa.scalar(f", expected {p.expected}"), ""
    )
    n = len(idx)
    return pa.table(
        [idx, pa.array([p.check] * n, pa.string()), pa.array([p.column] * n, pa.string()), value, reason],
        schema=QUARANTINE_SCHEMA,
    )


__all__ = ["QUARANTINE_SCHEMA", "ValidationOutcome", "ValidationReport", "validate_table"]
