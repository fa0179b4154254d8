"""The bridge to the feature store: open the online store of a workspace, list its entity tables,
and write batch predictions into it for precomputed serving."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from loopml.serving.lookup import EntityTable


def open_online_store(ws: Any) -> Any:
    """The workspace's online store (``spec.features.online_store``), from ``loopml.features.store``."""
    from loopml.features.store import open_online_store as _open

    return _open(ws.spec.features.online_store, ws.project_dir)


def entity_tables(spec: Any) -> list[EntityTable]:
    """The entity feature tables of the spec, with the feature names each provides."""
    out: list[EntityTable] = []
    for name, t in spec.features.tables.items():
        feats = tuple(a.name for a in t.aggregations)
        if feats:
            out.append(EntityTable(name, tuple(t.entity), feats))
    return out


def prediction_writer(store: Any, keys: list[str]) -> Callable[[str, list[dict[str, Any]]], int]:
    """``write(table, rows)`` turning prediction rows (keys + score, prediction, version) into online records."""
    from loopml.features.store import OnlineRecord

    def write(table_name: str, rows: list[dict[str, Any]]) -> int:
        now = time.time()
        records = [
            OnlineRecord(
                key=tuple(r[k] for k in keys),
                values={"score": r["score"], "prediction": r["prediction"], "model_version": r["model_version"]},
                event_time=now,
                created_at=now,
            )
            for r in rows
        ]
        return int(store.write(table_name, records))

    return write
