"""The reference system end to end, built only from loopml's public pieces.

simulate a week (or import a real KDD Cup 2012 click log with ``--data``) → ``Runner`` over
``pipeline_for(spec)`` (ingest with natural labels and hashed user ids → validate → features →
train → evaluate → register) → promote the approved version → ``loopml serve`` → replay a day
over HTTP with its clicks as feedback (a drifted simulated day, or the real log's held-out last
day) → the new event logs land in the lake → ``run_cycle`` (a drift alert, when monitoring finds
drift → retraining → an approved candidate is registered) → the candidate's rollout (shadow, then a canary
gated by the server; promoted or rolled back by the evidence: :mod:`loopml.demo.rollout`) → the design document.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from loopml.demo.project import ensure_hash_key, free_port, port_is_free, prepare_project
from loopml.demo.replay import ReplayStats, replay_day
from loopml.demo.service import ServiceProcess
from loopml.demo.settings import DemoSettings
from loopml.demo.traffic import DemoTraffic, imported_traffic, simulated_traffic
from loopml.errors import LoopMLError, StageError
from loopml.serving.journal import wait_written
from loopml.serving.logs import feedback_log_dir, prediction_log_dir
from loopml.workspace import Workspace

REQUIRED_STAGES = ("ingest", "validate", "features", "train", "evaluate", "register")


@dataclass
class DemoResult:
    """What the demo did and measured."""

    project: Path
    source: str = "simulated"
    url: str | None = None
    served_version: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    leaderboard: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    replay: ReplayStats | None = None
    firings: list[dict[str, Any]] = field(default_factory=list)
    drifted_features: list[str] = field(default_factory=list)
    unseen_ids: dict[str, dict[str, float]] = field(default_factory=dict)
    decision: dict[str, Any] | None = None
    retrain_leaderboard: dict[str, Any] | None = None
    rollout: dict[str, Any] | None = None  #: the retrained candidate's shadow → canary → decision
    design: tuple[Path, Path] | None = None
    example_row: dict[str, Any] | None = None
    service: ServiceProcess | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """Plain data, saved as ``.loopml/demo.json`` (the design document reads it)."""
        return {
            "project": str(self.project),
            "source": self.source,
            "url": self.url,
            "served_version": self.served_version,
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
            "replay": self.replay.to_json() if self.replay else None,
            "firings": self.firings,
            "drifted_features": self.drifted_features,
            "unseen_ids": self.unseen_ids,
            "decision": self.decision,
            "rollout": self.rollout,
        }


class _Steps:
    """Numbered step headings with their duration."""

    def __init__(self, console: Console, total: int, result: DemoResult) -> None:
        self.console, self.total, self.result, self.n = console, total, result, 0
        self._t0 = 0.0
        self._name = ""

    def start(self, name: str, text: str) -> None:
        self.n += 1
        self._name, self._t0 = name, time.perf_counter()
        self.console.print(f"\n[bold cyan][{self.n}/{self.total}] {text}[/bold cyan]")

    def done(self, text: str = "") -> None:
        dt_s = time.perf_counter() - self._t0
        self.result.timings[self._name] = dt_s
        self.console.print(f"    [green]done[/green] in {dt_s:.1f} s{'; ' + text if text else ''}")


def _run_pipeline(ws: Workspace, console: Console, command: str) -> Any:
    from loopml.pipeline import Runner, StageOutcome, pipeline_for

    stages = pipeline_for(ws.spec)
    names = [s.name for s in stages]
    missing = [s for s in REQUIRED_STAGES if s not in names]
    if missing:
        raise StageError(
            f"the demo needs the stages {', '.join(REQUIRED_STAGES)}; this installation lacks {', '.join(missing)}"
        )

    def on_event(kind: str, payload: StageOutcome | str) -> None:
        if kind == "stage_start":
            console.print(f"    ▶ {payload} …")
        elif isinstance(payload, StageOutcome):
            style = {"success": "green", "cached": "cyan", "failed": "red"}.get(payload.status, "white")
            facts = ", ".join(f"{k}={v}" for k, v in list(payload.summary.items())[:4]
                              if isinstance(v, (int, float, str)) and len(str(v)) < 40)
            console.print(f"    [{style}]■ {payload.stage}[/{style}] {payload.status} ({payload.duration_s:.1f} s) {facts}")

    with ws.lock(wait_s=60):
        report = Runner(ws, stages, on_event=on_event, show_progress=False).run(command=command)
    report.raise_for_failure()
    return report


def _json_output(ws: Workspace, report: Any, stage: str, name: str) -> dict[str, Any] | None:
    for o in report.outcomes:
        if o.stage == stage and name in o.outputs:
            data = json.loads(ws.artifacts.get_bytes(o.outputs[name]))
            return data if isinstance(data, dict) else None
    return None


def _ensure_production(ws: Workspace, console: Console) -> str:
    """The version to serve: the production one, else the newest approved candidate, promoted."""
    from loopml.registry import Registry

    reg = Registry(ws)
    prod = reg.production()
    if prod is not None:
        return prod.version_id
    approved = [v for v in reg.list() if v.approved]
    if not approved:
        raise LoopMLError("no registered version passed its evaluation gates; nothing to serve",
                          hint="see the gate verdicts above and `loopml models list`")
    newest = max(approved, key=lambda v: v.created_at)
    reg.promote(newest.version_id, actor="loopml demo", reason="approved by every evaluation gate; the first version served")
    console.print(f"    promoted {newest.version_id} to production (approved by every gate)")
    return newest.version_id


def _print_leaderboard(console: Console, board: dict[str, Any] | None) -> None:
    if board is None:
        return
    from loopml.cli.ui import Whole
    from loopml.training.leaderboard import leaderboard_table

    console.print(Whole(leaderboard_table(board)))


def _print_verdict(console: Console, report: dict[str, Any] | None) -> None:
    if report is None:
        return
    from loopml.evaluation.report import summary_tables

    for t in summary_tables(report, max_slices=6):
        console.print(t)


def run_demo(settings: DemoSettings, console: Console) -> DemoResult:
    """Run the reference system; returns with the service still running when ``settings.serve``.

    The caller owns the returned service (``result`` holds its URL; :func:`serve_forever` waits).
    """
    from loopml.cli.ui import table

    result = DemoResult(project=settings.project.resolve())
    steps = _Steps(console, 8, result)
    t_all = time.perf_counter()
    log = None
    if settings.data is not None:  # a bad file fails here, before any project folder is made
        from loopml.simulator import read_kdd_log

        log = read_kdd_log(settings.data, rows=settings.rows)

    steps.start("setup", f"project {result.project} from the `ad_clicks` template")
    from loopml.spec import load_spec
    from loopml.spec.deployment import Deployment

    port = settings.port if settings.port is not None else Deployment().port
    if settings.port is None and not port_is_free(port):
        port = free_port()
    folder = prepare_project(settings.project, fresh=settings.fresh, port=port)
    spec = load_spec(folder)
    key_note = ensure_hash_key(folder, spec.requirements.privacy.hash_key_env)
    console.print(f"    spec: {folder / 'loopml.yaml'}; privacy key ${spec.requirements.privacy.hash_key_env}: {key_note}")
    steps.done()

    with Progress(TextColumn("    {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as prog:
        if log is None:
            steps.start("simulate", f"simulating {settings.days} days of search-ad traffic (~{settings.impressions_per_day:,} impressions/day)")
            task = prog.add_task("days", total=settings.days)
            traffic = simulated_traffic(settings, folder / "data", on_day=lambda _d: prog.advance(task))
        else:
            steps.start("import", f"importing the real KDD Cup 2012 click log {log.source} ({log.rows:,} rows"
                        f"{', capped' if log.capped else ''}) over {settings.days} days + 1 held-out day")
            task = prog.add_task("days", total=settings.days)
            traffic = imported_traffic(settings, log, folder / "data", on_day=lambda _d: prog.advance(task))
    n_imp, n_clk = traffic.impressions, traffic.clicks
    result.source = traffic.source
    if traffic.source == "simulated":
        days = traffic.history
        steps.done(f"{n_imp:,} impressions, {n_clk:,} clicks (CTR {n_clk / max(n_imp, 1):.3f}); "
                   f"oracle ROC-AUC {sum(d['oracle_auc'] for d in days) / len(days):.3f}")
    else:
        held = traffic.replay.stats
        steps.done(f"{n_imp:,} impressions, {n_clk:,} clicks (CTR {n_clk / max(n_imp, 1):.3f}) for training; "
                   f"{held['impressions']:,} held out for the replay ({held['date']}). No timestamps in the log: "
                   "rows are spread over the days in file order, so the time split is in effect a random split")

    steps.start("pipeline", "ingest (click within 10 min, hashed user ids) → validate → features → train 5 candidates → evaluate → register")
    ws = Workspace.open(folder)
    report = _run_pipeline(ws, console, "loopml demo: initial training")
    result.leaderboard = _json_output(ws, report, "train", "leaderboard")
    result.evaluation = _json_output(ws, report, "evaluate", "report")
    steps.done()
    _print_leaderboard(console, result.leaderboard)
    _print_verdict(console, result.evaluation)

    steps.start("serve", "registering and serving the approved model")
    result.served_version = _ensure_production(ws, console)
    if settings.port is None and not port_is_free(port, spec.deployment.host):
        port = 0  # taken while the pipeline ran: any free port (the server binds it, the demo reads it back)
    service = ServiceProcess(folder, port, host=spec.deployment.host).start()
    result.url = service.url
    console.print(f"    serving {result.served_version} at {service.url}")
    steps.done()

    holder = [service]  # the rollout restarts the service with new routing
    try:
        _closed_loop(settings, console, steps, result, ws, traffic, holder)
    except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:  # the service dropped a request
        err = holder[0].lost(exc)
        holder[0].stop()
        raise err from exc
    except BaseException:
        holder[0].stop()
        raise
    service = holder[0]
    result.url = service.url
    result.timings["total"] = time.perf_counter() - t_all
    (ws.root / "demo.json").write_text(json.dumps(result.to_json(), indent=2, default=str))

    from loopml.reporting import write_design

    result.design = write_design(ws)
    console.print(table("timings (s)", ["step", "seconds"], [(k, f"{v:.1f}") for k, v in result.timings.items()]))
    _print_summary(console, result, settings)
    if settings.serve:
        result.service = service
    else:
        service.stop()
    return result


def serve_forever(result: DemoResult, console: Console) -> None:
    """Keep the demo's service running until Ctrl-C (or until it exits), then stop it."""
    if result.service is None:
        return
    import signal

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, _stop)
    try:
        code = result.service.wait()
        console.print(f"the service exited with code {code}")
    except KeyboardInterrupt:
        console.print("\nstopping the service …")
    finally:
        result.service.stop()


