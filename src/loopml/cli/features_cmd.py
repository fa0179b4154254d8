"""`loopml features`: show fitted features, materialise, check online/offline parity, look up entities."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import typer

from loopml.cli.project import open_project
from loopml.cli.shapes import emit, json_help
from loopml.cli.ui import console, table
from loopml.errors import DataError, NotFound

app = typer.Typer(
    help="Features and the feature store: fitted transforms, online materialisation, parity, lookups.",
    no_args_is_help=True,
)


def _short(v: Any, n: int = 90) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= n else s[: n - 1] + "…"


@app.command("show")
def show(
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder."),
    transform: str | None = typer.Option(
        None, "--transform", "-t",
        help="A fitted transform: a JSON file path or an artifact digest (prefix). Default: the newest one "
        "stored by training; without one, the pipeline is fitted on the newest features table as a preview.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the description as JSON instead of a table."),
) -> None:
    """List every feature: its raw column, transform chain, output columns and fitted statistics.

    Examples:

      loopml features show -p shop
      loopml features show -p shop -t 3fa2c1 --json
    """
    from loopml.features import FeaturePipeline
    from loopml.features.registry_view import latest_features_table, latest_transform

    ws = open_project(project)
    source = ""
    if transform is not None and Path(transform).is_file():
        pipe = FeaturePipeline.from_json(json.loads(Path(transform).read_text()))
        source = f"file {transform}"
    elif transform is not None:
        info = ws.artifact_info(transform)
        pipe = FeaturePipeline.from_json(json.loads(ws.artifacts.get_bytes(info["digest"])))
        source = f"artifact {info['digest'][:12]}"
    else:
        found = latest_transform(ws)
        if found is not None:
            pipe = FeaturePipeline.from_json(found[1])
            source = f"artifact {found[0][:12]} (newest fitted transform)"
        else:
            tbl = latest_features_table(ws)
            if tbl is None:
                raise NotFound("no fitted transform and no features table in this workspace",
                               hint="run `loopml run --until features` (or train) first, or pass --transform FILE")
            pipe = FeaturePipeline.from_spec(ws.spec.features, task=ws.spec.task)
            target = ws.spec.task.target
            y = None
            if any(ch.needs_target() for ch in pipe.chains) and target in tbl[1].column_names:
                y = tbl[1].column(target).to_numpy(zero_copy_only=False)
            pipe.fit(tbl[1], y)
            source = (f"preview: fitted on all {tbl[1].num_rows} rows of features table {tbl[0][:12]} "
                      "(training fits on its training split only)")
    desc = pipe.describe()
    if as_json:
        typer.echo(json.dumps({"source": source, "features": desc}, indent=2, default=str))
        return
    console.print(f"{len(desc)} features → {len(pipe.feature_names)} columns; {source}")
    console.print(table(
        "features",
        ["feature", "column", "kind", "chain", "outputs", "fitted statistics"],
        [(d["feature"], d["column"], d["kind"], d["chain"],
          d["outputs"][0] if len(d["outputs"]) == 1 else f"{len(d['outputs'])} columns",
          "; ".join(f"{k}: {_short(v)}" for k, v in d["stats"].items() if v))
         for d in desc],
    ))


@app.command("materialize")
def materialize_cmd(
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder."),
    as_of: str | None = typer.Option(None, "--as-of", help="Only values available at this ISO time (default: all)."),
    as_json: bool = typer.Option(False, "--json", help=json_help("features materialize") + " Each table: table, "
                                 "online_store, entities_written, ttl_seconds."),
) -> None:
    """Write each entity's latest feature values from the newest offline tables into the online store.

    Examples:

      loopml features materialize -p shop
      loopml features materialize -p shop --as-of 2026-11-30T00:00:00
    """
    from rich.progress import track

    from loopml.features.materialize import materialize
    from loopml.features.registry_view import latest_features_manifest, manifest_tables
    from loopml.features.store import open_online_store

    ws = open_project(project)
    when = None
    if as_of is not None:
        try:
            when = dt.datetime.fromisoformat(as_of).replace(tzinfo=None)
        except ValueError:
            raise DataError(f"--as-of {as_of!r}: expected an ISO 8601 time such as 2024-05-01T12:00:00") from None
    tables = manifest_tables(ws, latest_features_manifest(ws), "table_digest")
    store = open_online_store(ws.spec.features.online_store, ws.project_dir)
    rows = []
    try:
        for name in track(list(tables), description="materialising", transient=True, disable=as_json):
            n = materialize(store, {name: tables[name]}, as_of=when)[name]
            rows.append((name, ws.spec.features.online_store.type, n, tables[name][0].ttl_seconds or ""))
    finally:
        store.close()
    if as_json:
        emit("features materialize", {"tables": [dict(zip(("table", "online_store", "entities_written",
                                                             "ttl_seconds"), r, strict=True)) for r in rows]})
        return
    console.print(table("materialised", ["table", "online store", "entities written", "ttl seconds"], rows))


@app.command("parity")
def parity_cmd(
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder."),
    sample: int = typer.Option(100, "--sample", "-n", min=1, help="Entities compared per table."),
    seed: int = typer.Option(0, "--seed", help="Seed of the entity sample."),
    transform: str | None = typer.Option(
        None, "--transform", "-t",
        help="Also compare whole model-input vectors through this fitted transform (JSON file or artifact "
        "digest); default: the newest transform stored by training, if any.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Recompute a sample of online feature vectors offline from the source rows and report differences.

    Entity tables: each sampled entity's online values against values recomputed from the source rows.
    Model inputs (when a fitted transform exists): example rows enriched from the online store and passed
    through the row path, against the same rows joined point-in-time offline and passed through the batch
    path. Exits with status 1 when any value differs (train/serve skew).

    Examples:

      loopml features parity -p shop -n 200
      loopml features parity -p shop --json
    """
    from loopml.features.parity import check_parity
    from loopml.features.registry_view import latest_features_manifest, manifest_tables
    from loopml.features.store import open_online_store

    ws = open_project(project)
    manifest = latest_features_manifest(ws)
    sources = manifest_tables(ws, manifest, "source_digest")
    pipe = _load_transform(ws, transform)
    store = open_online_store(ws.spec.features.online_store, ws.project_dir)
    vectors = None
    try:
        with console.status("recomputing offline…"):
            report = check_parity(store, sources, sample=sample, seed=seed)
            if pipe is not None:
                from loopml.features.parity import check_vector_parity
                from loopml.features.registry_view import latest_features_table

                found = latest_features_table(ws)
                if found is not None:
                    vectors = check_vector_parity(store, sources, found[1], manifest["timestamp"], pipe,
                                                  sample=min(sample, 200), seed=seed)
    finally:
        store.close()
    ok = report.ok and (vectors is None or vectors.ok)
    if as_json:
        typer.echo(json.dumps({**report.to_json(), "ok": ok,
                               "vectors": None if vectors is None else vectors.to_json()}, indent=2, default=str))
    else:
        console.print(table("parity", ["table", "entities compared", "differences"],
                            [(t, n, sum(m.table == t for m in report.mismatches)) for t, n in report.checked.items()]))
        if report.mismatches:
            console.print(table("differences (first 30)", ["table", "entity", "feature", "online", "offline"],
                                [(m.table, m.entity.replace("\x1f", ","), m.feature, m.online, m.offline)
                                 for m in report.mismatches[:30]]))
        else:
            console.print("[green]online values match the offline recomputation[/green]")
        if vectors is None:
            console.print("model-input vectors: not compared (no fitted transform; pass --transform or train first)")
        else:
            console.print(f"model-input vectors: {vectors.compared} rows compared, "
                          f"{len(vectors.mismatches)} differing value(s)")
            if vectors.mismatches:
                console.print(table("vector differences (first 30)", ["example row", "column", "online", "offline"],
                                    [(m.row, m.column, m.online, m.offline) for m in vectors.mismatches[:30]]))
    if not ok:
        raise typer.Exit(1)


