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

from loopml.cli.ui import console
from loopml.errors import LoopMLError, SpecError

FORMATS = ("onnx",)


def export(
    out: Path = typer.Option(..., "--out", "-o", help="File to write (e.g. model.onnx)."),
    fmt: str = typer.Option("onnx", "--format", help=f"Artifact format: {', '.join(FORMATS)}."),
    version: str | None = typer.Option(None, "--version", help="Model version (default: production, else the newest)."),
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (version, path, size, inputs, parity)."),
) -> None:
    """Export a model version as one portable file.

    `--format onnx` writes the fitted feature transform and the model as ONE ONNX graph whose inputs are the
    raw input columns ((N, 1) double for numbers, NaN when missing; (N, 1) string for categories, the empty
    string when missing) and whose output `score` equals `loopml predict`. The export scores the version's
    test split in ONNX Runtime and in Python first and refuses to write when they differ by more than 1e-5;
    a transform or model without an ONNX form is refused with its name.

    Examples: `loopml export --format onnx -p shop --out shop.onnx`,
    `loopml export --format onnx --version v3 -p shop --out v3.onnx --json`.
    """
    from loopml.workspace import Workspace

    if fmt not in FORMATS:
        raise SpecError(f"--format {fmt!r} is not supported (supported: {', '.join(FORMATS)})")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise LoopMLError(f"ONNX export needs the `onnx` extra ({exc.name} is not installed)",
                          hint="pip install 'loopml[onnx]' (make setup installs it)") from None
    ws = Workspace.open(project)
    from loopml.export.artifact import export_onnx

    res = export_onnx(ws, version, out)
    if as_json:
        sys.stdout.write(json.dumps({
            "version": res.version_id, "model_type": res.model_type, "format": fmt, "path": str(res.path),
            "size_bytes": res.size_bytes, "inputs": res.inputs, "output": "score",
            "parity": {"rows": res.parity.rows, "max_abs_diff": res.parity.max_abs_diff,
                       "max_rel_diff": res.parity.max_rel_diff, "tolerance": res.parity.tolerance},
        }, indent=1) + "\n")
        return
    console.print(res.parity.line(), highlight=False)
    console.print(f"wrote {res.path} ({res.size_bytes / 1024:.1f} KB): {res.version_id} ({res.model_type}), "
                  f"{len(res.inputs)} inputs, output `score`", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `loopml export` to the root command."""
    app.command("export")(export)
