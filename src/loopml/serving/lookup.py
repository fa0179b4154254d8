"""Reads from the online store on the request path: entity features and precomputed predictions.

``FeatureLookup`` fills the fields a request did not send from the entity feature tables
declared in ``spec.features.tables`` (request values win). ``PrecomputedLookup`` answers from
the predictions ``loopml predict --batch`` wrote into the online store, keyed by the task's
entity keys. Both go through the :class:`loopml.features.store` ``OnlineStore`` protocol
(``read(table_name, keys) -> list[dict | None]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from loopml.serving.schema import RequestInvalid

#: online-store table holding batch predictions
PRECOMPUTED_TABLE = "loopml_predictions"


class StoreReader(Protocol):
    """The read half of the online store protocol."""

    def read(self, table_name: str, keys: list[Any]) -> list[dict[str, Any] | None]:
        """Values of each key (``None`` for an unknown key)."""
        ...


@dataclass(frozen=True)
class EntityTable:
    """One entity feature table: its keys and the feature names it provides."""

    name: str
    keys: tuple[str, ...]
    features: tuple[str, ...]


def _missing_key(table: str, key: str, index: int | None) -> RequestInvalid:
    loc: list[Any] = ["body", key] if index is None else ["body", index, key]
    return RequestInvalid(
        f"entity key `{key}` is needed to fetch the features of table `{table}`",
        [{"loc": loc, "field": key, "value": None, "expected": "the entity key value", "msg": f"missing entity key `{key}`"}],
    )


class FeatureLookup:
    """Fills request rows with online features by entity key.

    Parameters
    ----------
    store
        The online store.
    tables
        The entity tables whose features the model reads.
    """

    def __init__(self, store: StoreReader, tables: list[EntityTable]) -> None:
        self.store = store
        self.tables = tables
        self.available = frozenset(f for t in tables for f in t.features)
        self.entity_keys = sorted({k for t in tables for k in t.keys})

    def _key(self, t: EntityTable, row: dict[str, Any], index: int | None) -> Any:
        try:
            if len(t.keys) == 1:
                return row[t.keys[0]]
            return tuple(row[k] for k in t.keys)
        except KeyError as exc:
            raise _missing_key(t.name, str(exc.args[0]), index) from None

    def fill(self, row: dict[str, Any]) -> None:
        """Add the table features missing from ``row`` (in place)."""
        for t in self.tables:
            if all(f in row for f in t.features):
                continue
            found = self.store.read(t.name, [self._key(t, row, None)])[0] or {}
            # an entity the store does not know (a new user or ad, or a value past its TTL) has no
            # history: its features are missing, exactly as the point-in-time join gives NULL for it
            # in training, and the fitted transform imputes them the same way
            for f in t.features:
                if f not in row:
                    row[f] = found.get(f)

    def fill_many(self, rows: list[Any]) -> None:
        """Add missing features to many rows with one store read per table."""
        for t in self.tables:
            need = [i for i, r in enumerate(rows) if isinstance(r, dict) and not all(f in r for f in t.features)]
            if not need:
                continue
            found = self.store.read(t.name, [self._key(t, rows[i], i) for i in need])
            for i, rec in zip(need, found):
                values = rec or {}  # unknown entity: missing features (see fill)
                for f in t.features:
                    if f not in rows[i]:
                        rows[i][f] = values.get(f)


class PrecomputedLookup:
    """Batch predictions by entity key (written by ``loopml predict --batch``)."""

    def __init__(self, store: StoreReader, keys: list[str], table: str = PRECOMPUTED_TABLE) -> None:
        self.store = store
        self.keys = tuple(keys)
        self.table = table
        self._keyset = frozenset(keys)

    def only_keys(self, row: dict[str, Any]) -> bool:
        """Whether a row carries the entity keys and nothing else (so it asks for the precomputed answer)."""
        return bool(self._keyset) and row.keys() == self._keyset

    def key_of(self, row: Any) -> Any:
        """The store key of a row."""
        if not isinstance(row, dict):
            raise RequestInvalid("each row must be an object", [{"loc": ["body"], "field": None, "value": None, "expected": "object", "msg": "not an object"}])
        try:
            return row[self.keys[0]] if len(self.keys) == 1 else tuple(row[k] for k in self.keys)
        except KeyError as exc:
            raise _missing_key(self.table, str(exc.args[0]), None) from None

    def get_many(self, rows: list[Any]) -> list[dict[str, Any] | None]:
        """The precomputed records of ``rows`` (``None`` where absent)."""
        return self.store.read(self.table, [self.key_of(r) for r in rows])
