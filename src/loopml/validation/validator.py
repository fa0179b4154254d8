"""Validate a table against a schema and a reference profile.

All row-level predicates run in one DuckDB query; dataset checks read the profile. The
result is a :class:`ValidationReport`, the mask of rows to keep and the quarantine entries.

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
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from loopml.spec.data import Verification
from loopml.validation.checks import (
    CHECKS,
    SEVERITY_RANK,
    CheckContext,
    CheckResult,
    RowPredicate,
)
from loopml.validation.profile import Profile, profile_table
from loopml.validation.schema import DataSchema

ROW = "__row"


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


@dataclass
class ValidationOutcome:
    """Report, the rows kept and the quarantine entries."""

    report: ValidationReport
    kept: pa.Table
    quarantine: list[dict[str, Any]]


def _row_failures(
    con: duckdb.DuckDBPyConnection, preds: list[RowPredicate]
) -> tuple[np.ndarray, np.ndarray]:
    """(failing row indices, boolean matrix rows × predicates) from one query."""
    flags = ", ".join(f"COALESCE(({p.sql}), false) AS f{i}" for i, p in enumerate(preds))
    any_ = " OR ".join(f"f{i}" for i in range(len(preds)))
    res = con.sql(f"SELECT {ROW}, * EXCLUDE ({ROW}) FROM (SELECT {ROW}, {flags} FROM __v) WHERE {any_} "
                  f"ORDER BY {ROW}").to_arrow_table()
    idx = res.column(0).to_numpy()
    mat = np.column_stack([res.column(i + 1).to_numpy(zero_copy_only=False) for i in range(len(preds))]) if len(
        res
    ) else np.zeros((0, len(preds)), dtype=bool)
    return idx, mat


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
    con = duckdb.connect()
    try:
        profile = profile or profile_table(table, reference=reference, con=con)
        ctx = CheckContext(table, profile, schema, reference, settings, now)
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
        entries: list[dict[str, Any]] = []
        fail_idx = np.zeros(0, dtype=np.int64)
        if preds:
            con.register("__v", table.append_column(ROW, pa.array(np.arange(table.num_rows, dtype=np.int64))))
            fail_idx, mat = _row_failures(con, preds)
            n = max(table.num_rows, 1)
            for j, (p, chk) in enumerate(zip(preds, owner)):
                k = int(mat[:, j].sum()) if len(mat) else 0
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
            if len(fail_idx):
                entries = _entries(table, fail_idx, mat, preds)
        keep = np.ones(table.num_rows, dtype=bool)
        keep[fail_idx] = False
        kept = table.filter(pa.array(keep)) if len(fail_idx) else table
    finally:
        con.close()
    report = ValidationReport(
        snapshot=snapshot,
        rows=table.num_rows,
        kept_rows=kept.num_rows,
        quarantined_rows=len(fail_idx),
        checks=results,
        profile=profile,
        reference=reference,
        fail_on=settings.fail_on,
        duration_s=time.perf_counter() - t0,
    )
    return ValidationOutcome(report, kept, entries)


def _entries(table: pa.Table, idx: np.ndarray, mat: np.ndarray, preds: list[RowPredicate]) -> list[dict[str, Any]]:
    rows = table.take(pa.array(idx)).to_pylist()
    out = []
    for r, (i, flags) in enumerate(zip(idx, mat)):
        row = rows[r]
        for j in np.flatnonzero(flags):
            p = preds[j]
            cols = (p.column or "").split(",")
            value = row.get(cols[0]) if len(cols) == 1 else tuple(row.get(c) for c in cols)
            out.append(
                {
                    "row_index": int(i),
                    "check": p.check,
                    "column": p.column,
                    "value": value,
                    "reason": f"{p.check}: column `{p.column}` is {value!r}, expected {p.expected}",
                    "row": row,
                }
            )
    return out


__all__ = ["ValidationOutcome", "ValidationReport", "validate_table"]
