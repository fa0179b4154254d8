"""The monitoring report: self-contained HTML (inline SVG charts, no CDN) and JSON.

Time series over windows of the prediction log: drift per feature (PSI and effect, with the
threshold line), quality per metric and per model version (labelled, and the CBPE estimate),
volume per model version; alert markers on every chart; the drift table of the latest window,
worst first; the recent alerts and retraining decisions.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopml.errors import LoopMLError
from loopml.monitoring import logs
from loopml.monitoring.drift import DriftEngine, FeatureDrift, NumericProfile, ReferenceProfile
from loopml.monitoring.ops import ops_series
from loopml.monitoring.quality import cbpe_by_window, quality_by_window
from loopml.monitoring.records import ensure_tables, monitor_alerts, monitor_decisions, recent
from loopml.monitoring.signals import PREDICTION, ReferenceCache, fit_cbpe_calibrator, watched_columns
from loopml.monitoring.windows import parse_duration, utcnow
from loopml.workspace import Workspace

MAX_WINDOWS = 60
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


# -- SVG ---------------------------------------------------------------------------------------
def svg_chart(
    title: str,
    series: dict[str, list[tuple[float, float]]],
    *,
    markers: list[tuple[float, str]] | None = None,
    hline: float | None = None,
    dashed: set[str] | None = None,
    width: int = 420,
    height: int = 170,
) -> str:
    """A small line chart as inline SVG: x is epoch seconds, one polyline per series, red alert markers."""
    pad_l, pad_r, pad_t, pad_b = 44, 8, 20, 22
    pts = [(x, y) for s in series.values() for x, y in s if not math.isnan(y)]
    esc = html.escape
    if not pts:
        return f'<svg width="{width}" height="{height}"><text x="8" y="16" font-size="12">{esc(title)}: no data</text></svg>'
    xs = [p[0] for p in pts] + [m[0] for m in markers or []]
    ys = [p[1] for p in pts] + ([hline] if hline is not None else [])
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(0.0, min(ys)), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    y1 += (y1 - y0) * 0.08

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * (width - pad_l - pad_r)

    def sy(y: float) -> float:
        return height - pad_b - (y - y0) / (y1 - y0) * (height - pad_t - pad_b)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
        f'<text x="{pad_l}" y="13" font-size="12" font-weight="bold">{esc(title)}</text>',
        f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" y2="{height - pad_b}" stroke="#999"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" stroke="#999"/>',
        f'<text x="{pad_l - 4}" y="{sy(y1) + 4:.1f}" font-size="10" text-anchor="end">{y1:.3g}</text>',
        f'<text x="{pad_l - 4}" y="{sy(y0) + 4:.1f}" font-size="10" text-anchor="end">{y0:.3g}</text>',
        f'<text x="{pad_l}" y="{height - 6}" font-size="10">{_day(x0)}</text>',
        f'<text x="{width - pad_r}" y="{height - 6}" font-size="10" text-anchor="end">{_day(x1)}</text>',
    ]
    if hline is not None:
        parts.append(
            f'<line x1="{pad_l}" y1="{sy(hline):.1f}" x2="{width - pad_r}" y2="{sy(hline):.1f}" '
            f'stroke="#888" stroke-dasharray="4 3"><title>threshold {hline:g}</title></line>'
        )
    for x, label in markers or []:
        parts.append(
            f'<line x1="{sx(x):.1f}" y1="{pad_t}" x2="{sx(x):.1f}" y2="{height - pad_b}" stroke="#e00" '
            f'stroke-width="1.5" opacity="0.7"><title>{esc(label)}</title></line>'
        )
    for i, (name, s) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        good = [(x, y) for x, y in s if not math.isnan(y)]
        if not good:
            continue
        dash = ' stroke-dasharray="5 3"' if dashed and name in dashed else ""
        poly = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6"{dash} points="{poly}"/>')
        for x, y in good:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2" fill="{color}"><title>{esc(name)}: {y:.4g}</title></circle>')
        parts.append(f'<text x="{width - pad_r - 4}" y="{pad_t + 12 * (i + 1)}" font-size="10" text-anchor="end" fill="{color}">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _day(x: float) -> str:
    return dt.datetime.fromtimestamp(x, dt.UTC).strftime("%m-%d %H:%M")


# -- data --------------------------------------------------------------------------------------
def _epoch(t: Any) -> float:
    if isinstance(t, dt.datetime):
        return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    return float(t)


def build_report(ws: Workspace, window: str | None = None) -> dict[str, Any]:
    """The report's data: drift, quality, CBPE and volume per window; alerts; decisions; the latest drift table."""
    ensure_tables(ws)
    spec = ws.spec.monitoring
    w = window or spec.drift.window
    width = parse_duration(w, field="window")
    first, last, rows = logs.log_span(ws)
    data: dict[str, Any] = {
        "project": ws.spec.project.name, "generated_at": utcnow().isoformat(), "window": w, "log_rows": rows,
        "windows": [], "quality": [], "cbpe": [], "volume": [], "ops": [], "drift_latest": None, "notes": [],
        "alerts": _jsonable(recent(ws, monitor_alerts, "fired_at", 200)),
        "decisions": _jsonable(recent(ws, monitor_decisions, "decided_at", 50)),
    }
    data["ops"] = ops_series(ws, (last or utcnow()) - width * MAX_WINDOWS)
    if first is None or last is None:
        data["notes"].append("the prediction log is empty")
        return data
    start = max(first, last - width * MAX_WINDOWS)
    table = logs.read_predictions(ws, start, None)
    engine = DriftEngine.from_spec(spec.drift)
    cache = ReferenceCache(ws, engine)
    profile = None
    try:
        columns = watched_columns(ws, logs.input_columns(table), cache.column_names())
        profile = cache.profile(columns) if columns else None
        data["reference"] = cache.source().label
    except LoopMLError as exc:
        data["notes"].append(f"drift not computed: {exc.message}")
    data["notes"].extend(cache.notes)
    ts = pc.cast(table.column("ts"), pa.timestamp("us", tz="UTC")).to_numpy(zero_copy_only=False).astype("int64")
    w_us = int(width.total_seconds() * 1e6)
    starts = (ts // w_us) * w_us
    versions = np.asarray(table.column("model_version").to_pylist(), dtype=object)
    latest: list[FeatureDrift] | None = None
    last_cur: pa.Table | None = None
    for s in np.unique(starts):
        mask = starts == s
        idx = np.flatnonzero(mask)
        win = table.take(pa.array(idx))
        t0 = dt.datetime.fromtimestamp(int(s) / 1e6, dt.UTC)
        for v in sorted({str(x) for x in versions[mask]}):
            data["volume"].append({"window_start": t0.isoformat(), "model_version": v, "rows": int((versions[mask] == v).sum())})
        entry: dict[str, Any] = {"window_start": t0.isoformat(), "rows": int(mask.sum()), "features": {}}
        if profile is not None and win.num_rows >= spec.drift.min_rows:
            cur = win.select([c for c in profile.columns if c != PREDICTION and c in win.column_names])
            if PREDICTION in profile.columns and "score" in win.column_names:
                cur = cur.append_column(PREDICTION, win.column("score"))
            rep = engine.compare(profile, cur)
            latest, last_cur = rep.features, cur
            entry["features"] = {
                f.name: {"psi": f.psi, "effect": f.effect, "p_value": f.p_value, "js": f.js, "drifted": f.drifted}
                for f in rep.features
            }
            entry["share"] = rep.share
        data["windows"].append(entry)
    if latest is not None:
        data["drift_latest"] = [f.__dict__ for f in latest]
    if profile is not None and last_cur is not None:
        data["distributions"] = distributions(profile, last_cur)
    task = ws.spec.task.type
    data["quality"] = _jsonable(quality_by_window(logs.read_labelled(ws, start, None), task, width))
    if task in ("binary", "multiclass"):
        try:
            fitted = fit_cbpe_calibrator(ws, None)
        except LoopMLError:
            fitted = None
        if fitted is not None:
            data["cbpe"] = _jsonable(cbpe_by_window(table, fitted[0], width))
            data["notes"].append(f"CBPE calibrated on {fitted[1]}")
    return data


def distributions(profile: ReferenceProfile, current: pa.Table) -> dict[str, dict[str, Any]]:
    """Reference vs current share per bin of each watched column: the reference deciles of a numeric
    column (its ``psi_edges``), the reference categories of a categorical one (plus "other")."""
    out: dict[str, dict[str, Any]] = {}
    for name, prof in profile.columns.items():
        if name not in current.column_names:
            continue
        col = current.column(name)
        if isinstance(prof, NumericProfile):
            x = np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
            x = x[np.isfinite(x)]
            edges = list(prof.psi_edges)
            idx = np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="right")
            counts = np.bincount(idx, minlength=len(edges) + 1)
            bounds = [-math.inf, *edges, math.inf]
            labels = [f"{_short(bounds[i])}..{_short(bounds[i + 1])}" for i in range(len(edges) + 1)]
            ref = list(prof.psi_shares)
        else:
            cats = list(prof.categories)[:30]
            total_ref = max(1, sum(prof.counts))
            ref = [c / total_ref for c in list(prof.counts)[:30]]
            vc = pc.value_counts(pc.cast(col, pa.string())).to_pylist()
            seen = {str(d["values"]): int(d["counts"]) for d in vc if d["values"] is not None}
            counts = np.asarray([seen.get(c, 0) for c in cats] + [sum(seen.values()) - sum(seen.get(c, 0) for c in cats)])
            labels = [*cats, "other"]
            ref = [*ref, max(0.0, 1.0 - sum(ref))]
        n = max(1, int(counts.sum()))
        out[name] = {"kind": prof.kind, "labels": labels, "reference": [float(r) for r in ref],
                     "current": [float(c) / n for c in counts], "rows": int(counts.sum())}
    return out


