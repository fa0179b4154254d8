"""Online store in Redis: one string key per (table, entity) holding JSON; Redis expires it at the TTL."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from loopml.errors import WorkspaceError
from loopml.features.store import KEY_SEP, OnlineRecord, entity_key, expired, register_online_store


@register_online_store
class RedisStore:
    """Redis online store (``redis://host:port/db``); same records and semantics as SQLite."""

    type = "redis"

    def __init__(self, url: str, prefix: str = "loopml:") -> None:
        try:
            import redis
        except ImportError:
            raise WorkspaceError("the redis online store needs the `redis` package (pip install 'loopml[scale]')") from None
        self.url = url
        self.prefix = prefix
        self._r = redis.Redis.from_url(url)
        try:
            self._r.ping()
        except redis.RedisError as exc:
            raise WorkspaceError(f"cannot reach the redis online store at {url}: {exc}") from None
        self._ttl: dict[str, float | None] = {}

    @classmethod
    def from_config(cls, config: Any, project_dir: Path) -> RedisStore:
        """From a ``features.online_store`` node of type redis."""
        return cls(config.url)

    def _key(self, table_name: str, ent: str) -> str:
        return f"{self.prefix}{table_name}{KEY_SEP}{ent}"

    def write(self, table_name: str, rows: Iterable[OnlineRecord], ttl_seconds: float | None = None) -> int:
        """Write records whose event time is not older than the stored one; returns how many were offered."""
        n = 0
        it = iter(rows)
        while chunk := list(itertools.islice(it, 1000)):  # a stream of records, 1,000 at a time
            ckeys = [self._key(table_name, entity_key(r.key)) for r in chunk]
            old = self._r.mget(ckeys)
            pipe = self._r.pipeline(transaction=False)
            for r, k, o in zip(chunk, ckeys, old):
                if o is not None and orjson.loads(o)["e"] > r.event_time:
                    continue
                blob = orjson.dumps({"v": r.values, "e": float(r.event_time), "c": float(r.created_at)},
                                    option=orjson.OPT_SERIALIZE_NUMPY)
                if ttl_seconds is not None:
                    pipe.set(k, blob, pxat=int((r.event_time + ttl_seconds) * 1000))
                else:
                    pipe.set(k, blob)
            pipe.hset(f"{self.prefix}__tables__", table_name, "" if ttl_seconds is None else repr(ttl_seconds))
            pipe.execute()
            n += len(chunk)
        self._ttl[table_name] = ttl_seconds
        return n

    def _table_ttl(self, table_name: str) -> float | None:
        if table_name not in self._ttl:
            v = self._r.hget(f"{self.prefix}__tables__", table_name)
            self._ttl[table_name] = float(v) if v else None
        return self._ttl[table_name]

    def read(self, table_name: str, keys: Sequence[Any]) -> list[dict[str, Any] | None]:
        """Values per key (None when absent or expired)."""
        if not keys:
            return []
        blobs = self._r.mget([self._key(table_name, entity_key(k)) for k in keys])
        ttl = self._table_ttl(table_name)
        now = time.time()
        out: list[dict[str, Any] | None] = []
        for b in blobs:
            if b is None:
                out.append(None)
                continue
            rec = orjson.loads(b)
            if expired(rec["e"], ttl, now):
                out.append(None)
                continue
            d = rec["v"]
            d["_event_time"], d["_created_at"] = rec["e"], rec["c"]
            out.append(d)
        return out

    def sample_keys(self, table_name: str, n: int, seed: int = 0) -> list[str]:
        """Up to ``n`` canonical entity keys of a table."""
        import random

        head = f"{self.prefix}{table_name}{KEY_SEP}"
        keys = sorted(k.decode()[len(head):] for k in self._r.scan_iter(match=_glob_escape(head) + "*", count=1000))
        random.Random(seed).shuffle(keys)
        return keys[:n]

    def count(self, table_name: str) -> int:
        """How many entities a table holds."""
        head = f"{self.prefix}{table_name}{KEY_SEP}"
        return sum(1 for _ in self._r.scan_iter(match=_glob_escape(head) + "*", count=1000))

    def close(self) -> None:
        """Close the connection pool."""
        self._r.close()


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)
