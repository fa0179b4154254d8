"""Batch scoring on Ray Data (``deployment.batch_executor: ray`` or ``loopml predict --executor ray``).

The Parquet input is read by Ray Data (``ray.data.read_parquet``: files, a folder, a snapshot chain, an
artifact), cut into blocks of ``chunk_rows`` and scored by ``map_batches`` on a pool of actors; each
actor reopens the project's workspace and loads the version the way ``loopml predict`` does (checksums
verified), then scores Arrow batches with :func:`loopml.serving.batch.scored_table`, the in-process
path's own code. Blocks come back in input order and are written by the caller into the same
predictions file (and online store) as the in-process path, so the two give the same rows and scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from loopml.errors import DataError
from loopml.serving.servable import Servable

_PARQUET = {".parquet", ".pq", ""}


def parquet_files(input_path: Path | list[Path]) -> list[str]:
    """The Parquet files of the input, in the order the in-process path reads them (a CSV/JSON file: an error)."""
    paths = input_path if isinstance(input_path, list) else [input_path]
    files: list[str] = []
    for p in paths:
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*.parquet"))
            if not found:
                raise DataError(f"{p}: the folder holds no .parquet file to score")
            files.extend(found)
        elif p.suffix.lower() in _PARQUET:
            files.append(str(p))
        else:
            raise DataError(
                f"{p}: batch scoring on Ray reads Parquet (files, folders, snapshots, artifacts), not "
                f"`{p.suffix}`", hint="convert it to Parquet, or score it with --executor inprocess")
    return files


class _Scorer:
    """A Ray Data actor: loads the version once, then scores Arrow batches."""

    def __init__(self, project_dir: str, version_id: str, bundle_digest: str, copied: list[str]) -> None:
        from loopml.serving.sources import load_version
        from loopml.workspace import Workspace

        ws = Workspace.open(project_dir)
        self.servable = load_version(ws, version_id, bundle_digest, batch_threads=1)
        self.copied = copied

    def __call__(self, batch: pa.Table) -> pa.Table:
        from loopml.serving.batch import scored_table

        return scored_table(self.servable, batch, self.copied)


def ray_scored_tables(servable: Servable, project_dir: Path, input_path: Path | list[Path], *, chunk_rows: int,
                      keys: list[str], keep_columns: list[str]) -> tuple[int, Iterator[pa.Table]]:
    """The row count and the scored blocks, in input order, of ``input_path`` scored on Ray Data."""
    from loopml.pipeline.executors import connect_ray

    if servable.bundle_digest is None:
        raise DataError(f"model version {servable.version_id}: no bundle digest, so Ray actors cannot load it")
    files = parquet_files(input_path)
    connect_ray()
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # blocks come back in input order
    ctx.enable_progress_bars = False
    try:
        ds = ray.data.read_parquet(files, file_extensions=None)
        names = ds.schema().names
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"{input_path}: cannot be read as Parquet: {exc}") from None
    copied = [*keys, *keep_columns]
    missing = [k for k in copied if k not in names]
    if missing:
        raise DataError(f"{input_path}: columns {', '.join(missing)} are missing (columns: {', '.join(names)})")
    total = int(ds.count())
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))  # type: ignore[no-untyped-call]
    scored = ds.map_batches(
        _Scorer,
        fn_constructor_kwargs={"project_dir": str(Path(project_dir).resolve()), "version_id": servable.version_id,
                               "bundle_digest": servable.bundle_digest, "copied": copied},
        batch_format="pyarrow", batch_size=chunk_rows, concurrency=(1, cpus), num_cpus=1,
    )

    def blocks() -> Iterator[pa.Table]:
        for block in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
            if isinstance(block, pa.Table) and block.num_rows:
                yield block

    return total, blocks()

