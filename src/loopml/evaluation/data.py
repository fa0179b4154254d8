"""What a metric is computed on: labels and one model's scores, checked and shaped per task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from loopml.errors import DataError
from loopml.evaluation.kernels import RankOrder

EvalTask = Literal["binary", "multiclass", "regression", "ranking", "text"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "regression", "ranking", "text")


@dataclass(eq=False)
class EvalData:
    """Labels and one model's scores, validated for ``task``.

    Parameters
    ----------
    task
        ``binary``, ``multiclass``, ``regression``, ``ranking`` or ``text``.
    y
        Labels: 0/1 (binary), class index 0..k-1 (multiclass), value (regression), graded
        relevance ≥ 0 (ranking), reference strings (text).
    score
        Scores: P(positive) (binary), ``(n, k)`` class probabilities (multiclass), value
        (regression), ranking score (ranking), generated strings (text).
    threshold
        Decision threshold turning a binary score into a class.
    groups
        Ranking only: the query/user each row belongs to.
    items
        Ranking only: the item of each row (for catalogue coverage).
    catalogue_size
        Ranking only: number of items that could be recommended (default: distinct items seen).
    calibration_bins
        Number of equal-width probability bins for ECE and calibration curves.

    Examples
    --------
    >>> d = EvalData("binary", np.array([0, 1, 1]), np.array([0.2, 0.7, 0.4]))
    >>> d.pred.tolist()
    [0.0, 1.0, 0.0]
    """

    task: str
    y: Any
    score: Any
    threshold: float = 0.5
    groups: np.ndarray | None = None
    items: np.ndarray | None = None
    catalogue_size: int | None = None
    calibration_bins: int = 10
    name: str = "candidate"
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"unknown evaluation task `{self.task}` (expected one of {', '.join(TASKS)})")
        if self.task == "text":
            self.y = [str(v) for v in self.y]
            self.score = [str(v) for v in self.score]
            if len(self.y) != len(self.score):
                raise DataError(
                    f"{self.name}: {len(self.score)} generated texts for {len(self.y)} references; expected one each"
                )
            return
        y = np.asarray(self.y)
        s = np.asarray(self.score, dtype=np.float64)
        if y.ndim != 1:
            raise DataError(f"labels must be one-dimensional, got shape {y.shape}")
        if s.shape[0] != y.shape[0]:
            raise DataError(f"{self.name}: {s.shape[0]} scores for {y.shape[0]} labels; expected one score per label")
        if not np.all(np.isfinite(s)):
            bad = int(np.flatnonzero(~np.isfinite(s).reshape(len(s), -1).all(axis=1))[0])
            raise DataError(f"{self.name}: score at row {bad} is {s.reshape(len(s), -1)[bad].tolist()}; expected finite numbers")
        if self.task == "binary":
            y = _binary_labels(y)
            if s.ndim == 2 and s.shape[1] == 2:
                s = s[:, 1]
            if s.ndim != 1:
                raise DataError(f"{self.name}: binary scores must be P(positive) per row, got shape {s.shape}")
            _check_probabilities(s, self.name)
        elif self.task == "multiclass":
            if s.ndim != 2:
                raise DataError(f"{self.name}: multiclass scores must be (rows, classes) probabilities, got {s.shape}")
            yi = y.astype(np.int64) if y.dtype.kind in "iub" else None
            if yi is None or yi.min(initial=0) < 0 or yi.max(initial=0) >= s.shape[1]:
                raise DataError(
                    f"{self.name}: multiclass labels must be class indices 0..{s.shape[1] - 1}, "
                    f"got values such as {np.unique(y)[:5].tolist()}"
                )
            _check_probabilities(s, self.name)
            y = yi
        elif self.task == "ranking":
            y = y.astype(np.float64)
            if np.any(y < 0) or not np.all(np.isfinite(y)):
                raise DataError(f"{self.name}: ranking relevance labels must be finite and ≥ 0")
            if self.groups is None:
                raise DataError("ranking evaluation needs the query/user column of each row (task.group_key)")
            if len(self.groups) != len(y):
                raise DataError(f"{len(self.groups)} group ids for {len(y)} rows; expected one per row")
        else:
            y = y.astype(np.float64)
            if not np.all(np.isfinite(y)):
                raise DataError(f"regression labels must be finite; row {int(np.flatnonzero(~np.isfinite(y))[0])} is not")
        self.y = y
        self.score = s

    # -- derived arrays (cached: shared by every metric of this model) -------------------------
    @property
    def n(self) -> int:
        """Number of rows."""
        return len(self.y)

    @property
    def pred(self) -> np.ndarray:
        """Predicted class (binary: score ≥ threshold; multiclass: argmax) as float64."""
        if "pred" not in self._cache:
            if self.task == "binary":
                self._cache["pred"] = (self.score >= self.threshold).astype(np.float64)
            elif self.task == "multiclass":
                self._cache["pred"] = np.argmax(self.score, axis=1).astype(np.float64)
            else:
                self._cache["pred"] = np.asarray(self.score, dtype=np.float64)
        return self._cache["pred"]  # type: ignore[no-any-return]

    def ranking(self, cls: int | None = None) -> RankOrder:
        """The descending-score order of this model (per class for one-vs-rest), computed once."""
        key = ("rank", cls)
        if key not in self._cache:
            if cls is None:
                self._cache[key] = RankOrder(self.score, self.y)
            else:
                self._cache[key] = RankOrder(self.score[:, cls], self.y == cls)
        return self._cache[key]  # type: ignore[no-any-return]

    def cached(self, key: Any, make: Any) -> Any:
        """A value computed once per model (``make()`` on first use)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def units(self) -> int:
        """Number of bootstrap units: rows, or queries for ranking (resampled as clusters)."""
        if self.task == "ranking":
            from loopml.evaluation.ranking import group_layout

            return group_layout(self).n_groups
        return self.n

    def subset(self, mask: np.ndarray, name: str | None = None) -> EvalData:
        """The rows selected by a boolean ``mask`` (a slice), with the same settings."""
        idx = np.flatnonzero(mask)
        if self.task == "text":
            return EvalData("text", [self.y[i] for i in idx], [self.score[i] for i in idx], name=name or self.name)
        return EvalData(
            self.task,
            self.y[idx],
            self.score[idx],
            threshold=self.threshold,
            groups=None if self.groups is None else np.asarray(self.groups)[idx],
            items=None if self.items is None else np.asarray(self.items)[idx],
            catalogue_size=self.catalogue_size,
            calibration_bins=self.calibration_bins,
            name=name or self.name,
        )

    def with_score(self, score: Any, name: str) -> EvalData:
        """The same labels and settings with another model's scores (for paired comparisons)."""
        return EvalData(
            self.task,
            self.y,
            score,
            threshold=self.threshold,
            groups=self.groups,
            items=self.items,
            catalogue_size=self.catalogue_size,
            calibration_bins=self.calibration_bins,
            name=name,
        )


def _binary_labels(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind == "b":
        return y.astype(np.float64)
    if y.dtype.kind in "iuf":
        vals = np.unique(y)
        if np.all(np.isin(vals, [0, 1])):
            return y.astype(np.float64)
        raise DataError(
            f"binary labels must be 0/1 (or booleans), got values {vals[:6].tolist()}",
            hint="set task.positive_label to the value counted as positive",
        )
    raise DataError(
        f"binary labels must be 0/1 numbers or booleans, got dtype {y.dtype} (values such as {np.unique(y)[:4].tolist()})",
        hint="set task.positive_label to the value counted as positive",
    )


def _check_probabilities(s: np.ndarray, name: str) -> None:
    if s.size and (float(s.min()) < 0.0 or float(s.max()) > 1.0):
        raise DataError(
            f"{name}: classification scores must be probabilities in [0, 1], got range "
            f"[{float(s.min()):.4g}, {float(s.max()):.4g}]"
        )
