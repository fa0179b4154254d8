"""Validation reports: a terminal table (failing checks first), self-contained HTML and JSON.

The HTML page has no external resources: histograms are inline SVG, current data over the
reference, one per column.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from loopml.validation.profile import ColumnProfile
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


def _svg_hist(cp: ColumnProfile, ref: ColumnProfile | None, width: int = 320, height: int = 120) -> str:
    """An inline SVG bar chart of a column (blue: current, grey outline: reference)."""
    h = cp.histogram
    counts = list(h.get("counts", []))
    if not counts:
        return "<p class='muted'>no histogram</p>"
    if "values" in h:
        labels = [str(v) for v in h["values"]]
    else:
        edges = h.get("edges", [])
        labels = [f"{edges[i]:.4g}–{edges[i + 1]:.4g}" for i in range(len(edges) - 1)]
    ref_counts: list[float] = []
    if ref is not None and ref.histogram.get("counts"):
        rh = ref.histogram
        if "values" in rh and "values" in h:
            m = dict(zip(map(str, rh["values"]), rh["counts"]))
            ref_counts = [m.get(lab, 0) for lab in labels]
        elif rh.get("edges") == h.get("edges"):
            ref_counts = list(rh["counts"])
    total = sum(counts) or 1
    rtotal = sum(ref_counts) or 1
    shares = [c / total for c in counts]
    rshares = [c / rtotal for c in ref_counts]
    top = max([*shares, *rshares, 1e-9])
    n = len(counts)
    bw = (width - 10) / n
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height + 20}' role='img'>"]
    for i, s in enumerate(shares):
        bh = (height - 4) * s / top
        x = 5 + i * bw
        parts.append(
            f"<rect x='{x:.1f}' y='{height - bh:.1f}' width='{max(bw - 1, 1):.1f}' height='{bh:.1f}' fill='#4a7bd0'>"
            f"<title>{html.escape(labels[i])}: {counts[i]:,} ({s:.1%})</title></rect>"
        )
    for i, s in enumerate(rshares):
        bh = (height - 4) * s / top
        x = 5 + i * bw
        parts.append(
            f"<rect x='{x:.1f}' y='{height - bh:.1f}' width='{max(bw - 1, 1):.1f}' height='{bh:.1f}' "
            f"fill='none' stroke='#555' stroke-dasharray='2,1'><title>reference {html.escape(labels[i])}: "
            f"{ref_counts[i]:,} ({s:.1%})</title></rect>"
        )
    first, last = html.escape(labels[0][:18]), html.escape(labels[-1][:18])
    parts.append(f"<text x='5' y='{height + 15}' font-size='10'>{first}</text>")
    parts.append(f"<text x='{width - 5}' y='{height + 15}' font-size='10' text-anchor='end'>{last}</text>")
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:4px 8px;font-size:13px;text-align:left}
th{background:#f4f4f4}.FAIL{color:#b00;font-weight:bold}.ok{color:#080}.warning{color:#b70}.muted{color:#888}
.cols{display:flex;flex-wrap:wrap;gap:16px}.col{border:1px solid #ddd;padding:8px;width:340px}
.col h3{margin:0 0 4px 0;font-size:14px}.col p{margin:2px 0;font-size:12px}
"""


def render_html(report: ValidationReport) -> str:
    """A self-contained HTML page (no external resources)."""
    e = html.escape
    status = "PASSED" if report.passed else "FAILED"
    failing: list[str] = []
    passing: list[str] = []
    for c in report.ordered_checks():
        cls = "ok" if c.passed else ("FAIL" if c.severity == "error" else "warning")
        (passing if c.passed else failing).append(
            f"<tr><td class='{cls}'>{'ok' if c.passed else 'FAIL'}</td><td>{e(c.severity)}</td><td>{e(c.check)}</td>"
            f"<td>{e(c.column or '')}</td><td>{c.failing_rows or ''}</td><td>{e(c.message)}</td></tr>"
        )
    head = ("<table><tr><th>status</th><th>severity</th><th>check</th><th>column</th><th>rows</th>"
            "<th>detail</th></tr>")
    cols = []
    for name, cp in report.profile.columns.items():
        ref = report.reference.columns.get(name) if report.reference is not None else None
        psi_c = next((c for c in report.checks if c.check == "psi" and c.column == name), None)
        stats = (
            f"<p>{e(cp.type)} · missing {cp.missing_rate:.1%} · distinct {cp.distinct:,}</p>"
            f"<p>min {e(_short(cp.min))} · max {e(_short(cp.max))} · mean {e(_short(cp.mean))} · "
            f"std {e(_short(cp.std))}</p>"
            + (f"<p>PSI {psi_c.evidence.get('psi', 0):.3f}</p>" if psi_c is not None else "")
            + (f"<p class='muted'>top: {e(', '.join(f'{_short(v)} ({n:,})' for v, n in cp.top[:5]))}</p>"
               if cp.top else "")
        )
        cols.append(f"<div class='col'><h3>{e(name)}</h3>{stats}{_svg_hist(cp, ref)}</div>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>loopml validation {e(report.snapshot or '')}</title><style>{_CSS}</style></head><body>"
        f"<h1>Validation of {e(report.snapshot or 'table')}: <span class='{'ok' if report.passed else 'FAIL'}'>"
        f"{status}</span></h1>"
        f"<p>{report.rows:,} rows · {report.kept_rows:,} kept · {report.quarantined_rows:,} quarantined · "
        f"stops on: {e(report.fail_on)} · schema {e(report.schema_path or '')}"
        f"{' (inferred from this snapshot)' if report.schema_inferred else ''} · {e(report.created_at)}</p>"
        "<h2>Rows per source file</h2><table><tr><th>file</th><th>read</th><th>kept</th><th>quarantined</th></tr>"
        + "".join(f"<tr><td>{e(str(s['file']))}</td><td>{s['rows']:,}</td><td>{s['kept']:,}</td>"
                  f"<td>{s['quarantined']:,}</td></tr>" for s in report.sources)
        + "</table>"
        + f"<h2>Failing checks ({len(failing)})</h2>"
        + (f"{head}{''.join(failing)}</table>" if failing else "<p class='ok'>none</p>")
        + "<h2>Columns</h2><p class='muted'>bars: this snapshot; dashed outline: reference</p>"
        f"<div class='cols'>{''.join(cols)}</div>"
        # the passing checks (often 100+) last and folded: they must not push the findings off the page
        f"<h2>Passing checks ({len(passing)})</h2><details><summary>show the {len(passing)} passing checks</summary>"
        f"{head}{''.join(passing)}</table></details></body></html>"
    )


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
