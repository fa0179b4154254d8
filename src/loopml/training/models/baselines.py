"""Baselines every candidate must beat: class prior, mean/median, most popular item."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from loopml.errors import ModelError
from loopml.training.models.base import BaseModel, FitContext, ModelConfig, register_model

#: the baseline of each task: trained beside every spec's candidates, the floor a model must beat
TASK_BASELINES: dict[str, str] = {"binary": "prior", "multiclass": "prior", "regression": "mean",
                                  "ranking": "most_popular"}
BASELINE_MODELS: tuple[str, ...] = ("prior", "mean", "most_popular")


def _column(X: Any, j: int) -> np.ndarray:
    """Column ``j`` of a dense or CSR matrix as a dense float array."""
    if sp.issparse(X):
        return np.asarray(X[:, [j]].toarray()[:, 0], dtype=np.float64)
    return np.asarray(X[:, j])


@register_model
class PriorModel(BaseModel):
    """Predicts the training class distribution for every row (majority class as the label).

    >>> import numpy as np
    >>> m = PriorModel(task="binary").fit(np.zeros((4, 1)), np.array([0, 1, 1, 1]))
    >>> float(m.predict_proba(np.zeros((1, 1)))[0])
    0.75
    """

    name: ClassVar[str] = "prior"
    exports_onnx: ClassVar[bool] = True  # written as one ONNX graph by `loopml export` (loopml.export)
    complexity: ClassVar[int] = 0
    description: ClassVar[str] = "Class prior (majority class); the floor for classifiers."
    accepts_sparse: ClassVar[bool] = True  # reads only the number of rows
    task_types: ClassVar[frozenset[str]] = frozenset({"binary", "multiclass"})

    class Config(ModelConfig):
        """The prior has no hyperparameters except smoothing."""

        smoothing: float = Field(default=0.0, ge=0, description="Pseudo-count added to every class.")

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, cats: list[int], ctx: FitContext) -> None:
        counts = np.bincount(y, weights=w, minlength=self.n_classes_).astype(np.float64)
        counts += self.config.smoothing  # type: ignore[attr-defined]
        self.prior_ = counts / counts.sum()

    def _score(self, X: np.ndarray) -> np.ndarray:
        if self.task == "binary":
            return np.full(X.shape[0], self.prior_[1])
        return np.tile(self.prior_, (X.shape[0], 1))

    def _state(self, path: Path) -> dict[str, Any]:
        return {"prior": self.prior_.tolist()}

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        self.prior_ = np.asarray(state["prior"], dtype=np.float64)


@register_model
class MeanModel(BaseModel):
    """Predicts the training mean (or median) of the target for every row."""

    name: ClassVar[str] = "mean"
    exports_onnx: ClassVar[bool] = True  # written as one ONNX graph by `loopml export` (loopml.export)
    complexity: ClassVar[int] = 0
    description: ClassVar[str] = "Mean or median of the target; the floor for regression."
    accepts_sparse: ClassVar[bool] = True  # reads only the number of rows
    task_types: ClassVar[frozenset[str]] = frozenset({"regression"})
    supports_proba: ClassVar[bool] = False

    class Config(ModelConfig):
        """Which statistic of the target to predict."""

        statistic: Literal["mean", "median"] = Field(default="mean", description="mean or median of the target.")

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, cats: list[int], ctx: FitContext) -> None:
        if self.config.statistic == "mean":  # type: ignore[attr-defined]
            self.value_ = float(np.average(y, weights=w))
        else:
            order = np.argsort(y, kind="stable")
            cw = np.cumsum(w[order] if w is not None else np.ones(len(y)))
            self.value_ = float(y[order][np.searchsorted(cw, cw[-1] / 2.0)])

    def _score(self, X: np.ndarray) -> np.ndarray:
        return np.full(X.shape[0], self.value_)

    def _state(self, path: Path) -> dict[str, Any]:
        return {"value": self.value_}

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        self.value_ = float(state["value"])


@register_model
class MostPopularModel(BaseModel):
    """Scores each row by the popularity of its item in the training data.

    Popularity is the (weighted) sum of the target per item: the number of positive
    interactions for 0/1 labels, the summed relevance for graded labels. Unknown items
    score 0. The item column is named by ``item_feature`` (the task's ``item_key`` when
    the trainer fills it in) or given by index.
    """

    name: ClassVar[str] = "most_popular"
    complexity: ClassVar[int] = 0
    contract_params: ClassVar[dict[str, Any]] = {"item_feature": "item_id"}
    description: ClassVar[str] = "Item popularity in training; the floor for ranking and recommendation."
    accepts_sparse: ClassVar[bool] = True  # reads one column
    task_types: ClassVar[frozenset[str]] = frozenset({"ranking"})
    supports_proba: ClassVar[bool] = False

    class Config(ModelConfig):
        """Which column identifies the item."""

        item_feature: str | None = Field(
            default=None, description="Feature name of the item id; the task's item_key when unset."
        )
        item_index: int | None = Field(default=None, ge=0, description="Column index of the item id (overrides the name).")
        popularity: Literal["target_sum", "count"] = Field(
            default="target_sum", description="Sum of the target per item, or the number of rows per item."
        )

    def _item_column(self, ctx: FitContext) -> int:
        cfg = self.config
        if cfg.item_index is not None:  # type: ignore[attr-defined]
            return int(cfg.item_index)  # type: ignore[attr-defined]
        name = cfg.item_feature or ctx.extra.get("item_key")  # type: ignore[attr-defined]
        if name is None:
            raise ModelError("model `most_popular` needs `item_feature` (or task.item_key) to know the item column")
        names = ctx.feature_names or []
        if name not in names:
            raise ModelError(
                f"model `most_popular`: item feature `{name}` is not among the features "
                f"({', '.join(names[:20]) or 'no names given'})"
            )
        return names.index(name)

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, cats: list[int], ctx: FitContext) -> None:
        j = self._item_column(ctx)
        if j >= X.shape[1]:
            raise ModelError(f"model `most_popular`: item column index {j} is outside 0..{X.shape[1] - 1}")
        self.item_col_ = j
        items = _column(X, j)
        ok = np.isfinite(items)
        vals = np.ones(len(y)) if self.config.popularity == "count" else y.astype(np.float64)  # type: ignore[attr-defined]
        if w is not None:
            vals = vals * w
        keys, inv = np.unique(items[ok], return_inverse=True)
        pop = np.bincount(inv, weights=vals[ok], minlength=keys.size)
        scale = max(float(pop.max()), 1e-12) if pop.size else 1.0
        self.items_ = keys
        self.pop_ = pop / scale

    def _score(self, X: np.ndarray) -> np.ndarray:
        col = _column(X, self.item_col_)
        if self.items_.size == 0:
            return np.zeros(X.shape[0])
        pos = np.clip(np.searchsorted(self.items_, col), 0, self.items_.size - 1)
        return np.where(self.items_[pos] == col, self.pop_[pos], 0.0)

    def _state(self, path: Path) -> dict[str, Any]:
        from loopml.training.models.base import save_arrays

        save_arrays(path, "popularity.npz", items=self.items_, pop=self.pop_)
        return {"item_col": self.item_col_}

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        from loopml.training.models.base import load_arrays

        a = load_arrays(path, "popularity.npz")
        self.items_, self.pop_ = a["items"], a["pop"]
        self.item_col_ = int(state["item_col"])
