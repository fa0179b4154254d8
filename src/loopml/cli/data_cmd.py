"""`loopml data`: snapshots, show, profile, validate, infer-schema, quarantine."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import typer

from loopml.cli.project import open_project
from loopml.cli.shapes import emit, json_help
from loopml.cli.ui import console, fmt_time, table

app = typer.Typer(
    help="Inspect lake snapshots, profile and validate them, infer the schema, list quarantined rows.",
    no_args_is_help=True,
)

PROJECT = typer.Option(Path("."), "--project", "-p", help="Project folder (holding loopml.yaml).")


def _ws(project: Path):  # type: ignore[no-untyped-def]

    return open_project(project)


@app.command("snapshots")
def snapshots(
    project: Path = PROJECT,
    limit: int = typer.Option(20, "--limit", help="How many snapshots to list (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per snapshot (its manifest)."),
) -> None:
    """List the lake's snapshots, newest first: id, kind, parent, rows, columns, sha256.

    Examples:

      loopml data snapshots -p shop
      loopml data snapshots -p shop --json
    """
    from loopml.data.snapshots import list_snapshots

    snaps = list_snapshots(_ws(project), limit)
    if as_json:
        for s in snaps:
            typer.echo(json.dumps(s.manifest, default=str))
        return
    if not snaps:
        console.print("no snapshots yet; `loopml run --until ingest` creates the first one")
        return
    console.print(
        table(
            "snapshots",
            ["snapshot", "version", "kind", "parent", "created", "rows", "total rows", "columns", "sha256"],
            [
                (s.snapshot_id, s.version, s.kind, s.parent_id or "", fmt_time(s.created_at), f"{s.row_count:,}",
                 f"{s.total_rows:,}", len(s.manifest.get("schema", [])), s.sha256[:12])
                for s in snaps
            ],
        )
    )


@app.command("show")
def show(
    snapshot: str = typer.Argument(..., help="Snapshot id, unique prefix, version number (v3) or `latest`."),
    project: Path = PROJECT,
    head: int = typer.Option(5, "--head", "-n", help="How many first rows to print."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON instead of tables."),
) -> None:
    """Show one snapshot: manifest, schema with missing counts, the first rows and its sources.

    Examples:

      loopml data show latest -p shop -n 10
      loopml data show v3 -p shop --json
    """
    from loopml.data.snapshots import chain, get_snapshot, read_snapshot

    ws = _ws(project)
    snap = get_snapshot(ws, snapshot)
    if as_json:
        typer.echo(json.dumps(snap.manifest, indent=2, default=str))
        return
    data = read_snapshot(ws, snap)
    parts = chain(ws, snap)
    console.print(
        f"[bold]{snap.snapshot_id}[/bold] ({snap.kind}) created {fmt_time(snap.created_at)}: "
        f"{snap.row_count:,} new rows, {data.num_rows:,} rows in total over {len(parts)} snapshot(s), "
        f"sha256 {snap.sha256[:16]}…"
    )
    console.print(
        table(
            "schema",
            ["column", "type", "nullable", "missing"],
            [(f.name, str(f.type), f.nullable, f"{data.column(f.name).null_count:,}") for f in data.schema],
        )
    )
    head_rows = data.slice(0, head).to_pylist()
    if data.num_columns > 8:  # transposed: one line per column stays readable in a terminal
        console.print(
            table(f"first {len(head_rows)} rows (transposed)", ["column", *(f"row {i}" for i in range(len(head_rows)))],
                  [[c, *(r[c] for r in head_rows)] for c in data.column_names])
        )
    else:
        console.print(
            table(f"first {len(head_rows)} rows", data.column_names,
                  [[r[c] for c in data.column_names] for r in head_rows])
        )
    sources = snap.manifest.get("sources", {})
    console.print(
        table(
            "sources",
            ["source", "type", "files", "bytes", "rows read"],
            [
                (n, v.get("type"), len(v.get("files", [])), f"{sum(f['size'] for f in v.get('files', [])):,}",
                 f"{snap.manifest.get('source_rows', {}).get(n, 0):,}")
                for n, v in sources.items()
            ],
        )
    )
    files_read = snap.manifest.get("files_read", {})
    if files_read:
        console.print(
            table(
                "rows per source file (read = kept + quarantined at ingestion)",
                ["source", "file", "read", "kept", "quarantined"],
                [(n, f["file"], f"{f['rows']:,}", "joined" if f.get("kept") is None else f"{f['kept']:,}",
                  f"{f.get('quarantined', 0):,}") for n, fs in files_read.items() for f in fs],
            )
        )
    for note in snap.manifest.get("notes", []):
        console.print(f"note: {note}")


@app.command("profile")
def profile(
    snapshot: str = typer.Argument("latest", help="Snapshot id, prefix, version (v3) or `latest`."),
    project: Path = PROJECT,
    as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON."),
) -> None:
    """Profile a snapshot: type, missing rate, distinct count, min/max/mean/std and top values per column.

    Examples:

      loopml data profile -p shop
      loopml data profile v2 -p shop --json
    """
    from loopml.data.snapshots import get_snapshot, read_snapshot
    from loopml.validation.profile import profile_table
    from loopml.validation.report import profile_table_view
    from loopml.validation.validator import ValidationReport

    ws = _ws(project)
    snap = get_snapshot(ws, snapshot)
    with console.status(f"profiling {snap.snapshot_id}…") if not as_json else contextlib.nullcontext():
        p = profile_table(read_snapshot(ws, snap))
    if as_json:
        typer.echo(json.dumps(p.to_json(), indent=2, default=str))
        return
    view = ValidationReport(snap.snapshot_id, p.rows, p.rows, 0, [], p, None, "error")
    console.print(profile_table_view(view))


@app.command("infer-schema")
def infer_schema_cmd(
    snapshot: str = typer.Argument("latest", help="Reference snapshot: id, prefix, version (v3) or `latest`."),
    project: Path = PROJECT,
    force: bool = typer.Option(False, "--force", help="Overwrite an existing schema file."),
    as_json: bool = typer.Option(False, "--json", help=json_help("data infer-schema")),
) -> None:
    """Infer the schema file (data.verification.schema_path) and reference profile from a snapshot.

    Examples:

      loopml data infer-schema -p shop            # writes schema.yaml
      loopml data infer-schema v3 -p shop --force
    """
    from loopml.data.snapshots import get_snapshot, read_snapshot
    from loopml.errors import SpecError
    from loopml.validation.schema import infer_from_table, open_range_columns, profile_path, save_schema

    ws = _ws(project)
    settings = ws.spec.data.verification
    path = ws.resolve(settings.schema_path)
    if path.exists() and not force:
        raise SpecError(f"{path} already exists", hint="pass --force to overwrite it")
    snap = get_snapshot(ws, snapshot)
    with console.status(f"profiling {snap.snapshot_id}…"):
        schema, p = infer_from_table(
            read_snapshot(ws, snap), settings, timestamp=settings.timestamp or ws.spec.task.timestamp,
            open_range=open_range_columns(ws.spec), reference_snapshot=snap.snapshot_id,
        )
    save_schema(schema, path, p)
    if as_json:
        emit("data infer-schema", {"schema": str(path), "profile": str(profile_path(path)),
                                   "snapshot": snap.snapshot_id, "columns": sorted(schema.columns)})
        return
    console.print(
        f"wrote {path} ({len(schema.columns)} columns, {sum(1 for c in schema.columns.values() if c.domain)} "
        f"with a domain) and {profile_path(path).name} from {snap.snapshot_id}; edit and commit them"
    )


@app.command("validate")
def validate(
    snapshot: str = typer.Argument("latest", help="Snapshot id, prefix, version (v3) or `latest`."),
    project: Path = PROJECT,
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report instead of the table."),
    quarantine: bool = typer.Option(
        False, "--quarantine", help="Also record failing rows in the quarantine table (the pipeline always does)."
    ),
) -> None:
    """Validate a snapshot against the schema file and reference profile; exits non-zero when it fails.

    Examples:

      loopml data validate -p shop
      loopml data validate latest -p shop --json
    """
    from loopml.data.snapshots import get_snapshot, read_provenance, read_snapshot
    from loopml.errors import ValidationFailed
    from loopml.validation.quarantine import store_quarantine
    from loopml.validation.report import accounting_table, checks_table, write_reports
    from loopml.validation.schema import load_reference, load_schema
    from loopml.validation.validator import validate_table

    ws = _ws(project)
    settings = ws.spec.data.verification
    path = ws.resolve(settings.schema_path)
    schema = load_schema(path)
    snap = get_snapshot(ws, snapshot)
    with console.status(f"validating {snap.snapshot_id}…"):
        data = read_snapshot(ws, snap)
        prov = read_provenance(ws, snap)
        outcome = validate_table(data, schema, load_reference(path), settings, snapshot=snap.snapshot_id,
                                 provenance=prov if prov is not None and prov.num_rows == data.num_rows else None)
    report = outcome.report
    report.schema_path = str(path)
    jp, hp = write_reports(report, ws.reports, f"validation-{snap.snapshot_id}")
    if quarantine:
        store_quarantine(ws, outcome, execution_id=None, snapshot_id=snap.snapshot_id)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
    else:
        console.print(checks_table(report))
        console.print(accounting_table(report))
        console.print(f"reports: {hp} and {jp}")
    if not report.passed:
        raise ValidationFailed(
            f"snapshot {snap.snapshot_id} failed {len(report.failing())} check(s); report: {hp}"
        )


@app.command("quarantine")
def quarantine_cmd(
    project: Path = PROJECT,
    snapshot: str | None = typer.Option(None, "--snapshot", "-s", help="Only rows of this snapshot (id or prefix)."),
    check: str | None = typer.Option(None, "--check", "-c", help="Only rows that failed this check."),
    limit: int = typer.Option(50, "--limit", help="How many rows to list (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON lines."),
) -> None:
    """List quarantined rows: snapshot, row, check, column, value and reason (with counts per check).

    Examples:

      loopml data quarantine -p shop
      loopml data quarantine -p shop -c nullability --json
    """
    from loopml.validation.quarantine import list_quarantine, quarantine_counts

    ws = _ws(project)
    rows = list_quarantine(ws, snapshot_id=snapshot, check=check, limit=limit)
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r, default=str))
        return
    counts = quarantine_counts(ws, snapshot)
    if not counts:
        console.print("the quarantine is empty")
        return
    files = sorted((ws.lake / "quarantine").glob(f"{snapshot or ''}*.parquet"))
    if files:
        import pyarrow.parquet as pq

        console.print(
            table("complete quarantine files (every entry with its whole row)", ["snapshot", "entries", "file"],
                  [(f.stem, f"{pq.read_metadata(f).num_rows:,}", str(f)) for f in files])
        )
    console.print(table("quarantined rows per check", ["check", "column", "rows"],
                        [(c, col or "", f"{n:,}") for c, col, n in counts]))
    console.print(
        table(
            f"latest {len(rows)} quarantined rows",
            ["snapshot", "row", "check", "column", "value", "reason"],
            [(r["snapshot_id"] or "", r["row_index"], r["check"], r["column"] or "", r["value"], r["reason"])
             for r in rows],
        )
    )
