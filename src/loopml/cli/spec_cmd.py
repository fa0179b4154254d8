"""`loopml spec`: check, schema, render."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from loopml.cli.shapes import emit, json_help
from loopml.cli.ui import console
from loopml.spec import SPEC_FILENAME, Spec, load_spec, render_spec, spec_json_schema

app = typer.Typer(help="Check, render and export the project spec (loopml.yaml).", no_args_is_help=True)


@app.command("check")
def check(
    path: Path = typer.Argument(Path("."), help="Spec file or project folder holding loopml.yaml."),
    data: bool = typer.Option(
        True, "--data/--no-data",
        help="Also check the spec against a sample of its data (target and inputs exist, kinds fit the "
        "transforms, the task fits the target's values) when the sources are readable.",
    ),
    project: Path | None = typer.Option(
        None, "--project", "-p", help="Project folder holding loopml.yaml (same as the PATH argument)."),
    as_json: bool = typer.Option(False, "--json", help=json_help("spec check") + " A failing spec prints ok=false "
                                 "with its problems and exits 2."),
) -> None:
    """Validate the spec and report every problem at once (file, line, key path, allowed values).

    With the data (default) it reads a sample of each source and checks that the target and the
    inputs exist (with "did you mean" suggestions), that each input's values fit its kind and
    transforms, and that the task fits the target's values. Nothing runs and nothing is written.

    Examples:

      loopml spec check               # the project in the current folder
      loopml spec check proj/         # another project folder
      loopml spec check --no-data     # the spec file only
      loopml spec check -p proj --json | jq .ok
    """
    from loopml.pipeline.preflight import check_against_data

    if project is not None:
        path = project
    target = path / SPEC_FILENAME if path.is_dir() else path
    if as_json:
        _check_json(target, data)
        return
    spec = load_spec(path)
    n_sources = len(spec.data.sources)
    against = ""
    if data:
        result = check_against_data(spec, target.resolve().parent)
        result.raise_for_problems(str(target))
        for note in result.notes:
            console.print(f"[yellow]note[/yellow] {note}")
        if result.checked:
            against = f"; fits its data (a sample of {result.rows:,} example rows, {len(result.columns)} columns)"
    console.print(
        f"[green]ok[/green] {target}: task {spec.task.type} on `{spec.task.target}`, "
        f"{n_sources} source(s), {len(spec.training.candidates)} candidate(s), {len(spec.evaluation.gates)} gate(s)"
        + against
    )
    for warning in gate_warnings(spec):
        console.print(f"[yellow]warning[/yellow] {warning}", highlight=False)


def _check_json(target: Path, data: bool) -> None:
    from loopml.errors import LoopMLError
    from loopml.pipeline.preflight import check_against_data

    out: dict[str, object] = {"ok": False, "spec": str(target), "task": None, "target": None, "sources": None,
                              "candidates": None, "gates": None, "data_checked": False, "rows": None, "columns": None,
                              "notes": [], "warnings": [], "problems": []}
    try:
        spec = load_spec(target)
        out.update(task=spec.task.type, target=spec.task.target, sources=sorted(spec.data.sources),
                   candidates=[c.name or c.type for c in spec.training.candidates], gates=list(spec.evaluation.gates),
                   warnings=gate_warnings(spec))
        if data:
            result = check_against_data(spec, target.resolve().parent)
            out.update(data_checked=bool(result.checked), rows=result.rows if result.checked else None,
                       columns=list(result.columns) if result.checked else None, notes=list(result.notes))
            result.raise_for_problems(str(target))
        out["ok"] = True
    except LoopMLError as exc:
        out["problems"] = list(getattr(exc, "problems", None) or []) or [exc.message]
    emit("spec check", out)
    if not out["ok"]:
        raise typer.Exit(code=2)


def gate_warnings(spec: Spec) -> list[str]:
    """What `spec check` warns about the promotion decision (no gates, baseline gate off)."""
    out: list[str] = []
    ev = spec.evaluation
    if not ev.gates:
        out.append("evaluation.gates declares no gate: only the implicit baseline gate decides approval"
                   + ("" if ev.baseline_gate else " – and it is off, so every trained model would be approved")
                   + " (add e.g. `roc_auc > production` or `roc_auc >= 0.75`)")
    elif not ev.baseline_gate:
        out.append("evaluation.baseline_gate is false: a model no better than the baseline can be approved")
    return out


@app.command("schema")
def schema(
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the schema to this file instead of stdout."),
) -> None:
    """Print the JSON Schema of loopml.yaml.

    Examples:

      loopml spec schema > loopml.schema.json
      loopml spec schema -o loopml.schema.json
    """
    text = json.dumps(spec_json_schema(), indent=2)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
        console.print(f"JSON Schema of loopml.yaml written to {out}", highlight=False)
        return
    typer.echo(text)


@app.command("render")
def render(
    path: Path = typer.Argument(Path("."), help="Spec file or project folder holding loopml.yaml."),
    project: Path | None = typer.Option(
        None, "--project", "-p", help="Project folder holding loopml.yaml (same as the PATH argument)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the rendered spec to this file instead of stdout."),
) -> None:
    """Print the full spec with every default filled in.

    Examples:

      loopml spec render                      # the project in the current folder
      loopml spec render -p shop | less       # every field with its default
    """
    text = render_spec(load_spec(project if project is not None else path))
    if out is not None:
        out.write_text(text, encoding="utf-8")
        console.print(f"full spec written to {out}", highlight=False)
        return
    typer.echo(text, nl=False)
