"""Step 6 of the design: registry, batch prediction and the online service."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from loopml.spec.base import StrictModel


class Routing(StrictModel):
    """Which model version answers a request."""

    type: Literal["production", "shadow", "canary", "ab", "bandit", "interleaving"] = Field(
        default="production", description="Routing policy."
    )
    fraction: float = Field(default=0.05, ge=0, le=1, description="Traffic share of the challenger (canary/ab).")


class Deployment(StrictModel):
    """How predictions are served."""

    mode: Literal["online", "batch", "both"] = Field(default="online", description="Serving mode.")
    host: str = Field(default="127.0.0.1", description="Interface the service binds to.")
    port: int = Field(default=8700, ge=0, le=65535, description="Port of the service.")
    routing: Routing = Field(default_factory=Routing, description="Routing policy.")
    token_env: str = Field(
        default="LOOPML_ADMIN_TOKEN", description="Environment variable holding the admin token."
    )
    batch_chunk_rows: int = Field(default=200_000, ge=1, description="Rows per chunk in batch prediction.")
    log_flush_rows: int = Field(
        default=1_000, ge=1, description="Prediction log writes a Parquet segment after this many rows…"
    )
    log_flush_seconds: float = Field(
        default=1.0, gt=0, description="…or this many seconds after the first unwritten row (a crash loses at most that)."
    )
    log_compact_seconds: float = Field(
        default=60.0, ge=0, description="A server merges its log segments of the last this many seconds into one (0: never)."
    )
    log_max_lag_seconds: float = Field(
        default=60.0,
        ge=0,
        description="While requests flow fast, the log writer may leave rows in the durable journal this long "
        "before writing their Parquet segment (0: write at once; the request loop then shares its core with it).",
    )
    registry_poll_seconds: float = Field(
        default=2.0, ge=0, description="How often a running server checks the registry for promotions (0: never)."
    )
