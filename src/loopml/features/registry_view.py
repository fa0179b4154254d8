"""Finding what the last ``features`` stage produced (feature tables, sources) and the latest fitted transform."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import desc, select

from loopml.errors import NotFound
from loopml.spec.features import FeatureTable
from loopml.workspace import Workspace
from loopml.workspace.metadata import artifacts, executions


def latest_features_manifest(ws: Workspace) -> dict[str, Any]:
    """The ``feature_tables`` manifest of the newest successful ``features`` execution."""
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(executions.c.outputs, executions.c.execution_id)
            .where(executions.c.stage == "features", executions.c.status.in_(["success", "cached"]))
            .order_by(desc(executions.c.ended_at))
            .limit(20)
        ).all()
    for outputs, _ in rows:
        digest = (outputs or {}).get("feature_tables")
        if digest and ws.artifacts.exists(digest):
            data: dict[str, Any] = json.loads(ws.artifacts.get_bytes(digest))
            return data
    raise NotFound("no `features` stage output with feature tables in this workspace",
                   hint="declare features.tables in loopml.yaml and run `loopml run --until features`")


def manifest_tables(ws: Workspace, manifest: dict[str, Any], what: str) -> dict[str, tuple[FeatureTable, pa.Table]]:
    """(definition, table) per feature table; ``what`` is ``table_digest`` or ``source_digest``."""
    out = {}
    for name, entry in manifest["tables"].items():
        spec = FeatureTable.model_validate(entry["definition"])
        out[name] = (spec, pq.read_table(ws.artifacts.open_verified(entry[what])))
    return out


def latest_transform(ws: Workspace) -> tuple[str, dict[str, Any]] | None:
    """(digest, JSON) of the newest fitted feature transform stored by training, if any."""
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(artifacts.c.digest).where(artifacts.c.kind == "transform")
            .order_by(desc(artifacts.c.created_at)).limit(1)
        ).all()
    if not rows:
        return None
    digest = rows[0][0]
    return digest, json.loads(ws.artifacts.get_bytes(digest))


def latest_features_table(ws: Workspace) -> tuple[str, pa.Table] | None:
    """(digest, table) of the newest ``features.table`` output, if any."""
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(executions.c.outputs)
            .where(executions.c.stage == "features", executions.c.status.in_(["success", "cached"]))
            .order_by(desc(executions.c.ended_at)).limit(5)
        ).all()
    for (outputs,) in rows:
        d = (outputs or {}).get("table")
        if d and ws.artifacts.exists(d):
            return d, pq.read_table(ws.artifacts.open_verified(d))
    return None
