"""The evaluation report: JSON for machines, rich tables for the terminal, self-contained HTML.

Everything renders from the report JSON, so a stored report can be shown again later
(``loopml evaluate --show``) without the data. The HTML holds inline SVG charts built from
downsampled curves and aggregates only; no test rows are embedded besides the few
largest-loss examples the spec asks for.
"""

from __future__ import annotations

import datetime as dt
import math
from html import escape
from typing import Any

import numpy as np
from rich.markup import escape as rich_escape
from rich.table import Table

from loopml.evaluation import svg
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


def _f(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _ci(m: dict[str, Any]) -> str:
    if m.get("lower") is None:
        return "–"
    return f"[{_f(m['lower'])}, {_f(m['upper'])}]"


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
        t.add_row(k + (" *" if k == report["primary_metric"] else ""), _f(m["value"]), _ci(m), rich_escape(online))
    tables.append(t)
    for ref, comps in report.get("comparisons", {}).items():
        t = Table(title=f"candidate vs {ref} (paired bootstrap, same rows)", header_style="bold")
        for c in ("metric", "candidate", ref, "difference", f"{conf}% interval", "p", "verdict"):
            t.add_column(c)
        for k, c in comps.items():
            style = {"better": "green", "worse": "red"}.get(c["verdict"], "")
            t.add_row(k, _f(c["candidate"]), _f(c["reference_value"]), _f(c["difference"]["value"]),
                      _ci(c["difference"]), _f(c["p_value"], 3), f"[{style}]{c['verdict']}[/{style}]" if style else c["verdict"])
        tables.append(t)
    if report.get("slices"):
        pm = report["primary_metric"]
        t = Table(title=f"worst slices by {pm}", header_style="bold")
        for c in ("column", "slice", "rows", pm, f"{conf}% interval", "vs production"):
            t.add_column(c)
        for s in report["slices"][:max_slices]:
            vs = s.get("vs_production")
            t.add_row(rich_escape(s["column"]), rich_escape(s["slice"]), f"{s['n']:,}", _f(s["primary"]["value"]),
                      _ci(s["primary"]),
                      "" if vs is None else f"{_f(vs['difference']['value'])} ({vs['verdict']})")
        tables.append(t)
    if report.get("fairness"):
        t = Table(title=f"fairness (threshold {next(iter(report['fairness'].values()))['threshold']})",
                  header_style="bold")
        for c in ("column", "groups", "demographic parity diff", "equalised odds diff", "max calibration gap"):
            t.add_column(c)
        for col, f in report["fairness"].items():
            t.add_row(rich_escape(col), rich_escape(", ".join(f"{g['group']} ({g['n']})" for g in f["groups"])),
                      f"{_f(f['demographic_parity_difference']['value'])} {_ci(f['demographic_parity_difference'])}",
                      f"{_f(f['equalized_odds_difference']['value'])} {_ci(f['equalized_odds_difference'])}",
                      _f(f["max_calibration_gap"]))
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
        s = f"measured {_f(ev.get('measured'))} vs budget {_f(ev.get('budget'))}"
        if ev.get("tolerance"):
            s += f" (+{round(100 * ev['tolerance'])}% measurement tolerance)"
        return s
    if kind in ("relative", "baseline"):
        d = ev["difference"]
        conf = round(100 * (ev.get("confidence") or 0.95))
        s = f"Δ={_f(d['value'])}"
        if ev.get("decided_on") == "one-sided bound":
            s += f", one-sided {ev['bound_side']} bound {_f(ev['bound'])} at {conf}%"
        else:
            s += f", {conf}% interval {_ci(d)}"
        s += f" vs {ev.get('baseline') or ev.get('reference')}"
        if kind == "relative":
            s += f" (margin {ev.get('margin')})"
        if ev.get("why"):
            s += f": {ev['why']}"
        return s
    if "columns" in ev:
        return "; ".join(f"{c}: {_f(v['value'])}" for c, v in ev["columns"].items())
    s = f"value {_f(ev.get('value', ev.get('measured')))}"
    if ev.get("confidence"):
        s += f", {ev['bound_side']} bound {_f(ev['bound'])} at {round(100 * ev['confidence'])}%"
    return s


# -- HTML ----------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}.pass{color:#1a7f37;font-weight:bold}.fail{color:#c62828;font-weight:bold}
.badge{display:inline-block;padding:4px 10px;border-radius:4px;color:#fff;font-weight:bold}
.ok{background:#1a7f37}.no{background:#c62828}.charts svg{margin:6px 12px 6px 0;border:1px solid #eee}
.muted{color:#777;font-size:12px}
"""


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _e(x: Any, digits: int = 4) -> str:
    return escape(_f(x, digits))


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page (inline CSS and SVG; no scripts, no external resources)."""
    conf = round(100 * report.get("confidence", 0.95))
    pm = report["primary_metric"]
    out: list[str] = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>loopml evaluation report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Evaluation report "
        + ("<span class='badge ok'>APPROVED</span>" if report["approved"] else "<span class='badge no'>NOT APPROVED</span>")
        + "</h1>"
        + ("" if report["approved"] or not report.get("verdict") else f"<p><b>{escape(str(report['verdict']))}</b></p>")
        + ("<p class='muted'>the baseline gate was off (evaluation.baseline_gate: false)</p>"
           if (report.get("baseline") or {}).get("gate") == "off" else ""),
        f"<p class='muted'>{escape(report.get('created_at', ''))} · task {escape(report['task'])} · "
        f"{report['rows']:,} test rows · {report['bootstrap']['resamples']} bootstrap resamples "
        f"({escape(report['bootstrap']['method'])}) · {conf}% intervals"
        + (f" · threshold {report['threshold']:.4g}" if report.get("threshold") is not None else "")
        + "</p>",
    ]
    model = report.get("model") or {}
    if model:
        out.append(_table(["", ""], [[escape(str(k)), escape(str(v))] for k, v in model.items()]))
    out.append("<h2>Gates</h2>")
    out.append(_table(["gate", "result", "evidence"], [
        [escape(g["gate"]), "<span class='pass'>pass</span>" if g["passed"] else "<span class='fail'>FAIL</span>",
         escape(evidence_text(g["evidence"]))] for g in report["gates"]
    ] or [["(no gates declared)", "", ""]]))
    out.append("<h2>Metrics</h2>")
    out.append(_table(["metric", "value", f"{conf}% interval", "online metric it stands for", "description"], [
        [escape(k) + (" <b>(primary)</b>" if k == pm else ""), _e(m["value"]), escape(_ci(m)),
         escape(m.get("online_metric") or "") + (f" <span class='muted'>({escape(m['online_source'])})</span>"
                                                  if m.get("online_source") else ""),
         escape(m["description"])]
        for k, m in report["metrics"].items()
    ]))
    for ref, comps in report.get("comparisons", {}).items():
        out.append(f"<h2>Candidate vs {escape(ref)}</h2>")
        out.append(_table(["metric", "candidate", escape(ref), "difference", f"{conf}% interval", "p-value", "verdict"], [
            [escape(k), _e(c["candidate"]), _e(c["reference_value"]), _e(c["difference"]["value"]),
             escape(_ci(c["difference"])), _e(c["p_value"], 3), escape(c["verdict"])]
            for k, c in comps.items()
        ]))
    charts: list[str] = []
    curves = report.get("curves") or {}
    if "roc" in curves:
        charts.append(svg.line_chart([(m, c["fpr"], c["tpr"]) for m, c in curves["roc"].items()], title="ROC",
                                     xlabel="false positive rate", ylabel="true positive rate",
                                     xlim=(0, 1), ylim=(0, 1), diagonal=True))
    if "pr" in curves:
        charts.append(svg.line_chart([(m, c["recall"], c["precision"]) for m, c in curves["pr"].items()],
                                     title="Precision-recall", xlabel="recall", ylabel="precision",
                                     xlim=(0, 1), ylim=(0, 1)))
    if "calibration" in curves:
        charts.append(svg.line_chart([(m, c["mean_predicted"], c["fraction_positive"])
                                      for m, c in curves["calibration"].items()],
                                     title="Calibration", xlabel="mean predicted probability",
                                     ylabel="fraction positive", xlim=(0, 1), ylim=(0, 1), diagonal=True, markers=True))
    if "predicted_vs_actual" in curves:
        c = curves["predicted_vs_actual"]
        both = [v for v in c["mean_predicted"] + c["mean_actual"] if isinstance(v, int | float) and math.isfinite(v)]
        lo, hi = (min(both), max(both)) if both else (0.0, 1.0)
        charts.append(svg.line_chart([("candidate", c["mean_predicted"], c["mean_actual"])],
                                     title="Predicted vs actual (deciles)", xlabel="mean predicted",
                                     ylabel="mean actual", xlim=(lo, hi), ylim=(lo, hi), diagonal=True, markers=True))
    cm = report.get("confusion_matrix")
    if cm:
        charts.append(svg.heatmap(cm["matrix"], [str(x) for x in cm["labels"]], title="Confusion matrix"))
    if charts:
        out.append("<h2>Curves</h2><div class='charts'>" + "".join(charts) + "</div>")
    th = report.get("thresholds") or {}
    if th:
        out.append("<h2>Decision thresholds</h2>")
        out.append(_table(["target", "wanted", "threshold", "precision", "recall"], [
            [escape(v.get("target", k)), _e(v.get("value")), _e(v.get("threshold")), _e(v.get("precision")),
             _e(v.get("recall"))] if v.get("reachable") else [escape(v.get("target", k)), _e(v.get("value")),
                                                               "not reachable", "", ""]
            for k, v in th.items()
        ]))
    slices = report.get("slices") or []
    if slices:
        out.append(f"<h2>Slices (worst first by {escape(pm)})</h2>")
        shown = [s for s in slices if s["primary"]["value"] is not None][:40]
        out.append("<div class='charts'>" + svg.bar_chart(
            [f"{s['column']}={s['slice']}" for s in shown], [s["primary"]["value"] or 0.0 for s in shown],
            title=f"{pm} per slice", xlabel=pm,
            errors=[(s["primary"]["lower"] if s["primary"]["lower"] is not None else (s["primary"]["value"] or 0.0),
                     s["primary"]["upper"] if s["primary"]["upper"] is not None else (s["primary"]["value"] or 0.0))
                    for s in shown],
            reference=report["metrics"][pm]["value"]) + "</div>")
        keys = list(report["metrics"])[:6]
        out.append(_table(["column", "slice", "rows", *keys, f"{pm} {conf}% interval", "vs production"], [
            [escape(s["column"]), escape(s["slice"]), f"{s['n']:,}", *[_e(s["metrics"].get(k)) for k in keys],
             escape(_ci(s["primary"])),
             "" if not s.get("vs_production") else escape(
                 f"{_f(s['vs_production']['difference']['value'])} ({s['vs_production']['verdict']})")]
            for s in slices
        ]))
    worse = report.get("worse_than_production") or []
    if worse:
        out.append("<h2>Slices where the candidate is worse than production</h2>")
        out.append(_table(["column", "slice", "rows", "difference", f"{conf}% interval", "significant"], [
            [escape(w["column"]), escape(w["slice"]), f"{w['n']:,}", _e(w["difference"]["value"]),
             escape(_ci(w["difference"])), "yes" if w["significant"] else "no"]
            for w in worse
        ]))
    fair = report.get("fairness") or {}
    if fair:
        out.append("<h2>Fairness</h2>")
        for col, f in fair.items():
            out.append(f"<h3>{escape(col)}</h3><p>demographic parity difference "
                       f"<b>{_e(f['demographic_parity_difference']['value'])}</b> "
                       f"{escape(_ci(f['demographic_parity_difference']))} · equalised odds difference "
                       f"<b>{_e(f['equalized_odds_difference']['value'])}</b> "
                       f"{escape(_ci(f['equalized_odds_difference']))} · demographic parity ratio "
                       f"{_e(f['demographic_parity_ratio'])} · max calibration gap {_e(f['max_calibration_gap'])}</p>")
            out.append(_table(["group", "rows", "positive rate", "selection rate", "TPR", "FPR", "mean score",
                               "calibration gap", "ECE"], [
                [escape(g["group"]), f"{g['n']:,}", _e(g["base_rate"]), _e(g["selection_rate"]), _e(g["tpr"]),
                 _e(g["fpr"]), _e(g["mean_score"]), _e(g["calibration_gap"]), _e(g["ece"])]
                for g in f["groups"]
            ]))
            out.append("<div class='charts'>" + svg.line_chart(
                [(g["group"], g["calibration"]["mean_predicted"], g["calibration"]["fraction_positive"])
                 for g in f["groups"]][:6],
                title=f"Calibration by {col}", xlabel="mean predicted", ylabel="fraction positive",
                xlim=(0, 1), ylim=(0, 1), diagonal=True, markers=True) + "</div>")
    analysis = report.get("analysis") or {}
    imp = analysis.get("importance") or {}
    if imp:
        out.append("<h2>Feature importance</h2><div class='charts'>")
        for kind, rows in imp.items():
            if isinstance(rows, list) and rows:
                top = rows[:20]
                out.append(svg.bar_chart([r["feature"] for r in top], [r["importance"] for r in top],
                                         title=f"{kind} importance", xlabel=str(top[0].get("unit", "importance")),
                                         errors=[(r.get("lower", r["importance"]), r.get("upper", r["importance"]))
                                                 for r in top] if "lower" in top[0] else None))
        out.append("</div>")
    loss = analysis.get("largest_loss") or []
    if loss:
        cols = list(loss[0].keys())
        out.append(f"<h2>The {len(loss)} test rows with the largest loss</h2>")
        out.append("<div style='overflow-x:auto'>" + _table(cols, [[escape(_f(r.get(c))) for c in cols] for r in loss])
                   + "</div>")
    notes = report.get("notes") or []
    if notes:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    out.append(f"<p class='muted'>evaluation took {report.get('seconds', 0):.2f} s · generated by loopml</p>")
    out.append("</body></html>")
    return "".join(out)
