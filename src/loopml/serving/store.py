"""The bridge to the feature store: open the online store of a workspace, list its entity tables."""

from __future__ import annotations

import importlib
from typing import Any

from loopml.serving.lookup import EntityTable


def open_online_store(ws: Any) -> Any | None:
    """The workspace's online store (``loopml.features.store``), or ``None`` when that package is absent."""
    try:
        mod = importlib.import_module("loopml.features.store")
    except ImportError:
        return None
    opener = getattr(mod, "open_online_store", None) or getattr(mod, "open_store", None)
    if opener is None:
        return None
    return opener(ws)


def entity_tables(spec: Any) -> list[EntityTable]:
    """The entity feature tables of the spec, with the feature names each provides."""
    out: list[EntityTable] = []
    for name, t in spec.features.tables.items():
        feats = tuple(a.name for a in t.aggregations)
        if feats:
            out.append(EntityTable(name, tuple(t.entity), feats))
    return out
