"""Measuring a candidate the way serving will run it: single-row latency and artifact size.

Latency goes through :meth:`Bundle.predict_row` (transform + model on one ``{column:
value}`` row, as an online request arrives), after a warm-up, on this machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from loopml.training.bundle import Bundle


@dataclass
class Latency:
    """Latency statistics in milliseconds."""

    p50_ms: float
    p99_ms: float
    mean_ms: float
    n: int
    batch_size: int = 1


def request_rows(table: pa.Table, columns: list[str], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``n`` rows of ``table`` as plain dicts of the input columns (what a request holds)."""
    if table.num_rows == 0:
        return []
    rng = np.random.default_rng(seed)
    idx = rng.choice(table.num_rows, size=min(n, table.num_rows), replace=False)
    sub = table.select([c for c in columns if c in table.column_names]).take(pa.array(np.sort(idx)))
    rows: list[dict[str, Any]] = sub.to_pylist()
    return rows


def measure_row_latency(
    bundle: Bundle, rows: list[dict[str, Any]], n_calls: int = 300, warmup: int = 20, rounds: int = 3
) -> Latency:
    """p50/p99 of ``bundle.predict_row`` over ``n_calls`` calls cycling through ``rows``.

    The calls are split into ``rounds`` rounds and the median of the per-round p99 is
    reported: on a shared machine one descheduling of the process would otherwise decide
    the p99 of a whole candidate.
    """
    if not rows:
        return Latency(float("nan"), float("nan"), float("nan"), 0)
    for i in range(warmup):
        bundle.predict_row(rows[i % len(rows)])
    samples = np.empty(n_calls)
    clock = time.perf_counter_ns
    for i in range(n_calls):
        row = rows[i % len(rows)]
        t = clock()
        bundle.predict_row(row)
        samples[i] = clock() - t
    ms = samples / 1e6
    per_round = [float(np.percentile(part, 99)) for part in np.array_split(ms, max(1, rounds)) if part.size]
    return Latency(float(np.median(ms)), float(np.median(per_round)), float(ms.mean()), n_calls)


def measure_batch_latency(bundle: Bundle, table: pa.Table, batch_size: int, n_calls: int = 30) -> Latency:
    """p50/p99 of ``bundle.predict_table`` on batches of ``batch_size`` rows."""
    if table.num_rows == 0:
        return Latency(float("nan"), float("nan"), float("nan"), 0, batch_size)
    reps = int(np.ceil(batch_size / table.num_rows))
    big = pa.concat_tables([table] * reps) if reps > 1 else table
    batch = big.slice(0, batch_size)
    bundle.predict_table(batch)
    samples = np.empty(n_calls)
    for i in range(n_calls):
        t = time.perf_counter_ns()
        bundle.predict_table(batch)
        samples[i] = time.perf_counter_ns() - t
    ms = samples / 1e6
    return Latency(float(np.median(ms)), float(np.percentile(ms, 99)), float(ms.mean()), n_calls, batch_size)
