"""Operations: the service's Prometheus metrics, scraped, stored and summarised per window.

Each scrape is reduced to a small snapshot (cumulative request/error counters, the latency
histogram's cumulative buckets overall and per model version, CPU seconds, memory) and
stored in ``monitor_ops_samples``. A window's summary is the difference between the latest
snapshot and the oldest one inside the window from the same server process (Prometheus'
``increase`` and ``histogram_quantile``), or everything since the process started.

Examples
--------
>>> text = '''loopml_requests_total{endpoint="/v1/predict",model_version="v1",code="200"} 90
... loopml_requests_total{endpoint="/v1/predict",model_version="v1",code="500"} 10
... loopml_request_duration_seconds_bucket{endpoint="/v1/predict",model_version="v1",le="0.001"} 50
... loopml_request_duration_seconds_bucket{endpoint="/v1/predict",model_version="v1",le="0.01"} 100
... loopml_request_duration_seconds_bucket{endpoint="/v1/predict",model_version="v1",le="+Inf"} 100
... '''
>>> snap = snapshot(parse_prometheus(text))
>>> s = summarize(snap, None)
>>> s["requests"], s["error_rate"], round(s["latency_p50_ms"], 3)
(100.0, 0.1, 1.0)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import math
import re
import urllib.error
import urllib.request
from typing import Any

from sqlalchemy import select

from loopml.errors import LoopMLError
from loopml.monitoring.records import ensure_tables, insert_row, monitor_ops_samples, new_id
from loopml.monitoring.windows import utcnow
from loopml.workspace import Workspace

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Sample = tuple[str, dict[str, str], float]


class OpsUnavailable(LoopMLError):
    """The service's metrics endpoint could not be read."""

    status = 503


def parse_prometheus(text: str) -> list[Sample]:
    """Samples ``(name, labels, value)`` of the Prometheus text exposition format."""
    out: list[Sample] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(3) or "")}
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        out.append((m.group(1), labels, value))
    return out


def _version(labels: dict[str, str]) -> str:
    return labels.get("model_version") or labels.get("version") or labels.get("model") or ""


def _is_latency(name: str) -> bool:
    base = name.removesuffix("_bucket")
    return name.endswith("_bucket") and ("duration" in base or "latency" in base)


def snapshot(samples: list[Sample]) -> dict[str, Any]:
    """Reduce scraped samples to the cumulative facts a window summary needs."""
    predict_eps = {lab.get("endpoint", "") for n, lab, _ in samples if _is_latency(n) and "predict" in lab.get("endpoint", "")}
    snap: dict[str, Any] = {
        "requests": 0.0, "errors": 0.0, "client_errors": 0.0, "by_version": {}, "errors_by_version": {},
        "client_errors_by_version": {}, "buckets": {},
        "buckets_by_version": {}, "cpu_seconds": None, "rss_bytes": None, "start_time": None, "loaded": {},
    }
    explicit_errors = 0.0
    for name, labels, value in samples:
        if name.endswith("requests_total"):
            snap["requests"] += value
            code = labels.get("code") or labels.get("status") or ""
            if code.startswith("5"):
                snap["errors"] += value
            elif code.startswith("4"):
                snap["client_errors"] += value
            v = _version(labels)
            if v:
                snap["by_version"][v] = snap["by_version"].get(v, 0.0) + value
                if code.startswith("5"):  # per version (a canary's arm): its server errors
                    snap["errors_by_version"][v] = snap["errors_by_version"].get(v, 0.0) + value
                elif code.startswith("4"):  # and the requests it refused (e.g. an input it newly requires)
                    per = snap["client_errors_by_version"]
                    per[v] = per.get(v, 0.0) + value
        elif name.endswith("errors_total"):
            explicit_errors += value
        elif _is_latency(name):
            if predict_eps and labels.get("endpoint", "") not in predict_eps:
                continue  # latency of predictions, not of /metrics or /health
            le = labels.get("le", "+Inf")
            snap["buckets"][le] = snap["buckets"].get(le, 0.0) + value
            v = _version(labels)
            if v:
                per = snap["buckets_by_version"].setdefault(v, {})
                per[le] = per.get(le, 0.0) + value
        elif name == "process_cpu_seconds_total":
            snap["cpu_seconds"] = value
        elif name == "process_resident_memory_bytes":
            snap["rss_bytes"] = value
        elif name == "process_start_time_seconds":
            snap["start_time"] = value
        elif name.endswith("model_loaded") and value > 0:
            snap["loaded"][_version(labels)] = labels.get("state", "")
    if snap["errors"] == 0 and explicit_errors:
        snap["errors"] = explicit_errors
    return snap


