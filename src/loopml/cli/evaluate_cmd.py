"""`loopml evaluate`: run the pipeline until evaluation (or evaluate a bundle on a table) and judge it.

Prints the summary (metrics with intervals, comparisons, worst slices, fairness, gates) and
exits non-zero when a gate fails, so it can guard a CI job or a deployment script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from loopml.cli.project import open_project
from loopml.cli.ui import console, err_console
from loopml.errors import DataError, GateFailed, LoopMLError, NotFound


def _read_table(ws: Any, ref: str) -> Any:
    """A Parquet/CSV file, or an artifact digest (prefix) of a Parquet table."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    p = Path(ref)
    if p.exists():
        if p.suffix.lower() in (".csv", ".txt"):
            try:
                return pacsv.read_csv(p)
            except Exception as exc:  # pyarrow raises ArrowInvalid with the line in the message
                raise DataError(f"{p}: cannot read CSV: {exc}") from None
        try:
            return pq.read_table(p)
        except Exception as exc:
            raise DataError(f"{p}: cannot read as Parquet ({exc}); give a .parquet or .csv file") from None
    if len(ref) >= 6 and all(c in "0123456789abcdef" for c in ref.lower()):
        info = ws.artifact_info(ref)
        return pq.read_table(ws.artifacts.open_verified(info["digest"]))
    raise NotFound(f"--table {ref}: no such file, and not an artifact digest")


def _show(report: dict[str, Any], as_json: bool) -> None:
    from loopml.evaluation.report import summary_tables

    if as_json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
        return
    for t in summary_tables(report):
        console.print(t)
    for n in report.get("notes") or []:
        console.print(f"[dim]note: {n}[/dim]", highlight=False)


def _verdict(report: dict[str, Any], where: str, as_json: bool = False) -> None:
    (err_console if as_json else console).print(f"report: {where}", highlight=False)
    failed = [g["gate"] for g in report.get("gates", []) if not g.get("passed")]
    if failed:
        raise GateFailed(f"{len(failed)} evaluation gate(s) failed: " + "; ".join(f"`{g}`" for g in failed),
                         hint="the model is not approved; the report shows the evidence for each gate")


def evaluate(
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder (its loopml.yaml and workspace)."),
    bundle: str | None = typer.Option(
        None, "--bundle", help="Evaluate this model bundle (manifest digest or a unique prefix) instead of running "
        "the pipeline; needs --table."),
    table_ref: str | None = typer.Option(
        None, "--table", help="With --bundle: the rows to evaluate on (Parquet or CSV file, or a table artifact "
        "digest) holding the target and the model's input columns."),
    as_json: bool = typer.Option(False, "--json", help="Print the report JSON instead of the tables."),
    html: Path | None = typer.Option(None, "--out", "-o", help="Also write the HTML report to this file."),
    html_old: Path | None = typer.Option(None, "--html", hidden=True, help="Old spelling of -o/--out."),
    force: bool = typer.Option(False, "--force", help="Re-run the evaluation even if its inputs are unchanged."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for another run holding the workspace."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Evaluate the trained model against the spec's gates; exits 1 when a gate fails.

    Runs the pipeline until `evaluate` (or evaluates --bundle on --table) and prints metrics with
    bootstrap intervals, the comparison with production and the baseline, slices, fairness and gates.

    Examples:

      loopml evaluate -p shop
      loopml evaluate -p shop --bundle 25d224717b98 --table holdout.parquet -o holdout.html
      loopml evaluate -p shop --json | jq .approved
    """
    from loopml.evaluation.report import render_html

    html = html or html_old
    ws = open_project(project)
    if bundle is not None or table_ref is not None:
        if bundle is None or table_ref is None:
            raise LoopMLError("--bundle and --table go together: evaluate BUNDLE on TABLE")
        from loopml.evaluation.stages import evaluate_bundle, inputs_for_bundle

        digest = ws.artifact_info(bundle)["digest"]
        table = _read_table(ws, table_ref)
        with console.status("evaluating", spinner="dots") if not quiet and not as_json else _Null() as status:
            def progress(msg: str) -> None:
                if status is not None:
                    status.update(f"evaluating: {msg}")

            report = evaluate_bundle(ws, ws.spec, digest, table, inputs_for_bundle(ws, digest), progress=progress)
        out = ws.reports / f"evaluation-{digest[:12]}.json"
        out.write_text(json.dumps(report, indent=1, allow_nan=False), encoding="utf-8")
        from loopml.registry import Registry
        from loopml.registry.evidence import record_for_bundle

        if record_for_bundle(Registry(ws), digest, report, report_ref=f"{out}@{report.get('created_at')}",
                             source="loopml evaluate --bundle"):
            (err_console if as_json else console).print(
                f"the verdict of the registered version of this bundle is now: {report.get('verdict')}",
                highlight=False)
        page = render_html(report)
        out.with_suffix(".html").write_text(page, encoding="utf-8")
        if html is not None:
            html.write_text(page, encoding="utf-8")
        _show(report, as_json)
        _verdict(report, str(out.with_suffix(".html")), as_json)
        return

    from loopml.pipeline import Runner, StageOutcome, make_executor, pipeline_for

    stages = pipeline_for(ws.spec)
    if "evaluate" not in [s.name for s in stages]:
        raise LoopMLError("this spec's pipeline has no `evaluate` stage (it needs data sources and training)")

    def on_event(kind: str, payload: StageOutcome | str) -> None:
        if quiet or as_json:
            return
        if kind == "stage_start":
            console.print(f"[bold]▶ {payload}[/bold] running…")
        elif isinstance(payload, StageOutcome):
            label = "cache hit" if payload.status == "cached" else payload.status
            console.print(f"■ {payload.stage}: {label} ({payload.duration_s:.2f}s)")

    with ws.lock(wait_s=wait):
        run = Runner(ws, stages, make_executor("inprocess"), on_event=on_event, show_progress=not (quiet or as_json)).run(
            until="evaluate", start_from="evaluate" if force else None,
            command=" ".join(["loopml", *sys.argv[1:]]),
        )
    run.raise_for_failure()
    outcome = next(o for o in run.outcomes if o.stage == "evaluate")
    report = json.loads(ws.artifacts.get_bytes(outcome.outputs["report"]))
    if html is not None:
        html.write_bytes(ws.artifacts.get_bytes(outcome.outputs["html"]))
    _show(report, as_json)
    _verdict(report, str(ws.reports / "evaluation.html"), as_json)


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def register(app: typer.Typer) -> None:
    """Add ``loopml evaluate`` to the root command."""
    app.command("evaluate")(evaluate)
