"""Writing simulated days as event-log files the data stage ingests.

Layout of an output folder::

    OUT/impressions/2026-11-02.parquet   one file per day (Parquet or CSV)
    OUT/clicks/2026-11-02.parquet        clicks: impression_id, click_ts
    OUT/truth/2026-11-02.parquet         the true P(click) per impression (never a model input)
    OUT/simulation.json                  the config and the figures of every day written

Each file is written to a temporary name and renamed, so a crash never leaves half a day.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from loopml.errors import DataError
from loopml.simulator.config import SimulatorConfig
from loopml.simulator.traffic import DayLog, TrafficSimulator

LogFormat = Literal["parquet", "csv"]
LOGS = ("impressions", "clicks", "truth")


def _write_atomic(table: pa.Table, path: Path, fmt: LogFormat) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "parquet":
        pq.write_table(table, tmp, compression="zstd")
    else:
        pacsv.write_csv(table, tmp)
    os.replace(tmp, path)


def write_day(
    day: DayLog, out: str | Path, fmt: LogFormat = "parquet", *, logs: tuple[str, ...] = LOGS
) -> dict[str, Path]:
    """Write one day's logs (impressions, clicks and truth by default) under ``out``; returns the file of each log."""
    root = Path(out)
    if fmt not in ("parquet", "csv"):
        raise DataError(f"log format must be 'parquet' or 'csv', got {fmt!r}")
    unknown = [n for n in logs if n not in LOGS]
    if unknown:
        raise DataError(f"unknown log(s) {unknown}; expected some of {list(LOGS)}")
    paths: dict[str, Path] = {}
    for name in logs:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{day.date.isoformat()}.{fmt}"
        _write_atomic(getattr(day, name), path, fmt)
        paths[name] = path
    return paths


def _update_manifest(root: Path, config: SimulatorConfig, stats: list[dict[str, Any]]) -> Path:
    path = root / "simulation.json"
    days: dict[str, dict[str, Any]] = {}
    if path.exists():
        try:
            days = {d["date"]: d for d in json.loads(path.read_text()).get("days", [])}
        except (ValueError, KeyError, TypeError):
            days = {}
    for s in stats:
        days[s["date"]] = s
    doc = {"config": config.model_dump(mode="json"), "days": [days[k] for k in sorted(days)]}
    tmp = path.with_name(".simulation.json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)
    return path


def simulate(
    out: str | Path,
    days: int,
    *,
    config: SimulatorConfig | None = None,
    simulator: TrafficSimulator | None = None,
    start_day: int = 0,
    drift: str | None = None,
    drift_from: int | None = None,
    strength: float = 1.0,
    fmt: LogFormat = "parquet",
    on_day: Callable[[DayLog], None] | None = None,
) -> list[dict[str, Any]]:
    """Simulate ``days`` days from ``start_day`` and write them to ``out``.

    Parameters
    ----------
    drift
        A drift kind (see :data:`loopml.simulator.DRIFTS`) applied from day ``drift_from`` on
        (default: the last day only).
    on_day
        Called with each day after it is written (progress reporting).

    Returns
    -------
    list of dict
        The figures of each day written (also merged into ``out/simulation.json``).

    Examples
    --------
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> stats = simulate(out, 2, config=SimulatorConfig(impressions_per_day=500), drift="seasonal")
    >>> [s["drift"] for s in stats], sorted(p.name for p in (Path(out) / "clicks").iterdir())
    (['none', 'seasonal'], ['2026-11-02.parquet', '2026-11-03.parquet'])
    """
    if days < 1:
        raise DataError(f"--days must be at least 1, got {days}")
    sim = simulator or TrafficSimulator(config)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    first_drifted = (start_day + days - 1) if drift_from is None else drift_from
    stats = []
    for i in range(start_day, start_day + days):
        kind = drift if (drift and drift != "none" and i >= first_drifted) else None
        day = sim.day(i, kind, strength)
        write_day(day, root, fmt)
        stats.append(day.stats)
        if on_day is not None:
            on_day(day)
    _update_manifest(root, sim.config, stats)
    return stats
