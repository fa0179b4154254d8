"""What each page shows, read through the workspace, registry, validation and monitoring APIs.

Every function takes an open :class:`~loopml.workspace.Workspace` and returns plain data for a
template. Lists are paginated in SQL (``LIMIT``/``OFFSET``); the prediction log is aggregated by
the monitoring report (DuckDB over the Parquet segments), never loaded whole per page.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import asdict
from typing import Any

from sqlalchemy import desc, func, select

from loopml import lineage
from loopml.errors import LoopMLError, NotFound
from loopml.workspace import Workspace
from loopml.workspace.metadata import executions, runs

PAGE_SIZE = 50


# -- formatting helpers (used by the templates as filters) -----------------------------------------
def fmt(v: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; '–' for missing or non-finite values."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.{digits}g}"
    return str(v)


def when(v: Any) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    if v is None:
        return "–"
    if isinstance(v, str):
        try:
            v = dt.datetime.fromisoformat(v)
        except ValueError:
            return str(v)
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


def _json_artifact(ws: Workspace, digest: str | None) -> dict[str, Any] | None:
    if not digest:
        return None
    try:
        data = json.loads(ws.artifacts.get_bytes(digest))
    except (LoopMLError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- runs ------------------------------------------------------------------------------------------
def runs_page(ws: Workspace, page: int = 1, size: int = PAGE_SIZE) -> dict[str, Any]:
    """One page of runs, newest first, with their duration and how many stages ran or came from the cache."""
    page = max(1, page)
    total = lineage.count_runs(ws)
    rows = lineage.list_runs(ws, limit=size, offset=(page - 1) * size)
    counts = lineage.stage_counts(ws, [r["run_id"] for r in rows])
    for r in rows:
        end = r.get("ended_at")
        r["duration_s"] = (end - r["started_at"]).total_seconds() if end and r.get("started_at") else None
        r["stages"] = counts.get(r["run_id"], {})
    pages = max(1, math.ceil(total / size))
    return {"runs": rows, "page": page, "pages": pages, "total": total}


def run_detail(ws: Workspace, run_id: str) -> dict[str, Any]:
    """A run, its stage executions in order with timings, inputs and outputs (names resolved)."""
    with ws.engine.connect() as conn:
        run = conn.execute(select(runs).where(runs.c.run_id == run_id)).mappings().first()
        if run is None:
            raise NotFound(f"run `{run_id}` not found")
        exs = [dict(r) for r in conn.execute(
            select(executions).where(executions.c.run_id == run_id).order_by(executions.c.started_at)
        ).mappings().all()]
    folder = ws.reports / run_id
    reports = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) \
        if folder.is_dir() else []
    longest = max([e["duration_s"] or 0.0 for e in exs] + [1e-9])
    for e in exs:
        e["share"] = (e["duration_s"] or 0.0) / longest
    return {"run": dict(run), "executions": exs, "reports": reports}


def report_file(ws: Workspace, run_id: str, name: str) -> Any:
    """The path of a report kept for a run (``reports/<run_id>/<name>``); NotFound for anything else."""
    folder = (ws.reports / run_id).resolve()
    path = (folder / name).resolve()
    if "/" in name or name.startswith(".") or path.parent != folder or not path.is_file() \
            or folder.parent != ws.reports.resolve():
        raise NotFound(f"report `{name}` of run `{run_id}` not found")
    return path


def artifact_detail(ws: Workspace, ref: str) -> dict[str, Any]:
    """An artifact and its lineage back to the sources, grouped by depth (the graph's layers)."""
    info = ws.artifact_info(ref)
    steps = lineage.lineage(ws, info["digest"])
    layers: dict[int, list[dict[str, Any]]] = {}
    for s in steps:
        layers.setdefault(s.depth, []).append(asdict(s))
    return {"artifact": info, "layers": [layers[d] for d in sorted(layers)]}


# -- data ------------------------------------------------------------------------------------------
def _validation_report(ws: Workspace, snapshot_id: str) -> dict[str, Any] | None:
    """The latest validation report of a snapshot, where the validate stage writes it
    (``reports/validation-<snapshot>.json``; one file read, whatever the number of runs)."""
    path = ws.reports / f"validation-{snapshot_id}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def data_page(ws: Workspace) -> dict[str, Any]:
    """The lake's snapshots, newest first, with their validation outcome and quarantined rows."""
    from loopml.data.snapshots import list_snapshots
    from loopml.validation.quarantine import quarantine_counts

    snaps = []
    for s in list_snapshots(ws, limit=200):
        d = asdict(s)
        d["validated"] = (ws.reports / f"validation-{s.snapshot_id}.json").exists()
        d["quarantined"] = sum(n for _, _, n in quarantine_counts(ws, s.snapshot_id))
        snaps.append(d)
    return {"snapshots": snaps}


def snapshot_detail(ws: Workspace, ref: str) -> dict[str, Any]:
    """A snapshot: column profiles, validation checks (failing first) and quarantined rows with reasons."""
    from loopml.data.snapshots import get_snapshot
    from loopml.validation.quarantine import list_quarantine, quarantine_counts

    snap = get_snapshot(ws, ref)
    report = _validation_report(ws, snap.snapshot_id)
    checks: list[dict[str, Any]] = []
    profile: list[dict[str, Any]] = []
    if report:
        order = {"error": 0, "warning": 1, "info": 2}
        checks = sorted(report.get("checks", []),
                        key=lambda c: (bool(c.get("passed")), order.get(str(c.get("severity")), 3), str(c.get("column"))))
        prof = report.get("profile") or {}
        cols = prof.get("columns", prof) if isinstance(prof, dict) else prof
        profile = list(cols.values()) if isinstance(cols, dict) else list(cols or [])
    return {
        "snapshot": asdict(snap),
        "report": report,
        "checks": checks,
        "failing": sum(1 for c in checks if not c.get("passed")),
        "profile": profile,
        "quarantine_counts": quarantine_counts(ws, snap.snapshot_id),
        "quarantine": list_quarantine(ws, snapshot_id=snap.snapshot_id, limit=200),
    }


# -- models ----------------------------------------------------------------------------------------
def models_page(ws: Workspace) -> dict[str, Any]:
    """Registry versions and states, what served when, transitions and the leaderboards of recent trainings."""
    from loopml.registry import Registry

    reg = Registry(ws)
    with ws.engine.connect() as conn:
        trains = [dict(r) for r in conn.execute(
            select(executions).where(executions.c.stage == "train", executions.c.status == "success")
            .order_by(desc(executions.c.started_at)).limit(10)
        ).mappings().all()]
    boards = []
    for e in trains:
        board = _json_artifact(ws, (e.get("outputs") or {}).get("leaderboard"))
        if board:
            boards.append({"execution": e, "board": board})
    return {
        "versions": reg.list(),
        "production": reg.production(),
        "periods": reg.serving_periods(),
        "history": reg.history()[-50:][::-1],
        "leaderboards": boards,
    }


def _report_of(ws: Workspace, record: Any) -> dict[str, Any] | None:
    return _json_artifact(ws, getattr(record, "report", None)) if record is not None else None


def version_detail(ws: Workspace, version_id: str) -> dict[str, Any]:
    """A version: its registry row, lineage, transitions and every recorded evaluation (newest last)."""
    from loopml.registry import Registry
    from loopml.registry.evidence import evaluations

    reg = Registry(ws)
    v = reg.get(version_id)
    evals = evaluations(reg, v.version_id)
    latest = _report_of(ws, evals[-1]) if evals else None
    return {"version": v, "history": reg.history(v.version_id), "evaluations": evals, "report": latest,
            "versions": reg.list()}


def _metric_rows(ra: dict[str, Any] | None, rb: dict[str, Any] | None) -> list[dict[str, Any]]:
    ma = (ra or {}).get("metrics") or {}
    mb = (rb or {}).get("metrics") or {}
    rows = []
    for name in list(dict.fromkeys([*ma, *mb])):
        a, b = ma.get(name) or {}, mb.get(name) or {}
        rows.append({"metric": name, "a": a, "b": b,
                     "higher_is_better": a.get("higher_is_better", b.get("higher_is_better"))})
    return rows


def _slice_rows(ra: dict[str, Any] | None, rb: dict[str, Any] | None) -> list[dict[str, Any]]:
    def key(s: dict[str, Any]) -> tuple[str, str]:
        return str(s.get("column")), str(s.get("slice"))

    sa = {key(s): s for s in (ra or {}).get("slices") or []}
    sb = {key(s): s for s in (rb or {}).get("slices") or []}
    return [{"column": k[0], "slice": k[1], "a": sa.get(k), "b": sb.get(k)} for k in dict.fromkeys([*sa, *sb])]


def _roc(report: dict[str, Any] | None) -> dict[str, list[float]] | None:
    roc = ((report or {}).get("curves") or {}).get("roc") or {}
    cand = roc.get("candidate") if isinstance(roc, dict) else None
    if isinstance(cand, dict) and cand.get("fpr") and cand.get("tpr"):
        return {"fpr": list(cand["fpr"]), "tpr": list(cand["tpr"])}
    return None


def compare(ws: Workspace, a: str, b: str) -> dict[str, Any]:
    """Two versions side by side from their latest evaluations: metrics with intervals, slices, fairness,
    ROC curves, and the paired difference when one evaluation compared the two on the same rows."""
    from loopml.registry import Registry
    from loopml.registry.evidence import latest_evaluation

    reg = Registry(ws)
    va, vb = reg.get(a), reg.get(b)
    ea, eb = latest_evaluation(reg, va.version_id), latest_evaluation(reg, vb.version_id)
    ra, rb = _report_of(ws, ea), _report_of(ws, eb)
    paired = None
    for ev, other in ((eb, va.version_id), (ea, vb.version_id)):
        vp = ev.vs_production if ev is not None else None
        if vp and vp.get("production") == other:
            paired = {"of": ev.version_id if ev else "", **vp}
            break
    same_rows = bool(ra and rb and ra.get("rows") == rb.get("rows") and
                     (ra.get("references") or {}).get("test") == (rb.get("references") or {}).get("test"))
    curves = {}
    for v, r in ((va, ra), (vb, rb)):
        c = _roc(r)
        if c:
            curves[v.version_id] = c
    return {
        "a": va, "b": vb, "eval_a": ea, "eval_b": eb, "report_a": ra, "report_b": rb,
        "metrics": _metric_rows(ra, rb), "slices": _slice_rows(ra, rb), "paired": paired,
        "same_rows": same_rows, "curves": curves,
        "fairness_a": (ra or {}).get("fairness") or {}, "fairness_b": (rb or {}).get("fairness") or {},
        "versions": reg.list(),
    }


def count_rows(ws: Workspace, table: Any) -> int:
    """Rows of a metadata table (one SQL ``count``)."""
    with ws.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


# -- monitoring ------------------------------------------------------------------------------------
def logged_rows(ws: Workspace) -> int:
    """Rows in the prediction log, from the Parquet footers of its segments (no data read)."""
    import pyarrow.parquet as pq

    from loopml.monitoring.logs import predictions_dir

    total = 0
    folder = predictions_dir(ws)
    for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
        if name.endswith(".parquet"):
            try:
                total += pq.read_metadata(folder / name).num_rows
            except (OSError, ValueError):
                continue  # compacted away meanwhile
    return total


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def monitoring_charts(data: dict[str, Any], psi_threshold: float) -> dict[str, Any]:
    """Chart specs (for ``static/charts.js``) from the monitoring report's data: PSI per feature over
    windows, quality per version over windows (labelled, and the CBPE estimate dashed), volume."""
    windows = data.get("windows") or []
    xs = [_epoch(w["window_start"]) for w in windows]
    features = list(dict.fromkeys(f for w in windows for f in (w.get("features") or {})))
    drift = {
        "title": "PSI per feature", "kind": "time", "x": xs, "hline": psi_threshold, "ylabel": "PSI",
        "series": [{"label": f, "values": [((w.get("features") or {}).get(f) or {}).get("psi") for w in windows]}
                   for f in features],
    }
    effect = {
        "title": "effect size per feature (KS D / Cramér's V)", "kind": "time", "x": xs,
        "series": [{"label": f, "values": [((w.get("features") or {}).get(f) or {}).get("effect") for w in windows]}
                   for f in features],
    }
    quality: list[dict[str, Any]] = []
    labelled, estimated = data.get("quality") or [], data.get("cbpe") or []
    skip = {"window_start", "model_version", "rows"}
    metrics = list(dict.fromkeys(k for r in labelled for k in r if k not in skip))
    qx = sorted({_epoch(r["window_start"]) for r in [*labelled, *estimated]})
    for m in metrics:
        series = []
        for kind, rows in (("labelled", labelled), ("CBPE estimate", estimated)):
            for v in sorted({str(r["model_version"]) for r in rows if m in r}):
                by_x = {_epoch(r["window_start"]): r.get(m) for r in rows if str(r["model_version"]) == v}
                series.append({"label": f"{v} {kind}", "values": [by_x.get(x) for x in qx],
                               "dash": kind != "labelled"})
        quality.append({"title": m, "kind": "time", "x": qx, "series": series})
    vol = data.get("volume") or []
    vx = sorted({_epoch(r["window_start"]) for r in vol})
    volume = {"title": "predictions per window", "kind": "time", "x": vx, "series": [
        {"label": v, "values": [next((r["rows"] for r in vol if r["model_version"] == v and _epoch(r["window_start"]) == x),
                                     None) for x in vx]}
        for v in sorted({str(r["model_version"]) for r in vol})]}
    return {"drift": drift, "effect": effect, "quality": quality, "volume": volume, "features": features}


def distribution_chart(name: str, dist: dict[str, Any]) -> dict[str, Any]:
    """Reference vs current shares of one feature as side-by-side bars."""
    idx = list(range(len(dist["labels"])))
    return {"title": f"{name}: reference vs latest window", "kind": "bars", "x": idx, "labels": dist["labels"],
            "ylabel": "share", "series": [{"label": "reference", "values": dist["reference"]},
                                          {"label": f"current ({dist['rows']:,} rows)", "values": dist["current"]}]}


def feature_drift_charts(data: dict[str, Any], psi_threshold: float, prediction: str = "score") -> list[dict[str, Any]]:
    """One chart per watched column: PSI and effect (dashed) over the windows, with the PSI threshold."""
    windows = data.get("windows") or []
    xs = [_epoch(w["window_start"]) for w in windows]
    names = list(dict.fromkeys(f for w in windows for f in (w.get("features") or {})))
    out = []
    for name in names:
        def values(stat: str, name: str = name) -> list[Any]:
            return [((w.get("features") or {}).get(name) or {}).get(stat) for w in windows]

        out.append({"title": "prediction (score)" if name == prediction else name, "kind": "time", "x": xs,
                    "hline": psi_threshold, "series": [{"label": "PSI", "values": values("psi")},
                                                       {"label": "effect", "values": values("effect"), "dash": True}]})
    return out


OPS_METRICS = (("requests_per_s", "requests per second"), ("latency_p50_ms", "latency p50 (ms)"),
               ("latency_p99_ms", "latency p99 (ms)"), ("error_rate", "error rate"), ("cpu_percent", "CPU %"))


def ops_charts(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The service's request rate, latency, errors and CPU between scrapes of its ``/metrics``."""
    rows = data.get("ops") or []
    xs = [_epoch(r["at"]) for r in rows]
    return [{"title": title, "kind": "time", "x": xs, "series": [{"label": metric, "values": [r.get(metric) for r in rows]}]}
            for metric, title in OPS_METRICS if any(r.get(metric) is not None for r in rows)]
