"""Step 6 of the design: registry, batch prediction and the online service."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from loopml.spec.base import StrictModel

#: routing types once listed in the spec but never served; an old spec naming one gets this message
_NOT_SERVED = {"interleaving"}


class CanaryGate(StrictModel):
    """The gate of a canary, checked by `loopml serve` itself on a timer (`loopml.serving.canary_guard`).

    A step of `steps` advances only when its hold has passed and the gate passes: at least `min_requests`
    answers of the canary, its error rate's upper confidence bound within `max_error_rate_increase` of
    production's, its p99 latency within the bound, its score distribution like production's and (when
    feedback arrived) the online metric not significantly worse. Any breach archives the canary at once.
    """

    check_seconds: float = Field(default=1.0, gt=0, description="How often the server checks the canary "
                                 "(off the request path).")
    min_requests: int = Field(default=100, ge=20, description="Answers of the canary needed before a step may "
                              "advance (the score guardrail needs at least 20 per arm).")
    max_error_rate_increase: float = Field(
        default=0.01, gt=0, le=1,
        description="Largest tolerated error rate of the canary above production's (absolute, 0.01 = one point): "
        "a step passes when the upper confidence bound is within it; a significant excess (Fisher) breaches.")
    max_p99_ratio: float = Field(default=2.0, ge=1, description="The canary's p99 latency may be at most this "
                                 "multiple of production's (with p99_floor_ms of slack).")
    p99_floor_ms: float = Field(default=5.0, ge=0, description="p99 differences below this many ms never breach "
                                "(histogram resolution, timer noise).")
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="Error level of the gate's tests and bounds.")
    max_score_shift: float = Field(
        default=0.3, gt=0, le=1,
        description="KS distance between the canary's and production's score distributions at or above which (with "
        "p below score_p_value) the canary breaches; constant scores always do. Stricter than `loopml experiment "
        "status` (0.2, p < 0.01) because the server looks at every check: a retrained model's scores shift a "
        "little, a broken one's a lot.")
    score_p_value: float = Field(default=0.0005, gt=0, lt=0.5, description="p-value of the KS test below which a "
                                 "score shift of at least max_score_shift breaches.")
    max_hold_seconds: float | None = Field(
        default=None, gt=0,
        description="How long a step may be held while its gate is undecided (default 3 x hold_seconds); past "
        "it the canary is rolled back (no evidence, no promotion).")


class Routing(StrictModel):
    """Which model version answers a request (`loopml.serving.routing`)."""

    type: Literal["production", "shadow", "canary", "ab", "bandit"] = Field(
        default="production",
        description="Routing policy: `production` (every request to the production version), `shadow` (production "
        "answers; versions in state shadow score a copy off the hot path, logged with route `shadow`), `canary` "
        "(`fraction` of requests, by request id, to the version in state canary), `ab` (sticky: the request's "
        "`unit_key` hashed with `salt` assigns control = production or treatment = the version in state canary), "
        "`bandit` (the share of the version in state canary follows its delayed-label rewards: Thompson sampling "
        "or epsilon-greedy, updated every `update_seconds`; every choice logged with its propensity).",
    )
    fraction: float = Field(default=0.05, ge=0, le=1, description="Traffic share of the challenger (canary/ab).")
    unit_key: str | None = Field(
        default=None, min_length=1,
        description="ab: the request field whose value keeps a unit (e.g. user_id) in one arm; required for ab.",
    )
    salt: str = Field(default="", description="ab: salt of the assignment hash (a new salt reshuffles the units).")
    experiment: str | None = Field(
        default=None, min_length=1,
        description="Experiment name logged with each prediction (default: `<type>-<challenger version>`).",
    )
    steps: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=list,
        description="canary: traffic shares in increasing order, e.g. [0.01, 0.05, 0.25, 1.0], each held "
        "at least hold_seconds and then only when the canary passes its `gate` (empty: `fraction` throughout).",
    )
    hold_seconds: float = Field(default=300.0, gt=0, description="canary: how long each step of `steps` is held "
                                "at least.")
    gate: CanaryGate = Field(default_factory=CanaryGate, description="canary: SLOs and guardrails the server "
                             "checks by itself; a breach archives the canary and routes everything to production.")

    algorithm: Literal["thompson", "epsilon_greedy"] = Field(
        default="thompson",
        description="bandit: `thompson` (the challenger's share is the posterior probability that it has the higher "
        "reward, Beta-Bernoulli) or `epsilon_greedy` (the better mean reward gets 1 - epsilon/2).",
    )
    epsilon: float = Field(default=0.1, gt=0, le=1, description="bandit: exploration rate of epsilon_greedy.")
    min_share: float = Field(
        default=0.05, ge=0.001, le=0.5,
        description="bandit: the least share each arm keeps, so every logged propensity stays above it and "
        "off-policy estimates stay usable.",
    )
    update_seconds: float = Field(default=10.0, gt=0, description="bandit: how often the server recomputes the "
                                  "shares from the labelled predictions of the experiment (off the request path).")
    seed: int = Field(default=0, description="bandit: seed of Thompson sampling's posterior draws.")

    @field_validator("type", mode="before")
    @classmethod
    def _not_served(cls, value: object) -> object:
        if value in _NOT_SERVED:
            raise ValueError(
                f"routing type `{value}` is not served by loopml (it was listed but never implemented); use "
                "production, shadow, canary, ab or bandit (offline interleaving statistics live in "
                "loopml.experiments.interleaving)"
            )
        return value

    @model_validator(mode="after")
    def _ab_needs_a_unit(self) -> Routing:
        if self.steps and (self.type != "canary" or self.steps != sorted(self.steps)):
            raise ValueError("`steps` are the increasing traffic shares of a canary (routing type canary); got "
                             f"{self.steps} for type {self.type}")
        if self.type == "ab" and not self.unit_key:
            raise ValueError("routing type `ab` needs `unit_key`: the request field (e.g. user_id) whose value "
                             "keeps a unit in one arm")
        return self

    def options(self) -> dict[str, object]:
        """The options of the chosen policy (its own config model validates them)."""
        if self.type == "production":
            return {}
        if self.type == "shadow":
            return {"experiment": self.experiment}
        if self.type == "canary":
            return {"fraction": self.fraction, "experiment": self.experiment, "steps": self.steps,
                    "hold_seconds": self.hold_seconds, "gate": self.gate.model_dump()}
        if self.type == "bandit":
            return {"experiment": self.experiment, "algorithm": self.algorithm, "epsilon": self.epsilon,
                    "min_share": self.min_share, "update_seconds": self.update_seconds, "seed": self.seed}
        return {"fraction": self.fraction, "experiment": self.experiment, "unit_key": self.unit_key,
                "salt": self.salt}


class Limits(StrictModel):
    """What one client may cost the service: sizes, timeouts, connections and queued work.

    Each limit answers with its own status: 414 (request line), 431 (headers), 413 (body, rows),
    408 (a slow header or body; the connection is closed), 503 + ``Retry-After`` (too many
    connections, or more queued work than the latency budget allows).
    """

    max_request_line_bytes: int = Field(
        default=8 * 1024, ge=256, description="Longest request line (method, URL, version); longer: 414."
    )
    max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, description="Largest total size of the request headers; larger: 431."
    )
    max_headers: int = Field(default=100, ge=8, description="Most request headers; more: 431.")
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024,
        description="Largest request body; a larger Content-Length gets 413 before any of it is read, a chunked "
        "body is counted as it arrives.",
    )
    max_rows_per_request: int = Field(
        default=100_000, ge=1, description="Most rows in one /v1/predict request (or items in one /v1/feedback); more: 413."
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A request's line and headers must arrive within this; else 408 and close."
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A request's body must arrive within this after its headers; else 408 and close."
    )
    keep_alive_seconds: float = Field(
        default=5.0, gt=0, description="An idle keep-alive connection (or one that never sends) is closed after this."
    )
    write_timeout_seconds: float = Field(
        default=30.0, gt=0,
        description="A client that reads none of its pending responses for this long is disconnected.",
    )
    max_connections: int = Field(
        default=1000, ge=1, description="Open client connections; one more is answered 503 + Retry-After and closed."
    )
    max_unsent_bytes: int = Field(
        default=256 * 1024, ge=4096,
        description="Backpressure: while this many response bytes wait for a client to read them, its connection "
        "is not read (pipelined requests wait in the kernel, not in memory).",
    )
    max_queue_delay_ms: float | None = Field(
        default=None, ge=0,
        description="Load shedding: while the estimated wait before a new /v1/predict or /v1/feedback request would "
        "be served exceeds this, it is answered 503 + Retry-After at once. Default: "
        "requirements.constraints.latency_p99_ms, else 100 ms; 0 disables shedding.",
    )
    offload_min_bytes: int = Field(
        default=64 * 1024, ge=0,
        description="Request bodies at least this large are parsed and scored in a worker thread, so /health and "
        "single-row requests are not held behind them (0: every request with a body).",
    )
    offload_threads: int = Field(default=1, ge=1, le=64, description="Worker threads scoring large requests.")


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
    batch_executor: Literal["inprocess", "ray"] = Field(
        default="inprocess",
        description="Where `loopml predict --batch` scores: inprocess (DuckDB chunks in this process) or ray (Ray "
        "Data map_batches over the Parquet input on the cluster RAY_ADDRESS names, else a local Ray on "
        "127.0.0.1; same predictions file and scores). `loopml predict --executor` overrides it.",
    )
    log_flush_rows: int = Field(
        default=1_000, ge=1,
        description="The service appends its queued log records (one per request) to the journal file after this "
        "many records…",
    )
    log_flush_seconds: float = Field(
        default=1.0, gt=0,
        description="…or at most this many seconds after the last append; the journal is fdatasynced every "
        "log_flush_seconds (as Redis's appendfsync everysec). With log_durability `window` a killed process "
        "loses at most the records not yet appended (fewer than log_flush_rows, answered in the last "
        "log_flush_seconds); a machine crash, those of the last log_flush_seconds (since the last sync).",
    )
    log_durability: Literal["window", "before_answer"] = Field(
        default="window",
        description="`window`: answer at once; the journal is written every log_flush_rows records or "
        "log_flush_seconds and synced every log_flush_seconds (see there for what a crash loses). `before_answer`: a response that logged rows is "
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
    compile_trees: Literal["auto", "off"] = Field(
        default="auto",
        description="LightGBM versions served online: 'auto' compiles a version's trees to machine code "
        "(lleaves/LLVM, in a background thread at the lowest priority) once it has answered `compile_after_rows` "
        "rows, checks the compiled scores against LightGBM's on rows drawn from the model's own feature ranges "
        "(|difference| <= 1e-9) and then scores single rows and requests with it (about 2x less CPU per row); a "
        "model that does not compile or disagrees keeps LightGBM. 'off': always LightGBM's own tree walker.",
    )
    compile_after_rows: int = Field(
        default=1000, ge=0,
        description="compile_trees 'auto': rows a version answers before its trees are compiled (compiling costs "
        "seconds of CPU, worth it only for a version that serves traffic).",
    )
    limits: Limits = Field(
        default_factory=Limits, description="Request sizes, timeouts, connections, backpressure and load shedding."
    )
