"""Where the demo's traffic comes from: the simulator, or a real KDD Cup 2012 click log.

Either way the demo gets the same thing: days of event logs written to the project's ``data/``
folder (what the ``ad_clicks`` spec ingests), one more day kept back to replay through the
running service, and a day the feature store has seen (for the example request).

>>> import tempfile
>>> from pathlib import Path
>>> traffic = simulated_traffic(DemoSettings(days=2, impressions_per_day=500), Path(tempfile.mkdtemp()))
>>> traffic.source, len(traffic.history), traffic.replay.stats["drift"]
('simulated', 2, 'user_shift')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from loopml.demo.settings import DemoSettings
from loopml.simulator import (
    DayLog,
    KDDLog,
    SimulatorConfig,
    TrafficSimulator,
    event_days,
    simulate,
    write_day,
)
from loopml.simulator.kdd import MANIFEST, write_manifest
from loopml.simulator.logs import LOGS

REPLAY_NOTE = (
    "The last day was held out of the first training and replayed through the running service; its "
    "logs then landed in the lake and are part of any retraining."
)


@dataclass
class DemoTraffic:
    """The demo's event logs: the days written before training and the day replayed afterwards.

    Attributes
    ----------
    source
        ``"simulated"`` or ``"kdd"``.
    history
        The figures of each day written to ``data/`` before training.
    replay
        The day replayed through the service (drifted when simulated; the held-out day when real).
    seen
        A day the feature store has seen: its first row is the example request.
    replay_text
        What the replay is, in words.
    land
        Writes the replayed day's logs into the lake (the production logging system's job).
    written
        The days written before training, when kept in memory (imported logs; empty when simulated).
    """

    source: str
    history: list[dict[str, Any]]
    replay: DayLog
    seen: DayLog
    replay_text: str
    land: Callable[[Path], None] = field(repr=False)
    written: list[DayLog] = field(default_factory=list, repr=False)

    @property
    def impressions(self) -> int:
        """Impressions written before training."""
        return sum(int(d["impressions"]) for d in self.history)

    @property
    def clicks(self) -> int:
        """Clicks written before training."""
        return sum(int(d["clicks"]) for d in self.history)


def simulated_traffic(settings: DemoSettings, data: Path, on_day: Callable[[DayLog], None] | None = None) -> DemoTraffic:
    """Simulate ``settings.days`` days into ``data``; the replay is the next day under ``settings.drift``."""
    cfg = SimulatorConfig(seed=settings.seed, impressions_per_day=settings.impressions_per_day).scaled(settings.market_scale)
    sim = TrafficSimulator(cfg)
    clear_logs(data)
    days = simulate(data, settings.days, simulator=sim, on_day=on_day)
    replay = sim.day(settings.days, settings.drift, settings.strength)
    return DemoTraffic(
        source="simulated",
        history=days,
        replay=replay,
        seen=sim.day(settings.days - 1),
        replay_text=f"a drifted day ({settings.drift})",
        land=partial(_land, replay, logs=LOGS),  # impressions, clicks and truth, as simulated
    )


def imported_traffic(
    settings: DemoSettings, log: KDDLog, data: Path, on_day: Callable[[DayLog], None] | None = None
) -> DemoTraffic:
    """Spread a real click log over ``settings.days + 1`` days; write all but the last, which is replayed."""
    days = event_days(log, settings.days + 1, seed=settings.seed)
    clear_logs(data)
    data.mkdir(parents=True, exist_ok=True)
    for day in days[:-1]:
        write_day(day, data, logs=("impressions", "clicks"))
        if on_day is not None:
            on_day(day)
    write_manifest(data, log, days, max_click_delay_s=540.0, held_out=1, notes=[REPLAY_NOTE])
    replay = days[-1]
    return DemoTraffic(
        source="kdd",
        history=[d.stats for d in days[:-1]],
        replay=replay,
        seen=days[-2],
        replay_text=f"the held-out last day of the real log (rows {replay.stats['first_row']:,}-"
        f"{replay.stats['last_row']:,}; no synthetic drift)",
        land=partial(_land, replay, logs=("impressions", "clicks")),
        written=days[:-1],
    )


def clear_logs(data: Path) -> None:
    """Remove the event logs and manifests a previous demo wrote into ``data`` (a ``--keep`` rerun).

    Otherwise the day a previous run replayed and landed would already be in the training data,
    and a simulated and an imported week would mix. Only the demo's own log folders and manifests
    are removed.
    """
    import shutil

    for name in (*LOGS, "simulation.json", MANIFEST):
        path = data / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _land(day: DayLog, folder: Path, *, logs: tuple[str, ...]) -> None:
    write_day(day, folder, logs=logs)


def unseen_id_shares(written: list[DayLog], replay: DayLog, columns: list[str]) -> dict[str, dict[str, float]]:
    """Share of ids never seen before, on the replayed day and, for comparison, on the last training day.

    On a long-tailed log every day brings new ids. When the replayed day's share of ids unseen in
    training matches the last training day's share of ids unseen before it, a drift verdict on
    those id columns reflects the tail, not a changed population.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from loopml.simulator import read_kdd_log, event_days
    >>> t = pa.table({c: [1, 2, 1, 3, 4, 5] for c in ("ad_id", "advertiser_id", "query_id", "keyword_id", "user_id")}
    ...              | {"click": [0] * 6, "depth": [1] * 6, "position": [1] * 6})
    >>> d = event_days(read_kdd_log(t), 3)
    >>> unseen_id_shares(d[:2], d[2], ["ad_id"])
    {'ad_id': {'replayed': 1.0, 'last_training_day': 0.5}}
    """
    out: dict[str, dict[str, float]] = {}
    if len(written) < 2:
        return out
    for col in columns:
        if col not in replay.impressions.column_names:
            continue
        seen = np.concatenate([d.impressions.column(col).to_numpy() for d in written])
        before = np.concatenate([d.impressions.column(col).to_numpy() for d in written[:-1]])
        last = written[-1].impressions.column(col).to_numpy()
        now = replay.impressions.column(col).to_numpy()
        out[col] = {
            "replayed": round(float(np.mean(~np.isin(now, seen))), 4) if now.size else 0.0,
            "last_training_day": round(float(np.mean(~np.isin(last, before))), 4) if last.size else 0.0,
        }
    return out
