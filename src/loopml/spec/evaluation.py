"""Step 5b of the design: offline evaluation, slices, fairness and gates."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from loopml.spec.base import StrictModel


class MetricPairing(StrictModel):
    """An offline metric and the online metric it stands for."""

    name: str = Field(description="Offline metric name (see the metric registry).")
    online_metric: str | None = Field(default=None, description="The online metric it stands for (e.g. CTR).")
    k: int | None = Field(default=None, ge=1, description="Cut-off for @k ranking metrics.")


class Fairness(StrictModel):
    """Fairness analysis over sensitive columns."""

    sensitive_columns: list[str] = Field(default_factory=list, description="Columns holding protected attributes.")
    threshold: float = Field(default=0.5, ge=0, le=1, description="Decision threshold for parity metrics.")
    min_group_size: int = Field(
        default=1,
        ge=1,
        description="Groups with fewer test rows are listed but left out of the difference metrics "
        "(tiny groups make parity differences noise).",
    )


class RankingProtocol(StrictModel):
    """How a ranking model is tested: as it is used, ranking the catalogue for each test user."""

    protocol: Literal["auto", "full_catalogue", "sampled", "test_items"] = Field(
        default="auto",
        description="full_catalogue: each test user ranks every catalogue item (items of the train, valid and test "
        "splits) except those the user interacted with in train/valid; relevance is the test label, 0 for items "
        "the user did not interact with in the test period. sampled: each user's test items plus `sampled_items` "
        "items drawn uniformly (seeded by evaluation.seed) from the rest of the catalogue the user has not "
        "interacted with (cheaper on large catalogues; metrics read higher than on the full catalogue). "
        "test_items: re-rank only the items each user interacted with in the test period (optimistic). "
        "auto: full_catalogue up to `max_candidate_rows` user-item pairs, else sampled.",
    )
    sampled_items: int = Field(
        default=1000, ge=1, description="Sampled protocol: catalogue items drawn per user besides its test items."
    )
    max_candidate_rows: int = Field(
        default=5_000_000,
        ge=1,
        description="auto: the full catalogue is scored when test users × catalogue items is at most this.",
    )


class Evaluation(StrictModel):
    """How a candidate is judged before it may be promoted."""

    metrics: list[MetricPairing] = Field(default_factory=list, description="Metrics reported; task defaults if empty.")
    bootstrap_resamples: int = Field(default=200, ge=0, description="Bootstrap resamples for confidence intervals.")
    confidence: float = Field(default=0.95, gt=0, lt=1, description="Confidence level of intervals and gates.")
    slices: list[str] = Field(default_factory=list, description="Columns whose values (or buckets) form slices.")
    fairness: Fairness = Field(default_factory=Fairness, description="Fairness analysis.")
    gates: list[str] = Field(
        default_factory=list,
        description="Promotion gates, e.g. 'roc_auc >= 0.75', 'roc_auc > production + 0.002', "
        "'roc_auc >= production - 0.01', 'fairness.demographic_parity_difference <= 0.1', "
        "'latency_p99_ms <= requirements'. Gates against `production` or `baseline` are decided on the paired "
        "bootstrap interval of the difference (at `confidence`, the interval the report shows), never on the point "
        "estimate; `at NN% confidence` uses the one-sided NN% bound instead.",
    )
    baseline_gate: bool = Field(
        default=True,
        description="The implicit baseline gate: a model is approved only if the paired bootstrap interval of its "
        "primary-metric difference against the task's baseline (prior, mean, most_popular) excludes zero in the "
        "right direction; otherwise the verdict is 'no better than the baseline' and nothing is promoted. false "
        "turns it off (the report says it was off).",
    )
    threshold: float = Field(
        default=0.5, gt=0, lt=1, description="Decision threshold of a binary classifier (unless a target is set)."
    )
    seed: int = Field(default=0, description="Seed of the bootstrap resampling (same seed, same intervals).")
    bootstrap_method: Literal["auto", "multinomial", "poisson"] = Field(
        default="auto",
        description="multinomial (exact), poisson (independent Poisson(1) counts, for large test sets) or auto "
        "(multinomial up to 200,000 rows).",
    )
    slice_buckets: int = Field(default=4, ge=2, description="Quantile buckets for numeric slice columns.")
    slice_intervals: Literal["primary", "all"] = Field(
        default="primary",
        description="Bootstrap intervals per slice for the primary metric only (cheaper on large test sets) "
        "or for every metric.",
    )
    slice_max_values: int = Field(
        default=20, ge=1, description="Most frequent values of a slice column kept as slices; the rest pooled."
    )
    bins: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Explicit bucket edges for numeric slice or sensitive columns, e.g. {age: [25, 40, 60]}.",
    )
    calibration_bins: int = Field(default=10, ge=2, description="Equal-width bins of ECE and calibration curves.")
    largest_loss_examples: int = Field(
        default=20, ge=0, description="How many highest-loss test rows the report lists (their input values)."
    )
    permutation_repeats: int = Field(
        default=3, ge=0, description="Repeats of permutation importance, one shuffle per input column each (0 = off)."
    )
    permutation_max_rows: int = Field(
        default=20000, ge=100, description="Rows sampled from the test split for permutation importance."
    )
    importance_budget_s: float = Field(
        default=15.0,
        gt=0,
        description="Time budget in seconds for permutation importance (one shuffle per input column and repeat, "
        "round-robin); when it runs out the report says how many columns and repeats were measured.",
    )
    ranking: RankingProtocol = Field(
        default_factory=RankingProtocol, description="Ranking tasks: which items each test user ranks."
    )
    target_recall: float | None = Field(default=None, gt=0, le=1, description="Pick the threshold for this recall.")
    target_precision: float | None = Field(
        default=None, gt=0, le=1, description="Pick the threshold for this precision."
    )

    @field_validator("gates")
    @classmethod
    def _gates_parse(cls, gates: list[str]) -> list[str]:
        """Malformed gates fail when the spec is loaded, with the gate, its position and what was expected."""
        if not gates:
            return gates
        from loopml.evaluation.gates import (  # lazy: only specs with gates import it
            GateSyntaxError,
            parse_gate,
        )

        problems = []
        for i, g in enumerate(gates):
            try:
                parse_gate(g, i)
            except GateSyntaxError as exc:
                problems.append(exc.message)
        if problems:
            raise ValueError("; ".join(problems))
        return gates
