"""Self-contained HTML reports from the web UI's templates and chart layer (uPlot and ``charts.js`` inlined).

The leaderboard, evaluation, validation and monitoring reports are rendered here, from the same Jinja2
templates (``templates/report_*.html`` and the ``_*.html`` macros the UI's pages import) and the same chart
specs the UI draws. An exported file needs no server and makes no request: styles and scripts are part of the
page, chart data sits in ``<script type="application/json">`` blocks, exactly as in the UI. This module does
not import the web server, so the pipeline's stages render reports without it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from loopml.validation.report import _short  # the one short form of a profile value

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def clean(obj: Any) -> Any:
    """JSON-safe data for the charts: NaN/inf become null, keys strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    return obj


def tojson_safe(obj: Any) -> Markup:
    """JSON for a ``<script type="application/json">`` element: no ``<``, ``>`` or ``&`` can close or confuse it."""
    text = json.dumps(clean(obj), default=str, allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def configure(env: jinja2.Environment) -> jinja2.Environment:
    """The filters every template uses (the UI's environment and the reports' one)."""
    from loopml.webui import views

    env.filters["fmt"] = views.fmt
    env.filters["when"] = views.when
    env.filters["tojson_safe"] = tojson_safe
    env.globals.update(_GLOBALS)
    return env


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return configure(jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True))


@lru_cache(maxsize=1)
def inline_assets() -> dict[str, str]:
    """The CSS and the JavaScript of the chart layer, to inline in a page."""
    uplot = STATIC / "vendor" / "uplot"
    css = (uplot / "uPlot.min.css").read_text(encoding="utf-8") + "\n" + (STATIC / "app.css").read_text(encoding="utf-8")
    js = (uplot / "uPlot.iife.min.js").read_text(encoding="utf-8") + "\n" + (STATIC / "charts.js").read_text(encoding="utf-8")
    if "</script" in js.lower() or "</style" in css.lower():  # would end the element early
        raise ValueError("an inlined asset contains a closing tag")
    return {"css": css, "js": js}


def render(template: str, **ctx: Any) -> str:
    """Render ``template`` as a standalone page (its assets inlined)."""
    return _environment().get_template(template).render(assets=inline_assets(), **ctx)


# -- chart specs (drawn by static/charts.js) ------------------------------------------------------
def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def xy_chart(title: str, curves: Sequence[tuple[str, Sequence[Any], Sequence[Any]]], *, xlabel: str = "",
             ylabel: str = "", unit_square: bool = False, diagonal: bool = False,
             points: bool = False) -> dict[str, Any]:
    """Curves with their own x values on one chart: the points of every curve merged in x order (ties keep each
    curve's order, so a ROC's vertical steps stay), each curve null where another one has a point (joined
    across by the chart). Points without a finite x are left out; undefined y values are gaps."""
    merged: list[tuple[float, int, float | None]] = []
    for i, (_, xs, ys) in enumerate(curves):
        for x, y in zip(xs, ys):
            fx = _finite(x)
            if fx is not None:
                merged.append((fx, i, _finite(y)))
    merged.sort(key=lambda p: p[0])
    series = [{"label": str(label), "values": [y if i == k else None for _, i, y in merged], "points": points}
              for k, (label, _, _) in enumerate(curves)]
    spec: dict[str, Any] = {"title": title, "kind": "xy", "x": [p[0] for p in merged], "series": series,
                            "xlabel": xlabel, "ylabel": ylabel, "diagonal": diagonal}
    if unit_square:
        spec["xrange"], spec["yrange"] = [0, 1], [0, 1]
    return spec


def interval_bars(title: str, labels: Sequence[str], values: Sequence[Any], *, lower: Sequence[Any] | None = None,
                  upper: Sequence[Any] | None = None, label: str = "value", ylabel: str = "",
                  hline: Any = None) -> dict[str, Any]:
    """One bar per label with its interval as a whisker (undefined values draw nothing)."""
    s: dict[str, Any] = {"label": label, "values": [_finite(v) for v in values]}
    if lower is not None and upper is not None:
        s["lower"], s["upper"] = [_finite(v) for v in lower], [_finite(v) for v in upper]
    return {"title": title, "kind": "bars", "x": list(range(len(labels))), "labels": [str(x)[:28] for x in labels],
            "series": [s], "ylabel": ylabel, "hline": _finite(hline)}


