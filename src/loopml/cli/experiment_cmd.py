"""`loopml experiment`: what the prediction log says about a running shadow, canary or A/B experiment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from loopml.cli.project import open_project
from loopml.cli.ui import console, table

app = typer.Typer(
    help="Online experiments read from the prediction and feedback logs: arms, sample-ratio mismatch, shadow "
    "agreement, the challenger's score guardrail and the always-valid A/B test of the online metric. Start one by "
    "serving with deployment.routing.type shadow, canary, ab or bandit and moving the challenger to state shadow/canary "
    "(`loopml models promote v2 --to canary -r why`). A served canary is also guarded by `loopml serve` itself: its "
    "steps advance only through deployment.routing.gate, and a breach archives it (actor `loopml serve (canary "
    "guard)`).\n\n"
    "Examples:\n\n  loopml experiment status -p proj\n\n"
    "  loopml experiment status -p proj --rollback-on-breach   # archive a breaching canary, reason in history\n\n"
    "  loopml experiment report -p proj -e canary-v2",
    no_args_is_help=True,
)

PROJECT = typer.Option(Path("."), "--project", "-p", help="Project folder (holding loopml.yaml).")
EXPERIMENT = typer.Option(None, "--experiment", "-e", help="Experiment name (default: the latest in the log).")
TAU = typer.Option(0.01, "--tau", min=1e-9, help="Mixture sd of the sequential test: the smallest effect worth "
                   "detecting on the online metric (absolute, e.g. 0.01 = one CTR point).")
ALPHA = typer.Option(0.05, "--alpha", min=1e-6, max=0.5, help="False-positive level (valid at every look).")


METRICS_URL = typer.Option(
    None, "--metrics-url",
    help="The service's /metrics URL (e.g. http://127.0.0.1:8700/metrics): adds the SLO check of the challenger "
    "(error rate vs the incumbent, p99 vs requirements.constraints.latency_p99_ms).")


def _analyse(project: Path, experiment: str | None, alpha: float, tau: float,
             metrics_url: str | None = None) -> tuple[Any, Any]:
    from loopml.experiments.analysis import INCUMBENT, analyse, slo_check
    from loopml.monitoring.logs import read_labelled, read_predictions

    ws = open_project(project)
    res = analyse(read_predictions(ws, shadows=True), read_labelled(ws, shadows=True), experiment, alpha=alpha,
                  tau=tau)
    if metrics_url:
        import urllib.request

        from loopml.errors import LoopMLError

        if not metrics_url.startswith(("http://", "https://")):
            raise LoopMLError(f"--metrics-url must be an http(s) URL, got `{metrics_url}`")
        try:
            with urllib.request.urlopen(metrics_url, timeout=10) as r:
                text = r.read().decode()
        except OSError as exc:
            raise LoopMLError(f"service metrics {metrics_url}: cannot be read ({exc})",
                              hint="is `loopml serve` running?") from None
        inc = next((a["model_version"] for a in res.arms if a["route"] in INCUMBENT), None)
        ch = next((a["model_version"] for a in res.arms if a["route"] not in INCUMBENT), None)
        if inc and ch:
            budget = ws.spec.requirements.constraints.latency_p99_ms
            res.slo = slo_check(text, inc, ch, latency_p99_ms=budget, alpha=alpha)
            res.slo["guard"] = _guard_state(text)
    return ws, res


def _guard_state(metrics_text: str) -> dict[str, Any]:
    """The server's own canary guard, from its /metrics: the canary's step and share, rollbacks so far."""
    from loopml.monitoring.ops import parse_prometheus

    out: dict[str, Any] = {}
    for name, labels, value in parse_prometheus(metrics_text):
        if name == "loopml_canary_share":
            out.update(model_version=labels.get("model_version"), step=int(labels.get("step", "0")) + 1, share=value)
        elif name == "loopml_canary_rollbacks_total":
            out["rollbacks"] = int(value)
    return out


def _print(res: Any) -> None:
    console.print(table(f"experiment {res.experiment}", ["arm", "version", "requests", "planned share", "mean score",
                                                         "score sd"],
                        [(a["route"], a["model_version"], a["requests"], a["planned_share"], f"{a['score_mean']:.4f}",
                          f"{a['score_sd']:.4f}") for a in res.arms]))
    if res.srm:
        console.print(f"sample ratio: chi2 {res.srm['chi2']:.2f}, p {res.srm['p_value']:.3g} -> "
                      f"{'MISMATCH' if res.srm['mismatch'] else 'ok'}")
    for s in res.shadow:
        console.print(f"shadow agreement: {s['pairs']} pairs, score correlation {s['score_correlation']:.3f}, "
                      f"decision flips {s['decision_flips']:.1%}, mean |score diff| {s['mean_abs_score_diff']:.4f}")
        q = s.get("quality")
        if q:
            console.print(f"shadow quality on {q['pairs']} labelled requests: {q['metric']} {q['difference']:+.5f} "
                          f"[{q['ci_low']:+.5f}, {q['ci_high']:+.5f}]")
    if res.guardrail:
        console.print(f"guardrail ({res.guardrail['check']}): "
                      f"{'BREACHED: ' + res.guardrail['reason'] if res.guardrail['breached'] else 'ok'}")
    if res.slo:
        per = ", ".join(f"{v}: {d['requests']} requests, {d['errors']} errors" for v, d in res.slo["versions"].items())
        console.print(f"SLO ({per}): {'BREACHED: ' + '; '.join(res.slo['reasons']) if res.slo['breached'] else 'ok'}")
        g = res.slo.get("guard") or {}
        if "share" in g:
            console.print(f"server's canary guard: {g['model_version']} at step {g['step']}, {g['share']:.0%} of the "
                          f"traffic; {g.get('rollbacks', 0)} rollback(s) by the server")
    if res.online:
        o = res.online
        console.print(f"online metric ({o['test']}): control {o['mean_control']:.4f} (n {o['n_control']}), "
                      f"challenger {o['mean_treatment']:.4f} (n {o['n_treatment']}), lift {o['lift']:+.4f} "
                      f"[{o['ci_low']:+.4f}, {o['ci_high']:+.4f}], always-valid p {o['p_value']:.3g}"
                      f"{' -> significant' if o['significant'] else ''}")
    else:
        console.print("online metric: no labelled predictions of both traffic arms yet")
    for v in res.policy_values:  # off-policy values from the logged propensities (a bandit's shares moved)
        e = v["snips"]
        console.print(f"off-policy value of {v['policy']} (SNIPS, {v['rows']} labelled rows): {e['value']:.4f} "
                      f"[{e['ci_low']:.4f}, {e['ci_high']:.4f}]")


def _rollback(ws: Any, res: Any) -> str | None:
    from loopml.registry import Registry

    reg = Registry(ws)
    challenger = next((a for a in res.arms if a["route"] in ("canary", "treatment", "shadow")), None)
    if challenger is None:
        return None
    version = reg.get(challenger["model_version"])
    if version.state not in ("canary", "shadow"):
        return None
    from loopml.experiments.records import get, record_stop

    reason = f"experiment {res.experiment} rolled back: " + "; ".join(res.reasons())
    reg.transition(version.version_id, "archived", actor="loopml experiment", reason=reason)
    rec = get(ws, res.experiment, missing_ok=True)
    if rec is not None and rec["status"] == "running":
        record_stop(ws, res.experiment, "rolled_back", "loopml experiment", reason, res.as_dict())
    return f"{version.version_id}: {version.state} -> archived ({reason})"


@app.command("status")
def status(
    project: Path = PROJECT,
    experiment: str | None = EXPERIMENT,
    rollback_on_breach: bool = typer.Option(
        False, "--rollback-on-breach",
        help="When a guardrail or the sample-ratio check fails, archive the challenger (canary/shadow) at once; "
        "the registry history records why, with the evidence. Exit code 3 after a rollback."),
    as_json: bool = typer.Option(False, "--json", help="Print the analysis as JSON."),
    metrics_url: str | None = METRICS_URL,
    alpha: float = ALPHA,
    tau: float = TAU,
) -> None:
    """Arms, sample ratio, shadow agreement, guardrail, SLOs and the sequential A/B test of one experiment.

    Examples:

      loopml experiment status -p shop
      loopml experiment status -p shop --metrics-url http://127.0.0.1:8000/metrics --rollback-on-breach
      loopml experiment status -p shop --json | jq .online
    """
    from loopml.experiments.records import get

    ws, res = _analyse(project, experiment, alpha, tau, metrics_url)
    rec = get(ws, res.experiment, missing_ok=True)
    if as_json:
        console.print_json(json.dumps({**res.as_dict(), "record": rec}, default=str))
    else:
        _print(res)
        if rec is not None:
            plan = rec["plan"]
            n = min(res.online["n_control"], res.online["n_treatment"]) if res.online else 0
            console.print(f"started {rec['started_at']} by {rec['started_by']}, {rec['status']}"
                          + (f"; labelled per arm {n:,} of the planned {plan['per_arm']:,}" if plan else ""))
    if res.breached and rollback_on_breach:
        done = _rollback(ws, res)
        if done:
            console.print(f"[bold red]rolled back[/bold red] {done}")
            raise typer.Exit(3)


@app.command("report")
def report(
    project: Path = PROJECT,
    experiment: str | None = EXPERIMENT,
    alpha: float = ALPHA,
    tau: float = TAU,
) -> None:
    """Write the analysis of an experiment to .loopml/reports/experiment-<name>.json.

    Examples:

      loopml experiment report -p shop
      loopml experiment report -p shop --experiment canary-v3
    """
    ws, res = _analyse(project, experiment, alpha, tau)
    _print(res)
    out = ws.reports / f"experiment-{res.experiment}.json"
    out.write_text(json.dumps(res.as_dict(), indent=2, default=str))
    console.print(f"wrote {out}")


def _actor(actor: str | None) -> str:
    import getpass
    import os

    return actor or os.environ.get("LOOPML_ACTOR") or getpass.getuser()


@app.command("start")
def start(
    version: str = typer.Argument(..., help="The challenger: version id (v3) or number (3)."),
    reason: str = typer.Option(..., "--reason", "-r", help="Why (recorded in the history)."),
    baseline: float | None = typer.Option(None, "--baseline", min=1e-9, max=0.999999,
                                          help="Current rate of the online metric (e.g. CTR 0.04), for the plan."),
    mde: float | None = typer.Option(None, "--mde", help="Minimum detectable effect, relative (0.05 = +5%), "
                                     "for the plan; needs --baseline."),
    power: float = typer.Option(0.8, "--power", min=0.5, max=0.99, help="Power of the planned test."),
    alpha: float = ALPHA,
    actor: str | None = typer.Option(None, "--actor", help="Who acts (default: $LOOPML_ACTOR or the login name)."),
    project: Path = PROJECT,
) -> None:
    """Put a version into the spec's experiment (state shadow for `shadow` routing, canary for canary/ab),
    recorded in the metadata database and the registry history, with the planned sample size.

    Examples:

      loopml experiment start v3 -p shop -r "retrained on May data"
      loopml experiment start v3 -p shop -r "retrained on May data" --baseline 0.04 --mde 0.05
    """
    from loopml.cli.models_cmd import _check_servable
    from loopml.errors import LoopMLError
    from loopml.experiments.planning import plan_sample_size
    from loopml.experiments.records import record_start
    from loopml.registry import Registry

    ws = open_project(project)
    routing = ws.spec.deployment.routing
    if routing.type == "production":
        raise LoopMLError("deployment.routing.type is `production`: no experiment would get traffic",
                          hint="set it to shadow, canary, ab or bandit in loopml.yaml and restart `loopml serve`")
    if (mde is None) != (baseline is None):
        raise LoopMLError("--mde and --baseline go together: the plan needs the current rate and the effect")
    plan = None
    if mde is not None and baseline is not None:
        p = plan_sample_size(baseline, mde, alpha=alpha, power=power)
        plan = p.__dict__
        console.print(p.describe())
    reg = Registry(ws)
    v = reg.get(version)
    name = routing.experiment or f"{routing.type}-{v.version_id}"
    state = "shadow" if routing.type == "shadow" else "canary"
    who = _actor(actor)
    _check_servable(reg, v.version_id, state)
    record_start(ws, name, routing.type, v.version_id, who, plan)
    reg.transition(v.version_id, state, actor=who, reason=f"experiment {name} started: {reason}")
    console.print(f"experiment {name}: {v.version_id} is now {state}; a running `loopml serve` routes to it within "
                  "its registry poll interval")


@app.command("stop")
def stop(
    decision: str = typer.Option(..., "--decision", "-d", help="promote (the challenger to production) or rollback "
                                 "(archive it)."),
    reason: str = typer.Option(..., "--reason", "-r", help="Why (recorded with the evidence)."),
    experiment: str | None = EXPERIMENT,
    force: bool = typer.Option(False, "--force", help="Promote although a guardrail breached or the online metric is "
                               "significantly worse (recorded)."),
    actor: str | None = typer.Option(None, "--actor", help="Who acts (default: $LOOPML_ACTOR or the login name)."),
    alpha: float = ALPHA,
    tau: float = TAU,
    project: Path = PROJECT,
) -> None:
    """End an experiment: promote or roll back its challenger, with the log's analysis as evidence.

    Examples:

      loopml experiment stop -p shop -d rollback -r "guardrail breach"
      loopml experiment stop -p shop -d promote -r "CTR +4.8%, always-valid p < 0.05"
    """
    from loopml.cli.models_cmd import _check_servable
    from loopml.errors import LoopMLError, NotFound
    from loopml.experiments.analysis import analyse
    from loopml.experiments.records import get, record_stop
    from loopml.monitoring.logs import read_labelled, read_predictions
    from loopml.registry import Registry

    if decision not in ("promote", "rollback"):
        raise LoopMLError(f"--decision must be promote or rollback, got `{decision}`")
    ws = open_project(project)
    rec = get(ws, experiment)
    if rec is None:
        raise NotFound("no experiment started in this project")
    if rec["status"] != "running":
        raise LoopMLError(f"experiment `{rec['name']}` already ended ({rec['status']})")
    try:
        res = analyse(read_predictions(ws, shadows=True), read_labelled(ws, shadows=True), rec["name"], alpha=alpha,
                      tau=tau)
        evidence: dict[str, Any] | None = res.as_dict()
    except NotFound:
        res, evidence = None, None
    who = _actor(actor)
    reg = Registry(ws)
    if decision == "promote":
        worse = res is not None and res.online is not None and res.online["significant"] and res.online["lift"] < 0
        if res is not None and (res.breached or worse) and not force:
            why = "; ".join(res.reasons()) or "the online metric is significantly worse"
            raise LoopMLError(f"refusing to promote {rec['version_id']}: {why}", hint="--force overrides (recorded)")
        _check_servable(reg, rec["version_id"], "production")
        text = f"experiment {rec['name']} promoted{' (forced)' if force else ''}: {reason}"
        reg.transition(rec["version_id"], "production", actor=who, reason=text, force=force)
        record_stop(ws, rec["name"], "promoted", who, text, evidence)
    else:
        text = f"experiment {rec['name']} rolled back: {reason}"
        if res is not None and res.reasons():
            text += " (" + "; ".join(res.reasons()) + ")"
        reg.transition(rec["version_id"], "archived", actor=who, reason=text)
        record_stop(ws, rec["name"], "rolled_back", who, text, evidence)
    console.print(text)
