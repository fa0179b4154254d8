"""Validation reports: a terminal table (failing checks first), self-contained HTML and JSON.

The HTML page is the web UI's validation template with its uPlot charts inlined (no external resources):
one histogram per column, this snapshot's shares beside the reference's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from loopml.validation.validator import ValidationReport

_SEV_STYLE = {"error": "red", "warning": "yellow", "info": "cyan"}


def checks_table(report: ValidationReport, *, limit: int | None = None) -> Table:
    """A rich table of the checks, failing first."""
    title = (
        f"validation of {report.snapshot or 'table'}: {'PASSED' if report.passed else 'FAILED'} "
        f"({report.rows:,} rows, {report.quarantined_rows:,} quarantined)"
    )
    t = Table(title=title, header_style="bold")
    for col in ("status", "severity", "check", "column", "rows", "detail"):
        t.add_column(col)
    checks = report.ordered_checks()
    for c in checks[:limit] if limit else checks:
        style = "green" if c.passed else _SEV_STYLE.get(c.severity, "white")
        t.add_row(
            f"[{style}]{'ok' if c.passed else 'FAIL'}[/{style}]",
            c.severity,
            c.check,
            c.column or "",
            f"{c.failing_rows:,}" if c.failing_rows else "",
            c.message,
        )
    return t


def accounting_table(report: ValidationReport) -> Table:
    """Rows per source file: read = kept + quarantined."""
    t = Table(title="rows per source file (read = kept + quarantined)", header_style="bold")
    for col in ("file", "read", "kept", "quarantined"):
        t.add_column(col)
    for s in report.sources:
        t.add_row(str(s["file"]), f"{s['rows']:,}", f"{s['kept']:,}", f"{s['quarantined']:,}")
    return t


def profile_table_view(report: ValidationReport) -> Table:
    """A rich table of the profile: one row per column."""
    t = Table(title=f"profile ({report.profile.rows:,} rows)", header_style="bold")
    for c in ("column", "type", "missing", "distinct", "min", "max", "mean", "std", "top"):
        t.add_column(c)
    for cp in report.profile.columns.values():
        t.add_row(
            cp.name, cp.type, f"{cp.missing_rate:.1%}", f"{cp.distinct:,}", _short(cp.min), _short(cp.max),
            _short(cp.mean), _short(cp.std), ", ".join(f"{_short(v)} ({n})" for v, n in cp.top[:3]),
        )
    return t


def _short(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    s = str(v)
    return s if len(s) <= 24 else s[:21] + "..."


def render_html(report: ValidationReport) -> str:
    """A self-contained, interactive HTML page (failing checks first, then the columns, passing checks folded)."""
    from loopml.webui.export import validation_report

    return validation_report(json.loads(json.dumps(report.to_json(), default=str)))


def write_reports(report: ValidationReport, folder: Path, stem: str) -> tuple[Path, Path]:
    """Write ``stem.json`` and ``stem.html`` into ``folder``; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    jp, hp = folder / f"{stem}.json", folder / f"{stem}.html"
    for path, text in ((jp, json.dumps(report.to_json(), indent=2, default=str)), (hp, render_html(report))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return jp, hp


__all__ = ["accounting_table", "checks_table", "profile_table_view", "render_html", "write_reports"]