def _closed_loop(
    settings: DemoSettings, console: Console, steps: _Steps, result: DemoResult, ws: Workspace,
    traffic: DemoTraffic, holder: list[ServiceProcess],
) -> None:
    from loopml.cli.ui import table
    from loopml.monitoring.loop import run_cycle

    spec = ws.spec
    service = holder[0]
    steps.start("replay", f"replaying {traffic.replay_text} through the service, clicks sent back as feedback")
    day = traffic.replay
    window = getattr(spec.data.labels, "window_seconds", 600.0)
    with Progress(TextColumn("    {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as prog:
        task = prog.add_task("impressions", total=day.impressions.num_rows)
        stats = replay_day(day, spec, service.host, service.port, batch=settings.replay_batch, window_s=window,
                           on_batch=lambda n: prog.advance(task, n))
    result.replay = stats
    # the production logging system lands the day's event logs in the lake's source folders
    traffic.land(ws.project_dir / "data")
    shed = f" ({stats.shed_retries} shed with 503 + Retry-After and resent)" if stats.shed_retries else ""
    steps.done(f"{stats.rows:,} predictions in {stats.requests} requests, {stats.errors} errors{shed}, "
               f"p50 {stats.p50_ms:.1f} ms / p99 {stats.p99_ms:.1f} ms per {stats.rows_per_request}-row request; "
               f"mean score {stats.mean_score:.3f} vs observed CTR {stats.observed_ctr:.3f}")
    result.example_row = _example_row(traffic.seen, spec)  # a day the feature store has seen

    steps.start("monitor", "monitoring: drift of the replayed day against the training data; alerts; retraining")
    time.sleep(spec.deployment.log_flush_seconds + 0.2)  # the service appends its journals...
    wait_written([prediction_log_dir(ws.root), feedback_log_dir(ws.root)], timeout=120)  # ...the writer makes segments
    cycle = run_cycle(ws, show_progress=False)
    for w, sig in cycle.windows.items():
        if sig.drift is not None:
            worst = [f for f in sig.drift.features if f.drifted]
            result.drifted_features = [f.name for f in worst]
            console.print(table(
                f"drift over the last {w} ({sig.drift.n_current:,} logged rows vs {sig.drift.n_reference:,} training rows)",
                ["feature", "PSI", "effect", "p-value", "drifted"],
                [(f.name, f"{f.psi:.3f}", f"{f.effect:.3f}", f"{f.p_value:.2g}", "DRIFT" if f.drifted else "")
                 for f in sig.drift.features[:12]],
            ))
        for note in sig.notes[:3]:
            console.print(f"    note: {note}")
    _explain_id_drift(console, result, traffic, spec)
    result.firings = [
        {"rule": f.rule, "metric": f.metric, "value": f.value, "op": f.op, "threshold": f.threshold, "retrain": f.retrain}
        for f in cycle.firings
    ]
    if cycle.firings:
        console.print(table("alerts", ["rule", "metric", "value", "threshold", "retrain"],
                            [(f.rule, f.metric, f"{f.value:.4g}", f"{f.op} {f.threshold:g}", "yes" if f.retrain else "no")
                             for f in cycle.firings]))
    else:
        console.print("    no alert fired")
    d = cycle.decision
    if d is not None:
        result.decision = {"status": d.status, "version_id": d.version_id, "run_id": d.run_id, "error": d.error,
                           "triggers": [t.detail for t in d.triggers], "message": d.message()}
        stages = d.evidence.get("stages") or []
        for s in stages:
            console.print(f"    ■ retrain {s['stage']}: {s['status']} ({s['seconds']:.1f} s)")
        if d.run_id:
            result.retrain_leaderboard = _train_leaderboard(ws, stages)
    steps.done(_decision_text(result.decision))
    if result.retrain_leaderboard:
        _print_leaderboard(console, result.retrain_leaderboard)

    candidate = (result.decision or {}).get("version_id") if (result.decision or {}).get("status") == "approved" else None
    if candidate and not settings.rollout:
        steps.start("rollout", f"rollout of {candidate}: skipped (--no-rollout), left registered for review")
    else:
        steps.start("rollout", f"rollout of {candidate}: shadow, then a canary gated by the server, on the replayed "
                    "day; promoted or rolled back by the evidence" if candidate else
                    "rollout: no approved candidate to roll out")
    if candidate and settings.rollout:
        from loopml.demo.rollout import rollout

        out = rollout(ws, str(candidate), day, holder, console, window_s=window)
        result.rollout = out.to_json()
        if out.decision == "promoted":
            result.served_version = out.version_id
        steps.done(_rollout_text(result.rollout))
    else:
        steps.done("nothing to do")

    steps.start("report", "writing the design document")
    steps.done()


def _explain_id_drift(console: Console, result: DemoResult, traffic: DemoTraffic, spec: Any) -> None:
    """On a real log, set the id columns' drift beside the rate at which new ids arrive anyway."""
    from loopml.demo.traffic import unseen_id_shares

    ids = [c for c in spec.monitoring.drift.categorical if c in result.drifted_features]
    if not traffic.written or not ids:
        return
    result.unseen_ids = unseen_id_shares(traffic.written, traffic.replay, ids)
    for col, v in result.unseen_ids.items():
        usual = v["replayed"] <= v["last_training_day"] + 0.05
        console.print(
            f"    {col}: {v['replayed']:.1%} of the replayed day's values never occur in the training days; the last "
            f"training day had {v['last_training_day']:.1%} new against the days before it"
            + ("; no more new ids than usual: this drift is the log's long tail (new ids every day, measured against "
               "training data in which every id is seen), not a changed population" if usual else "")
        )


def _train_leaderboard(ws: Workspace, stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    for s in stages:
        if s.get("stage") == "train" and (s.get("outputs") or {}).get("leaderboard"):
            data = json.loads(ws.artifacts.get_bytes(s["outputs"]["leaderboard"]))
            return data if isinstance(data, dict) else None
    return None


def _decision_text(decision: dict[str, Any] | None) -> str:
    if decision is None:
        return "no retraining was triggered"
    if decision["status"] == "approved":
        return f"retrained; the approved candidate {decision['version_id']} is registered (not promoted)"
    # skipped (cooldown), rejected by the gates, failed: the monitoring loop's own words
    return str(decision.get("message") or f"retraining {decision['status']}")


def _rollout_text(r: dict[str, Any] | None) -> str:
    if not r:
        return "no approved candidate was rolled out"
    v = r["version_id"]
    if r["decision"] == "promoted":
        return f"{v} PROMOTED to production by the evidence: {r['reason']}"
    return f"{v} ROLLED BACK at the {r['stage']} stage: {r['reason']}"


def _example_row(day: Any, spec: Any) -> dict[str, Any]:
    from loopml.demo.replay import request_rows

    return request_rows(day, spec)[0]


def _print_promotion_advice(console: Console, project: Path, version_id: str) -> None:
    """Suggest promoting the retrained version only when its evaluation supports it; otherwise say why not."""
    from loopml.registry import Registry
    from loopml.registry.evidence import promotion_advice

    ok, why = promotion_advice(Registry(Workspace.open(project)), version_id)
    if ok:
        console.print(f"  promote it ({why}): loopml models promote {version_id} -p {project} "
                      f"--reason 'retrained after drift'", highlight=False)
    else:
        console.print(f"  not promoting {version_id}: {why}", highlight=False)


def _print_summary(console: Console, result: DemoResult, settings: DemoSettings) -> None:
    board = result.leaderboard or {}
    ev = result.evaluation or {}
    prim = ev.get("primary_metric", "roc_auc")
    m = (ev.get("metrics") or {}).get(prim) or {}
    console.print("\n[bold]The reference system is running.[/bold]" if settings.serve else
                  "\n[bold]The reference system ran end to end[/bold] (service stopped: --no-serve).")
    console.print(f"  winner: {board.get('winner')} — {board.get('why', '')}")
    if m:
        console.print(f"  test {prim}: {m.get('value', float('nan')):.4f} "
                      f"[{m.get('lower', float('nan')):.4f}, {m.get('upper', float('nan')):.4f}]; "
                      f"verdict: {'APPROVED' if ev.get('approved') else 'NOT APPROVED'}")
    if result.firings:
        drifted = ", ".join(result.drifted_features[:6]) or "no input feature"
        console.print(f"  drift alert: {', '.join(f['rule'] for f in result.firings)} (drifted: {drifted})")
    elif result.drifted_features:
        console.print(f"  drift: {', '.join(result.drifted_features[:6])} drifted on the replayed day, but no alert rule fired")
    else:
        console.print("  drift: monitoring found no drift on the replayed day; no alert fired")
    console.print(f"  retraining: {_decision_text(result.decision)}")
    if result.rollout:
        console.print(f"  rollout: {_rollout_text(result.rollout)}", highlight=False)
    elif result.decision and result.decision.get("version_id") and result.decision.get("status") == "approved":
        _print_promotion_advice(console, result.project, str(result.decision["version_id"]))
    if result.url:
        row = json.dumps(result.example_row or {}, separators=(",", ":"))
        if settings.serve:
            console.print(f"  service: {result.url}  (serving {result.served_version})")
        else:
            console.print(f"  service: stopped; start it again with `loopml serve -p {result.project} --port "
                          f"{result.url.rsplit(':', 1)[1]}` (it serves {result.served_version})")
        console.print("  try it:")
        # one unbroken line, no markup: it must survive copy and paste
        console.print(f"curl -s {result.url}/v1/predict -H 'Content-Type: application/json' -d '{row}'",
                      soft_wrap=True, markup=False, highlight=False)
    if result.design:
        console.print(f"  design document: {result.design[1]}  (Markdown: {result.design[0]})")
    if settings.serve:
        console.print("  serving until Ctrl-C")
