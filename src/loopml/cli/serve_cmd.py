"""`loopml serve` (the online prediction service) and `loopml predict --batch` (batch scoring)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from loopml.cli.project import open_project
from loopml.cli.shapes import json_help
from loopml.cli.ui import console, table
from loopml.errors import LoopMLError, NotFound


def serve(
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder (its registry and spec)."),
    host: str | None = typer.Option(None, "--host", help="Interface to bind (default: spec.deployment.host, 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Port (default: spec.deployment.port; 0 picks a free one)."),
    model_file: Path | None = typer.Option(
        None, "--model-file", help="Serve this LightGBM text model directly, without the registry (inputs: its feature names)."
    ),
    log_dir: Path | None = typer.Option(
        None, "--log-dir", help="With --model-file: folder for logs/predictions and logs/feedback (default: no logging)."
    ),
    no_log: bool = typer.Option(False, "--no-log", help="Do not write the prediction and feedback logs."),
    log_max_lag: float | None = typer.Option(
        None, "--log-max-lag", min=0,
        help="Seconds the log writer may keep rows in the durable journal while traffic is heavy before writing "
        "Parquet (default: spec.deployment.log_max_lag_seconds, 60; 0: at once, sharing the core with requests).",
    ),
    log_durability: str | None = typer.Option(
        None, "--log-durability",
        help="window: answer at once, the journal is written every log_flush_rows/log_flush_seconds and synced "
        "every log_flush_seconds; before_answer: "
        "answer only once the prediction's journal line is on disk (group commit; nothing answered is lost on a "
        "crash). Default: spec.deployment.log_durability (window).",
    ),
    compile_trees: str | None = typer.Option(
        None, "--compile-trees",
        help="auto: compile a LightGBM version's trees to machine code once it has answered --compile-after-rows "
        "rows (checked against LightGBM first; about 2x less CPU per row); off: always LightGBM's tree walker. "
        "Default: spec.deployment.compile_trees (auto).",
    ),
    compile_after_rows: int | None = typer.Option(
        None, "--compile-after-rows", min=0,
        help="Rows a version answers before its trees are compiled (default: spec.deployment.compile_after_rows, 1000).",
    ),
    ready_file: Path | None = typer.Option(None, "--ready-file", help="Write 'HOST PORT' here once accepting requests."),
    backend: str = typer.Option(
        "python", "--backend",
        help="python: the bundle's own model code; onnx: the model exported as ONNX and run by ONNX Runtime (the "
        "on-device winner's int8/fp16 compression kept), e.g. `loopml serve -p shop --backend onnx`."),
) -> None:
    """Start the online prediction service (POST /v1/predict, /v1/feedback, /health, /ready, /metrics).

    The address it bound (with --port 0: a free port) is recorded in .loopml/serving/address.json,
    where `loopml monitor` finds it.

    Examples:

      loopml serve -p shop                     # the production version on spec.deployment.port
      loopml serve -p shop --port 0            # a free port, printed and recorded
      loopml serve --model-file model.txt --compile-trees off   # LightGBM's own tree walker only
      curl -s localhost:8000/v1/predict -d '{"age": 41, "city": "Lyon"}'
    """
    from loopml.serving.service import app_for_model_file, app_for_workspace, http_limits, run_server
    from loopml.spec.deployment import Deployment

    lag: dict[str, object] = {} if log_max_lag is None else {"log_max_lag_seconds": log_max_lag}
    if log_durability is not None:
        if log_durability not in ("window", "before_answer"):
            raise LoopMLError(f"--log-durability must be `window` or `before_answer`, not {log_durability!r}")
        lag["log_durability"] = log_durability
    if compile_trees is not None:
        if compile_trees not in ("auto", "off"):
            raise LoopMLError(f"--compile-trees must be `auto` or `off`, not {compile_trees!r}")
        lag["compile_trees"] = compile_trees
    if compile_after_rows is not None:
        lag["compile_after_rows"] = compile_after_rows
    if backend not in ("python", "onnx"):
        raise LoopMLError(f"--backend must be `python` or `onnx`, not {backend!r}")
    if backend == "onnx" and model_file is not None:
        raise LoopMLError("--backend onnx serves registry versions; it does not apply to --model-file")
    if model_file is not None:
        dep = Deployment().model_copy(update=lag)
        app = app_for_model_file(model_file, log_root=None if no_log else log_dir, deployment=dep)
        poll = 0.0
        budget_ms = None
        workspace_root = None
    else:

        ws = open_project(project)
        workspace_root = ws.root
        dep = ws.spec.deployment.model_copy(update=lag)
        app = app_for_workspace(ws, logs=not no_log, deployment=dep, backend=backend)
        poll = dep.registry_poll_seconds
        budget_ms = ws.spec.requirements.constraints.latency_p99_ms
    bind_host = host or dep.host
    bind_port = dep.port if port is None else port
    if bind_host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/yellow] binding {bind_host}: the service is reachable from other machines"
                      + ("" if app.auth.enabled else f"; admin actions stay disabled until ${dep.token_env} is set"))

    def announce(bound: tuple[str, int]) -> None:
        if workspace_root is not None:  # `loopml monitor` finds /metrics here (port 0 or --port)
            from loopml.serving.address import record_address

            record_address(workspace_root, bound[0], bound[1])
        state = app.state
        served = ", ".join(f"{v} ({s})" for v, s in state.states.items()) or f"nothing yet: {state.error}"
        console.print(f"loopml serve: http://{bound[0]}:{bound[1]}  serving {served}", highlight=False)

    run_server(app, bind_host, bind_port, poll_seconds=poll, ready_file=str(ready_file) if ready_file else None,
               on_ready=announce, limits=http_limits(dep, budget_ms))


def predict(
    batch: str | None = typer.Option(
        None, "--batch", help="Score this input in chunks: a Parquet/CSV/JSON file, a folder of Parquet, snapshot:REF (lake snapshot id, v3 or latest) or an artifact digest."
    ),
    row: str | None = typer.Option(None, "--row", help="Score one row given as a JSON object (prints the prediction)."),
    output: Path | None = typer.Option(
        None, "--out", "-o", help="Predictions Parquet file (default: .loopml/predictions/<version>-<time>.parquet)."
    ),
    output_old: Path | None = typer.Option(None, "--output", hidden=True, help="Old spelling of --out."),
    as_json: bool = typer.Option(False, "--json", help="With --batch: " + json_help("predict")),
    version: str | None = typer.Option(None, "--version", help="Model version (default: the production version)."),
    chunk_rows: int | None = typer.Option(None, "--chunk-rows", help="Rows per chunk (default: spec.deployment.batch_chunk_rows)."),
    keep: list[str] = typer.Option([], "--keep", help="Input columns to copy into the predictions table (repeatable)."),
    executor: str | None = typer.Option(
        None, "--executor", help="With --batch: inprocess or ray (Ray Data over Parquet input; default: spec.deployment.batch_executor)."
    ),
    online: bool = typer.Option(True, "--online/--no-online", help="Also write predictions by entity key to the online store."),
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score rows with a registered model: a whole file/snapshot in chunks (--batch) or one row (--row).

    Examples:

      loopml predict -p shop --batch new_rows.csv -o scored.parquet
      loopml predict -p shop --batch snapshot:latest --version v3 --keep user_id
      loopml predict -p shop --row '{"age": 41, "city": "Lyon"}'
      RAY_ADDRESS=10.0.0.5:6379 loopml predict -p shop --batch data/2024/ --executor ray
    """
    from loopml.registry import Registry
    from loopml.serving.sources import load_version

    if (batch is None) == (row is None):
        raise LoopMLError("give exactly one of --batch INPUT or --row JSON")
    ws = open_project(project)
    reg = Registry(ws)
    v = reg.get(version) if version else reg.production()
    if v is None:
        raise NotFound("no version is in production; pass --version or promote one with `loopml models promote`")
    servable = load_version(ws, v.version_id, v.bundle_digest)
    if row is not None:
        try:
            data = json.loads(row)
        except json.JSONDecodeError as exc:
            raise LoopMLError(f"--row is not valid JSON: {exc}") from None
        score, pred = servable.predict_one(data)
        typer.echo(json.dumps({"model_version": v.version_id, "score": score, "prediction": pred}))
        return
    if executor is not None and executor not in ("inprocess", "ray"):
        raise LoopMLError(f"--executor: unknown batch executor `{executor}` (expected inprocess or ray)")
    _predict_batch(ws, servable, str(batch), output or output_old, chunk_rows, keep, online, quiet or as_json, as_json,
                   executor=executor or ws.spec.deployment.batch_executor)


