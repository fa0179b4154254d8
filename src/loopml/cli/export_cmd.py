"""`loopml export`: a registered model version as a portable artifact.

``--format onnx``: the fitted feature transform and the model as one ONNX graph (inputs named
after the raw input columns, output ``score``), checked against the Python bundle on the test
split before it is written (:mod:`loopml.export`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from loopml.cli.project import open_project
from loopml.cli.ui import console
from loopml.errors import LoopMLError, SpecError

FORMATS = ("onnx",)


def export(
    out: Path | None = typer.Option(None, "--out", "-o", help="File to write (e.g. model.onnx); with --format."),
    fmt: str = typer.Option("onnx", "--format", help=f"Artifact format: {', '.join(FORMATS)}."),
    version: str | None = typer.Option(None, "--version", help="Model version (default: production, else the newest)."),
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (version, path, size, inputs, parity; "
                                 "with --to mlflow: tracking_uri, experiment, experiment_id, exported, skipped)."),
    to: str | None = typer.Option(
        None, "--to", help="Instead of a file: write the project's runs to this tracking system: mlflow (params, "
        "metrics with intervals, verdict and lineage tags, report files as artifacts)."),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", help="With --to mlflow: the MLflow tracking URI (default: mlruns/ in the project)."),
    experiment: str | None = typer.Option(
        None, "--experiment", help="With --to mlflow: experiment name (default: spec.project.name)."),
) -> None:
    """Export a model version as one portable file.

    `--format onnx` writes the fitted feature transform and the model as ONE ONNX graph whose inputs are the
    raw input columns ((N, 1) double for numbers, NaN when missing; (N, 1) string for categories, the empty
    string when missing) and whose output `score` equals `loopml predict`. The export scores the version's
    test split in ONNX Runtime and in Python first and refuses to write when they differ by more than 1e-5;
    a transform or model without an ONNX form is refused with its name.

    `--to mlflow` writes every run of the project (runs already there are skipped) into an MLflow tracking
    store, one MLflow run each: params, metrics with their intervals, tags for the verdict and the lineage
    digests, the report files as artifacts (`loopml.mlflow_export`).

    Examples: `loopml export --format onnx -p shop --out shop.onnx`,
    `loopml export --format onnx --version v3 -p shop --out v3.onnx --json`,
    `loopml export --to mlflow -p shop --tracking-uri ./mlruns`.
    """

    if to is not None:
        _export_tracking(project, to, tracking_uri, experiment, as_json)
        return
    if out is None:
        raise SpecError("--out FILE is needed with --format (or use --to mlflow)")

    if fmt not in FORMATS:
        raise SpecError(f"--format {fmt!r} is not supported (supported: {', '.join(FORMATS)})")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise LoopMLError(f"ONNX export needs the `onnx` extra ({exc.name} is not installed)",
                          hint="pip install 'loopml[onnx]' (make setup installs it)") from None
    ws = open_project(project)
    from loopml.export.artifact import export_onnx

    res = export_onnx(ws, version, out)
    if as_json:
        sys.stdout.write(json.dumps({
            "version": res.version_id, "model_type": res.model_type, "format": fmt, "path": str(res.path),
            "size_bytes": res.size_bytes, "inputs": res.inputs, "output": "score",
            "parity": {"rows": res.parity.rows, "max_abs_diff": res.parity.max_abs_diff,
                       "max_rel_diff": res.parity.max_rel_diff, "tolerance": res.parity.tolerance},
            "compression": res.compression,
            "drift_after_compression": None if res.drift is None else res.drift.max_abs_diff,
        }, indent=1) + "\n")
        return
    console.print(res.parity.line(), highlight=False)
    if res.drift is not None:
        console.print(f"after {res.compression} (the on-device variant's compression): max |onnx - python| = "
                      f"{res.drift.max_abs_diff:.2e} on the same rows (measured drift)", highlight=False)
    console.print(f"wrote {res.path} ({res.size_bytes / 1024:.1f} KB): {res.version_id} ({res.model_type}), "
                  f"{len(res.inputs)} inputs, output `score`", highlight=False)


def _export_tracking(project: Path, to: str, tracking_uri: str | None, experiment: str | None, as_json: bool) -> None:
    from loopml.cli.project import open_project

    if to != "mlflow":
        raise SpecError(f"--to {to!r} is not supported (supported: mlflow)")
    from loopml.mlflow_export import export_runs

    res = export_runs(open_project(project), tracking_uri, experiment=experiment)
    if as_json:
        sys.stdout.write(json.dumps({"tracking_uri": res.tracking_uri, "experiment": res.experiment,
                                     "experiment_id": res.experiment_id, "exported": res.exported,
                                     "skipped": res.skipped}, indent=1) + "\n")
        return
    console.print(f"MLflow {res.tracking_uri}, experiment `{res.experiment}` ({res.experiment_id}): "
                  f"{len(res.exported)} run(s) exported, {len(res.skipped)} already there", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `loopml export` to the root command."""
    app.command("export")(export)
