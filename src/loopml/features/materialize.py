"""Materialisation: the latest value of every entity, from the offline tables into the online store."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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


#: entities turned into Python records at a time while materialising: the online store is written from a
#: stream of records, so materialisation holds this many records, not one per entity of the table
RECORD_BATCH = 20_000


def records(spec: FeatureTable, latest: pa.Table, batch: int | None = None) -> Iterator[OnlineRecord]:
    """Online records of a table of latest values, in its row order, made ``batch`` rows at a time
    (default :data:`RECORD_BATCH`)."""
    feats = feature_columns(spec, latest)
    step = batch or RECORD_BATCH
    for start in range(0, latest.num_rows, step):
        part = latest.slice(start, step)
        keys = list(zip(*(part.column(k).to_pylist() for k in spec.entity), strict=True))
        ev = epoch_seconds(part.column(EVENT)).tolist()
        cr = epoch_seconds(part.column(CREATED)).tolist()
        cols = {f: part.column(f).to_pylist() for f in feats}
        for i in range(part.num_rows):
            yield OnlineRecord(key=tuple(keys[i]), values={f: _plain(cols[f][i]) for f in feats}, event_time=ev[i],
                               created_at=cr[i])


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
