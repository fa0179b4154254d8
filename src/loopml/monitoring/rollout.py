"""Rollout health: per arm (route and model version) of a window, its traffic, errors, latency and quality.

The prediction log says which arm answered (or shadowed) each request (column ``route``: production,
shadow, canary, control, treatment) and with which version; the service's scraped counters
(:func:`loopml.monitoring.ops.window_summary`, ``by_version``) give each version's errors (5xx and refused
4xx) and p99 latency; the labelled rows give each arm's quality on delayed labels. The signals become
alert metrics:

- ``arm.<route>.predictions``, ``.predictions_per_s``, ``.score_mean``, ``.error_rate`` (5xx),
  ``.client_error_rate`` (4xx: inputs the version refused), ``.latency_p99_ms``, ``.labelled``,
  ``.quality.<metric>`` (e.g. ``arm.canary.quality.roc_auc``);
- the same under ``arm.incumbent.`` (production or control) and ``arm.challenger.`` (canary, treatment, else
  shadow), so one rule watches whatever experiment runs, plus ``arm.challenger.error_rate_increase``,
  ``arm.challenger.client_error_rate_increase`` and ``arm.challenger.quality.<metric>_delta`` (challenger
  minus incumbent).

Examples
--------
>>> import pyarrow as pa
>>> log = pa.table({"route": ["production", "canary", "production"], "model_version": ["v1", "v2", "v1"],
...                 "experiment": [None, "canary-v2", "canary-v2"], "score": [0.2, 0.4, 0.6]})
>>> arms = arm_health(log, None, {"v2": {"requests": 10.0, "errors": 1.0, "error_rate": 0.1,
...                                      "latency_p99_ms": 2.0}}, 60.0, "binary")
>>> [(a["arm"], a["model_version"], a["predictions"], a.get("error_rate")) for a in arms]
[('production', 'v1', 2, None), ('canary', 'v2', 1, 0.1)]
>>> arm_metrics(arms)["arm.challenger.error_rate"]
0.1
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from loopml.monitoring.quality import task_metrics

INCUMBENT = ("production", "control")
CHALLENGER = ("canary", "treatment", "shadow")


def _col(t: pa.Table, name: str) -> list[Any]:
    return t.column(name).to_pylist() if name in t.column_names else [None] * t.num_rows


def arm_health(log: pa.Table, labelled: pa.Table | None, by_version: dict[str, Any] | None, seconds: float,
               task: str) -> list[dict[str, Any]]:
    """One row per (route, model version) of the window's log (shadows included), in order of appearance."""
    if log.num_rows == 0 or "route" not in log.column_names:
        return []
    routes, versions = _col(log, "route"), _col(log, "model_version")
    exps = _col(log, "experiment")
    scores = np.asarray(_col(log, "score"), dtype=np.float64)
    keys = np.asarray([f"{r}\x00{v}" for r, v in zip(routes, versions, strict=True)], dtype=object)
    lab_keys: np.ndarray | None = None
    if labelled is not None and labelled.num_rows and "route" in labelled.column_names:
        lab_keys = np.asarray([f"{r}\x00{v}" for r, v in zip(_col(labelled, "route"), _col(labelled, "model_version"),
                                                             strict=True)], dtype=object)
        y = np.asarray(_col(labelled, "label"), dtype=np.float64)
        ls = np.asarray(_col(labelled, "score"), dtype=np.float64)
        lp = np.asarray(_col(labelled, "prediction"), dtype=np.float64) if "prediction" in labelled.column_names else ls
    out: list[dict[str, Any]] = []
    for key in dict.fromkeys(keys.tolist()):
        route, version = key.split("\x00", 1)
        mask = keys == key
        n = int(mask.sum())
        named = [e for e, m in zip(exps, mask, strict=True) if m and e is not None]
        s = scores[mask]
        row: dict[str, Any] = {"arm": route, "model_version": version, "experiment": named[-1] if named else None,
                               "predictions": n, "predictions_per_s": n / seconds if seconds > 0 else None,
                               "score_mean": float(np.nanmean(s)) if n else None}
        ops = (by_version or {}).get(version)
        if ops:
            req = float(ops.get("requests") or 0.0)
            row["requests"] = req
            row["error_rate"] = ops.get("error_rate")
            client = ops.get("client_errors")
            row["client_error_rate"] = (client / req if req else 0.0) if client is not None else None
            row["latency_p99_ms"] = ops.get("latency_p99_ms")
        if lab_keys is not None:
            lm = lab_keys == key
            row["labelled"] = int(lm.sum())
            if lm.sum() >= 2:
                row["quality"] = task_metrics(task, y[lm], ls[lm], lp[lm])
        out.append(row)
    return out