def histogram_quantile(q: float, buckets: dict[str, float]) -> float:
    """Quantile ``q`` from cumulative buckets ``{le: count}``, interpolating inside a bucket (seconds)."""
    items = sorted(((math.inf if le in ("+Inf", "inf") else float(le)), c) for le, c in buckets.items())
    if not items or items[-1][1] <= 0:
        return float("nan")
    total = items[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in items:
        if c >= rank:
            if math.isinf(le):
                return prev_le  # beyond the last finite bucket: its upper bound is all we know
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def _diff(new: dict[str, float], old: dict[str, float] | None) -> dict[str, float]:
    if not old:
        return dict(new)
    return {k: max(0.0, v - old.get(k, 0.0)) for k, v in new.items()}


def summarize(
    latest: dict[str, Any], base: dict[str, Any] | None, seconds: float | None = None
) -> dict[str, Any]:
    """Window facts from two snapshots (``base`` None: since the process started)."""
    same_process = base is not None and base.get("start_time") == latest.get("start_time")
    b = base if same_process else None
    requests = latest["requests"] - (b["requests"] if b else 0.0)
    errors = latest["errors"] - (b["errors"] if b else 0.0)
    buckets = _diff(latest["buckets"], b["buckets"] if b else None)
    out: dict[str, Any] = {
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests > 0 else 0.0,
        "latency_p50_ms": histogram_quantile(0.5, buckets) * 1000,
        "latency_p90_ms": histogram_quantile(0.9, buckets) * 1000,
        "latency_p99_ms": histogram_quantile(0.99, buckets) * 1000,
        "memory_mb": (latest["rss_bytes"] or 0.0) / 2**20 if latest.get("rss_bytes") is not None else None,
        "models_loaded": latest.get("loaded", {}),
    }
    if seconds is None and not b and latest.get("start_time") and latest.get("scraped_at"):
        seconds = latest["scraped_at"] - latest["start_time"]
    if seconds and seconds > 0:
        out["requests_per_s"] = requests / seconds
        if latest.get("cpu_seconds") is not None:
            cpu0 = b["cpu_seconds"] if b and b.get("cpu_seconds") is not None else 0.0
            out["cpu_percent"] = 100.0 * (latest["cpu_seconds"] - cpu0) / seconds
    by_version: dict[str, Any] = {}
    for v, cum in latest["by_version"].items():
        old = (b or {}).get("by_version", {}).get(v, 0.0)
        vb = _diff(latest["buckets_by_version"].get(v, {}), (b or {}).get("buckets_by_version", {}).get(v))
        errs = latest.get("errors_by_version", {}).get(v, 0.0) - (b or {}).get("errors_by_version", {}).get(v, 0.0)
        client = (latest.get("client_errors_by_version", {}).get(v, 0.0)
                  - (b or {}).get("client_errors_by_version", {}).get(v, 0.0))
        by_version[v] = {"requests": cum - old, "errors": errs, "error_rate": errs / (cum - old) if cum > old else 0.0,
                         "client_errors": client, "latency_p99_ms": histogram_quantile(0.99, vb) * 1000}
    out["by_version"] = by_version
    return out


def metrics_url(ws: Workspace) -> str:
    """The service's Prometheus endpoint: the spec's, else where `loopml serve` bound, else the spec's port."""
    from loopml.serving.address import bound_address

    url = ws.spec.monitoring.ops.metrics_url
    if url:
        return url
    bound = bound_address(ws.root)
    if bound is not None:
        return f"http://{_scrape_host(str(bound['host']))}:{bound['port']}/metrics"
    return f"http://{_scrape_host(ws.spec.deployment.host)}:{ws.spec.deployment.port}/metrics"


def _scrape_host(host: str) -> str:
    """Where to reach a service bound to ``host``: a wildcard bind (all interfaces) is reached on loopback."""
    try:
        wildcard = not host or ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name
        wildcard = False
    return "127.0.0.1" if wildcard else host


def scrape(ws: Workspace, url: str | None = None) -> dict[str, Any]:
    """Read the metrics endpoint now, store the snapshot, and return it."""
    url = url or metrics_url(ws)
    try:
        with urllib.request.urlopen(url, timeout=ws.spec.monitoring.ops.timeout_s) as resp:
            text = resp.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OpsUnavailable(
            f"service metrics {url}: cannot be read ({reason})",
            hint="is `loopml serve` running? set monitoring.ops.metrics_url to its /metrics endpoint",
        ) from None
    now = utcnow()
    snap = snapshot(parse_prometheus(text))
    snap["scraped_at"] = now.timestamp()
    ensure_tables(ws)
    insert_row(ws, monitor_ops_samples, sample_id=new_id(), scraped_at=now, url=url, data=snap)
    return snap


def window_summary(ws: Workspace, window: dt.timedelta, latest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Summary of the last ``window``: scrape now (unless ``latest`` is given) and diff with the oldest stored
    snapshot of the same process inside the window."""
    latest = latest if latest is not None else scrape(ws)
    now = dt.datetime.fromtimestamp(latest["scraped_at"], dt.UTC)
    start = now - window
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(monitor_ops_samples.c.scraped_at, monitor_ops_samples.c.data)
            .where(monitor_ops_samples.c.scraped_at >= start)
            .order_by(monitor_ops_samples.c.scraped_at)
        ).all()
    base = next(
        (d for _, d in rows if d.get("start_time") == latest.get("start_time") and d["scraped_at"] < latest["scraped_at"]),
        None,
    )
    seconds = latest["scraped_at"] - base["scraped_at"] if base else None
    out = summarize(latest, base, seconds)
    out["since"] = dt.datetime.fromtimestamp(base["scraped_at"], dt.UTC).isoformat() if base else "process start"
    return out


def ops_series(ws: Workspace, since: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Operational facts between consecutive stored scrapes of the same server process, oldest first
    (each row: ``at`` and the :func:`summarize` metrics of that interval)."""
    q = select(monitor_ops_samples.c.data).order_by(monitor_ops_samples.c.scraped_at)
    if since is not None:
        q = q.where(monitor_ops_samples.c.scraped_at >= since)
    with ws.engine.connect() as conn:
        snaps = [r[0] for r in conn.execute(q).all()]
    out: list[dict[str, Any]] = []
    for prev, cur in itertools.pairwise(snaps):
        if prev.get("start_time") != cur.get("start_time"):
            continue  # the server restarted in between: counters started again
        seconds = cur["scraped_at"] - prev["scraped_at"]
        if seconds <= 0:
            continue
        s = summarize(cur, prev, seconds)
        out.append({"at": dt.datetime.fromtimestamp(cur["scraped_at"], dt.UTC).isoformat(),
                    **{k: v for k, v in s.items() if isinstance(v, int | float)}})
    return out
