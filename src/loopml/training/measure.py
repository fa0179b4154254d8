"""Measuring a candidate the way serving will run it: single-row latency and artifact size.

Latency goes through :meth:`Bundle.predict_row` (transform + model on one ``{column:
value}`` row, as an online request arrives), after a warm-up, on this machine.

Other processes must not be able to move a candidate across a budget, so what decides is
**CPU time of the measuring thread** (``time.thread_time_ns``: time the thread is descheduled
does not count; prediction runs on this one thread), collected in ``rounds`` rounds that are
**interleaved across candidates** (round 1 of every candidate, then round 2...) so that a busy
spell hits every candidate alike. Each candidate's p99 is the **minimum over rounds** of the
per-round p99; the spread of the per-round p99s is the stated uncertainty. Wall-clock p99 is
recorded beside it for information. The budget is applied with a tolerance
(``requirements.constraints.latency_tolerance``). Batch latency uses the CPU time of the whole
process (a batch may use Arrow's threads).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from loopml.training.bundle import Bundle

#: how the latency in a leaderboard was measured (recorded in it)
METHOD = ("CPU time of the measuring thread (time.thread_time_ns) per Bundle.predict_row call; p99 per round; "
          "the minimum over rounds interleaved across candidates; spread of the round p99s = uncertainty; "
          "wall-clock p99 kept for information")


@dataclass
class Latency:
    """Latency statistics in milliseconds (CPU time; see the module docstring)."""

    p50_ms: float
    p99_ms: float
    mean_ms: float
    n: int
    batch_size: int = 1
    #: max − min of the per-round p99s: how much the decisive number moved between rounds
    spread_ms: float = 0.0
    rounds: int = 1
    #: wall-clock p99 over every call (informational: other processes move it)
    wall_p99_ms: float | None = None
    clock: str = "thread_cpu"


def request_rows(table: pa.Table, columns: list[str], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``n`` rows of ``table`` as plain dicts of the input columns (what a request holds)."""
    if table.num_rows == 0:
        return []
    rng = np.random.default_rng(seed)
    idx = rng.choice(table.num_rows, size=min(n, table.num_rows), replace=False)
    sub = table.select([c for c in columns if c in table.column_names]).take(pa.array(np.sort(idx)))
    rows: list[dict[str, Any]] = sub.to_pylist()
    return rows


def _row_round(bundle: Bundle, rows: list[dict[str, Any]], start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    cpu = np.empty(n)
    wall = np.empty(n)
    tcpu, twall = time.thread_time_ns, time.perf_counter_ns
    for i in range(n):
        row = rows[(start + i) % len(rows)]
        w0, c0 = twall(), tcpu()
        bundle.predict_row(row)
        cpu[i] = tcpu() - c0
        wall[i] = twall() - w0
    return cpu / 1e6, wall / 1e6


def measure_row_latencies(
    bundles: Sequence[Bundle], rows: list[dict[str, Any]], n_calls: int = 300, warmup: int = 20, rounds: int = 5
) -> list[Latency]:
    """Single-row latency of several bundles, measured in interleaved rounds (see the module docstring).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from loopml.features import FeaturePipeline
    >>> from loopml.spec.features import Features
    >>> from loopml.training.bundle import Bundle, make_manifest
    >>> from loopml.training.models import make_model
    >>> t = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    >>> fp = FeaturePipeline.from_spec(Features(inputs=[{"column": "x", "kind": "numeric"}]))
    >>> X = fp.fit_transform(t, t["y"].to_numpy())
    >>> m = make_model("prior", task="binary").fit(X, t["y"].to_numpy())
    >>> b = Bundle(fp, m, make_manifest(fp, m, schema=t.schema, classes=[0, 1]))
    >>> (lat,) = measure_row_latencies([b], t.select(["x"]).to_pylist(), n_calls=50, rounds=5)
    >>> lat.rounds, lat.n, lat.p99_ms < 50
    (5, 50, True)
    """
    if not rows:
        return [Latency(float("nan"), float("nan"), float("nan"), 0) for _ in bundles]
    for b in bundles:
        for i in range(warmup):
            b.predict_row(rows[i % len(rows)])
    rounds = max(1, min(rounds, n_calls))
    per = [len(p) for p in np.array_split(np.arange(n_calls), rounds)]
    cpu: list[list[np.ndarray]] = [[] for _ in bundles]
    wall: list[list[np.ndarray]] = [[] for _ in bundles]
    start = 0
    for n in per:
        for k, b in enumerate(bundles):
            c, w = _row_round(b, rows, start, n)
            cpu[k].append(c)
            wall[k].append(w)
        start += n
    out = []
    for k in range(len(bundles)):
        p99s = np.asarray([float(np.percentile(c, 99)) for c in cpu[k]])
        p50s = np.asarray([float(np.median(c)) for c in cpu[k]])
        allc = np.concatenate(cpu[k])
        out.append(Latency(
            p50_ms=float(p50s.min()), p99_ms=float(p99s.min()), mean_ms=float(allc.mean()), n=n_calls,
            spread_ms=float(p99s.max() - p99s.min()), rounds=rounds,
            wall_p99_ms=float(np.percentile(np.concatenate(wall[k]), 99)),
        ))
    return out


def measure_row_latency(
    bundle: Bundle, rows: list[dict[str, Any]], n_calls: int = 300, warmup: int = 20, rounds: int = 5
) -> Latency:
    """p50/p99 of ``bundle.predict_row`` (thread CPU time, minimum over ``rounds`` rounds)."""
    return measure_row_latencies([bundle], rows, n_calls, warmup, rounds)[0]


def measure_batch_latency(bundle: Bundle, table: pa.Table, batch_size: int, n_calls: int = 30,
                          rounds: int = 3) -> Latency:
    """p50/p99 of ``bundle.predict_table`` on batches of ``batch_size`` rows (process CPU time, min over rounds)."""
    if table.num_rows == 0:
        return Latency(float("nan"), float("nan"), float("nan"), 0, batch_size)
    reps = int(np.ceil(batch_size / table.num_rows))
    big = pa.concat_tables([table] * reps) if reps > 1 else table
    batch = big.slice(0, batch_size)
    bundle.predict_table(batch)
    cpu = np.empty(n_calls)
    wall = np.empty(n_calls)
    for i in range(n_calls):
        w0, c0 = time.perf_counter_ns(), time.process_time_ns()
        bundle.predict_table(batch)
        cpu[i] = time.process_time_ns() - c0
        wall[i] = time.perf_counter_ns() - w0
    ms = cpu / 1e6
    parts = [p for p in np.array_split(ms, max(1, min(rounds, n_calls))) if p.size]
    p99s = np.asarray([float(np.percentile(p, 99)) for p in parts])
    return Latency(float(min(float(np.median(p)) for p in parts)), float(p99s.min()), float(ms.mean()), n_calls,
                   batch_size, spread_ms=float(p99s.max() - p99s.min()), rounds=len(parts),
                   wall_p99_ms=float(np.percentile(wall / 1e6, 99)), clock="process_cpu")
