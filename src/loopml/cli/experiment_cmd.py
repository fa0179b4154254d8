"""`loopml experiment`: what the prediction log says about a running shadow, canary or A/B experiment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from loopml.cli.ui import console, table

app = typer.Typer(
    help="Online experiments read from the prediction and feedback logs: arms, sample-ratio mismatch, shadow "
    "agreement, the challenger's score guardrail and the always-valid A/B test of the online metric. Start one by "
    "serving with deployment.routing.type shadow, canary or ab and moving the challenger to state shadow/canary "
    "(`loopml models promote v2 --to canary -r why`).\n\n"
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


def _analyse(project: Path, experiment: str | None, alpha: float, tau: float) -> tuple[Any, Any]:
    from loopml.experiments.analysis import analyse
    from loopml.monitoring.logs import read_labelled, read_predictions
    from loopml.workspace import Workspace

    ws = Workspace.open(project)
    return ws, analyse(read_predictions(ws), read_labelled(ws), experiment, alpha=alpha, tau=tau)


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
    if res.guardrail:
        console.print(f"guardrail ({res.guardrail['check']}): "
                      f"{'BREACHED: ' + res.guardrail['reason'] if res.guardrail['breached'] else 'ok'}")
    if res.online:
        o = res.online
        console.print(f"online metric ({o['test']}): control {o['mean_control']:.4f} (n {o['n_control']}), "
                      f"challenger {o['mean_treatment']:.4f} (n {o['n_treatment']}), lift {o['lift']:+.4f} "
                      f"[{o['ci_low']:+.4f}, {o['ci_high']:+.4f}], always-valid p {o['p_value']:.3g}"
                      f"{' -> significant' if o['significant'] else ''}")
    else:
        console.print("online metric: no labelled predictions of both traffic arms yet")


def _rollback(ws: Any, res: Any) -> str | None:
    from loopml.registry import Registry

    reg = Registry(ws)
    challenger = next((a for a in res.arms if a["route"] in ("canary", "treatment", "shadow")), None)
    if challenger is None:
        return None
    version = reg.get(challenger["model_version"])
    if version.state not in ("canary", "shadow"):
        return None
    reason = f"experiment {res.experiment} rolled back: " + "; ".join(res.reasons())
    reg.transition(version.version_id, "archived", actor="loopml experiment", reason=reason)
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
    alpha: float = ALPHA,
    tau: float = TAU,
) -> None:
    """Arms, sample ratio, shadow agreement, guardrail and the sequential A/B test of one experiment."""
    ws, res = _analyse(project, experiment, alpha, tau)
    if as_json:
        console.print_json(json.dumps(res.as_dict()))
    else:
        _print(res)
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
    """Write the analysis of an experiment to .loopml/reports/experiment-<name>.json."""
    ws, res = _analyse(project, experiment, alpha, tau)
    _print(res)
    out = ws.reports / f"experiment-{res.experiment}.json"
    out.write_text(json.dumps(res.as_dict(), indent=2, default=str))
    console.print(f"wrote {out}")