def _pick(arms: list[dict[str, Any]], routes: tuple[str, ...]) -> dict[str, Any] | None:
    for r in routes:  # in order of preference; the latest arm of that route
        found = [a for a in arms if a["arm"] == r]
        if found:
            return found[-1]
    return None


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def arm_metrics(arms: list[dict[str, Any]]) -> dict[str, float]:
    """The alert metrics of :func:`arm_health` rows (see the module docstring)."""
    out: dict[str, float] = {}

    def put(prefix: str, a: dict[str, Any]) -> None:
        for k in ("predictions", "predictions_per_s", "score_mean", "requests", "error_rate", "client_error_rate",
                  "latency_p99_ms", "labelled"):
            if _finite(a.get(k)):
                out[f"{prefix}.{k}"] = float(a[k])
        for k, v in (a.get("quality") or {}).items():
            if _finite(v):
                out[f"{prefix}.quality.{k}"] = float(v)

    for a in arms:
        put(f"arm.{a['arm']}", a)
    inc, ch = _pick(arms, INCUMBENT), _pick(arms, CHALLENGER)
    if inc is not None:
        put("arm.incumbent", inc)
    if ch is not None:
        put("arm.challenger", ch)
    if inc is not None and ch is not None:
        for k in ("error_rate", "client_error_rate"):
            if _finite(ch.get(k)) and _finite(inc.get(k)):
                out[f"arm.challenger.{k}_increase"] = float(ch[k]) - float(inc[k])
        for k, v in (ch.get("quality") or {}).items():
            w = (inc.get("quality") or {}).get(k)
            if _finite(v) and isinstance(w, int | float) and math.isfinite(w):
                out[f"arm.challenger.quality.{k}_delta"] = float(v) - float(w)
    return out


def window_arms(ws: Any, start: Any, end: Any, seconds: float) -> list[dict[str, Any]]:
    """:func:`arm_health` of the log between ``start`` and ``end``, with the errors and latency of the latest
    stored scrape of the service (no new scrape: for reports); empty without an experiment in the window."""
    import datetime as dt

    from sqlalchemy import select

    from loopml.monitoring import logs
    from loopml.monitoring.ops import window_summary
    from loopml.monitoring.records import ensure_tables, monitor_ops_samples

    log = logs.read_predictions(ws, start, end, shadows=True)
    if not log.num_rows or "route" not in log.column_names or set(log.column("route").to_pylist()) == {"production"}:
        return []
    ensure_tables(ws)
    with ws.engine.connect() as conn:
        snap = conn.execute(select(monitor_ops_samples.c.data).order_by(monitor_ops_samples.c.scraped_at.desc())
                            .limit(1)).scalar()
    by_version = window_summary(ws, dt.timedelta(seconds=seconds), latest=snap)["by_version"] if snap else None
    return arm_health(log, logs.read_labelled(ws, start, end, shadows=True), by_version, seconds, ws.spec.task.type)


def arms_html(arms: list[dict[str, Any]], title: str) -> str:
    """The rollout-health table as an HTML section (escaped), for the monitoring report."""
    from html import escape

    def f(v: Any, pct: bool = False) -> str:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return ""
        if pct:
            return f"{v:.2%}"
        return f"{v:.4g}" if isinstance(v, float) else escape(str(v))

    rows = []
    for a in arms:
        q = ", ".join(f"{escape(k)} {v:.4g}" for k, v in (a.get("quality") or {}).items() if _finite(v))
        cells = [escape(a["arm"]), escape(str(a["model_version"])), escape(a.get("experiment") or ""),
                 f(a["predictions"]), f(a.get("predictions_per_s")), f(a.get("error_rate"), True),
                 f(a.get("client_error_rate"), True), f(a.get("latency_p99_ms")), f(a.get("score_mean")),
                 f(a.get("labelled")), q]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = ("<tr><th>arm</th><th>version</th><th>experiment</th><th>predictions</th><th>per s</th><th>errors (5xx)"
            "</th><th>refused (4xx)</th><th>p99 ms</th><th>mean score</th><th>labelled</th><th>quality</th></tr>")
    return (f'<h2 id="rollout">{escape(title)}</h2><p>Per arm of the experiment: predictions from the log, errors '
            "and latency per version from the service's last scrape, quality on delayed labels. Alert on "
            "<code>arm.&lt;route&gt;.*</code> or <code>arm.challenger.*</code>.</p>"
            f"<table>{head}{''.join(rows)}</table>\n")


__all__ = ["CHALLENGER", "INCUMBENT", "arm_health", "arm_metrics", "arms_html", "window_arms"]
