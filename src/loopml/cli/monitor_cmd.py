"""`loopml monitor`: watch the served model and close the loop (ops, drift, quality, alerts, retraining)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import typer

from loopml.cli.project import open_project
from loopml.cli.shapes import emit, json_help
from loopml.cli.ui import console, fmt_time, table
from loopml.errors import LoopMLError, SpecError

app = typer.Typer(
    help="Watch the served model: operations, drift, delayed-label quality, alerts, and retraining. "
    "Without a subcommand, evaluates every rule once (or every --every) and retrains when a rule says so.\n\n"
    "Examples:\n\n"
    "  loopml monitor -p shop                 # every rule once\n"
    "  loopml monitor -p shop --every 5m      # keep watching until Ctrl-C\n"
    "  loopml monitor drift -p shop -w 1d     # one signal: see the subcommands",
    invoke_without_command=True,
    no_args_is_help=False,
)

PROJECT = typer.Option(Path("."), "--project", "-p", help="Project folder (holding loopml.yaml).")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.4g}"
    return str(v)


def _workspace(project: Path) -> Any:
    from loopml.monitoring.records import ensure_tables

    ws = open_project(project)
    ensure_tables(ws)
    return ws


def _print_cycle(result: Any) -> None:
    rows = []
    for s in result.statuses:
        state = "[red]FIRING[/red]" if s.fired else ("no data" if s.value is None else "ok")
        rows.append((s.rule, s.metric, _fmt(s.value), state, s.note))
    if rows:
        console.print(table(f"check {result.check_id} at {fmt_time(result.at)}", ["rule", "metric", "value", "state", "note"], rows))
    else:
        console.print(f"check {result.check_id}: no alert rules in monitoring.alerts")
    for f in result.firings:
        style = {"critical": "bold red", "warning": "yellow", "info": "cyan"}.get(f.severity, "white")
        console.print(f"[{style}]ALERT {f.message()}[/{style}]")
        if f.metric.startswith("drift.") and f.evidence.get("drifted"):
            console.print(f"  drifted: {', '.join(f.evidence['drifted'])}")
        for hook, res in f.hooks.items():
            console.print(f"  {hook}: {res}")
    for sig_window, sig in result.windows.items():
        m = sig.metrics
        if "drift.share" in m:
            console.print(
                f"window {sig_window}: {int(m.get('volume.predictions', 0))} predictions, drift share {m['drift.share']:.2f}"
                + (f" ({', '.join(sig.drift.drifted)})" if sig.drift and sig.drift.drifted else "")
            )
    for sig_window, sig in result.windows.items():
        if sig.arms:
            console.print(table(f"rollout health per arm, window {sig_window}", [
                "arm", "version", "experiment", "predictions", "per s", "errors 5xx", "refused 4xx", "p99 ms",
                "mean score", "labelled", "quality"], [
                (a["arm"], a["model_version"], a.get("experiment") or "", a["predictions"],
                 _fmt(a.get("predictions_per_s")), _fmt(a.get("error_rate")), _fmt(a.get("client_error_rate")),
                 _fmt(a.get("latency_p99_ms")), _fmt(a.get("score_mean")), _fmt(a.get("labelled")),
                 ", ".join(f"{k} {_fmt(v)}" for k, v in (a.get("quality") or {}).items()))
                for a in sig.arms]))
    for n in result.notes:
        console.print(f"[dim]note: {n}[/dim]")
    if result.decision is not None:
        style = {"approved": "green", "rejected": "yellow", "failed": "red"}.get(result.decision.status, "white")
        console.print(f"[{style}]{result.decision.message()}[/{style}]")
        if result.decision.status == "approved" and result.decision.version_id:
            console.print(
                f"  not promoted: review it, then `loopml models promote {result.decision.version_id} --to canary "
                f"--reason '...'` (or --to production)"
            )


@app.callback()
def monitor(
    ctx: typer.Context,
    project: Path = PROJECT,
    every: str | None = typer.Option(
        None, "--every", help="Repeat the check at this interval (e.g. 5m, 1h) until Ctrl-C; once when unset."
    ),
    cycles: int | None = typer.Option(None, "--cycles", min=1, help="Stop after this many checks (with --every)."),
    no_retrain: bool = typer.Option(False, "--no-retrain", help="Evaluate and alert, but never start retraining."),
    as_json: bool = typer.Option(False, "--json", help="Print each check as JSON instead of tables."),
    fail_on: str | None = typer.Option(
        None, "--fail-on", help="Exit with code 1 when an alert of this severity or worse fired in the (last) check: "
        "info, warning or critical (for cron jobs and CI).",
    ),
) -> None:
    """Evaluate every alert rule once (or every --every); retrain and register an approved candidate when a
    retraining rule fires. Metrics: drift.share, drift.count, drift.max_psi, drift.feature.<col>.<stat>,
    drift.prediction.psi, drift.multivariate.auc, quality.<metric>, cbpe.<metric>, labels.new,
    volume.predictions, ops.latency_p99_ms, ops.error_rate, ops.requests_per_s, ops.cpu_percent, ops.memory_mb;
    per arm of a running experiment (rollout health, shown as a table): arm.<route>.<m> and arm.challenger.<m> /
    arm.incumbent.<m> with m = predictions, predictions_per_s, error_rate, client_error_rate, latency_p99_ms,
    score_mean, labelled, quality.<metric>; arm.challenger.error_rate_increase, client_error_rate_increase,
    quality.<metric>_delta.

    Examples:

      loopml monitor -p shop                          # every rule once
      loopml monitor -p shop --every 5m               # keep watching until Ctrl-C
      loopml monitor -p shop --no-retrain --fail-on critical
      # loopml.yaml alert per arm: {name: canary-errors, metric: arm.challenger.error_rate_increase,
      #                             threshold: 0.01, window: 1h, severity: critical}
    """
    if ctx.invoked_subcommand is not None:
        return
    from loopml.monitoring.loop import run_cycle
    from loopml.monitoring.windows import parse_duration

    interval = parse_duration(every, field="--every").total_seconds() if every else None
    ranks = {"info": 0, "warning": 1, "critical": 2}
    if fail_on is not None and fail_on not in ranks:
        raise SpecError(f"--fail-on: `{fail_on}` is not a severity (expected one of: info, warning, critical)")
    worst = -1
    n = 0
    while True:
        ws = _workspace(project)  # reopened each time: an edited loopml.yaml applies from the next check
        try:
            result = run_cycle(ws, retraining=not no_retrain, show_progress=False)
        except LoopMLError as exc:
            if interval is None:
                raise
            # a long-running monitor reports a failed check and keeps watching
            console.print(f"[red]check failed: {exc}[/red]")
        else:
            if as_json:
                typer.echo(json.dumps(result.to_json(), default=str))
            else:
                _print_cycle(result)
            worst = max((ranks[f.severity] for f in result.firings), default=-1)
        n += 1
        if interval is None or (cycles is not None and n >= cycles):
            break
        time.sleep(interval)
    if fail_on is not None and worst >= ranks[fail_on]:
        raise typer.Exit(code=1)


@app.command("ops")
def ops_cmd(
    project: Path = PROJECT,
    window: str = typer.Option("1h", "--window", "-w", help="Summary window, e.g. 5m, 1h, 1d."),
    as_json: bool = typer.Option(False, "--json", help=json_help("monitor ops")),
    url: str | None = typer.Option(None, "--url", help="Metrics endpoint (default: monitoring.ops.metrics_url, else where the running `loopml serve` bound, else the spec's deployment)."),
) -> None:
    """Scrape the service's Prometheus metrics and summarise the window: throughput, errors, latency, CPU, memory.

    Examples:

      loopml monitor ops -p shop                 # finds the running `loopml serve`
      loopml monitor ops -p shop -w 5m --json
    """
    from loopml.monitoring.ops import scrape, window_summary
    from loopml.monitoring.windows import parse_duration

    ws = _workspace(project)
    snap = scrape(ws, url)
    s = window_summary(ws, parse_duration(window, field="--window"), latest=snap)
    if as_json:
        emit("monitor ops", {"window": window, "summary": {k: v for k, v in s.items() if k != "by_version"},
                             "by_version": s.get("by_version") or {}})
        return
    rows = [(k, _fmt(s.get(k))) for k in (
        "requests", "requests_per_s", "errors", "error_rate", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
        "cpu_percent", "memory_mb")]
    rows.append(("since", s["since"]))
    console.print(table(f"service operations, last {window}", ["metric", "value"], rows))
    if s["by_version"]:
        console.print(table("by model version (arm)", ["model version", "state", "requests", "errors", "error rate",
                                                      "latency p99 ms"], [
            (v, s["models_loaded"].get(v, ""), _fmt(d["requests"]), _fmt(d.get("errors")), _fmt(d.get("error_rate")),
             _fmt(d["latency_p99_ms"]))
            for v, d in sorted(s["by_version"].items())
        ]))


@app.command("drift")
def drift_cmd(
    project: Path = PROJECT,
    window: str | None = typer.Option(None, "--window", "-w", help="Window ending now (default: monitoring.drift.window)."),
    limit: int = typer.Option(30, "--limit", help="Rows shown (worst first)."),
    current: Path | None = typer.Option(
        None, "--current", help="Compare this Parquet/CSV file with the reference instead of the prediction log."
    ),
    as_json: bool = typer.Option(False, "--json", help=json_help("monitor drift") + " Each feature: name, kind, "
                                 "drifted, test, p_value, effect, psi, js, wasserstein, missing_reference, "
                                 "missing_current, reason."),
) -> None:
    """Drift of the latest window of the prediction log (or of a file) against the training reference, worst
    feature first.

    Examples:

      loopml monitor drift -p shop -w 1d
      loopml monitor drift -p shop --current new_rows.parquet --json
    """
    from loopml.errors import NotFound
    from loopml.monitoring import logs
    from loopml.monitoring.drift import DriftEngine
    from loopml.monitoring.signals import ReferenceCache, WindowSignals, drift_signals
    from loopml.monitoring.windows import parse_duration, utcnow

    ws = _workspace(project)
    w = window or ws.spec.monitoring.drift.window
    now = utcnow()
    sig = WindowSignals(now - parse_duration(w, field="--window"), now)
    engine = DriftEngine.from_spec(ws.spec.monitoring.drift)
    if current is not None:
        if not current.exists():
            raise NotFound(f"--current: file {current} does not exist")
        src = logs.ReferenceSource(str(current), str(current), current)
        rows = src.read(ws)
        w = current.name
    else:
        rows = logs.read_predictions(ws, sig.start, sig.end)
    drift_signals(ws, engine, ReferenceCache(ws, engine), rows, sig)
    for n in sig.notes if not as_json else []:
        console.print(f"[dim]note: {n}[/dim]")
    if sig.drift is None:
        raise NotFound(f"no drift result for the last {w}: " + "; ".join(sig.notes))
    rep = sig.drift
    if as_json:
        keys = ("name", "kind", "drifted", "test", "p_value", "effect", "psi", "js", "wasserstein",
                "missing_reference", "missing_current", "reason")
        emit("monitor drift", {"window": w, "n_current": rep.n_current, "n_reference": rep.n_reference,
                               "drifted": list(rep.drifted), "notes": list(sig.notes),
                               "features": [{k: getattr(f, k, None) for k in keys} for f in rep.features[:limit]]})
        return
    console.print(table(
        f"drift, {'last ' if current is None else ''}{w}: {len(rep.drifted)} of {len(rep.features)} drifted ({rep.n_current} rows vs {rep.n_reference})",
        ["feature", "kind", "drifted", "test", "p-value", "effect", "PSI", "JS", "Wasserstein", "missing ref→cur", "why"],
        [
            (f.name, f.kind, "[red]yes[/red]" if f.drifted else "no", f.test, f"{f.p_value:.2g}", f"{f.effect:.3f}",
             f"{f.psi:.3f}", f"{f.js:.3f}", _fmt(f.wasserstein), f"{f.missing_reference:.1%}→{f.missing_current:.1%}",
             f.reason)
            for f in rep.features[:limit]
        ],
    ))


@app.command("quality")
def quality_cmd(
    project: Path = PROJECT,
    window: str = typer.Option("1d", "--window", "-w", help="Bucket width of the time series, e.g. 1h, 1d."),
    since: str | None = typer.Option(None, "--since", help="Only predictions newer than this (e.g. 7d)."),
    as_json: bool = typer.Option(False, "--json", help=json_help("monitor quality") + " Each window: window_start, "
                                 "model_version, predictions, labelled, <metric>, cbpe_<metric>."),
) -> None:
    """Quality per window and model version on delayed labels, beside the CBPE estimate for all predictions.

    Examples:

      loopml monitor quality -p shop -w 1d --since 30d
    """
    from loopml.monitoring import logs
    from loopml.monitoring.quality import cbpe_by_window, quality_by_window
    from loopml.monitoring.signals import fit_cbpe_calibrator
    from loopml.monitoring.windows import parse_duration, utcnow

    ws = _workspace(project)
    width = parse_duration(window, field="--window")
    start = utcnow() - parse_duration(since, field="--since") if since else None
    task = ws.spec.task.type
    labelled = quality_by_window(logs.read_labelled(ws, start, None), task, width)
    est: dict[tuple[Any, str], dict[str, Any]] = {}
    if task in ("binary", "multiclass"):
        fitted = fit_cbpe_calibrator(ws, None)
        if fitted is not None:
            for r in cbpe_by_window(logs.read_predictions(ws, start, None), fitted[0], width):
                est[(r["window_start"], r["model_version"])] = r
    keys = sorted({(r["window_start"], r["model_version"]) for r in labelled} | set(est))
    by_key = {(r["window_start"], r["model_version"]): r for r in labelled}
    metric = "roc_auc" if task == "binary" else "accuracy" if task == "multiclass" else "rmse"
    rows = []
    for k in keys:
        q, e = by_key.get(k, {}), est.get(k, {})
        rows.append((fmt_time(k[0]), k[1], e.get("rows", ""), q.get("rows", 0), _fmt(q.get(metric)),
                     _fmt(e.get(metric)) if e else "", _fmt(q.get("accuracy")) if task != "regression" else _fmt(q.get("mae")),
                     _fmt(e.get("accuracy")) if e else ""))
    second = "accuracy" if task != "regression" else "mae"
    if as_json:
        emit("monitor quality", {"task": task, "metric": metric, "windows": [
            {"window_start": k[0], "model_version": k[1], "predictions": est.get(k, {}).get("rows"),
             "labelled": by_key.get(k, {}).get("rows", 0), metric: by_key.get(k, {}).get(metric),
             f"cbpe_{metric}": est.get(k, {}).get(metric), second: by_key.get(k, {}).get(second),
             f"cbpe_{second}": est.get(k, {}).get("accuracy") if task != "regression" else None}
            for k in keys]})
        return
    console.print(table(
        f"quality per {window} window and model version ({task})",
        ["window", "model version", "predictions", "labelled", metric, f"CBPE {metric}", second, f"CBPE {second}"],
        rows,
    ))


@app.command("history")
def history_cmd(
    project: Path = PROJECT,
    limit: int = typer.Option(20, "--limit", help="Rows per table."),
    as_json: bool = typer.Option(False, "--json", help=json_help("monitor history")),
) -> None:
    """Recent checks, alerts and retraining decisions (with their verdicts and registered versions).

    Examples:

      loopml monitor history -p shop
      loopml monitor history -p shop --json | jq '.alerts | length'
    """
    from loopml.monitoring.records import monitor_alerts, monitor_checks, monitor_decisions, recent

    ws = _workspace(project)
    if as_json:
        emit("monitor history", {"decisions": recent(ws, monitor_decisions, "decided_at", limit),
                                 "alerts": recent(ws, monitor_alerts, "fired_at", limit),
                                 "checks": recent(ws, monitor_checks, "started_at", limit)})
        return
    console.print(table("retraining decisions", ["decided", "action", "status", "triggers", "run", "version", "evidence"], [
        (fmt_time(d["decided_at"]), d["action"], d["status"], "; ".join(t.get("detail", "") for t in d["triggers"] or []),
         d["run_id"] or "", d["version_id"] or "", _decision_evidence(d))
        for d in recent(ws, monitor_decisions, "decided_at", limit)
    ]))
    console.print(table("alerts", ["fired", "rule", "severity", "metric", "value", "threshold", "new", "evidence"], [
        (fmt_time(a["fired_at"]), a["rule"], a["severity"], a["metric"], _fmt(a["value"]), f"{a['op']} {a['threshold']:g}",
         "yes" if a["new"] else "", ", ".join((a["evidence"] or {}).get("drifted", []))[:80])
        for a in recent(ws, monitor_alerts, "fired_at", limit)
    ]))
    console.print(table("checks", ["started", "check", "status", "notes"], [
        (fmt_time(c["started_at"]), c["check_id"], c["status"], "; ".join(c["notes"] or [])[:120] or (c["error"] or ""))
        for c in recent(ws, monitor_checks, "started_at", limit)
    ]))


def _decision_evidence(d: dict[str, Any]) -> str:
    ev = d.get("evidence") or {}
    if d["action"] == "skip":
        return str(ev.get("reason", ""))
    parts = []
    if "exported" in ev:
        parts.append(f"{ev['exported'].get('rows', 0)} new labelled rows exported")
    gates = ev.get("gates") or []
    if gates:
        passed = sum(1 for g in gates if g.get("passed"))
        parts.append(f"gates {passed}/{len(gates)} passed")
    if d.get("error"):
        parts.append(str(d["error"])[:100])
    return "; ".join(parts)


@app.command("report")
def report_cmd(
    project: Path = PROJECT,
    window: str | None = typer.Option(None, "--window", "-w", help="Bucket width of the time series (default: drift window)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="HTML path (default: .loopml/reports/monitoring.html)."),
    as_json: bool = typer.Option(False, "--json", help=json_help("monitor report")),
) -> None:
    """Write the monitoring report: HTML (time series per feature, metric and model version, alert markers,
    drift table worst first) and JSON beside it.

    Examples:

      loopml monitor report -p shop
      loopml monitor report -p shop -w 1h -o monitoring.html
    """
    from loopml.monitoring.report import write_report

    ws = _workspace(project)
    html, js = write_report(ws, window=window, out=out)
    if as_json:
        emit("monitor report", {"html": str(html), "json": str(js)})
        return
    console.print(f"monitoring report: {html}\nJSON: {js}")
