"""Writers of prediction-log and feedback segments in exactly the serving contract's format.

Used where a test needs a log without running the service (the end-to-end test uses the
real service instead).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

TS = pa.timestamp("us", tz="UTC")


def write_segment(folder: Path, table: pa.Table) -> Path:
    """Write a segment under a temporary name, then rename it (as the service does)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:6]}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, folder / name)
    return folder / name


def prediction_segment(
    ws_root: Path,
    inputs: pa.Table,
    score: np.ndarray,
    ts: list[dt.datetime] | np.ndarray,
    model_version: str = "v1",
    route: str = "production",
    request_ids: list[str] | None = None,
    threshold: float | None = 0.5,
) -> list[str]:
    """Append a prediction-log segment; returns the request ids."""
    n = inputs.num_rows
    rids = request_ids or [uuid.uuid4().hex for _ in range(n)]
    score = np.asarray(score, dtype=np.float64)
    pred = (score >= threshold).astype(np.float64) if threshold is not None else score
    cols: dict[str, Any] = {
        "request_id": pa.array(rids, pa.string()),
        "ts": pa.array(list(ts), TS),
        "model_version": pa.array([model_version] * n, pa.string()),
        "route": pa.array([route] * n, pa.string()),
        "score": pa.array(score, pa.float64()),
        "prediction": pa.array(pred, pa.float64()),
    }
    for name in inputs.column_names:
        col = inputs.column(name)
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            col = col.cast(pa.float64())
        elif not pa.types.is_string(col.type):
            col = col.cast(pa.string())
        cols[name] = col
    write_segment(ws_root / "logs" / "predictions", pa.table(cols))
    return rids


def feedback_segment(ws_root: Path, request_ids: list[str], labels: np.ndarray, ts: dt.datetime) -> None:
    """Append a feedback segment."""
    n = len(request_ids)
    write_segment(
        ws_root / "logs" / "feedback",
        pa.table({
            "request_id": pa.array(request_ids, pa.string()),
            "ts": pa.array([ts] * n, TS),
            "label": pa.array(np.asarray(labels, dtype=np.float64), pa.float64()),
        }),
    )


def bike(datasets: Path) -> pa.Table:
    """bike_sharing hour.csv as Arrow."""
    return pcsv.read_csv(datasets / "bike_sharing" / "hour.csv")
