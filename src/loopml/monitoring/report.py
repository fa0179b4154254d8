"""The monitoring report: self-contained HTML (the web UI's templates and uPlot charts, inlined; no CDN) and JSON.

Time series over windows of the prediction log: drift per feature (PSI and effect, with the
threshold line), quality per metric and per model version (labelled, and the CBPE estimate),
volume per model version; reference vs latest-window distribution per feature; the drift table of the
latest window, worst first; the service's operations between scrapes; the recent alerts and retraining
decisions.
"""

from __future__ import annotations

import datetime as dt
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
    if last is not None:
        from loopml.monitoring.rollout import window_arms

        data["rollout"] = window_arms(ws, last - width, None, width.total_seconds())
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


# -- HTML --------------------------------------------------------------------------------------
def render_html(data: dict[str, Any], psi_threshold: float, min_effect: float) -> str:
    """Render the report data as one self-contained, interactive HTML page: the web UI's templates and chart
    layer (uPlot, inlined), so a file shows what `loopml ui` shows. ``min_effect`` is part of each drift
    verdict already (the latest window's ``why`` column)."""
    from loopml.monitoring.rollout import arms_html
    from loopml.webui.export import monitoring_report

    html = monitoring_report(_finite(data), psi_threshold)
    if data.get("rollout"):  # rollout health per arm, before the alerts (which include the per-arm ones)
        section = arms_html(data["rollout"], f"Rollout health per arm, last {data['window']} of the log")
        at = html.find("<h2>Alerts</h2>")
        html = html[:at] + section + html[at:] if at >= 0 else html.replace("</main>", section + "</main>", 1)
    return html


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
