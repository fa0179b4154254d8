"""The project workspace (``.loopml/``): metadata database, artifact store and data lake.

>>> import tempfile
>>> from loopml.workspace import Workspace
>>> ws = Workspace.open(tempfile.mkdtemp())
>>> digest = ws.put_artifact_bytes(b"hello", kind="note", name="greeting")
>>> ws.artifacts.get_bytes(digest)
b'hello'
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from loopml.errors import NotFound, WorkspaceError
from loopml.spec import Spec
from loopml.workspace.artifacts import ArtifactStore, sha256_bytes, sha256_file
from loopml.workspace.lock import RunLock
from loopml.workspace.metadata import artifacts as artifacts_table
from loopml.workspace.metadata import make_engine


def utcnow() -> dt.datetime:
    """Timezone-aware now, in UTC."""
    return dt.datetime.now(dt.UTC)


class Workspace:
    """Handle on a project folder: its spec, metadata engine, artifact store and lake."""

    def __init__(self, project_dir: Path, spec: Spec, engine: Engine) -> None:
        self.project_dir = project_dir
        self.spec = spec
        self.engine = engine
        self.root = project_dir / spec.workspace.path
        self.artifacts = ArtifactStore(self.root / "artifacts")
        self.lake = self.root / "lake"
        self.lake.mkdir(parents=True, exist_ok=True)
        self.reports = self.root / "reports"
        self.reports.mkdir(parents=True, exist_ok=True)

    @classmethod
    def open(cls, project_dir: str | Path, spec: Spec | None = None) -> Workspace:
        """Open (creating if needed) the workspace of a project folder."""
        pdir = Path(project_dir).resolve()
        if spec is None:
            from loopml.spec import SPEC_FILENAME, load_spec

            spec = load_spec(pdir / SPEC_FILENAME) if (pdir / SPEC_FILENAME).exists() else Spec()
        root = pdir / spec.workspace.path
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(f"cannot create workspace folder {root}: {exc.strerror}") from None
        url = spec.workspace.metadata_url or f"sqlite:///{root / 'metadata.sqlite'}"
        try:
            engine = make_engine(url)
        except Exception as exc:  # SQLAlchemy raises many types; name the URL once
            raise WorkspaceError(f"cannot open metadata database {url!r}: {exc}") from None
        return cls(pdir, spec, engine)

    def lock(self, wait_s: float = 0.0) -> RunLock:
        """The run lock of this workspace."""
        return RunLock(self.root / "run.lock", wait_s=wait_s)

    def resolve(self, path: str | Path) -> Path:
        """A path from the spec, relative to the project folder."""
        p = Path(path)
        return p if p.is_absolute() else self.project_dir / p

    # -- reports -----------------------------------------------------------------------------
    def publish_report(self, name: str, content: str | bytes, *, execution_id: str | None = None) -> Path:
        """Write a report of the run that ``execution_id`` belongs to as ``reports/<run_id>/<name>`` (kept: later
        runs never overwrite it) and as ``reports/<name>`` (the latest). Returns the per-run path (the latest
        path when the execution is unknown, e.g. a report made outside a run)."""
        from sqlalchemy import select as _select

        from loopml.workspace.metadata import executions

        data = content.encode("utf-8") if isinstance(content, str) else content
        run_id = None
        if execution_id:
            with self.engine.connect() as conn:
                run_id = conn.execute(
                    _select(executions.c.run_id).where(executions.c.execution_id == execution_id)
                ).scalar()
        targets = [self.reports / name]
        if run_id:
            targets.insert(0, self.reports / str(run_id) / name)
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return targets[0]

    # -- artifacts ---------------------------------------------------------------------------
    def _record(self, digest: str, size: int, kind: str, name: str, producer: str | None, meta: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(select(artifacts_table.c.digest).where(artifacts_table.c.digest == digest)).first()
            if exists is None:
                conn.execute(
                    insert(artifacts_table).values(
                        digest=digest,
                        kind=kind,
                        name=name,
                        size=size,
                        relpath=str(self.artifacts.path_of(digest).relative_to(self.root)),
                        created_at=utcnow(),
                        producer=producer,
                        meta=meta,
                    )
                )

    def put_artifact_bytes(
        self, data: bytes, *, kind: str, name: str, producer: str | None = None, meta: dict[str, Any] | None = None
    ) -> str:
        """Store bytes as an artifact and record who produced it."""
        digest = self.artifacts.put_bytes(data)
        self._record(digest, len(data), kind, name, producer, meta or {})
        return digest

    def put_artifact_file(
        self,
        path: str | Path,
        *,
        kind: str,
        name: str,
        producer: str | None = None,
        meta: dict[str, Any] | None = None,
        move: bool = False,
    ) -> str:
        """Store a file as an artifact and record who produced it."""
        size = Path(path).stat().st_size
        digest = self.artifacts.put_file(path, move=move)
        self._record(digest, size, kind, name, producer, meta or {})
        return digest

    def artifact_info(self, ref: str) -> dict[str, Any]:
        """The metadata row of an artifact, by full digest or unique prefix (at least 6 characters)."""
        with self.engine.connect() as conn:
            if len(ref) < 6:
                raise NotFound(f"artifact `{ref}`: give at least 6 characters of the digest")
            rows = conn.execute(select(artifacts_table).where(artifacts_table.c.digest.like(f"{ref}%"))).mappings().all()
        if not rows:
            raise NotFound(f"artifact `{ref}` not found", hint="`loopml runs` lists executions and their outputs")
        if len(rows) > 1:
            raise NotFound(f"artifact prefix `{ref}` is ambiguous ({len(rows)} matches); give more characters")
        return dict(rows[0])


__all__ = ["ArtifactStore", "RunLock", "Workspace", "sha256_bytes", "sha256_file", "utcnow"]
