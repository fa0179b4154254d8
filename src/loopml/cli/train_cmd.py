"""`loopml train` (run the pipeline up to training, print the leaderboard) and `loopml zoo` (the models)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from loopml.cli.shapes import emit, json_help
from loopml.cli.ui import console, table
from loopml.errors import LoopMLError


def train(
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder holding loopml.yaml."),
    budget: float | None = typer.Option(
        None, "--budget", help="Safety cap in seconds on training and tuning (overrides "
        "training.tuning.time_budget_s for this run); the budget itself is training.tuning.n_trials."
    ),
    trials: int | None = typer.Option(
        None, "--trials", min=1, help="Trials per tuned candidate (overrides training.tuning.n_trials for this run)."
    ),
    executor: str | None = typer.Option(
        None, "--executor", help="Where tuning trials run: inprocess, process or ray (overrides training.executor; ray also fits lightgbm data-parallel on Ray Train)."
    ),
    force: bool = typer.Option(False, "--force", help="Retrain even when nothing changed (ignore the train cache)."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for another run holding the workspace."),
    html: bool = typer.Option(True, "--html/--no-html", help="Print where the HTML leaderboard was written."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help=json_help("train") + " leaderboard is the stored leaderboard "
                                 "(winner, metric, candidates with intervals, why)."),
) -> None:
    """Run the pipeline up to the train stage and print the leaderboard (quality, CI, latency, size, why).

    Examples:

      loopml train -p shop
      loopml train -p shop --force --trials 50       # retrain with a larger tuning budget
      loopml train -p shop --json | jq .winner
    """
    from loopml.cli.project import open_project
    from loopml.cli.ui import StageProgress, Whole, err_console
    from loopml.pipeline import Runner, pipeline_for
    from loopml.training.leaderboard import device_table, leaderboard_table
    from loopml.workspace import Workspace

    ws = open_project(project)
    spec = ws.spec
    if budget is not None or executor is not None or trials is not None:
        changes: dict[str, Any] = {}
        tuning: dict[str, Any] = {}
        if budget is not None:
            tuning["time_budget_s"] = budget
        if trials is not None:
            tuning["n_trials"] = trials
        if tuning:
            changes["tuning"] = spec.training.tuning.model_copy(update=tuning)
        if executor is not None:
            changes["executor"] = executor
        spec = spec.model_copy(update={"training": spec.training.model_copy(update=changes)})
        spec = type(spec).model_validate(spec.model_dump(mode="json"))
        ws = Workspace.open(project, spec)
    stages = pipeline_for(ws.spec)
    if "train" not in [s.name for s in stages]:
        raise LoopMLError("this pipeline has no `train` stage", hint="declare data sources in loopml.yaml first")

    out = err_console if as_json else console
    progress = StageProgress(out, quiet=quiet)
    with ws.lock(wait_s=wait), progress:
        report = Runner(ws, stages, on_event=progress.on_event,
                        show_progress=not (quiet or as_json)).run(
            until="train", start_from="train" if force else None, command=" ".join(["loopml", *sys.argv[1:]])
        )
    report.raise_for_failure()
    outcome = next(o for o in report.outcomes if o.stage == "train")
    board = json.loads(ws.artifacts.get_bytes(outcome.outputs["leaderboard"]))
    if as_json:
        from loopml.cli.run_result import run_result

        result = run_result(ws, report)
        winner = next((c for c in board.get("candidates") or [] if c.get("name") == board.get("winner")), None)
        emit("train", {"run_id": report.run_id, "status": report.status, "winner": board.get("winner"),
                       "bundle": outcome.outputs.get("bundle"),
                       "primary_metric": _validation_metric(board, winner), "leaderboard": board,
                       "reports": result["reports"]})
        return
    console.print(Whole(leaderboard_table(board)))
    dev = device_table(board)
    if dev is not None:
        console.print(Whole(dev))
    console.print(f"bundle {outcome.outputs['bundle'][:12]} ({board['winner']})")
    if html:
        console.print(f"HTML leaderboard: {ws.reports / 'leaderboard.html'}")


def _validation_metric(board: dict[str, Any], winner: dict[str, Any] | None) -> dict[str, Any] | None:
    """The winner's validation score as {name, value, interval} (from the leaderboard record)."""
    if winner is None:
        return None
    return {"name": board.get("metric"), "value": winner.get("value"),
            "interval": [winner.get("ci_low"), winner.get("ci_high")]}


def zoo(
    model: str | None = typer.Argument(None, help="Show the config fields of this model only."),
    task: str | None = typer.Option(None, "--task", help="Only models handling this task (binary, multiclass, ...)."),
    as_json: bool = typer.Option(False, "--json", help=json_help("zoo")),
) -> None:
    """List the registered models, the tasks they handle and their config fields.

    Examples:

      loopml zoo                  # every model
      loopml zoo --task ranking   # the models for a task
      loopml zoo lightgbm         # one model's config fields
    """
    from loopml.training.models import MODELS, load_builtin_models, model_class

    load_builtin_models()
    if model is not None:
        cls = model_class(model)
        rows = []
        for name, f in cls.Config.model_fields.items():
            default = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
            rows.append((name, str(f.annotation).replace("typing.", ""), json.dumps(default, default=str),
                         f.description or ""))
        console.print(table(f"{cls.name}: {cls.description}", ["field", "type", "default", "description"], rows))
        return
    rows2 = []
    for name in sorted(MODELS):
        cls = MODELS[name]
        if task is not None and task not in cls.task_types:
            continue
        flags = [f for f, on in (("proba", cls.supports_proba), ("focal", cls.supports_focal_loss),
                                 ("tunable", hasattr(cls, "search_space")),
                                 ("onnx", cls.exports_onnx)) if on]
        rows2.append((name, ", ".join(sorted(cls.task_types)), ", ".join(flags), ", ".join(cls.Config.model_fields),
                      cls.description))
    if as_json:
        emit("zoo", {"models": [dict(zip(("model", "tasks", "capabilities", "config_fields", "description"),
                                         (r[0], r[1].split(", "), [f for f in r[2].split(", ") if f],
                                          r[3].split(", "), r[4]), strict=True)) for r in rows2]})
        return
    console.print(table("model zoo", ["model", "tasks", "capabilities", "config fields", "description"], rows2))


def register(app: typer.Typer) -> None:
    """Add `train` and `zoo` to the root command."""
    app.command("train")(train)
    app.command("zoo")(zoo)
