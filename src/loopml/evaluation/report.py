"""The evaluation report: JSON for machines, rich tables for the terminal, self-contained HTML.

Everything renders from the report JSON, so a stored report can be shown again later
(``loopml evaluate --show``) without the data. The HTML is the web UI's evaluation template with its
uPlot charts inlined, built from downsampled curves and aggregates only; no test rows are embedded besides the few
largest-loss examples the spec asks for.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
from rich.markup import escape as rich_escape
from rich.table import Table

from loopml.evaluation.gates import GateVerdict, approved
from loopml.evaluation.result import EvaluationResult

REPORT_VERSION = 1


def build_report(
    result: EvaluationResult, verdicts: list[GateVerdict], model: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The report JSON: ``{"approved", "gates": [{"gate", "passed", "evidence"}], ...metrics...}``.

    Parameters
    ----------
    result
        The evaluation result.
    verdicts
        Gate verdicts (:func:`~loopml.evaluation.gates.check_gates`).
    model
        What was evaluated (bundle digest, model type, production version...).
    """
    body = result.to_json()
    report: dict[str, Any] = clean_json({
        "report_version": REPORT_VERSION,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "approved": approved(verdicts),
        "verdict": verdict_text(verdicts),
        "baseline": baseline_summary(result, verdicts),
        "gates": [v.to_json() for v in verdicts],
        "model": model or {},
        "metric_values": {k: m["value"] for k, m in body["metrics"].items()},
        **body,
    })
    return report


def verdict_text(verdicts: list[GateVerdict]) -> str:
    """One line: ``approved``, ``no better than the baseline (prior)`` or which gates failed."""
    if approved(verdicts):
        return "approved"
    base = next((v for v in verdicts if v.evidence.get("kind") == "baseline" and not v.passed), None)
    if base is not None:
        return str(base.evidence.get("verdict") or "no better than the baseline")
    failed = [v.gate for v in verdicts if not v.passed]
    return f"not approved: {len(failed)} gate(s) failed ({'; '.join(failed)})"


def baseline_summary(result: EvaluationResult, verdicts: list[GateVerdict]) -> dict[str, Any]:
    """The baseline the candidate was judged against: name, primary-metric value, whether the gate was on."""
    pm = result.primary_metric
    gate = next((v for v in verdicts if v.evidence.get("kind") == "baseline"), None)
    ev = gate.evidence if gate is not None else {}
    ref = result.metrics.get(pm) if ev.get("candidate_is_baseline") else result.references.get("baseline", {}).get(pm)
    return {
        "name": ev.get("baseline"),
        "metric": pm,
        "value": None if ref is None else ref.value,
        "gate": "on" if ev.get("enabled", gate is not None) else "off",
        "passed": None if gate is None else gate.passed,
    }


