"""Online store in one SQLite file (the default): one row per (table, entity), values as JSON."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from loopml.errors import WorkspaceError
from loopml.features.store import OnlineRecord, entity_key, expired, register_online_store

SCHEMA = """
CREATE TABLE IF NOT EXISTS online_features (
    table_name TEXT NOT NULL,
    entity TEXT NOT NULL,
    value BLOB NOT NULL,
    event_time REAL NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (table_name, entity)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS online_tables (
    table_name TEXT PRIMARY KEY,
    ttl_seconds REAL,
    updated_at REAL NOT NULL
);
"""

UPSERT = """
INSERT INTO online_features (table_name, entity, value, event_time, created_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (table_name, entity) DO UPDATE SET
    value = excluded.value, event_time = excluded.event_time, created_at = excluded.created_at
WHERE excluded.event_time >= online_features.event_time
"""


@register_online_store
class SqliteStore:
    """SQLite online store (WAL mode; readers never block the materialising writer).

    >>> import tempfile, pathlib
    >>> s = SqliteStore(pathlib.Path(tempfile.mkdtemp()) / "online.sqlite")
    >>> s.write("user", [OnlineRecord((7,), {"ctr": 0.1}, 100.0, 101.0)])
    1
    >>> s.read("user", [7, 8])
    [{'ctr': 0.1, '_event_time': 100.0, '_created_at': 101.0}, None]
    """

    type = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=NORMAL")
            self._con.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise WorkspaceError(f"cannot open the online store {self.path}: {exc}") from None
        self._lock = threading.RLock()
        self._ttl: dict[str, float | None] = {}
        self._sql: dict[int, str] = {}

    @classmethod
    def from_config(cls, config: Any, project_dir: Path) -> SqliteStore:
        """From a ``features.online_store`` node of type sqlite (path relative to the project)."""
        p = Path(config.path)
        return cls(p if p.is_absolute() else project_dir / p)

    def write(self, table_name: str, rows: Iterable[OnlineRecord], ttl_seconds: float | None = None) -> int:
        """Upsert records in one transaction; returns how many rows were offered. The records are consumed as a
        stream (never listed), so a large table is written without holding one Python object per entity."""
        offered = 0

        def params() -> Iterator[tuple[str, str, bytes, float, float]]:
            nonlocal offered
            for r in rows:
                offered += 1
                yield (table_name, entity_key(r.key), orjson.dumps(r.values, option=orjson.OPT_SERIALIZE_NUMPY),
                       float(r.event_time), float(r.created_at))

        with self._lock:
            cur = self._con.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.executemany(UPSERT, params())
                cur.execute(
                    "INSERT INTO online_tables (table_name, ttl_seconds, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (table_name) DO UPDATE SET ttl_seconds = excluded.ttl_seconds, "
                    "updated_at = excluded.updated_at",
                    (table_name, ttl_seconds, time.time()),
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        self._ttl[table_name] = ttl_seconds
        return offered

    def _table_ttl(self, table_name: str) -> float | None:
        if table_name not in self._ttl:
            row = self._con.execute(
                "SELECT ttl_seconds FROM online_tables WHERE table_name = ?", (table_name,)).fetchone()
            self._ttl[table_name] = None if row is None else row[0]
        return self._ttl[table_name]

    def read(self, table_name: str, keys: Sequence[Any]) -> list[dict[str, Any] | None]:
        """Values per key (None when absent or older than the table's TTL)."""
        n = len(keys)
        if n == 0:
            return []
        sql = self._sql.get(n)
        if sql is None:
            sql = ("SELECT entity, value, event_time, created_at FROM online_features "
                   f"WHERE table_name = ? AND entity IN ({', '.join('?' * n)})")
            self._sql[n] = sql
        ents = [entity_key(k) for k in keys]
        with self._lock:  # one connection shared by a server's threads: one statement at a time
            found = {e: (v, et, ct) for e, v, et, ct in self._con.execute(sql, (table_name, *ents))}
            ttl = self._table_ttl(table_name)
        now = time.time()
        out: list[dict[str, Any] | None] = []
        for e in ents:
            hit = found.get(e)
            if hit is None or expired(hit[1], ttl, now):
                out.append(None)
                continue
            d = orjson.loads(hit[0])
            d["_event_time"], d["_created_at"] = hit[1], hit[2]
            out.append(d)
        return out

    def sample_keys(self, table_name: str, n: int, seed: int = 0) -> list[str]:
        """Up to ``n`` canonical entity keys of a table, pseudo-randomly chosen."""
        rows = self._con.execute(
            "SELECT entity FROM online_features WHERE table_name = ? ORDER BY entity", (table_name,)).fetchall()
        import random

        keys = [r[0] for r in rows]
        random.Random(seed).shuffle(keys)
        return keys[:n]

    def count(self, table_name: str) -> int:
        """How many entities a table holds."""
        row = self._con.execute("SELECT count(*) FROM online_features WHERE table_name = ?", (table_name,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the connection."""
        self._con.close()
