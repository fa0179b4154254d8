"""Step 1 of the design: requirements (objective, constraints, privacy, scale)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from loopml.spec.base import StrictModel


class CoarsenRule(StrictModel):
    """Reduce the precision of a column before it is stored."""

    column: str = Field(description="Column to coarsen.")
    method: Literal["round", "bucket", "truncate_time", "prefix"] = Field(
        description="round: round numbers to `step`; bucket: floor to a multiple of `step`; "
        "truncate_time: cut timestamps to `unit`; prefix: keep the first `step` characters of a string."
    )
    step: float | None = Field(default=None, description="Step for round/bucket, or length for prefix.")
    unit: Literal["minute", "hour", "day", "week", "month"] | None = Field(
        default=None, description="Time unit for truncate_time."
    )


class Privacy(StrictModel):
    """Privacy rules applied to columns before anything is written to the lake."""

    drop: list[str] = Field(default_factory=list, description="Columns removed at ingestion.")
    hash: list[str] = Field(
        default_factory=list,
        description="Columns replaced by a keyed hash (HMAC-SHA256); the key is read from `hash_key_env`.",
    )
    coarsen: list[CoarsenRule] = Field(default_factory=list, description="Columns whose precision is reduced.")
    hash_key_env: str = Field(
        default="LOOPML_HASH_KEY",
        description="Environment variable holding the hashing key; the key never lives in the spec.",
    )


class Constraints(StrictModel):
    """Budgets that decide which models are eligible."""

    latency_p99_ms: float | None = Field(
        default=None,
        gt=0,
        description="Budget for the 99th percentile prediction latency, in milliseconds. Measured as CPU time of "
        "the predicting thread (other processes on the machine cannot move it), p99 per round, the minimum over "
        "rounds interleaved across candidates; the leaderboard records the method, the spread between rounds "
        "(the uncertainty) and the wall-clock p99 for information.",
    )
    latency_tolerance: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Measurement tolerance of the latency budget: a candidate is over budget only when its measured "
        "p99 exceeds latency_p99_ms × (1 + latency_tolerance), so that measurement noise near the budget does not "
        "flip the decision between runs.",
    )
    latency_batch_size: int = Field(default=1, ge=1, description="Batch size at which the latency budget applies.")
    max_model_size_mb: float | None = Field(default=None, gt=0, description="Largest allowed model artifact, MB.")
    deployment_target: Literal["cloud", "on-device"] = Field(
        default="cloud", description="Where the model runs: a cloud service or on the user's device."
    )


class Scale(StrictModel):
    """Expected size of the problem; used for planning and reports."""

    rows: int | None = Field(default=None, ge=0, description="Expected training rows.")
    entities: int | None = Field(default=None, ge=0, description="Expected distinct entities (e.g. users).")
    qps: float | None = Field(default=None, ge=0, description="Expected online queries per second.")
    max_stage_memory_mb: float | None = Field(
        default=None,
        gt=0,
        description="Cap on the peak resident memory (RSS, MB) of the process running any pipeline stage. A stage "
        "fails before it loads anything when the memory its process already holds plus what it must hold at once "
        "(estimated from the rows and columns of its input tables) exceeds the cap, and is stopped while running "
        "when the RSS crosses it; the message names the stage and the cap. Every stage's peak RSS is recorded in "
        "the run (`loopml runs --run ID`). null: no cap.",
    )
    stage_memory_mb: dict[str, float] = Field(
        default_factory=dict,
        description="Per-stage memory caps (MB) by stage name (e.g. `{train: 2048}`), overriding "
        "max_stage_memory_mb for those stages; a name that is not a stage of the pipeline is refused.",
    )


class Requirements(StrictModel):
    """What the system must achieve and within which limits."""

    objective: str = Field(default="", description="The business objective in words.")
    success_metric: str = Field(default="", description="The business metric that says whether it worked.")
    constraints: Constraints = Field(default_factory=Constraints, description="Latency, size and target budgets.")
    privacy: Privacy = Field(default_factory=Privacy, description="Column-level privacy rules.")
    scale: Scale = Field(default_factory=Scale, description="Expected data and traffic scale.")