def clean_json(x: Any) -> Any:
    """Plain JSON: numpy scalars to Python, NaN/inf to null (reports are written with ``allow_nan=False``)."""
    if isinstance(x, dict):
        return {str(k): clean_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean_json(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def fixed(x: Any, digits: int = 4) -> str:
    """A number with ``digits`` decimals, '–' when undefined."""
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def interval_text(m: dict[str, Any]) -> str:
    """``[lower, upper]`` of a metric or difference, '–' without an interval."""
    if m.get("lower") is None:
        return "–"
    return f"[{fixed(m['lower'])}, {fixed(m['upper'])}]"


def summary_tables(report: dict[str, Any], max_slices: int = 8) -> list[Table]:
    """Rich tables summarising a report: metrics, comparisons, gates, worst slices, fairness."""
    tables: list[Table] = []
    conf = round(100 * report.get("confidence", 0.95))
    t = Table(title=f"metrics on {report['rows']:,} test rows ({report['bootstrap']['resamples']} bootstrap resamples, "
                    f"{conf}% intervals)", header_style="bold")
    for c in ("metric", "value", f"{conf}% interval", "online metric"):
        t.add_column(c)
    for k, m in report["metrics"].items():
        online = m.get("online_metric") or ""
        if online and m.get("online_source") == "registry default":
            online += " (default)"
        t.add_row(k + (" *" if k == report["primary_metric"] else ""), fixed(m["value"]), interval_text(m), rich_escape(online))
    tables.append(t)
    for ref, comps in report.get("comparisons", {}).items():
        t = Table(title=f"candidate vs {ref} (paired bootstrap, same rows)", header_style="bold")
        for c in ("metric", "candidate", ref, "difference", f"{conf}% interval", "p", "verdict"):
            t.add_column(c)
        for k, c in comps.items():
            style = {"better": "green", "worse": "red"}.get(c["verdict"], "")
            t.add_row(k, fixed(c["candidate"]), fixed(c["reference_value"]), fixed(c["difference"]["value"]),
                      interval_text(c["difference"]), fixed(c["p_value"], 3), f"[{style}]{c['verdict']}[/{style}]" if style else c["verdict"])
        tables.append(t)
    if report.get("slices"):
        pm = report["primary_metric"]
        t = Table(title=f"worst slices by {pm}", header_style="bold")
        for c in ("column", "slice", "rows", pm, f"{conf}% interval", "vs production"):
            t.add_column(c)
        for s in report["slices"][:max_slices]:
            vs = s.get("vs_production")
            t.add_row(rich_escape(s["column"]), rich_escape(s["slice"]), f"{s['n']:,}", fixed(s["primary"]["value"]),
                      interval_text(s["primary"]),
                      "" if vs is None else f"{fixed(vs['difference']['value'])} ({vs['verdict']})")
        tables.append(t)
    if report.get("fairness"):
        t = Table(title=f"fairness (threshold {next(iter(report['fairness'].values()))['threshold']})",
                  header_style="bold")
        for c in ("column", "groups", "demographic parity diff", "equalised odds diff", "max calibration gap"):
            t.add_column(c)
        for col, f in report["fairness"].items():
            t.add_row(rich_escape(col), rich_escape(", ".join(f"{g['group']} ({g['n']})" for g in f["groups"])),
                      f"{fixed(f['demographic_parity_difference']['value'])} {interval_text(f['demographic_parity_difference'])}",
                      f"{fixed(f['equalized_odds_difference']['value'])} {interval_text(f['equalized_odds_difference'])}",
                      fixed(f["max_calibration_gap"]))
        tables.append(t)
    t = Table(title="gates: " + ("APPROVED" if report["approved"] else "NOT APPROVED")
              + ("" if report["approved"] or not report.get("verdict") else f" – {report['verdict']}"),
              header_style="bold")
    for c in ("gate", "result", "evidence"):
        t.add_column(c)
    for g in report["gates"]:
        t.add_row(rich_escape(g["gate"]), "[green]pass[/green]" if g["passed"] else "[red]FAIL[/red]",
                  rich_escape(evidence_text(g["evidence"])))
    if not report["gates"]:
        t.add_row("(no gates declared in evaluation.gates)", "", "")
    tables.append(t)
    return tables


def evidence_text(ev: dict[str, Any]) -> str:
    """One line of evidence for a gate verdict (interval, bound, margin, why it failed)."""
    if "reason" in ev:
        return str(ev["reason"])
    if "skipped" in ev:
        return str(ev["skipped"])
    kind = ev.get("kind")
    if kind == "requirement":
        s = f"measured {fixed(ev.get('measured'))} vs budget {fixed(ev.get('budget'))}"
        if ev.get("tolerance"):
            s += f" (+{round(100 * ev['tolerance'])}% measurement tolerance)"
        return s
    if kind in ("relative", "baseline"):
        d = ev["difference"]
        conf = round(100 * (ev.get("confidence") or 0.95))
        s = f"Δ={fixed(d['value'])}"
        if ev.get("decided_on") == "one-sided bound":
            s += f", one-sided {ev['bound_side']} bound {fixed(ev['bound'])} at {conf}%"
        else:
            s += f", {conf}% interval {interval_text(d)}"
        s += f" vs {ev.get('baseline') or ev.get('reference')}"
        if kind == "relative":
            s += f" (margin {ev.get('margin')})"
        if ev.get("why"):
            s += f": {ev['why']}"
        return s
    if "columns" in ev:
        return "; ".join(f"{c}: {fixed(v['value'])}" for c, v in ev["columns"].items())
    s = f"value {fixed(ev.get('value', ev.get('measured')))}"
    if ev.get("confidence"):
        s += f", {ev['bound_side']} bound {fixed(ev['bound'])} at {round(100 * ev['confidence'])}%"
    return s


# -- HTML ----------------------------------------------------------------------------------------
def render_html(report: dict[str, Any]) -> str:
    """A self-contained, interactive HTML page: the web UI's templates and chart layer (uPlot and its data
    inlined; no request to anything), so a file shows what `loopml ui` shows for the version."""
    from loopml.webui.export import evaluation_report

    return evaluation_report(report)
