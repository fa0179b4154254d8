"""Step 7 of the design: monitoring, alerts and retraining."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from loopml.spec.base import StrictModel


class Drift(StrictModel):
    """Drift detection between the training reference and windows of the prediction log."""

    methods: list[Literal["psi", "ks", "chi2", "js", "wasserstein"]] = Field(
        default_factory=lambda: ["psi", "ks", "chi2"], description="Statistics computed per feature."
    )
    psi_threshold: float = Field(default=0.2, ge=0, description="PSI above which a feature has drifted.")
    p_value: float = Field(default=0.01, gt=0, lt=1, description="Test p-value below which a feature drifted.")
    min_effect: float = Field(
        default=0.05, ge=0, description="Smallest effect (KS D or Cramér's V) counted, so huge samples don't alarm on noise."
    )
    window: str = Field(default="1d", description="Window length of the prediction log, e.g. '1h', '1d'.")
    multivariate: bool = Field(default=False, description="Also run a domain-classifier check.")


class AlertRule(StrictModel):
    """An alert: a metric compared with a threshold over a window."""

    name: str = Field(description="Alert name.")
    metric: str = Field(description="Watched metric, e.g. 'drift.share', 'quality.roc_auc', 'ops.latency_p99_ms'.")
    op: Literal[">", ">=", "<", "<="] = Field(default=">", description="Comparison that fires the alert.")
    threshold: float = Field(description="Threshold.")
    window: str = Field(default="1d", description="Evaluation window.")
    severity: Literal["info", "warning", "critical"] = Field(default="warning", description="Severity.")
    command: str | None = Field(default=None, description="Shell command run when the alert fires.")
    webhook: str | None = Field(default=None, description="URL posted to when the alert fires.")
    retrain: bool = Field(default=False, description="Whether firing triggers retraining.")


class Retraining(StrictModel):
    """When the loop goes back to data and training."""

    on_alerts: bool = Field(default=True, description="Retrain when an alert with retrain: true fires.")
    schedule: str | None = Field(default=None, description="Retrain on a schedule, e.g. '7d'.")
    min_new_labels: int | None = Field(default=None, ge=1, description="Retrain after this many new labelled rows.")


class Monitoring(StrictModel):
    """What is watched and what happens when it goes wrong."""

    drift: Drift = Field(default_factory=Drift, description="Drift detection.")
    alerts: list[AlertRule] = Field(default_factory=list, description="Alert rules.")
    retraining: Retraining = Field(default_factory=Retraining, description="Retraining triggers.")
