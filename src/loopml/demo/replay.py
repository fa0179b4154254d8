"""Replaying a simulated day through the running service: predictions, then the clicks as feedback."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopml.demo.service import Client
from loopml.errors import LoopMLError
from loopml.simulator import DayLog
from loopml.spec import Spec

NOT_INPUTS = ("impression_id", "impression")  # event-log bookkeeping (the KDD log's session count), not request fields


@dataclass
class ReplayStats:
    """What the replay measured over HTTP."""

    rows: int
    requests: int
    rows_per_request: int
    errors: int
    seconds: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    feedback: int
    positives: int
    mean_score: float
    observed_ctr: float
    model_versions: list[str]
    cold_start_retries: int = 0
    shed_retries: int = 0  # requests the service shed (503 + Retry-After) and the replay sent again

    def to_json(self) -> dict[str, Any]:
        """Plain data."""
        return asdict(self)


def request_rows(day: DayLog, spec: Spec) -> list[dict[str, Any]]:
    """The day's impressions as request bodies: the spec's privacy applied (as at ingestion), ISO timestamps."""
    from loopml.data.privacy import apply_privacy

    table = apply_privacy(day.impressions, spec.requirements.privacy)
    table = table.drop_columns([c for c in NOT_INPUTS if c in table.column_names])
    cols: dict[str, list[Any]] = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            cols[name] = [v.isoformat() if isinstance(v, dt.datetime) else v for v in col.to_pylist()]
        else:
            cols[name] = col.to_pylist()
    names = list(cols)
    return [dict(zip(names, vals)) for vals in zip(*(cols[n] for n in names))]


def labels_within_window(day: DayLog, window_s: float) -> np.ndarray:
    """1 for impressions clicked within ``window_s`` seconds (what the natural label rule computes), else 0."""
    ids = day.impressions.column("impression_id").to_numpy()
    ts = pc.cast(day.impressions.column("ts"), pa.int64()).to_numpy()
    cids = day.clicks.column("impression_id").to_numpy()
    cts = pc.cast(day.clicks.column("click_ts"), pa.int64()).to_numpy()
    pos = np.searchsorted(ids, cids)  # impression ids are sorted within a day
    ok = (pos < ids.size) & (ids[np.minimum(pos, ids.size - 1)] == cids)
    y = np.zeros(ids.size, dtype=np.int64)
    late = (cts[ok] - ts[pos[ok]]) <= window_s * 1_000_000
    y[pos[ok][late]] = 1
    return y


def replay_day(
    day: DayLog,
    spec: Spec,
    host: str,
    port: int,
    *,
    batch: int = 250,
    window_s: float = 600.0,
    on_batch: Callable[[int], None] | None = None,
) -> ReplayStats:
    """Send every impression of ``day`` to ``POST /v1/predict`` in batches, then its labels to ``/v1/feedback``."""
    rows = request_rows(day, spec)
    labels = labels_within_window(day, window_s)
    client = Client(host, port)
    lat: list[float] = []
    errors = 0
    request_ids: list[str | None] = []
    scores: list[float] = []
    versions: set[str] = set()
    store_fields = {a.name for t in spec.features.tables.values() for a in t.aggregations}
    cold_start = 0
    t0 = time.perf_counter()
    try:
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            t = time.perf_counter()
            status, body = client.post("/v1/predict", {"rows": chunk})
            if status == 422 and _fill_cold_start(chunk, body, store_fields):
                cold_start += 1
                status, body = client.post("/v1/predict", {"rows": chunk})
            lat.append(time.perf_counter() - t)
            if status != 200 or not isinstance(body, dict):
                errors += 1
                if errors == 1 and status == 422:
                    raise LoopMLError(f"the service rejected the replayed rows: {str(body)[:500]}")
                request_ids.extend([None] * len(chunk))
            else:
                request_ids.extend(body.get("request_ids") or [None] * len(chunk))
                scores.extend(float(s) for s in body.get("scores") or [])
                versions.add(str(body.get("model_version")))
            if on_batch is not None:
                on_batch(len(chunk))
        seconds = time.perf_counter() - t0
        feedback = [
            {"request_id": rid, "label": int(y)} for rid, y in zip(request_ids, labels.tolist()) if rid is not None
        ]
        for start in range(0, len(feedback), 2000):
            # a request shed under load (503 + Retry-After) is resent by the client itself
            status, body = client.post("/v1/feedback", feedback[start:start + 2000])
            if status != 200:
                raise LoopMLError(f"the service refused feedback: HTTP {status} {str(body)[:300]}")
    finally:
        client.close()
    lat_ms = np.asarray(lat) * 1000 if lat else np.zeros(1)
    return ReplayStats(
        rows=len(rows),
        requests=len(lat),
        rows_per_request=batch,
        errors=errors,
        seconds=round(seconds, 3),
        rows_per_s=round(len(rows) / seconds, 1) if seconds > 0 else 0.0,
        p50_ms=round(float(np.percentile(lat_ms, 50)), 3),
        p99_ms=round(float(np.percentile(lat_ms, 99)), 3),
        feedback=len(feedback),
        positives=int(labels.sum()),
        mean_score=round(float(np.mean(scores)), 5) if scores else float("nan"),
        observed_ctr=round(float(labels.mean()), 5) if labels.size else float("nan"),
        model_versions=sorted(versions),
        cold_start_retries=cold_start,
        shed_retries=client.retries,
    )


def _fill_cold_start(rows: list[dict[str, Any]], body: Any, store_fields: set[str]) -> bool:
    """Mark feature-store fields as explicitly missing for entities the online store does not know.

    When every problem of a 422 is a store-provided field left unfilled (a user or ad never
    seen before), the rows are resent with those fields set to null, which the fitted transform
    imputes; any other problem is left to fail.
    """
    detail = body.get("detail") if isinstance(body, dict) else None
    if not detail or not store_fields:
        return False
    fixes = []
    for p in detail:
        loc = p.get("loc") or []
        if p.get("field") not in store_fields or "missing" not in str(p.get("msg", "")) or len(loc) < 3:
            return False
        fixes.append((loc[1], p["field"]))
    for i, f in fixes:
        rows[i][f] = None
    return True
