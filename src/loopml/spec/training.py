"""Step 5a of the design: dataset construction, candidate models, tuning and selection."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from loopml.spec.base import StrictModel


class SplitValues(StrictModel):
    """The values of a ``column`` split's column that name each split."""

    train: list[str] = Field(default_factory=lambda: ["train"], description="Values marking training rows.")
    valid: list[str] = Field(
        default_factory=lambda: ["valid", "validation", "val", "dev"], description="Values marking validation rows."
    )
    test: list[str] = Field(default_factory=lambda: ["test"], description="Values marking test rows.")

    @model_validator(mode="after")
    def _disjoint(self) -> SplitValues:
        seen: dict[str, str] = {}
        for part in ("train", "valid", "test"):
            if not getattr(self, part):
                raise ValueError(f"{part}: give at least one value")
            for v in getattr(self, part):
                key = v.strip().lower()
                if key in seen:
                    raise ValueError(f"value {v!r} names both the {seen[key]} and the {part} split")
                seen[key] = part
        return self


class Split(StrictModel):
    """How examples are split into train, validation and test."""

    type: Literal["random", "stratified", "time", "group", "column"] = Field(
        default="stratified",
        description="random, stratified (by target), time (past→future), group, or column (the data comes split: "
        "a column names each row's split, e.g. train/valid/test).",
    )
    valid_fraction: float = Field(
        default=0.15, gt=0, lt=1, description="Fraction of rows for validation (not used by a column split)."
    )
    test_fraction: float = Field(
        default=0.15, gt=0, lt=1, description="Fraction of rows for test (not used by a column split)."
    )
    time_column: str | None = Field(default=None, description="Column ordering rows for a time split.")
    group_column: str | None = Field(default=None, description="Column whose values never cross splits.")
    column: str | None = Field(
        default=None, description="Column split: the column naming each row's split (values in `values`)."
    )
    values: SplitValues = Field(
        default_factory=SplitValues,
        description="Column split: which values of `column` mean train, valid and test (compared as text, "
        "case-insensitively, surrounding spaces ignored).",
    )

    @model_validator(mode="after")
    def _column_split(self) -> Split:
        if self.type == "column" and not self.column:
            raise ValueError("a column split needs `column`: the column naming each row's split (train/valid/test)")
        if self.type != "column" and self.column is not None:
            raise ValueError(f"`column` is only used by `type: column` (this split is `{self.type}`)")
        return self


class Sampling(StrictModel):
    """Sampling applied to the training split."""

    type: Literal["none", "stratified", "reservoir", "importance", "negative_downsample"] = Field(
        default="none", description="Sampling method."
    )
    max_rows: int | None = Field(default=None, ge=1, description="Keep at most this many rows.")
    weight_column: str | None = Field(default=None, description="Importance weights column.")
    negative_rate: float | None = Field(
        default=None, gt=0, le=1, description="Keep this fraction of negatives; predictions are re-calibrated."
    )


class Imbalance(StrictModel):
    """Class imbalance handling."""

    method: Literal["none", "class_weight", "oversample", "undersample", "focal_loss"] = Field(
        default="none", description="How class imbalance is handled."
    )
    focal_gamma: float = Field(default=2.0, ge=0, description="Focal loss gamma.")


class ModelCandidate(StrictModel):
    """One candidate model: a registered model name and its parameters."""

    type: str = Field(description="Registered model name (see `loopml zoo`).")
    name: str | None = Field(default=None, description="Label in the leaderboard; defaults to `type`.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters for the model's own config model (validated by the model)."
    )
    tune: bool = Field(default=False, description="Tune this candidate's hyperparameters with Optuna.")


class Tuning(StrictModel):
    """Hyperparameter search settings."""

    n_trials: int = Field(
        default=20,
        ge=1,
        description="The tuning budget: trials per tuned candidate (trial 0 is the spec's own parameters). Trials "
        "are proposed by a seeded TPE sampler in a fixed order, in batches of the executor's parallelism that are "
        "told back in trial order, so the same spec, seed and data give the same trials and the same choice "
        "whether the machine is idle or busy, and with parallel trials.",
    )
    time_budget_s: float | None = Field(
        default=1800.0,
        gt=0,
        description="Safety cap in seconds (wall clock) on training and tuning all candidates, not the budget: "
        "fixed candidates are fitted first, tuned ones share what is left. When it stops tuning before n_trials, "
        "the leaderboard says so (the result then depends on the machine's speed). null: no cap.",
    )
    metric: str | None = Field(default=None, description="Validation metric to optimise; task default when unset.")
    cv_folds: int | Literal["auto"] = Field(
        default="auto",
        description="Score tuning trials by k-fold cross-validation on the training split (then candidates are "
        "compared on the validation split); 'auto': 5 folds when the training split has at most 10,000 rows, "
        "else the validation split scores trials too; 0 or 1: always the validation split.",
    )


class Training(StrictModel):
    """How the dataset is built and which models compete."""

    split: Split = Field(default_factory=Split, description="Train/validation/test split.")
    sampling: Sampling = Field(default_factory=Sampling, description="Sampling of the training split.")
    imbalance: Imbalance = Field(default_factory=Imbalance, description="Class imbalance handling.")
    candidates: list[ModelCandidate] = Field(
        default_factory=lambda: [ModelCandidate(type="prior"), ModelCandidate(type="lightgbm")],
        description="Candidate models trained and compared.",
    )
    tuning: Tuning = Field(default_factory=Tuning, description="Hyperparameter tuning.")
    seed: int = Field(default=0, description="Random seed for splits, sampling and models.")
    prefer_simpler: bool = Field(
        default=True,
        description="Pick the least complex eligible candidate whose validation score is not significantly "
        "below the best one (one-sided 95% paired bootstrap on the validation rows); false: the best score wins.",
    )
    refit: bool = Field(
        default=False,
        description="After selection, refit the winner (transform and model, same parameters and number of "
        "rounds) on train + valid; the test split stays untouched.",
    )
    executor: Annotated[Literal["inprocess", "process", "ray"], Field()] = Field(
        default="inprocess",
        description="Where trials run: in this process, a local process pool, or Ray (one trial per Ray task). "
        "With ray, the final fit (and refit) of each lightgbm candidate is also data-parallel over "
        "`ray_workers` Ray Train workers (the cluster RAY_ADDRESS names, else a local Ray on 127.0.0.1); "
        "other models, and lightgbm on sparse (TF-IDF) features, fit in this process.",
    )
    ray_workers: int = Field(
        default=2,
        ge=1,
        description="executor ray: Ray Train workers (one CPU each) a lightgbm candidate's final fit is shared "
        "by; each worker holds 1/ray_workers of the training rows and the whole validation split.",
    )