def _predict_batch(ws, servable, batch: str, output: Path | None, chunk_rows: int | None,  # type: ignore[no-untyped-def]
                   keep: list[str], online: bool, quiet: bool, as_json: bool = False, executor: str = "inprocess") -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from loopml.serving.batch import predict_batch, resolve_input
    from loopml.serving.store import open_online_store, prediction_writer

    src = resolve_input(ws, batch)
    out = output or ws.root / "predictions" / f"{servable.version_id}-{time.strftime('%Y%m%dT%H%M%S')}.parquet"
    keys = list(ws.spec.task.entity_keys)
    writer = None
    if online and keys:
        writer = prediction_writer(open_online_store(ws), keys)
    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=quiet, console=console, transient=True) as bar:
        task = bar.add_task("rows", total=None)
        res = predict_batch(
            servable, src, out, chunk_rows=chunk_rows or ws.spec.deployment.batch_chunk_rows, keys=keys,
            keep_columns=[k for k in keep if k not in keys], online_writer=writer,
            progress=lambda n: bar.advance(task, n), on_total=lambda t: bar.update(task, total=t),
            executor=executor, project_dir=ws.project_dir,
        )
    if as_json:
        from loopml.cli.shapes import emit

        emit("predict", {"model_version": res.model_version, "rows": res.rows, "seconds": res.seconds,
                         "rows_per_second": res.rows_per_second, "output": str(res.output),
                         "online_rows": res.online_rows})
        return
    console.print(table("batch prediction", ["version", "rows", "seconds", "rows/s", "output", "online store rows"], [
        (res.model_version, res.rows, f"{res.seconds:.2f}", f"{res.rows_per_second:,.0f}", str(res.output), res.online_rows)
    ]))


def register(app: typer.Typer) -> None:
    """Add `serve` and `predict` to the root command."""
    app.command("serve")(serve)
    app.command("predict")(predict)
