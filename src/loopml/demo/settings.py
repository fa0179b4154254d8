"""Settings of ``loopml demo``: where it works, and how much traffic it simulates or which real log it imports."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class DemoSettings(BaseModel):
    """How the reference system is run.

    Examples
    --------
    >>> DemoSettings(days=3, impressions_per_day=2000).days
    3
    """

    model_config = ConfigDict(extra="forbid")

    project: Path = Field(default=Path("loopml-demo"), description="Project folder the demo creates and works in.")
    days: int = Field(
        default=7,
        ge=2,
        le=60,
        description="Days of traffic before training: simulated, or the days a --data log is spread over "
        "(one more day is held out of it for the replay).",
    )
    impressions_per_day: int = Field(default=15_000, ge=500, description="Mean impressions per simulated day.")
    market_scale: float = Field(
        default=0.02,
        gt=0,
        le=1,
        description="Catalogue sizes relative to the KDD-calibrated market (smaller: users and ads recur within a week).",
    )
    drift: str = Field(default="user_shift", description="Drift kind of the replayed day (see loopml simulate --help).")
    strength: float = Field(default=1.0, ge=0, description="Drift magnitude (1.0 = the documented default).")
    seed: int = Field(
        default=0, description="Seed of the simulated market and traffic (with --data: of the in-day jitter and click delays)."
    )
    serve: bool = Field(default=True, description="Keep serving after the loop until Ctrl-C.")
    port: int | None = Field(default=None, ge=0, le=65535, description="Service port; the spec's if free, else any.")
    replay_batch: int = Field(default=250, ge=1, description="Impressions per prediction request in the replay.")
    data: Path | None = Field(
        default=None,
        description="A real KDD Cup 2012 click log (CSV as shipped, TSV or Parquet) to run on instead of simulated "
        "traffic; its last day is held out and replayed through the service (no synthetic drift).",
    )
    rows: int | None = Field(default=None, ge=1, description="Read at most this many rows of the --data log.")
    rollout: bool = Field(
        default=True,
        description="Roll the retrained candidate out (shadow, then a canary gated by the server; promoted or rolled "
        "back by the evidence); off: leave it registered for review.",
    )
    fresh: bool = Field(default=True, description="Start from an empty demo project (a previous demo's is replaced).")
