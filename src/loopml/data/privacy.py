"""Column privacy applied before anything reaches the lake: drop, keyed hash (HMAC-SHA256), coarsen.

The hashing key never lives in the spec: it is read from the environment variable the spec
names (``requirements.privacy.hash_key_env``). Hashing is vectorised over distinct values.

>>> import os, pyarrow as pa
>>> from loopml.spec.requirements import Privacy
>>> os.environ["DOCTEST_KEY"] = "secret"
>>> t = apply_privacy(pa.table({"email": ["a@x", "b@x", "a@x"], "n": [1, 2, 3]}),
...                   Privacy(hash=["email"], hash_key_env="DOCTEST_KEY"))
>>> t.column("email")[0] == t.column("email")[2], len(t.column("email")[0].as_py())
(True, 32)
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from loopml.data.sources import duck_connect
from loopml.errors import DataError
from loopml.spec.requirements import CoarsenRule, Privacy

HASH_HEX_CHARS = 32  # 128 bits of the HMAC: collisions are negligible, tables stay small


def hash_key(privacy: Privacy) -> bytes:
    """The hashing key from the environment; a clear error when it is unset or empty."""
    value = os.environ.get(privacy.hash_key_env, "")
    if not value:
        raise DataError(
            f"privacy: columns {', '.join(privacy.hash)} must be hashed but the key variable "
            f"${privacy.hash_key_env} is not set",
            hint=f"export {privacy.hash_key_env}=<a long random secret> (keep it out of loopml.yaml and git)",
        )
    return value.encode()


def key_fingerprint(privacy: Privacy) -> str | None:
    """A value that changes when the key changes without revealing it (for cache keys)."""
    if not privacy.hash:
        return None
    return hmac.new(hash_key(privacy), b"loopml-key-fingerprint", hashlib.sha256).hexdigest()[:16]


def _hmac_column(col: pa.ChunkedArray, key: bytes) -> pa.ChunkedArray:
    """HMAC-SHA256 (hex, truncated) of each value's text; nulls stay null; each distinct value hashed once."""
    text = pc.cast(col, pa.string()) if not pa.types.is_string(col.type) else col
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    encoded = pc.dictionary_encode(text)
    uniques = encoded.dictionary.to_pylist()
    hashed = pa.array(
        [hmac.new(key, str(u).encode(), hashlib.sha256).hexdigest()[:HASH_HEX_CHARS] for u in uniques],
        type=pa.string(),
    )
    return pa.chunked_array([pc.take(hashed, encoded.indices)])


def _coarsen(table: pa.Table, rule: CoarsenRule) -> pa.ChunkedArray:
    col = table.column(rule.column)
    t = col.type
    what = f"privacy coarsen `{rule.column}` ({rule.method})"
    con = duck_connect()
    try:
        con.register("c", pa.table({"v": col}))
        if rule.method in ("round", "bucket"):
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
                raise DataError(f"{what}: column type is {t}, expected a number")
            if not rule.step or rule.step <= 0:
                raise DataError(f"{what}: needs `step` > 0, got {rule.step}")
            fn = "round" if rule.method == "round" else "floor"
            expr = f"{fn}(v / {rule.step!r}) * {rule.step!r}"
            if pa.types.is_integer(t) and float(rule.step).is_integer():
                expr = f"CAST({expr} AS BIGINT)"
        elif rule.method == "truncate_time":
            if not (pa.types.is_timestamp(t) or pa.types.is_date(t)):
                raise DataError(f"{what}: column type is {t}, expected a timestamp or date")
            if rule.unit is None:
                raise DataError(f"{what}: needs `unit` (minute, hour, day, week or month)")
            expr = f"date_trunc('{rule.unit}', v)"
            if pa.types.is_date(t):
                expr = f"CAST({expr} AS DATE)"
        else:  # prefix
            if not rule.step or rule.step < 1:
                raise DataError(f"{what}: needs `step` >= 1 (characters kept), got {rule.step}")
            expr = f"left(CAST(v AS VARCHAR), {int(rule.step)})"
        out = con.sql(f"SELECT {expr} AS v FROM c").to_arrow_table().column("v")
    finally:
        con.close()
    if pa.types.is_timestamp(t) and out.type != t:
        out = pc.cast(out, t)
    return out


def apply_privacy(table: pa.Table, privacy: Privacy) -> pa.Table:
    """The table with privacy rules applied (drop, then hash, then coarsen)."""
    cols = set(table.column_names)
    named = [*privacy.hash, *(r.column for r in privacy.coarsen)]
    missing = [c for c in named if c not in cols and c not in privacy.drop]
    if missing:
        raise DataError(
            f"privacy: column(s) {', '.join(f'`{m}`' for m in missing)} named in requirements.privacy are not in "
            f"the example table (columns: {', '.join(table.column_names)})",
            hint="a privacy rule that matches nothing would silently leak data; fix the column name",
        )
    table = table.drop_columns([c for c in privacy.drop if c in cols])
    if privacy.hash:
        key = hash_key(privacy)
        for c in privacy.hash:
            if c in table.column_names:
                table = table.set_column(table.column_names.index(c), c, _hmac_column(table.column(c), key))
    for rule in privacy.coarsen:
        if rule.column in table.column_names:
            idx = table.column_names.index(rule.column)
            table = table.set_column(idx, rule.column, _coarsen(table, rule))
    return table


def privacy_summary(privacy: Privacy) -> dict[str, Any]:
    """What privacy did, for the manifest (never the key)."""
    return {
        "dropped": list(privacy.drop),
        "hashed": list(privacy.hash),
        "coarsened": [r.model_dump() for r in privacy.coarsen],
        "hash_key_env": privacy.hash_key_env if privacy.hash else None,
    }


__all__ = ["apply_privacy", "hash_key", "key_fingerprint", "privacy_summary"]