# -- the reports -------------------------------------------------------------------------------------
def leaderboard_charts(board: dict[str, Any]) -> dict[str, Any] | None:
    """The leaderboard's metric per candidate with its 95% interval (candidates without a value left out)."""
    rows = [c for c in board.get("candidates") or [] if _finite(c.get("value")) is not None]
    if not rows:
        return None
    return interval_bars(f"{board['metric']} per candidate (validation, 95% interval)", [c["name"] for c in rows],
                         [c["value"] for c in rows], lower=[c.get("ci_low") for c in rows],
                         upper=[c.get("ci_high") for c in rows], label=str(board["metric"]), ylabel=str(board["metric"]))


def leaderboard_report(board: dict[str, Any], title: str = "loopml leaderboard") -> str:
    """The leaderboard (candidates, why, why not, on-device variants, parameters) as one self-contained page."""
    return render("report_leaderboard.html", board=board, title=title)


def evaluation_charts(report: dict[str, Any]) -> dict[str, Any]:
    """Chart specs of an evaluation report: curves, slices, fairness calibration per group, importance."""
    curves = report.get("curves") or {}
    out: dict[str, Any] = {"curves": [], "slices": None, "fairness": {}, "importance": []}
    if "roc" in curves:
        out["curves"].append(xy_chart("ROC", [(m, c["fpr"], c["tpr"]) for m, c in curves["roc"].items()],
                                      xlabel="false positive rate", ylabel="true positive rate", unit_square=True,
                                      diagonal=True))
    if "pr" in curves:
        out["curves"].append(xy_chart("Precision-recall", [(m, c["recall"], c["precision"]) for m, c in curves["pr"].items()],
                                      xlabel="recall", ylabel="precision", unit_square=True))
    if "calibration" in curves:
        out["curves"].append(xy_chart("Calibration", [(m, c["mean_predicted"], c["fraction_positive"])
                                                      for m, c in curves["calibration"].items()],
                                      xlabel="mean predicted probability", ylabel="fraction positive",
                                      unit_square=True, diagonal=True, points=True))
    if "predicted_vs_actual" in curves:
        c = curves["predicted_vs_actual"]
        out["curves"].append(xy_chart("Predicted vs actual (deciles)",
                                      [("candidate", c["mean_predicted"], c["mean_actual"])],
                                      xlabel="mean predicted", ylabel="mean actual", diagonal=True, points=True))
    pm = report.get("primary_metric")
    shown = [s for s in report.get("slices") or [] if _finite((s.get("primary") or {}).get("value")) is not None][:40]
    if shown:
        out["slices"] = interval_bars(
            f"{pm} per slice (worst first)", [f"{s['column']}={s['slice']}" for s in shown],
            [s["primary"]["value"] for s in shown], lower=[s["primary"].get("lower") for s in shown],
            upper=[s["primary"].get("upper") for s in shown], label=str(pm), ylabel=str(pm),
            hline=((report.get("metrics") or {}).get(pm) or {}).get("value"))
    for col, f in (report.get("fairness") or {}).items():
        out["fairness"][col] = xy_chart(
            f"Calibration by {col}", [(g["group"], (g.get("calibration") or {}).get("mean_predicted") or [],
                                       (g.get("calibration") or {}).get("fraction_positive") or [])
                                      for g in f.get("groups") or []][:6],
            xlabel="mean predicted", ylabel="fraction positive", unit_square=True, diagonal=True, points=True)
    for kind, rows in ((report.get("analysis") or {}).get("importance") or {}).items():
        if isinstance(rows, list) and rows:
            top = rows[:20]
            has_ci = "lower" in top[0]
            out["importance"].append(interval_bars(
                f"{kind} importance", [r["feature"] for r in top], [r["importance"] for r in top],
                lower=[r.get("lower") for r in top] if has_ci else None,
                upper=[r.get("upper") for r in top] if has_ci else None,
                label=str(top[0].get("unit", "importance")), ylabel=str(top[0].get("unit", "importance"))))
    return out


def confusion_cells(cm: dict[str, Any] | None) -> list[list[dict[str, Any]]]:
    """The confusion matrix as table cells with a shade (0..1 of the largest count); undefined cells None."""
    if not cm:
        return []
    cells = [[_finite(v) for v in row] for row in cm.get("matrix") or []]
    top = max([v for r in cells for v in r if v is not None] + [1.0])
    return [[{"value": None if v is None else int(v), "shade": 0.0 if v is None else max(0.0, v / top)} for v in r]
            for r in cells]


