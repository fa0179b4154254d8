"""Serving-side helper: add the online feature values of a request's entities to its raw row.

>>> # doctest: +SKIP
>>> online = OnlineFeatures.from_workspace(ws)          # tables from the spec, store from the spec
>>> x = bundle.transform.transform_row(online.enrich({"user_id": 7, "ad_id": 3, "position": 1}))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loopml.errors import DataError
from loopml.features.offline import feature_columns
from loopml.spec.features import FeatureTable


class OnlineFeatures:
    """Looks up each declared feature table by the entity keys found in a request row.

    Missing or expired entities give ``None`` for each of that table's features (the fitted
    transforms then treat them as missing values, exactly as the point-in-time join left
    examples without history).
    """

    def __init__(self, tables: Mapping[str, FeatureTable], store: Any,
                 feature_names: Mapping[str, Sequence[str]] | None = None) -> None:
        self.store = store
        self._plan: list[tuple[str, list[str], list[str]]] = []
        for name, spec in tables.items():
            names = list((feature_names or {}).get(name) or feature_columns(spec))
            self._plan.append((name, list(spec.entity), names))

    @classmethod
    def from_workspace(cls, ws: Any) -> OnlineFeatures:
        """Tables and online store of a workspace's spec (feature names of SQL tables from the last run)."""
        from loopml.features.store import open_online_store

        names: dict[str, list[str]] = {}
        if any(t.sql is not None for t in ws.spec.features.tables.values()):
            from loopml.features.registry_view import latest_features_manifest

            names = {k: v["features"] for k, v in latest_features_manifest(ws)["tables"].items()}
        store = open_online_store(ws.spec.features.online_store, ws.project_dir)
        return cls(ws.spec.features.tables, store, names)

    @property
    def feature_names(self) -> list[str]:
        """Every feature column this helper adds."""
        return [f for _, _, feats in self._plan for f in feats]

    def enrich_many(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Rows with their entities' online feature values added (one store read per table)."""
        out = [dict(r) for r in rows]
        for name, keys, feats in self._plan:
            try:
                ids = [tuple(r[k] for k in keys) for r in rows]
            except KeyError as exc:
                raise DataError(f"request row has no entity key `{exc.args[0]}` needed by feature table "
                                f"`{name}`") from None
            for row, got in zip(out, self.store.read(name, ids)):
                for f in feats:
                    row[f] = None if got is None else got.get(f)
        return out

    def enrich(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """One row with its entities' online feature values added."""
        return self.enrich_many([row])[0]

    def close(self) -> None:
        """Close the store."""
        self.store.close()
