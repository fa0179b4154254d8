"""The `loopml` command."""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

import typer

from loopml import __version__
from loopml.cli import (
    data_cmd,
    demo_cmd,
    evaluate_cmd,
    experiment_cmd,
    export_cmd,
    features_cmd,
    models_cmd,
    monitor_cmd,
    serve_cmd,
    spec_cmd,
    train_cmd,
    webui_cmd,
)
from loopml.cli.shapes import emit, json_help
from loopml.cli.ui import console, fmt_time, table
from loopml.errors import LoopMLError, NotFound, SpecError

app = typer.Typer(
    help="loopml: the whole production ML loop (data → features → models → evaluation → serving → "
    "monitoring → retraining), driven by one spec, loopml.yaml.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(spec_cmd.app, name="spec")
app.add_typer(data_cmd.app, name="data")
demo_cmd.register(app)
app.add_typer(models_cmd.app, name="models")
serve_cmd.register(app)
app.add_typer(monitor_cmd.app, name="monitor")
train_cmd.register(app)
evaluate_cmd.register(app)
export_cmd.register(app)
app.add_typer(features_cmd.app, name="features")
app.add_typer(experiment_cmd.app, name="experiment")
webui_cmd.register(app)

_STATE = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"loopml {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """loopml: one spec, the whole ML loop."""
    _STATE["debug"] = debug


def example_names() -> list[str]:
    """Names of the spec templates shipped with loopml."""
    root_ = resources.files("loopml") / "examples"
    return sorted(p.name[:-5] for p in root_.iterdir() if p.name.endswith(".yaml"))


@app.command("init")
def init(
    directory: Path | None = typer.Argument(None, help="Project folder to create (may exist if it has no loopml.yaml)."),
    example: str = typer.Option("minimal", "--example", "-e", help="Template to start from (see --list)."),
    from_file: Path | None = typer.Option(
        None, "--from", help="Write the spec from this data file (CSV/TSV, Parquet, JSON lines) instead of a "
        "template: task, inputs, ids, timestamps, baseline and candidates inferred from a sample."),
    target: str | None = typer.Option(None, "--target", help="With --from: the column to predict."),
    group_key: str | None = typer.Option(
        None, "--group-key", help="With --from: the column grouping rows into ranked lists (makes it a ranking task)."),
    list_: bool = typer.Option(False, "--list", help="List the templates and exit."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing loopml.yaml."),
    as_json: bool = typer.Option(False, "--json", help=json_help("init") + " With --from: what was inferred."),
) -> None:
    """Create a project folder holding a commented loopml.yaml, from a template or from your data.

    Examples:

      loopml init shop                                   # the `minimal` template
      loopml init --list                                 # the templates
      loopml init credit --from credit.csv --target default
      loopml init search --from clicks.parquet --target clicked --group-key query_id
    """
    names = example_names()
    if list_:
        for n in names:
            first = (resources.files("loopml") / "examples" / f"{n}.yaml").read_text(encoding="utf-8")
            desc = next((ln.split("description:", 1)[1].strip() for ln in first.splitlines()
                         if ln.strip().startswith("description:")), "")
            typer.echo(f"{n:<12} {desc}")
        return
    if directory is None:
        raise SpecError("init needs the project folder to create", hint="e.g. `loopml init my-project`")
    if from_file is None and (target or group_key):
        raise SpecError("--target and --group-key go with --from FILE (a data file to infer the spec from)")
    if from_file is not None and not target:
        raise SpecError("--from needs --target COLUMN: the column to predict")
    if from_file is None and example not in names:
        raise NotFound(f"example `{example}` does not exist (available: {', '.join(names)})")
    spec_file = directory / "loopml.yaml"
    if spec_file.exists() and not force:
        raise SpecError(f"{spec_file} already exists", hint="pass --force to overwrite it")
    if from_file is not None and target is not None:
        from loopml.spec.scaffold import scaffold_from_data

        made = scaffold_from_data(from_file, target, project_dir=directory, group_key=group_key)
        info: dict[str, object] = {"template": None, "task": made.task, "target": target,
                                   "inputs": [{"column": f.column, "kind": f.kind, "transforms": f.transforms,
                                               "why": f.why} for f in made.inputs],
                                   "ids": made.ids, "timestamps": made.timestamps}
        text, origin = made.text, f"{from_file} ({made.task} on `{target}`, {len(made.inputs)} inputs"
        origin += (f"; left out: {', '.join(made.ids + made.timestamps)})" if made.ids or made.timestamps else ")")
    else:
        text = (resources.files("loopml") / "examples" / f"{example}.yaml").read_text(encoding="utf-8")
        origin = f"example `{example}`"
        info = {"template": example, "task": None, "target": None, "inputs": None, "ids": None, "timestamps": None}
    directory.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(text, encoding="utf-8")
    gi = directory / ".gitignore"
    if not gi.exists():
        gi.write_text(".loopml/\n", encoding="utf-8")
    if as_json:
        emit("init", {"spec": str(spec_file), **info})
        return
    console.print(f"created {spec_file} from {origin}; next: `loopml spec check {directory}`",
                  highlight=False, soft_wrap=True)


@app.command("run")
def run(
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder."),
    until: str | None = typer.Option(None, "--until", help="Stop after this stage."),
    start_from: str | None = typer.Option(None, "--from", help="Rerun from this stage on (earlier ones from cache)."),
    force: bool = typer.Option(False, "--force", help="Ignore the cache and rerun every stage."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for another run holding the workspace."),
    executor: str = typer.Option("inprocess", "--executor", help="Where stages run: inprocess, process (a local pool) or ray."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    strict: bool = typer.Option(
        False, "--strict", help="Exit non-zero (4) when the run ends without an approved model, not only on errors."),
    as_json: bool = typer.Option(False, "--json", help=json_help("run") + " primary_metric is {name, value, "
                                 "interval}, baseline {name, value, gate}, reports {name: path}."),
) -> None:
    """Run the pipeline stages in order; unchanged stages are cache hits; resumes after a crash.

    Ends with a summary: the winner, the primary metric with its interval, the verdict, the
    registered version and its state, and the report files. Exits 1 when a stage fails, 2 for a
    spec with nothing to run, 1 for a project folder that does not exist, and with --strict 4 when
    no model was approved. Not on a terminal, progress is one plain line per stage start and end,
    and a line every 30 s ($LOOPML_PROGRESS_SECONDS) while a stage runs.

    Examples:

      loopml run -p shop                      # every stage, unchanged ones from the cache
      loopml run -p shop --from train         # retrain and re-evaluate
      loopml run -p shop --until validate     # only ingest and validate
      loopml run -p shop --json | jq .approved
      loopml run -p shop --strict && deploy   # a CI step that fails without an approved model
    """
    from loopml.cli.project import open_project
    from loopml.cli.run_result import run_result
    from loopml.cli.ui import StageProgress, err_console
    from loopml.pipeline import Runner, make_executor, pipeline_for
    from loopml.pipeline.preflight import check_against_data
    from loopml.spec import SPEC_FILENAME

    ws = open_project(project)
    stages = pipeline_for(ws.spec)
    if not stages:
        raise SpecError(f"nothing to run: the spec {project / SPEC_FILENAME} gives the pipeline no stages",
                        hint="declare data.sources (e.g. `loopml init DIR --from data.csv --target COLUMN`)")
    # the spec against a sample of its data first: a wrong target fails here, before any stage runs
    names = [s.name for s in stages]
    upto = names[: names.index(until) + 1] if until in names else names
    model = any(n in upto for n in ("features", "train"))
    check_against_data(ws.spec, ws.project_dir, model=model).raise_for_problems(str(ws.project_dir / SPEC_FILENAME))
    out = err_console if as_json else console
    progress = StageProgress(out, quiet=quiet)
    runner_executor = make_executor(executor)
    try:
        with ws.lock(wait_s=wait), progress:
            report = Runner(ws, stages, runner_executor, on_event=progress.on_event,
                            show_progress=not (quiet or as_json)).run(
                until=until, start_from=start_from, force=force, command=" ".join(["loopml", *sys.argv[1:]])
            )
    finally:
        runner_executor.shutdown()
    result = run_result(ws, report)
    if as_json:
        emit("run", result)
        report.raise_for_failure()
        _strict_exit(strict, result)
        return
    console.print(
        table(
            f"run {report.run_id}: {report.status}",
            ["stage", "status", "seconds", "outputs"],
            [
                (o.stage, "cache hit" if o.status == "cached" else o.status, f"{o.duration_s:.2f}",
                 ", ".join(f"{k}={v[:10]}" for k, v in o.outputs.items()))
                for o in report.outcomes
            ],
        )
    )
    report.raise_for_failure()
    evaluated = next((o for o in report.outcomes if o.stage == "evaluate"), None)
    if evaluated is not None:
        import json

        summary = dict(evaluated.summary)
        if "report" in evaluated.outputs:  # the report's own one-line verdict is the reason
            summary["reason"] = json.loads(ws.artifacts.get_bytes(evaluated.outputs["report"])).get("verdict")
        console.print(verdict_line(summary), highlight=False, soft_wrap=True)
    for line in summary_lines(result):
        console.print(line, highlight=False, soft_wrap=True)
    _strict_exit(strict, result)


def _strict_exit(strict: bool, result: dict[str, object]) -> None:
    if strict and result.get("approved") is not True:
        sys.stderr.write("error: --strict: the run ended without an approved model\n")
        raise typer.Exit(code=4)


def summary_lines(result: dict[str, object]) -> list[str]:
    """The end-of-run summary for people: winner, primary metric with its interval, version, reports."""
    lines: list[str] = []
    pm = result.get("primary_metric")
    if result.get("winner"):
        metric = ""
        if isinstance(pm, dict) and isinstance(pm.get("value"), int | float):
            lo, hi = (pm.get("interval") or [None, None])[:2]
            metric = f"; {pm['name']} {pm['value']:.4f}" + (
                f" [{lo:.4f}, {hi:.4f}]" if isinstance(lo, int | float) and isinstance(hi, int | float) else "")
        lines.append(f"winner: {result['winner']}{metric}")
    if result.get("version"):
        lines.append(f"model version: {result['version']} ({result.get('state')})")
    elif result.get("verdict") is not None:
        lines.append("model version: none registered")
    reports = result.get("reports")
    if isinstance(reports, dict):
        for name, path in reports.items():
            lines.append(f"report {name}: {path}")
    return lines


def verdict_line(summary: dict[str, object]) -> str:
    """One line telling whether the evaluated model was approved, and why (from the evaluate stage summary)."""
    pm, value, lo, hi = (summary.get(k) for k in ("primary_metric", "value", "lower", "upper"))
    measured = (
        f"{pm} {value:.4g} [{lo:.4g}, {hi:.4g}]" if all(isinstance(v, int | float) for v in (value, lo, hi))
        else f"{pm} {value if value is not None else 'undefined on the test split'}"
    )
    failed = summary.get("failed_gates") or []
    reason = summary.get("reason")
    if summary.get("approved"):
        return f"verdict: APPROVED ({measured}; every gate passed)"
    why = str(reason) if reason else (
        "failed gates: " + ", ".join(map(str, failed)) if isinstance(failed, list) and failed else "not approved"
    )
    return f"verdict: NOT APPROVED ({measured}): {why}"


@app.command("runs")
def runs_cmd(
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder."),
    run_id: str | None = typer.Option(None, "--run", help="Show the stage executions of this run."),
    limit: int = typer.Option(20, "--limit", help="How many rows."),
    as_json: bool = typer.Option(False, "--json", help=json_help("runs")),
) -> None:
    """List recent runs, or the stage executions of one run.

    Examples:

      loopml runs -p shop
      loopml runs -p shop --run 7b0e835237d4a1f2     # the stages of one run
      loopml runs -p shop --json | jq -r '.runs[0].run_id'
    """
    from loopml.cli.project import open_project
    from loopml.lineage import list_executions, list_runs

    ws = open_project(project, need_spec=False)
    runs = list_runs(ws, limit) if run_id is None else []
    rows = list_executions(ws, run_id, limit)
    if as_json:
        run_keys = ("run_id", "status", "started_at", "ended_at", "command", "error")
        ex_keys = ("execution_id", "run_id", "stage", "status", "config_hash", "code_version", "duration_s", "outputs",
                   "peak_rss_mb", "memory_cap_mb")
        emit("runs", {"runs": [{k: r[k] for k in run_keys} for r in runs],
                      "executions": [{k: e[k] for k in ex_keys} for e in rows]})
        return
    if run_id is None:
        console.print(
            table(
                "runs",
                ["run", "status", "started", "ended", "command", "error"],
                [
                    (r["run_id"], r["status"], fmt_time(r["started_at"]), fmt_time(r["ended_at"]), r["command"],
                     (r["error"] or "")[:80])
                    for r in runs
                ],
            )
        )
    console.print(
        table(
            "stage executions",
            ["execution", "run", "stage", "status", "config", "code", "seconds", "peak MB", "outputs"],
            [
                (e["execution_id"], e["run_id"], e["stage"],
                 "cache hit" if e["status"] == "cached" else e["status"], e["config_hash"][:10], e["code_version"][:10],
                 f"{e['duration_s']:.2f}" if e["duration_s"] is not None else "",
                 (f"{e['peak_rss_mb']:,.0f}" if e["peak_rss_mb"] is not None else "")
                 + (f" / cap {e['memory_cap_mb']:,.0f}" if e["memory_cap_mb"] is not None else ""),
                 ", ".join(f"{k}={v[:10]}" for k, v in (e["outputs"] or {}).items()))
                for e in rows
            ],
        )
    )


@app.command("lineage")
def lineage_cmd(
    artifact: str = typer.Argument(..., help="Artifact digest or a unique prefix (6+ characters)."),
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder."),
    as_json: bool = typer.Option(False, "--json", help=json_help("lineage")),
) -> None:
    """Show the chain of stage executions and artifacts that produced an artifact.

    Examples:

      loopml lineage 25d224717b98 -p shop            # a bundle digest (see `loopml models show`)
      loopml lineage 25d224717b98 -p shop --json
    """
    from loopml.cli.project import open_project
    from loopml.lineage import lineage

    ws = open_project(project, need_spec=False)
    steps = lineage(ws, artifact)
    if as_json:
        keys = ("depth", "digest", "name", "kind", "stage", "execution_id", "status", "config_hash", "code_version",
                "ended_at")
        emit("lineage", {"artifact": steps[0].digest, "steps": [{k: getattr(s, k) for k in keys} for s in steps]})
        return
    console.print(
        table(
            f"lineage of {steps[0].digest[:12]}",
            ["depth", "artifact", "name", "kind", "stage", "execution", "status", "config", "code", "ended"],
            [
                (s.depth, s.digest[:12], s.name, s.kind, s.stage, s.execution_id, s.status,
                 (s.config_hash or "")[:10], (s.code_version or "")[:10], fmt_time(s.ended_at))
                for s in steps
            ],
        )
    )


def main() -> None:
    """Entry point: one clear message and a non-zero exit code on errors (traceback with --debug)."""
    debug = "--debug" in sys.argv or os.environ.get("LOOPML_DEBUG") == "1"
    try:
        rc = app(standalone_mode=False)
        if rc == 130:
            raise KeyboardInterrupt
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except LoopMLError as exc:
        original = getattr(exc, "original_traceback", None)
        if debug and original:
            # a stage failed: its own traceback (from the worker), not the CLI's re-raise
            sys.stderr.write(f"traceback of the failed stage `{getattr(exc, 'stage', '?')}`:\n{original}")
        elif debug:
            raise
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2 if isinstance(exc, SpecError) else 1)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; rerun the same command to resume where it stopped\n")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # typer vendors its own click: usage errors (a missing option, a bad value) are its
        # ClickException, shown as the usage message with click's exit code, never "internal error"
        from typer._click import exceptions as click_exceptions

        if isinstance(exc, click_exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, typer.Abort):
            sys.exit(1)
        if debug:
            raise
        sys.stderr.write(f"internal error: {type(exc).__name__}: {exc}\n(run with --debug for the traceback)\n")
        sys.exit(3)


if __name__ == "__main__":
    main()