def evaluation_report(report: dict[str, Any]) -> str:
    """The evaluation report (gates, metrics with intervals, paired comparisons, curves, slices, fairness,
    importance, largest losses) as one self-contained, interactive page."""
    return render("report_evaluation.html", r=clean(report))


def validation_histogram(name: str, cp: dict[str, Any], ref: dict[str, Any] | None) -> dict[str, Any] | None:
    """A column's histogram: this snapshot's share per bin beside the reference's (when its bins match)."""
    h = cp.get("histogram") or {}
    counts = list(h.get("counts") or [])
    if not counts:
        return None
    if "values" in h:
        labels = [str(v) for v in h["values"]]
    else:
        edges = h.get("edges") or []
        labels = [f"{_num(edges[i])}–{_num(edges[i + 1])}" for i in range(len(edges) - 1)]
    ref_counts: list[float] = []
    rh = (ref or {}).get("histogram") or {}
    if rh.get("counts"):
        if "values" in rh and "values" in h:
            m = dict(zip(map(str, rh["values"]), rh["counts"]))
            ref_counts = [m.get(lab, 0) for lab in labels]
        elif rh.get("edges") == h.get("edges"):
            ref_counts = list(rh["counts"])
    total, rtotal = sum(counts) or 1, sum(ref_counts) or 1
    series = [{"label": f"this snapshot ({sum(counts):,} rows)", "values": [c / total for c in counts]}]
    if ref_counts:
        series.append({"label": "reference", "values": [c / rtotal for c in ref_counts]})
    return {"title": name, "kind": "bars", "x": list(range(len(labels))), "labels": [lab[:18] for lab in labels],
            "ylabel": "share", "series": series}


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, int | float) else str(v)


def validation_report(report: dict[str, Any]) -> str:
    """A validation report (the JSON of :meth:`ValidationReport.to_json`) as one self-contained page: rows per
    source file, failing checks, one summary and histogram per column, the passing checks folded last."""
    rep = clean(report)
    checks = rep.get("checks") or []
    return render("report_validation.html", r=rep, failing=[c for c in checks if not c.get("passed")],
                  passing=[c for c in checks if c.get("passed")])


def validation_psi(report: dict[str, Any], column: str) -> float | None:
    """The PSI of ``column`` against the reference, when the report has that check."""
    psi = next((c for c in report.get("checks") or [] if c.get("check") == "psi" and c.get("column") == column), None)
    return _finite(((psi or {}).get("evidence") or {}).get("psi"))


def monitoring_report(data: dict[str, Any], psi_threshold: float) -> str:
    """The monitoring report (``loopml monitor report``) as one self-contained, interactive HTML page."""
    from loopml.webui import views

    dists = data.get("distributions") or {}
    return render(
        "report_monitoring.html", data=data, charts=views.monitoring_charts(data, psi_threshold),
        feature_charts=views.feature_drift_charts(data, psi_threshold),
        dist_charts=[views.distribution_chart(name, d) for name, d in dists.items()],
        ops_charts=views.ops_charts(data),
    )


def _lazy(module: str, name: str) -> Any:
    """A function imported on its first call (the stage packages import this module lazily, and vice versa)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


def _attr(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)


_GLOBALS: dict[str, Any] = {
    "leaderboard_chart": leaderboard_charts,
    "leaderboard_cells": _lazy("loopml.training.leaderboard", "row_cells"),
    "leaderboard_device_rows": _lazy("loopml.training.leaderboard", "device_rows"),
    "leaderboard_columns": lambda: _attr("loopml.training.leaderboard", "COLUMNS"),
    "leaderboard_device_columns": lambda: _attr("loopml.training.leaderboard", "DEVICE_COLUMNS"),
    "evaluation_charts": evaluation_charts,
    "confusion_cells": confusion_cells,
    "evidence_text": _lazy("loopml.evaluation.report", "evidence_text"),
    "fixed": _lazy("loopml.evaluation.report", "fixed"),
    "ci": _lazy("loopml.evaluation.report", "interval_text"),
    "validation_histogram": validation_histogram,
    "validation_psi": validation_psi,
    "short": _short,
}
