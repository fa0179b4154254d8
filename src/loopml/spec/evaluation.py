"""Step 5b of the design: offline evaluation, slices, fairness and gates."""

from __future__ import annotations

from pydantic import Field

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
        "'fairness.demographic_parity_difference <= 0.1', 'latency_p99_ms <= requirements'.",
    )
    target_recall: float | None = Field(default=None, gt=0, le=1, description="Pick the threshold for this recall.")
    target_precision: float | None = Field(
        default=None, gt=0, le=1, description="Pick the threshold for this precision."
    )
