"""The closed loop: one monitoring cycle evaluates every signal and rule, records, and may retrain.

``run_cycle`` is what ``loopml monitor`` runs once (or every ``--every``):

1. signals per window (each distinct window of the drift spec and the rules): drift against
   the training reference, labelled quality, CBPE estimates, new labels, volume, and the
   service's operational metrics;
2. alert rules compared, each firing recorded with its evidence; hooks run for new firings;
3. retraining triggers (alerts with ``retrain: true``, the schedule, N new labels) checked;
   when one holds (and the cooldown has passed) the pipeline reruns from ``ingest`` under the
   workspace lock and the evaluation verdict decides whether an approved candidate was
   registered. Nothing is promoted here.

Examples
--------
>>> # doctest: +SKIP
>>> result = run_cycle(Workspace.open("my-project"))
>>> [f.message() for f in result.firings], result.decision
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

from loopml.errors import LoopMLError
from loopml.monitoring import logs
from loopml.monitoring.alerts import Firing, RuleStatus, evaluate, record, run_hooks, was_firing
from loopml.monitoring.drift import DriftEngine
from loopml.monitoring.ops import OpsUnavailable, scrape, window_summary
from loopml.monitoring.records import ensure_tables, insert_row, monitor_checks, new_id, recent, update_row
from loopml.monitoring.retrain import Decision, last_retrain, record_skip, retrain, triggers_for
from loopml.monitoring.rollout import arm_health, arm_metrics
from loopml.monitoring.signals import (
    PREDICTION,
    ReferenceCache,
    WindowSignals,
    cbpe_signals,
    drift_signals,
    fit_cbpe_calibrator,
    quality_signals,
)
from loopml.monitoring.windows import parse_duration, utcnow
from loopml.workspace import Workspace


@dataclass
class CycleResult:
    """Everything one monitoring cycle saw and did."""

    check_id: str
    at: dt.datetime
    windows: dict[str, WindowSignals]
    firings: list[Firing]
    statuses: list[RuleStatus]
    decision: Decision | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain data."""
        return {
            "check_id": self.check_id,
            "at": self.at.isoformat(),
            "windows": {w: _clean(s.metrics) for w, s in self.windows.items()},
            "arms": {w: s.arms for w, s in self.windows.items() if s.arms},
            "firings": [f.message() for f in self.firings],
            "decision": self.decision.message() if self.decision else None,
            "notes": self.notes,
        }


