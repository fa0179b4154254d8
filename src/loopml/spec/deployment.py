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
    token_actor: str = Field(
        default="admin-api", min_length=1,
        description="Actor recorded in the registry history for admin actions made with the token in $token_env "
        "(the actor always comes from the token, never from a request body).",
    )
    admin_tokens: dict[str, str] = Field(
        default_factory=dict,
        description="More admin tokens, one per person or system: environment variable holding the token → the "
        "actor name recorded for the actions made with it, e.g. {ALICE_TOKEN: alice}.",
    )
    feedback_token_env: str | None = Field(
        default=None,
        description="When set, POST /v1/feedback needs `Authorization: Bearer $<this variable>` (feedback is "
        "refused while the variable is unset); by default feedback needs no token.",
    )
    batch_chunk_rows: int = Field(default=200_000, ge=1, description="Rows per chunk in batch prediction.")
    log_flush_rows: int = Field(
        default=1_000, ge=1,
        description="The service appends its queued log records (one per request) to the journal file after this "
        "many records…",
    )
    log_flush_seconds: float = Field(
        default=1.0, gt=0,
        description="…or this many seconds after the last append, and fdatasyncs it. With log_durability `window` "
        "a killed process loses at most the records of this window (fewer than log_flush_rows, answered in the "
        "last log_flush_seconds); a machine crash, those since the last sync.",
    )
    log_durability: Literal["window", "before_answer"] = Field(
        default="window",
        description="`window`: answer at once; the journal is written and synced every log_flush_rows records or "
        "log_flush_seconds (see there for what a crash loses). `before_answer`: a response that logged rows is "
        "sent only once they are written and fdatasynced (group commit: the requests answered while one sync "
        "runs share the next one), so no answered prediction is lost even if the process or machine dies; it "
        "costs a sync per batch of requests (measured in `python -m benchmarks serving`, row loopml-durable).",
    )
    drain_seconds: float = Field(
        default=10.0, ge=0,
        description="On SIGTERM/SIGINT the service stops accepting, closes idle connections and answers the "
        "requests already begun for at most this long; then it closes (flushes and syncs) the logs and exits.",
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
