"""The online feature store interface, its records, and the registry of backends.

A backend implements two methods::

    write(table_name, rows, ttl_seconds=None) -> int      # OnlineRecord rows, newest event time wins
    read(table_name, keys) -> list[dict | None]           # values + _event_time/_created_at, None if absent/expired

Backends live in :mod:`loopml.features.stores` and are chosen by ``features.online_store.type``
(``sqlite`` by default, ``redis``). An entity key is the tuple of its key columns' values in
canonical form, so ``7``, ``7.0`` and ``"7"`` address the same entity.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from loopml.errors import DataError, SpecError
from loopml.features.values import canon_category

KEY_SEP = "\x1f"


@dataclass(frozen=True)
class OnlineRecord:
    """The latest feature values of one entity of one table, with their event and creation time."""

    key: tuple[Any, ...]
    values: dict[str, Any]
    event_time: float  # epoch seconds
    created_at: float  # epoch seconds


def entity_key(key: Any) -> str:
    """Canonical string of an entity key (a scalar or a tuple of key values)."""
    parts = key if isinstance(key, tuple | list) else (key,)
    out = []
    for p in parts:
        c = canon_category(p, "entity key")
        if c is None:
            raise DataError(f"entity key {key!r} has a missing part")
        out.append(c)
    return KEY_SEP.join(out)


def expired(event_time: float, ttl_seconds: float | None, now: float | None = None) -> bool:
    """Whether a value stamped ``event_time`` is older than the table's TTL."""
    if ttl_seconds is None:
        return False
    return (time.time() if now is None else now) - event_time > ttl_seconds


@runtime_checkable
class OnlineStore(Protocol):
    """Where the latest feature values live for serving (two required methods)."""

    type: str

    def write(self, table_name: str, rows: Iterable[OnlineRecord], ttl_seconds: float | None = None) -> int:
        """Upsert records (an older event time never overwrites a newer one); returns how many were written."""
        ...

    def read(self, table_name: str, keys: Sequence[Any]) -> list[dict[str, Any] | None]:
        """Values of each key (plus ``_event_time``, ``_created_at``), or None when absent or expired."""
        ...


ONLINE_STORES: dict[str, type] = {}


def register_online_store(cls: type) -> type:
    """Class decorator: make an online store backend available by its ``type``."""
    ONLINE_STORES[cls.type] = cls  # type: ignore[attr-defined]
    return cls


def open_online_store(config: Any, project_dir: str | Path = ".") -> Any:
    """Open the backend named by ``config.type`` (a ``features.online_store`` spec node)."""
    from loopml.features import stores  # noqa: F401  (registers the backends)

    cls = ONLINE_STORES.get(config.type)
    if cls is None:
        raise SpecError(f"features.online_store.type `{config.type}` is unknown "
                        f"(registered: {', '.join(sorted(ONLINE_STORES))})")
    return cls.from_config(config, Path(project_dir))  # type: ignore[attr-defined]