def _clean(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def _evidence(f: Firing, sig: WindowSignals) -> dict[str, Any]:
    ev: dict[str, Any] = {"window_start": sig.start.isoformat(), "window_end": sig.end.isoformat()}
    if f.metric.startswith("drift.") and sig.drift is not None:
        ev["rows"] = sig.drift.n_current
        ev["drifted"] = sig.drift.drifted
        ev["worst"] = [
            {"feature": x.name, "test": x.test, "p_value": x.p_value, "effect": round(x.effect, 5),
             "psi": round(x.psi, 5), "js": round(x.js, 5), "drifted": x.drifted}
            for x in sig.drift.features[:10]
        ]
    if f.metric.startswith(("quality.", "cbpe.")):
        ev["by_version"] = sig.quality_by_version
        ev["cbpe"] = {k: v for k, v in sig.metrics.items() if k.startswith("cbpe.")}
    if f.metric.startswith("ops."):
        ev["ops"] = {k: v for k, v in sig.metrics.items() if k.startswith("ops.")}
    if f.metric.startswith("arm."):
        ev["arms"] = sig.arms
    return ev


def collect_signals(
    ws: Workspace, windows: list[str], now: dt.datetime, notes: list[str]
) -> dict[str, WindowSignals]:
    """Signals of each window ending at ``now``."""
    spec = ws.spec.monitoring
    engine = DriftEngine.from_spec(spec.drift)
    cache = ReferenceCache(ws, engine)
    calibrator = None
    if ws.spec.task.type in ("binary", "multiclass"):
        longest = max(parse_duration(w, field="window") for w in windows)
        try:
            fitted = fit_cbpe_calibrator(ws, now - longest)
            if fitted is not None:
                calibrator = fitted[0]
                notes.append(f"CBPE calibrated on {fitted[1]}")
            else:
                notes.append("CBPE skipped: no labelled predictions and no scored test split to calibrate on")
        except LoopMLError as exc:
            notes.append(f"CBPE skipped: {exc.message}")
    ops_snap = None
    try:
        ops_snap = scrape(ws)
    except OpsUnavailable as exc:
        notes.append(exc.message)
    last = last_retrain(ws)
    labels_new = logs.count_labels(ws, last["decided_at"] if last else None)
    out: dict[str, WindowSignals] = {}
    for w in windows:
        width = parse_duration(w, field="window")
        sig = WindowSignals(now - width, now)
        current = logs.read_predictions(ws, sig.start, sig.end)
        sig.metrics["volume.predictions"] = float(current.num_rows)
        sig.metrics["labels.new"] = float(labels_new)
        try:
            drift_signals(ws, engine, cache, current, sig)
        except LoopMLError as exc:
            sig.notes.append(f"drift not judged: {exc.message}")
        quality_signals(ws, logs.read_labelled(ws, sig.start, sig.end), sig)
        cbpe_signals(current, calibrator, sig)
        summary: dict[str, Any] = {}
        if ops_snap is not None:
            summary = window_summary(ws, width, latest=ops_snap)
            for k, v in summary.items():
                if isinstance(v, int | float) and v is not None:
                    sig.metrics[f"ops.{k}"] = float(v)
        with_shadows = logs.read_predictions(ws, sig.start, sig.end, shadows=True)
        if with_shadows.num_rows and "route" in with_shadows.column_names \
                and set(with_shadows.column("route").to_pylist()) != {"production"}:  # an experiment: health per arm
            sig.arms = arm_health(with_shadows, logs.read_labelled(ws, sig.start, sig.end, shadows=True),
                                  summary.get("by_version"), width.total_seconds(), ws.spec.task.type)
            sig.metrics.update(arm_metrics(sig.arms))
        out[w] = sig
    return out


def _log_backlog(ws: Workspace) -> str | None:
    """A note when served predictions are still in the service's journal, not yet in the Parquet log."""
    from loopml.serving.journal import pending_bytes
    from loopml.serving.logs import prediction_log_dir

    waiting = pending_bytes(prediction_log_dir(ws.root))
    if not waiting:
        return None
    lag = ws.spec.deployment.log_max_lag_seconds
    return (f"{waiting / 1e6:.1f} MB of served predictions are still in the service's journal (the log writer waits "
            f"while traffic is heavy, at most {lag:g} s): this check does not see them yet")


def run_cycle(
    ws: Workspace, *, now: dt.datetime | None = None, retraining: bool = True, show_progress: bool = False
) -> CycleResult:
    """One monitoring cycle: signals, rules, alerts (recorded, hooks), and retraining when triggered."""
    ensure_tables(ws)
    now = now or utcnow()
    spec = ws.spec.monitoring
    previous = recent(ws, monitor_checks, "started_at", 1)
    check_id = new_id()
    insert_row(ws, monitor_checks, check_id=check_id, started_at=now, status="running")
    notes: list[str] = []
    backlog = _log_backlog(ws)
    if backlog:
        notes.append(backlog)
    try:
        windows = list(dict.fromkeys([spec.drift.window, *(r.window for r in spec.alerts)]))
        signals = collect_signals(ws, windows, now, notes)
        firings, statuses = evaluate(spec.alerts, {w: s.metrics for w, s in signals.items()})
        rules = {r.name: r for r in spec.alerts}
        prev_id = previous[0]["check_id"] if previous else None
        for f in firings:
            f.alert_id = new_id()
            f.new = not was_firing(ws, f.rule, prev_id)
            f.evidence = _evidence(f, signals[f.window])
            if f.new:
                f.hooks = run_hooks(ws, rules[f.rule], f)
            record(ws, check_id, f)
        result = CycleResult(check_id, now, signals, firings, statuses, notes=notes)
        for s in signals.values():
            result.notes.extend(n for n in s.notes if n not in result.notes)
        triggers, hold = triggers_for(ws, [f for f in firings if f.retrain], now)
        if triggers:
            if not retraining:
                result.decision = record_skip(ws, check_id, triggers, "retraining disabled (--no-retrain)")
            elif hold:
                result.decision = record_skip(ws, check_id, triggers, hold)
            else:
                result.decision = retrain(ws, triggers, check_id, show_progress=show_progress)
        update_row(
            ws, monitor_checks, "check_id", check_id, ended_at=utcnow(),
            status="alerting" if firings else "ok",
            metrics=json.loads(json.dumps({w: _clean(s.metrics) for w, s in signals.items()}, default=str)),
            notes=result.notes,
        )
        return result
    except BaseException as exc:
        update_row(ws, monitor_checks, "check_id", check_id, ended_at=utcnow(), status="failed", error=str(exc))
        raise


__all__ = ["PREDICTION", "CycleResult", "collect_signals", "run_cycle"]
