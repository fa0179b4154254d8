"""Materialisation: the latest value of every entity, from the offline tables into the online store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopml.features.offline import CREATED, EVENT, connect, feature_columns, latest_values
from loopml.features.store import OnlineRecord, OnlineStore
from loopml.spec.features import FeatureTable


def epoch_seconds(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A timestamp column as float64 epoch seconds."""
    us = pc.cast(col.cast(pa.timestamp("us")), pa.int64())
    return np.asarray(us.to_numpy(zero_copy_only=False), dtype=np.float64) / 1e6


def records(spec: FeatureTable, latest: pa.Table) -> list[OnlineRecord]:
    """Online records of a table of latest values."""
    feats = feature_columns(spec, latest)
    keys = list(zip(*(latest.column(k).to_pylist() for k in spec.entity), strict=True))
    ev = epoch_seconds(latest.column(EVENT)).tolist()
    cr = epoch_seconds(latest.column(CREATED)).tolist()
    cols = {f: latest.column(f).to_pylist() for f in feats}
    return [
        OnlineRecord(key=tuple(keys[i]), values={f: _plain(cols[f][i]) for f in feats}, event_time=ev[i],
                     created_at=cr[i])
        for i in range(latest.num_rows)
    ]


def _plain(v: Any) -> Any:
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def materialize(store: OnlineStore, tables: Mapping[str, tuple[FeatureTable, pa.Table]],
                as_of: Any | None = None) -> dict[str, int]:
    """Write each entity's latest values (available at ``as_of``; all when None); returns rows per table."""
    con = connect()
    out: dict[str, int] = {}
    for name, (spec, ft) in tables.items():
        latest = latest_values(name, spec, ft, as_of=as_of, con=con)
        out[name] = store.write(name, records(spec, latest), ttl_seconds=spec.ttl_seconds)
    return out
