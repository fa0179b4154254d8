"""The Serving page: request rate, latency and errors per model version and arm, and the online experiments.

Three sources, read only (nothing here writes to the workspace):

- the service's ``/metrics`` (Prometheus text, where ``loopml serve`` recorded its address), scraped when the
  page is requested: per model version the requests per second, p50/p90/p99 latency and server errors since
  the UI's previous scrape of the same process (since the process started on the first one);
- the prediction log (DuckDB over the Parquet segments, four columns read): requests per version and arm
  (``route``: production, canary, shadow, control, treatment) and experiment, in total and over time;
- the experiments table (:mod:`loopml.experiments.records`) and, for each experiment in the log, its analysis
  (:func:`loopml.experiments.analysis.analyse`: arms, sample-ratio check, shadow agreement, guardrail, the
  online test) with the SLO check of its challenger against ``/metrics`` while the service runs.

The log aggregation and the analyses are kept per fingerprint of the log's segments, so a page answers from
memory until the log changes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import duckdb

from loopml.errors import LoopMLError
from loopml.workspace import Workspace

#: points of the requests-over-time chart
MAX_BUCKETS = 120
#: how far back the chart reaches from the latest logged prediction
CHART_SPAN = dt.timedelta(hours=24)


#: what a saved aggregate also depends on: this module's code
_SOURCE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _iso(o: Any) -> Any:
    return o.isoformat() if hasattr(o, "isoformat") else str(o)


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(float(v)) else None


class ServingView:
    """What the Serving page shows, with the previous ``/metrics`` scrape and the log aggregates kept."""

    def __init__(self, ws: Workspace, timeout_s: float = 1.0) -> None:
        self.ws = ws
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._previous: dict[str, Any] | None = None
        self._log: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self._computing = threading.Lock()
        self._experiments: tuple[tuple[Any, ...], list[dict[str, Any]]] | None = None

    # -- /metrics --------------------------------------------------------------------------------
    def scrape(self) -> tuple[str | None, dict[str, Any] | None, str | None, str | None]:
        """(url, snapshot of the samples or None, the raw text, why it could not be read). The URL is
        ``monitoring.ops.metrics_url`` or where a live ``loopml serve`` of this project recorded its address
        (never a guessed port: another program may listen there)."""
        from loopml.monitoring.ops import metrics_url, parse_prometheus, snapshot
        from loopml.serving.address import bound_address

        if not self.ws.spec.monitoring.ops.metrics_url and bound_address(self.ws.root) is None:
            return None, None, None, "no `loopml serve` of this project is running (none recorded its address)"
        url = metrics_url(self.ws)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                text = resp.read().decode("utf-8", errors="replace")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return url, None, None, str(getattr(exc, "reason", exc))
        snap = snapshot(parse_prometheus(text))
        snap["scraped_at"] = time.time()
        return url, snap, text, None

    def live(self, snap: dict[str, Any]) -> dict[str, Any]:
        """Per model version: requests, requests per second, errors and latency percentiles between the previous
        scrape of the same server process and ``snap`` (since the process started on the first scrape)."""
        from loopml.monitoring.ops import histogram_quantile, summarize

        with self._lock:
            prev = self._previous
            self._previous = snap
        base = prev if prev is not None and prev.get("start_time") == snap.get("start_time") \
            and prev["scraped_at"] < snap["scraped_at"] else None
        seconds = snap["scraped_at"] - base["scraped_at"] if base else None
        total = summarize(snap, base, seconds)
        if seconds is None and snap.get("start_time"):
            seconds = snap["scraped_at"] - snap["start_time"]
        rows = []
        for v, cum in sorted(snap["by_version"].items()):
            old = (base or {}).get("by_version", {}).get(v, 0.0)
            new_b, old_b = snap["buckets_by_version"].get(v, {}), (base or {}).get("buckets_by_version", {}).get(v, {})
            buckets = {le: max(0.0, c - old_b.get(le, 0.0)) for le, c in new_b.items()}
            errs = snap["errors_by_version"].get(v, 0.0) - (base or {}).get("errors_by_version", {}).get(v, 0.0)
            n = cum - old
            rows.append({
                "version": v, "state": snap.get("loaded", {}).get(v, ""), "requests": int(n),
                "requests_per_s": n / seconds if seconds else None, "errors": int(errs),
                "error_rate": errs / n if n > 0 else None,
                **{f"latency_p{q}_ms": _finite(histogram_quantile(q / 100, buckets) * 1000) for q in (50, 90, 99)},
            })
        return {"since": "the previous scrape" if base else "the server process started", "seconds": seconds,
                "versions": rows, "total": {k: _finite(v) if isinstance(v, float) else v for k, v in total.items()
                                            if k != "by_version"}}

    # -- the prediction log ---------------------------------------------------------------------
    def _fingerprint(self) -> tuple[Any, ...]:
        from loopml.monitoring import logs

        out = []
        for folder in (logs.predictions_dir(self.ws), logs.feedback_dir(self.ws)):
            try:
                out.append(tuple(sorted((e.name, e.stat().st_size) for e in os.scandir(folder)
                                        if e.name.endswith(".parquet"))))
            except OSError:
                out.append(())
        return tuple(out)

    def log_traffic(self) -> dict[str, Any]:
        """Requests per model version, arm and experiment (total, last hour of the log) and over time: kept in
        memory and in ``.loopml/ui/traffic.json`` per fingerprint of the log's segments (one computation at a
        time: a request during the start-up's computation waits for it instead of repeating it)."""
        key = self._fingerprint()
        with self._lock:
            if self._log is not None and self._log[0] == key:
                return self._log[1]
        with self._computing:
            with self._lock:
                if self._log is not None and self._log[0] == key:
                    return self._log[1]
            digest = hashlib.sha256(json.dumps([key, _SOURCE]).encode()).hexdigest()  # older code's result: recomputed
            path = self.ws.root / "ui" / "traffic.json"
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
                data: dict[str, Any] | None = saved["data"] if saved.get("key") == digest \
                    and isinstance(saved.get("data"), dict) else None
            except (OSError, ValueError, AttributeError):
                data = None
            if data is None:
                # through JSON, as when read back from the disk (timestamps become ISO text)
                data = json.loads(json.dumps(self._traffic([n for n, _ in key[0]]), default=_iso))
                if "error" in data:
                    return data  # the next request reads the log again
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                    tmp.write_text(json.dumps({"key": digest, "data": data}), encoding="utf-8")
                    tmp.replace(path)
                except OSError:
                    pass  # a read-only workspace: kept in memory only
            with self._lock:
                self._log = (key, data)
            return data

    def _traffic(self, names: list[str]) -> dict[str, Any]:
        from loopml.monitoring import logs

        empty: dict[str, Any] = {"rows": 0, "arms": [], "chart": None, "first": None, "last": None}
        if not names:
            return empty
        folder = logs.predictions_dir(self.ws)
        files = ", ".join("'" + str(folder / n).replace("'", "''") + "'" for n in names)
        src = f"read_parquet([{files}], union_by_name=true)"
        try:
            with duckdb.connect() as con:
                con.execute("SET TimeZone='UTC'")
                cols = {r[0] for r in con.sql(f"DESCRIBE SELECT * FROM {src}").fetchall()}
                arm = "route" if "route" in cols else "'production'"
                exp = "experiment" if "experiment" in cols else "NULL"
                first, last = con.execute(f"SELECT min(ts), max(ts) FROM {src}").fetchall()[0]
                if last is None:
                    return empty
                hour = last - dt.timedelta(hours=1)
                arms = con.sql(
                    f"SELECT model_version, coalesce({arm}, 'production') AS arm, {exp} AS experiment, count(*) AS n, "
                    f"count(*) FILTER (WHERE ts > ?) AS n_hour, min(ts), max(ts) FROM {src} "
                    "GROUP BY ALL ORDER BY model_version, arm", params=[hour]).fetchall()
                start = max(first, last - CHART_SPAN)
                span = max(1.0, (last - start).total_seconds())
                width = max(1, math.ceil(span / MAX_BUCKETS))
                series = con.sql(
                    f"SELECT model_version || ' ' || coalesce({arm}, 'production') AS s, "
                    f"(epoch(ts)::BIGINT // {width}) * {width} AS b, count(*) FROM {src} WHERE ts >= ? "
                    "GROUP BY ALL ORDER BY b", params=[start]).fetchall()
        except duckdb.Error as exc:  # a segment compacted away mid-read: the next request reads the new set
            return {**empty, "error": f"prediction log: {str(exc).splitlines()[0]}"}
        hour_s = min(3600.0, max(1.0, (last - first).total_seconds()))
        out_arms = [{"version": v, "arm": a, "experiment": e, "requests": int(n), "last_hour": int(nh),
                     "last_hour_per_s": nh / hour_s, "first": f0, "last": l0} for v, a, e, n, nh, f0, l0 in arms]
        seen = sorted({int(b) for _, b, _ in series})
        xs = list(range(seen[0], seen[-1] + width, width)) if seen else []  # every bucket: none logged is 0
        labels = list(dict.fromkeys(s for s, _, _ in series))
        counts = {(s, int(b)): int(n) for s, b, n in series}
        chart = {"title": f"requests per {width} s, per version and arm (log)", "kind": "time", "x": xs,
                 "ylabel": "requests", "series": [{"label": s, "values": [counts.get((s, x), 0) for x in xs]}
                                                 for s in labels]} if xs else None
        return {"rows": sum(a["requests"] for a in out_arms), "arms": out_arms, "chart": chart, "first": first,
                "last": last, "bucket_s": width}

    # -- experiments ----------------------------------------------------------------------------
    def experiments(self, metrics_text: str | None, traffic: dict[str, Any]) -> list[dict[str, Any]]:
        """Every recorded experiment (newest first) and every experiment named in the log, each with its
        status and, when the log has its requests, the analysis of its arms, guardrail and online test."""
        from loopml.experiments import records

        records.ensure_table(self.ws)
        with self.ws.engine.connect() as conn:
            recs = [dict(r) for r in conn.execute(
                records.experiments.select().order_by(records.experiments.c.started_at.desc())).mappings().all()]
        key = self._fingerprint()
        with self._lock:
            cached = self._experiments[1] if self._experiments is not None and self._experiments[0] == key else None
        if cached is None:
            in_log = [a for a in traffic.get("arms") or [] if a["experiment"] is not None]
            cached = self._analyses(dt.datetime.fromisoformat(min(str(a["first"]) for a in in_log))) if in_log else []
            with self._lock:
                self._experiments = (key, cached)
        analyses = {a["experiment"]: a for a in cached}
        out: list[dict[str, Any]] = []
        for rec in recs:
            out.append({"record": rec, "analysis": analyses.pop(rec["name"], None)})
        for name, a in analyses.items():  # in the log without a record (routing set in the spec by hand)
            out.append({"record": {"name": name, "status": "in the log only"}, "analysis": a})
        if metrics_text:
            from loopml.experiments.analysis import INCUMBENT, slo_check

            budget = self.ws.spec.requirements.constraints.latency_p99_ms
            for e in out:
                found: dict[str, Any] | None = e["analysis"]
                if found is None or e["record"].get("status") not in ("running", "in the log only"):
                    continue
                inc = next((x["model_version"] for x in found["arms"] if x["route"] in INCUMBENT), None)
                ch = next((x["model_version"] for x in found["arms"] if x["route"] not in INCUMBENT), None)
                if inc and ch and inc != ch:
                    e["analysis"] = {**found, "slo": slo_check(metrics_text, inc, ch, latency_p99_ms=budget)}
        return out

    def _analyses(self, since: dt.datetime) -> list[dict[str, Any]]:
        """The analysis of each experiment named in the log (the log read from the first request of one)."""
        from loopml.experiments.analysis import analyse, experiments_in
        from loopml.monitoring import logs

        try:
            log = logs.read_predictions(self.ws, since, shadows=True)
        except LoopMLError as exc:
            return [{"experiment": "?", "error": exc.message, "arms": []}]
        if "experiment" not in log.column_names:
            return []
        names = experiments_in(log)
        if not names:
            return []
        try:
            labelled = logs.read_labelled(self.ws, since, shadows=True)
        except LoopMLError:
            labelled = None
        out = []
        for name in names:
            try:
                out.append(analyse(log, labelled, name).as_dict())
            except LoopMLError as exc:
                out.append({"experiment": name, "error": exc.message, "arms": []})
        return out

    def page(self) -> dict[str, Any]:
        """Everything the page shows."""
        from loopml.monitoring.ops import ops_series
        from loopml.webui.views import ops_charts

        url, snap, text, error = self.scrape()
        traffic = self.log_traffic()
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=24)
        return {"metrics_url": url, "metrics_error": error, "live": self.live(snap) if snap else None,
                "traffic": traffic, "experiments": self.experiments(text, traffic),
                "ops_charts": ops_charts({"ops": ops_series(self.ws, since)})}
