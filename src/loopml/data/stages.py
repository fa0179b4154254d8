"""The ``ingest`` stage: sources → ETL → labels → privacy → an immutable lake snapshot.

Outputs ``table`` (Parquet of the full example table) and ``manifest`` (JSON). Unchanged
sources are a runner cache hit (their file stats are the stage fingerprint); new files in a
glob source give a ``delta`` snapshot with only the new rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from loopml.data.etl import EtlResult, base_source, build_examples, describe_schema, stream_examples, streams
from loopml.data.privacy import key_fingerprint, privacy_summary
from loopml.data.snapshots import (
    Snapshot,
    chain,
    clean_lake,
    latest_for_config,
    provenance_path,
    read_provenance,
    read_snapshot,
    write_snapshot,
)
from loopml.data.sources import reader_for, source_fingerprint
from loopml.errors import DataError, LoopMLError
from loopml.pipeline import BaseStage, StageContext, StageResult, register_stage
from loopml.pipeline.stage import stable_hash
from loopml.spec import Spec
from loopml.spec.data import ClickWithinWindow
from loopml.workspace import Workspace, sha256_file


def ingest_config(spec: Spec) -> dict[str, Any]:
    """The part of the spec an ingestion depends on (verification settings excluded)."""
    return {
        "data": spec.data.model_dump(mode="json", exclude={"verification"}),
        "privacy": spec.requirements.privacy.model_dump(mode="json"),
    }


def _files_with_hashes(files: list[Path], known: dict[tuple[str, int, int], str] | None = None) -> list[dict[str, Any]]:
    """Path, size, mtime and sha256 of each file; a file whose path, size and mtime are unchanged since
    the previous snapshot keeps its recorded hash (old files of a growing glob are not read again)."""
    out = []
    for f in files:
        st = f.stat()
        key = (str(f), st.st_size, st.st_mtime_ns)
        digest = (known or {}).get(key) or sha256_file(f)
        out.append({"path": str(f), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest})
    return out


def _known_hashes(prev: Snapshot | None) -> dict[tuple[str, int, int], str]:
    if prev is None:
        return {}
    return {
        (f["path"], f["size"], f["mtime_ns"]): f["sha256"]
        for src in prev.manifest.get("sources", {}).values()
        for f in src.get("files", [])
        if f.get("sha256")
    }


def _source_files(spec: Spec, project_dir: Path) -> dict[str, list[Path]]:
    return {n: reader_for(s).files(n, s, project_dir) for n, s in spec.data.sources.items()}


def _same_file(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["path"] == b["path"] and a["size"] == b["size"] and a.get("sha256") == b.get("sha256")


def plan_increment(
    spec: Spec, prev: Snapshot | None, current: dict[str, list[dict[str, Any]]], hand_sha: str | None = None
) -> str | list[str]:
    """How to ingest given the previous snapshot of the same configuration.

    Returns ``"full"`` (rebuild everything), ``"reuse"`` (nothing changed: keep the previous
    snapshot) or the list of new files of the base source (a ``delta`` snapshot).
    """
    if prev is None:
        return "full"
    before: dict[str, list[dict[str, Any]]] = {
        n: v.get("files", []) for n, v in prev.manifest.get("sources", {}).items()
    }
    if set(before) != set(current) or prev.manifest.get("hand_labels_sha256") != hand_sha:
        return "full"

    def unchanged(n: str) -> bool:
        old, new = before[n], current[n]
        return len(old) == len(new) and all(_same_file(a, b) for a, b in zip(old, new))

    remote = any(spec.data.sources[n].type == "sql" and not current[n] for n in current)
    if remote:
        return "full"  # a remote query cannot be fingerprinted: re-read; identical content is deduplicated
    if all(unchanged(n) for n in current):
        return "reuse"
    if not spec.data.incremental or spec.data.transform or isinstance(spec.data.labels, ClickWithinWindow):
        return "full"
    base = base_source(spec)
    if base is None or not reader_for(spec.data.sources[base]).supports_incremental:
        return "full"
    if any(n != base and not unchanged(n) for n in current):
        return "full"
    old, new = before[base], current[base]
    if not all(any(_same_file(f, g) for g in new) for f in old):
        return "full"  # a file changed or disappeared: rebuild
    old_paths = {f["path"] for f in old}
    added = [f["path"] for f in new if f["path"] not in old_paths]
    return added or "reuse"


@register_stage
class IngestStage(BaseStage):
    """Read the sources, build the example table, apply privacy and write a lake snapshot."""

    name = "ingest"
    order = 10
    requires = ()
    description = "sources → ETL → natural labels → privacy → immutable lake snapshot"

    @classmethod
    def enabled(cls, spec: Spec) -> bool:
        return bool(spec.data.sources)

    def config(self, spec: Spec) -> Any:
        return ingest_config(spec)

    def fingerprint(self, ws: Workspace) -> Any:
        fp: dict[str, Any] = {}
        try:
            for name, source in ws.spec.data.sources.items():
                fp[name] = source_fingerprint(name, source, ws.project_dir)
            hand = ws.spec.data.hand_labels
            if hand is not None:
                p = ws.resolve(hand.path)
                fp["__hand_labels"] = [p.stat().st_size, p.stat().st_mtime_ns] if p.exists() else None
            fp["__key"] = key_fingerprint(ws.spec.requirements.privacy)
        except LoopMLError as exc:
            # run the stage anyway so that the error is raised and recorded by the execution
            fp["__error"] = str(exc)
        return fp

    def run(self, ctx: StageContext) -> StageResult:
        ws, spec = ctx.workspace, ctx.spec
        clean_lake(ws)
        config_hash = stable_hash({**ingest_config(spec), "key": key_fingerprint(spec.requirements.privacy)})
        files = _source_files(spec, ws.project_dir)
        prev = latest_for_config(ws, config_hash)
        known = _known_hashes(prev)
        current = {n: _files_with_hashes(f, known) for n, f in files.items()}
        hand = spec.data.hand_labels
        hand_sha = sha256_file(ws.resolve(hand.path)) if hand is not None and ws.resolve(hand.path).is_file() else None
        plan = plan_increment(spec, prev, current, hand_sha)
        extra: dict[str, Any] = {
            "sources": {
                n: {"type": s.type, "files": current[n], **({"query": s.query} if s.type == "sql" else {})}
                for n, s in spec.data.sources.items()
            },
            "transform": spec.data.transform,
            "labels": spec.data.labels.model_dump(mode="json") if spec.data.labels else None,
            "hand_labels": spec.data.hand_labels.model_dump(mode="json") if spec.data.hand_labels else None,
            "hand_labels_sha256": hand_sha,
            "privacy": privacy_summary(spec.requirements.privacy),
        }
        new_rows: int
        if plan == "reuse" and prev is not None:
            snap = prev
            new_rows = 0
        elif isinstance(plan, list) and prev is not None:
            base = base_source(spec) or ""
            delta = self._examples(ctx, files={base: [Path(p) for p in plan]}, only=[base])
            if describe_schema(delta.output) != prev.manifest["schema"]:
                if delta.written is not None:
                    _discard(delta.written.data, delta.written.provenance)
                snap = self._full(ctx, spec, config_hash, extra, prev)
                new_rows = snap.row_count
            else:
                snap = write_snapshot(
                    ws, delta.output, kind="delta", parent=prev, config_hash=config_hash,
                    execution_id=ctx.execution_id,
                    manifest_extra={**extra, "new_files": plan, "source_rows": delta.source_rows,
                                    "files_read": delta.files, "notes": delta.notes},
                    provenance=delta.provenance,
                )
                new_rows = snap.row_count
        else:
            snap = self._full(ctx, spec, config_hash, extra, prev)
            new_rows = snap.row_count
        if ctx.show_progress:
            print_accounting("ingest", snap.manifest.get("files_read", {}), snap.manifest.get("notes", []))
        return self._outputs(ctx, snap, new_rows)

    @staticmethod
    def _progress(ctx: StageContext) -> Any:
        def wrap(items: list[tuple[str, Any]]) -> Any:
            return ctx.progress(items, total=len(items), description="reading sources")

        return wrap

    def _examples(self, ctx: StageContext, **kwargs: Any) -> EtlResult:
        """The examples: streamed to a temporary Parquet file when the spec allows (a Parquet base source, no
        transform), so that ingestion holds a bounded number of rows; else built as one table."""
        spec, project_dir = ctx.spec, ctx.workspace.project_dir
        if not streams(spec):
            return build_examples(spec, project_dir, progress=self._progress(ctx), **kwargs)
        from loopml.pipeline.resources import spare_memory_mb

        out, prov = ctx.temp_path(".parquet"), ctx.temp_path(".parquet")
        try:
            return stream_examples(spec, project_dir, out, provenance_out=prov, progress=self._progress(ctx),
                                   memory_mb=spare_memory_mb(spec, self.name), **kwargs)
        except BaseException:
            _discard(out, prov)
            raise

    def _full(
        self, ctx: StageContext, spec: Spec, config_hash: str, extra: dict[str, Any], prev: Snapshot | None
    ) -> Snapshot:
        result = self._examples(ctx)
        if result.output.num_rows == 0:
            raise DataError("data: the example table is empty after ETL and labels; nothing to snapshot")
        return write_snapshot(
            ctx.workspace, result.output, kind="full", parent=prev, config_hash=config_hash,
            execution_id=ctx.execution_id,
            manifest_extra={**extra, "source_rows": result.source_rows, "files_read": result.files,
                            "notes": result.notes},
            same_as=prev, provenance=result.provenance,
        )

    def _outputs(self, ctx: StageContext, snap: Snapshot, new_rows: int) -> StageResult:
        ws = ctx.workspace
        parts = chain(ws, snap)
        if len(parts) == 1:
            p = snap.path(ws)
            if sha256_file(p) != snap.sha256:
                from loopml.errors import IntegrityError

                raise IntegrityError(f"snapshot `{snap.snapshot_id}`: {p} does not match its recorded sha256")
            table_digest = ctx.put_file(p, kind="table", name="examples", meta={"snapshot": snap.snapshot_id})
        else:
            tmp = ctx.temp_path(".parquet")
            pq.write_table(read_snapshot(ws, snap), tmp, compression="zstd")
            table_digest = ctx.put_file(tmp, kind="table", name="examples", meta={"snapshot": snap.snapshot_id},
                                        move=True)
        manifest = {**snap.manifest, "chain": [s.snapshot_id for s in parts]}
        manifest_digest = ctx.put_bytes(
            json.dumps(manifest, indent=2, sort_keys=True, default=str).encode(), kind="manifest", name="snapshot"
        )
        outputs = {"table": table_digest, "manifest": manifest_digest}
        if len(parts) == 1 and provenance_path(ws, snap).exists():
            outputs["provenance"] = ctx.put_file(provenance_path(ws, snap), kind="table", name="provenance")
        elif len(parts) > 1:
            prov = read_provenance(ws, snap)
            if prov is not None:
                tmp = ctx.temp_path(".parquet")
                pq.write_table(prov, tmp, compression="zstd")
                outputs["provenance"] = ctx.put_file(tmp, kind="table", name="provenance", move=True)
        return StageResult(
            outputs=outputs,
            summary={
                "snapshot": snap.snapshot_id,
                "kind": snap.kind,
                "rows": snap.total_rows,
                "new_rows": new_rows,
                "columns": len(snap.manifest["schema"]),
                "files": snap.manifest.get("files_read", {}),
                "notes": snap.manifest.get("notes", []),
            },
        )


def _discard(*paths: Path | None) -> None:
    for p in paths:
        if p is not None:
            p.unlink(missing_ok=True)


def accounting_lines(files: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per source file: rows read = rows kept + rows quarantined."""
    out = []
    for name, entries in files.items():
        for f in entries:
            if f.get("kept") is None:
                out.append(f"{name}: {f['file']}: {f['rows']:,} rows read (joined, not examples themselves)")
            else:
                other = f["rows"] - f["kept"] - f.get("quarantined", 0)
                out.append(f"{name}: {f['file']}: {f['rows']:,} rows read = {f['kept']:,} kept + "
                           f"{f.get('quarantined', 0):,} quarantined" + (f" + {other:,} dropped by the label rule"
                                                                          if other else ""))
    return out


def print_accounting(stage: str, files: dict[str, list[dict[str, Any]]], notes: list[str]) -> None:
    """The terminal report of an ingestion: notes and the row accounting per source file."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True)
    for n in notes:
        console.print(f"[yellow]note[/yellow] {escape(n)}")
    for line in accounting_lines(files):
        console.print(f"{stage}: {escape(line)}")


__all__ = ["IngestStage", "ingest_config", "plan_increment"]
