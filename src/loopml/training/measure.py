"""Measuring a candidate the way serving will run it: single-row latency and artifact size.

Latency goes through :meth:`Bundle.predict_row` (transform + model on one ``{column:
value}`` row, as an online request arrives), after a warm-up, on this machine.

Other processes must not be able to move a candidate across a budget, so what decides is
**CPU time of the measuring thread** (``time.thread_time_ns``: time the thread is descheduled
does not count; prediction runs on this one thread), collected in ``rounds`` rounds that are
**interleaved across candidates** (round 1 of every candidate, then round 2...) so that a busy
spell hits every candidate alike; every round sends the same request rows. Calls during which,
or just before which, the scheduler switched the thread out (``getrusage(RUSAGE_THREAD)``
context-switch counts) are left out (they pay for other processes in cold caches), and Python's garbage collector is paused
while measuring. A row's cost is the **minimum over rounds** of its CPU time; the p99 is taken
over rows; the spread of the per-round p99s is the stated uncertainty. Wall-clock p99 is
recorded beside it for information. The budget is applied with a tolerance
(``requirements.constraints.latency_tolerance``). Batch latency uses the CPU time of the whole
process (a batch may use Arrow's threads).
"""

from __future__ import annotations

import gc
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from loopml.training.bundle import Bundle

_RUSAGE_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None)
#: untimed calls at the start of each round (the caches still hold the previous candidate)
ROUND_WARMUP = 5
#: the fewest timed calls per candidate when a slow candidate makes the time cap shrink the rounds
MIN_CALLS = 500

#: how the latency in a leaderboard was measured (recorded in it)
METHOD = ("CPU time of the measuring thread (time.thread_time_ns) per Bundle.predict_row call, Python's GC paused, "
          "calls during or just before which the thread was switched out (getrusage RUSAGE_THREAD) left out; the same "
          "request rows in every one of many short rounds, rounds interleaved across candidates; per row the minimum over rounds, p99 over rows; "
          "spread of the round p99s = uncertainty; "
          "wall-clock p99 of every call kept for information")


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
    #: calls left out because the scheduler switched the thread out during them
    switched_out: int = 0


def request_rows(table: pa.Table, columns: list[str], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``n`` rows of ``table`` as plain dicts of the input columns (what a request holds)."""
    if table.num_rows == 0:
        return []
    rng = np.random.default_rng(seed)
    idx = rng.choice(table.num_rows, size=min(n, table.num_rows), replace=False)
    sub = table.select([c for c in columns if c in table.column_names]).take(pa.array(np.sort(idx)))
    rows: list[dict[str, Any]] = sub.to_pylist()
    return rows


def _switches() -> int:
    """Context switches of this thread so far (voluntary + involuntary; 0 where the OS does not say)."""
    if _RUSAGE_THREAD is None:
        return 0
    ru = resource.getrusage(_RUSAGE_THREAD)
    return int(ru.ru_nivcsw + ru.ru_nvcsw)


def _row_round(bundle: Bundle, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """CPU ms of every row's call (NaN when the thread was switched out during it) and wall ms."""
    n = len(rows)
    cpu = np.empty(n)
    wall = np.empty(n)
    tcpu, twall = time.thread_time_ns, time.perf_counter_ns
    for row in rows[-ROUND_WARMUP:]:  # the previous round ran another bundle: warm the caches again, untimed
        bundle.predict_row(row)
    s0 = _switches()
    for i, row in enumerate(rows):
        w0, c0 = twall(), tcpu()
        bundle.predict_row(row)
        c1, w1 = tcpu(), twall()
        s1 = _switches()
        # a call the scheduler switched out, during it or just before it (the other process left the caches
        # cold), pays for other processes: left out
        cpu[i] = (c1 - c0) / 1e6 if s1 == s0 else np.nan
        wall[i] = (w1 - w0) / 1e6
        s0 = s1
    return cpu, wall


def measure_row_latencies(
    bundles: Sequence[Bundle], rows: list[dict[str, Any]], n_calls: int = 2000, warmup: int = 20, rounds: int = 25,
    max_seconds: float = 20.0,
) -> list[Latency]:
    """Single-row latency of several bundles, measured in interleaved rounds (see the module docstring).

    Each round calls every bundle on the same ``n_calls / rounds`` request rows; a row's cost is
    the minimum over rounds of its CPU time (what other processes added is gone), and the p99 is
    taken over rows, so an expensive kind of request still shows. Many short rounds are what keeps
    the p99 still on a busy machine: on two cores kept busy by two other processes, 9 rounds of 66
    rows moved a candidate's p99 by up to 1.8x between repeated measurements, 25 rounds of 80 rows
    by 1.06x. When the warm-up calls say the rounds would take more than ``max_seconds`` of CPU,
    fewer calls are timed (never fewer than ``MIN_CALLS``, the rounds stay).

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
    >>> (lat,) = measure_row_latencies([b], t.select(["x"]).to_pylist(), n_calls=20, rounds=5)
    >>> lat.rounds, lat.n, lat.p99_ms < 50
    (5, 20, True)
    """
    if not rows:
        return [Latency(float("nan"), float("nan"), float("nan"), 0) for _ in bundles]
    cost = 0.0
    for b in bundles:
        c0 = time.thread_time()
        for i in range(warmup):
            b.predict_row(rows[i % len(rows)])
        cost += (time.thread_time() - c0) / max(1, warmup)
    if cost * n_calls > max_seconds:  # slow candidates: fewer rows per round, as many rounds
        n_calls = max(min(n_calls, MIN_CALLS), int(max_seconds / cost))
    rounds = max(1, min(rounds, n_calls))
    per_round = max(1, n_calls // rounds)
    chosen = [rows[i % len(rows)] for i in range(per_round)]
    cpu = [np.empty((rounds, per_round)) for _ in bundles]
    wall = [np.empty((rounds, per_round)) for _ in bundles]
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # a collection pass is the process's heap, not the model: it is not the model's latency
    try:
        for r in range(rounds):
            for k, b in enumerate(bundles):
                cpu[k][r], wall[k][r] = _row_round(b, chosen)
    finally:
        if was_enabled:
            gc.enable()
    out = []
    for k in range(len(bundles)):
        c = cpu[k]
        switched = int(np.isnan(c).sum())
        clean = np.where(np.isnan(c).all(axis=0, keepdims=True), np.inf, c)  # every repeat switched: use them all
        per_row = np.nanmin(np.where(np.isnan(clean), np.inf, clean), axis=0)
        if np.isinf(per_row).any():
            per_row = np.where(np.isinf(per_row), np.nanmin(np.where(np.isnan(c), np.inf, c), axis=0), per_row)
        round_p99 = np.asarray([float(np.nanpercentile(c[r], 99)) if np.isfinite(c[r]).any() else np.nan
                                for r in range(rounds)])
        finite = round_p99[np.isfinite(round_p99)]
        out.append(Latency(
            p50_ms=float(np.median(per_row)), p99_ms=float(np.percentile(per_row, 99)),
            mean_ms=float(np.nanmean(c)) if np.isfinite(c).any() else float("nan"), n=rounds * per_round,
            spread_ms=float(finite.max() - finite.min()) if finite.size else 0.0, rounds=rounds,
            wall_p99_ms=float(np.percentile(wall[k], 99)), switched_out=switched,
        ))
    return out


def measure_row_latency(
    bundle: Bundle, rows: list[dict[str, Any]], n_calls: int = 2000, warmup: int = 20, rounds: int = 25
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