def _load_transform(ws: Any, ref: str | None) -> Any:
    """A fitted FeaturePipeline from a file, an artifact digest, or the newest one training stored (or None)."""
    from loopml.features import FeaturePipeline
    from loopml.features.registry_view import latest_transform

    if ref is not None and Path(ref).is_file():
        return FeaturePipeline.from_json(json.loads(Path(ref).read_text()))
    if ref is not None:
        info = ws.artifact_info(ref)
        return FeaturePipeline.from_json(json.loads(ws.artifacts.get_bytes(info["digest"])))
    found = latest_transform(ws)
    return None if found is None else FeaturePipeline.from_json(found[1])


@app.command("lookup")
def lookup(
    table_name: str = typer.Argument(..., help="Feature table name (a key of features.tables)."),
    keys: list[str] = typer.Argument(..., help="Entity keys; for multi-column entities join parts with commas."),
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder."),
    as_json: bool = typer.Option(False, "--json", help=json_help("features lookup") + " Each row: key, found, "
                                 "event_time, values."),
) -> None:
    """Read entities' feature values from the online store (as serving does).

    Examples:

      loopml features lookup user_stats 42 17 -p shop
    """
    import time

    from loopml.features.store import open_online_store

    ws = open_project(project)
    spec = ws.spec.features.tables.get(table_name)
    if spec is None:
        raise NotFound(f"feature table `{table_name}` is not declared (features.tables: "
                       f"{', '.join(ws.spec.features.tables) or 'none'})")
    parsed = [tuple(k.split(",")) if len(spec.entity) > 1 else k for k in keys]
    for p in parsed:
        if isinstance(p, tuple) and len(p) != len(spec.entity):
            raise DataError(f"key {','.join(p)!r}: table `{table_name}` is keyed by {', '.join(spec.entity)} "
                            f"({len(spec.entity)} parts)")
    store = open_online_store(ws.spec.features.online_store, ws.project_dir)
    try:
        got = store.read(table_name, parsed)
    finally:
        store.close()
    names = sorted({k for g in got if g for k in g if not k.startswith("_")})
    if as_json:
        emit("features lookup", {"table": table_name, "rows": [
            {"key": k, "found": g is not None, "event_time": None if g is None else g["_event_time"],
             "values": None if g is None else {n: g.get(n) for n in names}} for k, g in zip(keys, got, strict=True)]})
        return
    now = time.time()
    rows = []
    for k, g in zip(keys, got):
        if g is None:
            rows.append((k, "missing or expired", "", *[""] * len(names)))
        else:
            ev = dt.datetime.fromtimestamp(g["_event_time"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            rows.append((k, ev, f"{(now - g['_event_time']) / 86400:.1f}", *[g.get(n) for n in names]))
    console.print(table(f"online features: {table_name}", ["key", "event time (UTC)", "age days", *names], rows))
