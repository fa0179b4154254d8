"""`loopml models`: list, show, promote, roll back and trace the history of model versions."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import typer

from loopml.cli.shapes import emit, json_help
from loopml.cli.ui import console, fmt_time, table
from loopml.errors import LoopMLError

app = typer.Typer(help="Model versions in the registry: list, show, promote, rollback, history.", no_args_is_help=True)

PROJECT = typer.Option(Path("."), "--project", "-p", help="Project folder.")


def _registry(project: Path):  # type: ignore[no-untyped-def]
    from loopml.cli.project import open_project
    from loopml.registry import Registry

    return Registry(open_project(project, need_spec=False))


def _metric_text(meta: dict[str, object]) -> str:
    metrics = meta.get("metrics") or {}
    if not isinstance(metrics, dict):
        return ""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(metrics.items())[:3])


def _primary_text(verdict: dict[str, object]) -> str:
    pm = verdict.get("primary_metric")
    if not isinstance(pm, dict) or pm.get("value") is None:
        return ""
    iv = pm.get("interval") or [None, None]
    lo, hi = iv if isinstance(iv, list) and len(iv) == 2 else (None, None)
    text = f"{pm.get('name')}={pm['value']:.4f}"
    return text + (f" [{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else "")


@app.command("list")
def list_cmd(
    project: Path = PROJECT,
    state: str | None = typer.Option(None, "--state", help="Only versions in this state (candidate, shadow, canary, production, archived)."),
    as_json: bool = typer.Option(False, "--json", help=json_help("models list")),
) -> None:
    """List registered model versions with their state, gate verdict and primary metric (with its interval).

    Examples:

      loopml models list -p shop
      loopml models list -p shop --state production
      loopml models list -p shop --json | jq '.versions[] | {version_id, state}'
    """
    reg = _registry(project)
    versions = reg.list(state)
    if as_json:
        emit("models list", {"versions": [
            {"version_id": v.version_id, "state": v.state, "approved": v.approved, "failed_gates": v.failed_gates(),
             "created_at": v.created_at, "created_by": v.created_by, "model": v.meta.get("model_type"),
             "primary_metric": v.verdict.get("primary_metric"), "bundle": v.bundle_digest}
            for v in versions]})
        return
    console.print(
        table(
            "model versions",
            ["version", "state", "approved", "created", "by", "model", "primary metric", "bundle"],
            [
                (v.version_id, v.state, "yes" if v.approved else f"no ({', '.join(v.failed_gates()) or 'not approved'})",
                 fmt_time(v.created_at), v.created_by, v.meta.get("model_type") or "",
                 _primary_text(v.verdict) or _metric_text(v.meta), v.bundle_digest[:12])
                for v in versions
            ],
        )
    )
    if not versions:
        console.print("no versions yet: `loopml run` trains, evaluates and registers one")


@app.command("show")
def show_cmd(
    version: str = typer.Argument(..., help="Version id (v3) or number (3)."),
    project: Path = PROJECT,
    as_json: bool = typer.Option(False, "--json", help="Print the full record as JSON."),
) -> None:
    """Show one version: state, verdict with every gate, lineage and transitions.

    Examples:

      loopml models show v3 -p shop
      loopml models show 3 -p shop --json | jq .verdict
    """
    reg = _registry(project)
    v = reg.get(version)
    if as_json:
        typer.echo(json.dumps({
            "version_id": v.version_id, "state": v.state, "approved": v.approved, "bundle": v.bundle_digest,
            "created_at": v.created_at.isoformat(), "created_by": v.created_by, "verdict": v.verdict,
            "lineage": v.lineage, "meta": v.meta,
        }, indent=2, default=str))
        return
    console.print(f"[bold]{v.version_id}[/bold]  state=[bold]{v.state}[/bold]  approved={'yes' if v.approved else 'no'}  "
                  f"bundle={v.bundle_digest}")
    console.print(table("gates", ["gate", "passed", "evidence"], [
        (g.get("gate"), "yes" if g.get("passed") else "NO", json.dumps(g.get("evidence", {}), default=str)[:100])
        for g in v.verdict.get("gates", [])
    ]))
    from loopml.registry.evidence import evaluations

    console.print(table("evaluations (the latest decides)", ["#", "when", "approved", "verdict", "primary metric",
                                                              "vs production", "source"], [
        (str(e.evaluation_id), fmt_time(e.at), "yes" if e.approved else "no", str(e.verdict.get("verdict") or ""),
         _primary_text(e.verdict), (lambda vp: "" if vp is None else
                                    f"{vp.get('verdict')} vs {vp.get('production')}")(e.vs_production), e.source)
        for e in evaluations(reg, v.version_id)
    ]))
    console.print(table("lineage", ["what", "value"], [
        (k, (json.dumps(val, default=str)[:100] if not isinstance(val, str) else val)) for k, val in v.lineage.items()
    ]))
    console.print(table("transitions", ["when", "from", "to", "actor", "reason", "forced"], [
        (fmt_time(t.at), t.from_state or "", t.to_state, t.actor, t.reason, "yes" if t.forced else "")
        for t in reg.history(v.version_id)
    ]))


@app.command("promote")
def promote_cmd(
    version: str = typer.Argument(..., help="Version id (v3) or number (3)."),
    to: str = typer.Option("production", "--to", help="Target state: shadow, canary, production or archived."),
    reason: str = typer.Option(..., "--reason", "-r", help="Why (recorded in the history)."),
    force: bool = typer.Option(False, "--force", help="Override failed evaluation gates, or a latest evaluation "
                               "significantly worse than production (recorded as forced, with the comparison)."),
    actor: str | None = typer.Option(None, "--actor", help="Who acts (default: $LOOPML_ACTOR or the login name)."),
    project: Path = PROJECT,
    as_json: bool = typer.Option(False, "--json", help=json_help("models promote")),
) -> None:
    """Move a version along the lifecycle; refuses without --force a version whose latest evaluation failed its
    gates or found it significantly worse than production on the primary metric (the comparison is printed).

    Examples:

      loopml models promote v3 -p shop -r "beats v2 on last week's data"
      loopml models promote v4 -p shop --to canary -r "try on 5% of traffic"
    """
    reg = _registry(project)
    before = reg.production()
    evidence = _promotion_evidence(reg, version, to)
    _check_servable(reg, version, to)
    v = reg.transition(version, to, actor=actor, reason=reason, force=force)
    if as_json:
        emit("models promote", {"version_id": v.version_id, "state": v.state, "forced": bool(evidence),
                                "archived": before.version_id if to == "production" and before is not None
                                and before.version_id != v.version_id else None})
        return
    if evidence:
        console.print(f"[yellow]forced[/yellow] {evidence} (recorded in the history)", highlight=False)
    msg = f"{v.version_id} is now {v.state}"
    if to == "production" and before is not None and before.version_id != v.version_id:
        msg += f" (archived {before.version_id})"
    console.print(msg + "; a running `loopml serve` picks it up within its registry poll interval")


def _promotion_evidence(reg, version: str, to: str) -> str | None:  # type: ignore[no-untyped-def]
    """The latest evaluation's comparison with production when it says the version is significantly worse.

    ``Registry.transition`` refuses such a promotion without --force (the error prints the comparison);
    with --force this is what the command reports having overridden.
    """
    from loopml.registry.evidence import comparison_text, worse_than_production

    if to != "production":
        return None
    vp = worse_than_production(reg, version)
    return None if vp is None else comparison_text(vp)


def _check_servable(reg: Any, version: str, to: str) -> None:
    """Phase one of a promotion into a serving state: the version loads (checksums verified) and scores a
    smoke row, or the promotion is refused before the registry records anything."""
    from loopml.serving.promotion import SERVING, verify_servable

    if to in SERVING:
        verify_servable(reg.ws, version)


@app.command("rollback")
def rollback_cmd(
    reason: str = typer.Option(..., "--reason", "-r", help="Why (recorded in the history)."),
    actor: str | None = typer.Option(None, "--actor", help="Who acts (default: $LOOPML_ACTOR or the login name)."),
    project: Path = PROJECT,
    as_json: bool = typer.Option(False, "--json", help=json_help("models rollback")),
) -> None:
    """Archive the production version and restore the one that served before it.

    Examples:

      loopml models rollback -p shop -r "error rate up since v4"
    """
    reg = _registry(project)
    before = reg.production()
    v = reg.rollback(actor=actor, reason=reason)
    if as_json:
        emit("models rollback", {"version_id": v.version_id, "state": v.state,
                                 "archived": before.version_id if before else None})
        return
    console.print(f"rolled back: {v.version_id} is serving again (archived {before.version_id if before else '-'})")


@app.command("history")
def history_cmd(
    project: Path = PROJECT,
    version: str | None = typer.Option(None, "--version", help="Only this version's transitions."),
    at: str | None = typer.Option(None, "--at", help="Which version served at this time (ISO 8601, UTC if no zone)."),
    as_json: bool = typer.Option(False, "--json", help=json_help("models history") + " (without --at)"),
) -> None:
    """Which version served when: production periods and every recorded transition.

    Examples:

      loopml models history -p shop
      loopml models history -p shop --version v3
      loopml models history -p shop --at 2026-11-26T08:00:00
    """
    reg = _registry(project)
    if as_json and at is None:
        emit("models history", {
            "periods": [{"version_id": p.version_id, "since": p.since, "until": p.until}
                        for p in (reg.serving_periods() if version is None else [])],
            "transitions": [{"transition_id": t.transition_id, "at": t.at, "version_id": t.version_id,
                             "from_state": t.from_state, "to_state": t.to_state, "actor": t.actor, "reason": t.reason,
                             "forced": t.forced} for t in reg.history(version)]})
        return
    if at is not None:
        try:
            when = dt.datetime.fromisoformat(at)
        except ValueError:
            raise LoopMLError(f"--at {at!r}: not an ISO 8601 time (expected e.g. 2026-11-26T08:00:00)") from None
        v = reg.serving_at(when)
        console.print(f"at {at}: {v.version_id if v else 'no version'} was in production")
        return
    if version is None:
        console.print(table("served in production", ["version", "since", "until"], [
            (p.version_id, fmt_time(p.since), fmt_time(p.until) if p.until else "now") for p in reg.serving_periods()
        ]))
    console.print(table("transitions", ["#", "when", "version", "from", "to", "actor", "reason", "forced"], [
        (t.transition_id, fmt_time(t.at), t.version_id, t.from_state or "(registered)", t.to_state, t.actor, t.reason,
         "yes" if t.forced else "")
        for t in reg.history(version)
    ]))