def _short(v: float) -> str:
    return "" if not math.isfinite(v) else f"{v:.3g}"


def _jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = json.loads(json.dumps(rows, default=lambda o: o.isoformat() if hasattr(o, "isoformat") else str(o)))
    return out if isinstance(out, list) else []


def _x(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


# -- HTML --------------------------------------------------------------------------------------
def render_html(data: dict[str, Any], psi_threshold: float, min_effect: float) -> str:
    """Render the report data as one self-contained HTML page."""
    esc = html.escape
    alerts = data["alerts"]

    def marks(prefix: str | tuple[str, ...]) -> list[tuple[float, str]]:
        return [(_x(a["fired_at"]), f"{a['rule']}: {a['metric']}={a['value']:.4g}") for a in alerts
                if a["metric"].startswith(prefix)]

    body: list[str] = [
        f"<h1>Monitoring report: {esc(str(data['project']))}</h1>",
        f"<p>Generated {esc(data['generated_at'])}; windows of {esc(data['window'])}; {data['log_rows']:,} logged "
        f"predictions; reference: {esc(str(data.get('reference', 'n/a')))}.</p>",
    ]
    for n in data["notes"]:
        body.append(f"<p class='note'>{esc(n)}</p>")
    # drift table (latest window), worst first
    if data["drift_latest"]:
        body.append("<h2>Drift, latest window (worst first)</h2><table><tr><th>feature</th><th>kind</th><th>drifted</th>"
                    "<th>test</th><th>p-value</th><th>effect</th><th>PSI</th><th>JS</th><th>Wasserstein</th>"
                    "<th>missing ref→cur</th><th>why</th></tr>")
        for f in data["drift_latest"]:
            cls = " class='bad'" if f["drifted"] else ""
            wd = "" if f["wasserstein"] is None else f"{f['wasserstein']:.3f}"
            body.append(
                f"<tr{cls}><td>{esc(f['name'])}</td><td>{f['kind']}</td><td>{'yes' if f['drifted'] else 'no'}</td>"
                f"<td>{esc(f['test'])}</td><td>{f['p_value']:.2g}</td><td>{f['effect']:.3f}</td><td>{f['psi']:.3f}</td>"
                f"<td>{f['js']:.3f}</td><td>{wd}</td><td>{f['missing_reference']:.1%}→{f['missing_current']:.1%}</td>"
                f"<td>{esc(f['reason'])}</td></tr>"
            )
        body.append("</table>")
    # drift over time, per feature
    feats: list[str] = []
    for wnd in data["windows"]:
        for name in wnd["features"]:
            if name not in feats:
                feats.append(name)
    if feats:
        body.append("<h2>Drift per feature over time</h2><div class='grid'>")
        share = {"drift share": [(_x(w["window_start"]), w.get("share", float("nan"))) for w in data["windows"]]}
        body.append(svg_chart("share of features drifted", share, markers=marks("drift.")))
        for name in feats:
            series = {
                "PSI": [(_x(w["window_start"]), w["features"].get(name, {}).get("psi", float("nan"))) for w in data["windows"]],
                "effect": [(_x(w["window_start"]), w["features"].get(name, {}).get("effect", float("nan"))) for w in data["windows"]],
            }
            title = "prediction (score)" if name == PREDICTION else name
            body.append(svg_chart(title, series, markers=marks(("drift.share", "drift.count", f"drift.feature.{name}.", "drift.max")),
                                  hline=psi_threshold, dashed={"effect"}))
        body.append("</div>")
    # quality per metric and model version
    if data["quality"] or data["cbpe"]:
        body.append("<h2>Quality per metric and model version</h2><p>Solid: measured on delayed labels; dashed: CBPE "
                    "estimate over all predictions of the window.</p><div class='grid'>")
        metrics = [k for k in (data["quality"] or data["cbpe"])[0] if k not in ("window_start", "model_version", "rows")]
        for metric in metrics:
            qseries: dict[str, list[tuple[float, float]]] = {}
            dashed: set[str] = set()
            for r in data["quality"]:
                qseries.setdefault(f"{r['model_version']}", []).append((_x(r["window_start"]), _num(r.get(metric))))
            for r in data["cbpe"]:
                if metric in r:
                    key = f"{r['model_version']} CBPE"
                    dashed.add(key)
                    qseries.setdefault(key, []).append((_x(r["window_start"]), _num(r.get(metric))))
            body.append(svg_chart(metric, qseries, markers=marks((f"quality.{metric}", f"cbpe.{metric}")), dashed=dashed))
        body.append("</div>")
    if data["volume"]:
        vol: dict[str, list[tuple[float, float]]] = {}
        for r in data["volume"]:
            vol.setdefault(r["model_version"], []).append((_x(r["window_start"]), float(r["rows"])))
        body.append("<h2>Predictions per window and model version</h2>")
        body.append(svg_chart("predictions", vol, markers=marks(("volume.", "ops."))))
    if data.get("ops"):
        body.append("<h2>Service operations between checks</h2><div class='grid'>")
        for metric, title in (("requests_per_s", "requests per second"), ("latency_p99_ms", "latency p99 (ms)"),
                              ("latency_p50_ms", "latency p50 (ms)"), ("error_rate", "error rate"),
                              ("cpu_percent", "CPU %")):
            series = {metric: [(_x(r["at"]), _num(r.get(metric))) for r in data["ops"]]}
            body.append(svg_chart(title, series, markers=marks("ops.")))
        body.append("</div>")
    body.append("<h2>Alerts</h2><table><tr><th>fired</th><th>rule</th><th>severity</th><th>metric</th><th>value</th>"
                "<th>threshold</th><th>drifted / evidence</th></tr>")
    for a in alerts[:50]:
        ev = a.get("evidence") or {}
        body.append(f"<tr><td>{esc(a['fired_at'])}</td><td>{esc(a['rule'])}</td><td>{esc(a['severity'])}</td>"
                    f"<td>{esc(a['metric'])}</td><td>{a['value']:.4g}</td><td>{esc(a['op'])} {a['threshold']:g}</td>"
                    f"<td>{esc(', '.join(ev.get('drifted', [])))}</td></tr>")
    body.append("</table><h2>Retraining decisions</h2><table><tr><th>decided</th><th>action</th><th>status</th>"
                "<th>triggers</th><th>run</th><th>version</th><th>gates</th></tr>")
    for d in data["decisions"]:
        gates = (d.get("evidence") or {}).get("gates") or []
        g = ", ".join(f"{x.get('gate')}: {'pass' if x.get('passed') else 'FAIL'}" for x in gates)
        trig = "; ".join(t.get("detail", "") for t in d.get("triggers") or [])
        body.append(f"<tr><td>{esc(d['decided_at'])}</td><td>{d['action']}</td><td>{d['status']}</td><td>{esc(trig)}</td>"
                    f"<td>{esc(d.get('run_id') or '')}</td><td>{esc(d.get('version_id') or '')}</td><td>{esc(g)}</td></tr>")
    body.append("</table>")
    style = (
        "body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 20px}"
        "td,th{border:1px solid #ccc;padding:3px 7px;font-size:12px;text-align:left}tr.bad td{background:#fde2e2}"
        ".grid{display:flex;flex-wrap:wrap;gap:10px}.note{color:#666;font-size:12px}"
    )
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>loopml monitoring: {esc(str(data['project']))}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}<p class='note'>thresholds: PSI {psi_threshold}, "
            f"effect {min_effect}</p></body></html>")


def _finite(obj: Any) -> Any:
    """NaN and infinities become None so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) else float("nan")


def write_report(ws: Workspace, *, window: str | None = None, out: Path | None = None) -> tuple[Path, Path]:
    """Write the HTML and JSON monitoring report; returns their paths."""
    data = build_report(ws, window)
    html_path = out or ws.reports / "monitoring.html"
    html_path.parent.mkdir(parents=True, exist_ok=True)
    json_path = html_path.with_suffix(".json")
    d = ws.spec.monitoring.drift
    for path, text in ((html_path, render_html(data, d.psi_threshold, d.min_effect)),
                       (json_path, json.dumps(_finite(data), indent=1, default=str, allow_nan=False))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return html_path, json_path
