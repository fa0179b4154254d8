"""Step 7 of the design: monitoring, alerts and retraining."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from loopml.spec.base import StrictModel

DriftMethod = Literal["psi", "ks", "chi2", "js", "wasserstein"]


def _all_methods() -> list[DriftMethod]:
    return ["psi", "ks", "chi2", "js", "wasserstein"]


class Drift(StrictModel):
    """Drift detection between the training reference and windows of the prediction log.

    A feature has drifted when its test (KS for numeric, chi-square for categorical) is
    significant at ``p_value`` divided by the number of features tested (Bonferroni) AND its
    effect (KS D or Cramér's V) is at least ``min_effect`` or its PSI at least ``psi_threshold``.
    The p-value guards small windows against noise; the effect floor guards huge windows
    against alarms on differences too small to matter.
    """

    methods: list[DriftMethod] = Field(
        default_factory=_all_methods,
        description="Statistics computed per feature; 'ks' and 'chi2' are the tests the decision uses "
        "(without them a feature drifts on PSI alone).",
    )
    psi_threshold: float = Field(default=0.2, ge=0, description="PSI above which a significant change counts as drift.")
    p_value: float = Field(
        default=0.01, gt=0, lt=1, description="Family-wise significance level (divided by the number of features)."
    )
    min_effect: float = Field(
        default=0.02,
        ge=0,
        description="Smallest effect (KS D or Cramér's V) counted, so huge samples don't alarm on negligible changes.",
    )
    window: str = Field(default="1d", description="Window length of the prediction log, e.g. '1h', '1d'.")
    min_rows: int = Field(default=200, ge=1, description="Windows with fewer logged rows are not judged.")
    multivariate: bool = Field(default=False, description="Also run a domain-classifier check.")
    multivariate_auc: float = Field(
        default=0.6, gt=0.5, le=1, description="Domain-classifier ROC-AUC at or above which the data has drifted."
    )
    reference: str | None = Field(
        default=None,
        description="Reference table (Parquet/CSV path relative to the project); the `train` split of the "
        "latest training when unset.",
    )
    features: list[str] = Field(
        default_factory=list, description="Columns watched; every input column in the prediction log when empty."
    )
    categorical: list[str] = Field(
        default_factory=list,
        description="Columns treated as categorical even if numeric (strings and integers with at most "
        "`max_int_categories` distinct values are categorical anyway).",
    )
    max_int_categories: int = Field(
        default=32, ge=0, description="Integer columns with at most this many distinct values are categorical."
    )
    sample_rows: int | None = Field(
        default=None, ge=1000, description="Randomly sample each side down to this many rows (all rows when unset)."
    )


class AlertRule(StrictModel):
    """An alert: a metric compared with a threshold over a window."""

    name: str = Field(description="Alert name.")
    metric: str = Field(
        description="Watched metric, e.g. 'drift.share', 'drift.count', 'drift.feature.temp.psi', "
        "'drift.prediction.psi', 'quality.roc_auc', 'cbpe.roc_auc', 'ops.latency_p99_ms', 'ops.error_rate', "
        "'labels.new', per arm of an experiment 'arm.canary.error_rate', 'arm.challenger.quality.roc_auc_delta' (see `loopml monitor --help`)."
    )
    op: Literal[">", ">=", "<", "<="] = Field(default=">", description="Comparison that fires the alert.")
    threshold: float = Field(description="Threshold.")
    window: str = Field(default="1d", description="Evaluation window.")
    severity: Literal["info", "warning", "critical"] = Field(default="warning", description="Severity.")
    command: str | None = Field(
        default=None, description="Shell command run when the alert fires (the alert JSON on stdin, LOOPML_ALERT_* env)."
    )
    webhook: str | None = Field(default=None, description="URL the alert JSON is POSTed to when the alert fires.")
    retrain: bool = Field(default=False, description="Whether firing triggers retraining.")


class Retraining(StrictModel):
    """When the loop goes back to data and training."""

    on_alerts: bool = Field(default=True, description="Retrain when an alert with retrain: true fires.")
    schedule: str | None = Field(default=None, description="Retrain on a schedule, e.g. '7d'.")
    min_new_labels: int | None = Field(default=None, ge=1, description="Retrain after this many new labelled rows.")
    export_path: str | None = Field(
        default=None,
        description="Folder (relative to the project) where labelled rows from the prediction and feedback logs "
        "are written as Parquet before retraining, so a Parquet source globbing it ingests them (columns follow "
        "that source's schema). Unset: retraining ingests the sources as they are.",
    )
    cooldown: str = Field(default="1h", description="Least time between two retrainings.")
    accept_drift: bool = Field(
        default=True,
        description="When a drift alert triggered the retraining, the data verification's distribution check "
        "(psi) only warns in that run: the change is the reason to retrain, not a broken feed. Row-level checks "
        "(types, ranges, domains, keys) still apply. The acceptance is recorded with the decision.",
    )
    lock_wait_s: float = Field(default=600.0, ge=0, description="Seconds to wait for the workspace lock.")


class Ops(StrictModel):
    """Where the service's operational metrics are read."""

    metrics_url: str | None = Field(
        default=None, description="Prometheus endpoint; http://{deployment.host}:{deployment.port}/metrics when unset."
    )
    timeout_s: float = Field(default=5.0, gt=0, description="Scrape timeout in seconds.")


class Monitoring(StrictModel):
    """What is watched and what happens when it goes wrong."""

    drift: Drift = Field(default_factory=Drift, description="Drift detection.")
    alerts: list[AlertRule] = Field(default_factory=list, description="Alert rules.")
    retraining: Retraining = Field(default_factory=Retraining, description="Retraining triggers.")
    ops: Ops = Field(default_factory=Ops, description="Operational metrics of the service.")
