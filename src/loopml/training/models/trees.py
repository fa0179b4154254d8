"""Decision tree and random forest: fitted by scikit-learn, stored and scored as flat arrays.

The fitted trees are flattened into one set of node arrays (children, feature, threshold,
leaf values, missing-value direction). Scoring walks every tree for every row at once
with numpy, one level per step; the same code scores a single row or a batch, and the
saved arrays reproduce the predictions exactly without pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from loopml.training.models.base import (
    BaseModel,
    FitContext,
    ModelConfig,
    load_arrays,
    register_model,
    save_arrays,
)


class TreeArrays:
    """A forest flattened into node arrays; leaves point to themselves."""

    def __init__(
        self,
        left: np.ndarray,
        right: np.ndarray,
        feature: np.ndarray,
        threshold: np.ndarray,
        missing_left: np.ndarray,
        value: np.ndarray,
        roots: np.ndarray,
        depth: int,
    ) -> None:
        self.left, self.right, self.feature = left, right, feature
        self.threshold, self.missing_left, self.value = threshold, missing_left, value
        self.roots, self.depth = roots, depth

    @classmethod
    def from_sklearn(cls, estimators: list[Any], classifier: bool) -> TreeArrays:
        """Flatten fitted sklearn trees; classifier leaf values become class probabilities."""
        lefts, rights, feats, thrs, miss, vals, roots = [], [], [], [], [], [], []
        offset, depth = 0, 0
        for est in estimators:
            t = est.tree_
            nodes = t.__getstate__()["nodes"]
            left = nodes["left_child"].astype(np.int64)
            right = nodes["right_child"].astype(np.int64)
            leaf = left < 0
            idx = np.arange(t.node_count, dtype=np.int64)
            lefts.append(np.where(leaf, idx, left) + offset)
            rights.append(np.where(leaf, idx, right) + offset)
            feats.append(np.where(leaf, 0, nodes["feature"]).astype(np.int64))
            thrs.append(np.where(leaf, np.inf, nodes["threshold"]).astype(np.float64))
            miss.append(nodes["missing_go_to_left"].astype(bool))
            v = np.asarray(t.value, dtype=np.float64)[:, 0, :]
            if classifier:
                v = v / np.maximum(v.sum(axis=1, keepdims=True), 1e-300)
            vals.append(v)
            roots.append(offset)
            offset += t.node_count
            depth = max(depth, int(t.max_depth))
        return cls(
            np.concatenate(lefts),
            np.concatenate(rights),
            np.concatenate(feats),
            np.concatenate(thrs),
            np.concatenate(miss),
            np.vstack(vals),
            np.asarray(roots, dtype=np.int64),
            depth,
        )

    def leaf_values(self, X: np.ndarray) -> np.ndarray:
        """Mean over trees of the leaf value reached by each row: shape (n, n_outputs)."""
        n = X.shape[0]
        node = np.broadcast_to(self.roots, (n, self.roots.size)).copy()
        rows = np.arange(n)[:, None]
        for _ in range(self.depth):
            x = X[rows, self.feature[node]]
            go_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            node = np.where(go_left, self.left[node], self.right[node])
        return self.value[node].mean(axis=1)  # type: ignore[no-any-return]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for an npz file."""
        return {
            "left": self.left,
            "right": self.right,
            "feature": self.feature,
            "threshold": self.threshold,
            "missing_left": self.missing_left,
            "value": self.value,
            "roots": self.roots,
            "depth": np.asarray(self.depth),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> TreeArrays:
        """Inverse of :meth:`to_arrays`."""
        return cls(
            a["left"], a["right"], a["feature"], a["threshold"], a["missing_left"].astype(bool), a["value"],
            a["roots"], int(a["depth"]),
        )

    @property
    def n_nodes(self) -> int:
        """Total nodes over all trees."""
        return int(self.left.size)


class _TreeBase(BaseModel):
    trees_: TreeArrays
    exports_onnx: ClassVar[bool] = True  # written as one ONNX graph by `loopml export` (loopml.export)
    task_types: ClassVar[frozenset[str]] = frozenset({"binary", "multiclass", "regression", "ranking"})

    def _classifier(self) -> bool:
        return self.task in ("binary", "multiclass")

    def _store(self, estimators: list[Any], classes: np.ndarray | None) -> None:
        arrays = TreeArrays.from_sklearn(estimators, self._classifier())
        if classes is not None and len(classes) != self.n_classes_:
            full = np.zeros((arrays.value.shape[0], self.n_classes_))
            full[:, classes.astype(np.int64)] = arrays.value
            arrays.value = full
        self.trees_ = arrays

    def _score(self, X: np.ndarray) -> np.ndarray:
        v = self.trees_.leaf_values(X)
        if self.task == "binary":
            return v[:, 1]
        if self.task == "multiclass":
            return v
        return v[:, 0]

    def _state(self, path: Path) -> dict[str, Any]:
        save_arrays(path, "trees.npz", **self.trees_.to_arrays())
        return {"n_nodes": self.trees_.n_nodes}

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        self.trees_ = TreeArrays.from_arrays(load_arrays(path, "trees.npz"))


class _TreeConfig(ModelConfig):
    max_depth: int | None = Field(default=None, ge=1, description="Deepest level of a tree; unlimited when unset.")
    min_samples_leaf: int = Field(default=1, ge=1, description="Fewest training rows in a leaf.")
    max_features: float | Literal["sqrt", "log2"] | None = Field(
        default=None, description="Features considered per split: a fraction, sqrt, log2, or all when unset."
    )


@register_model
class DecisionTreeModel(_TreeBase):
    """One CART decision tree (Gini/entropy for classes, squared error for values).

    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    >>> DecisionTreeModel(task="binary").fit(X, y).predict(X).tolist()
    [0, 0, 1, 1]
    """

    name: ClassVar[str] = "decision_tree"
    complexity: ClassVar[int] = 2
    description: ClassVar[str] = "A single CART decision tree."

    class Config(_TreeConfig):
        """Hyperparameters of the decision tree."""

        max_depth: int | None = Field(default=8, ge=1, description="Deepest level of the tree; unlimited when unset.")
        criterion: Literal["auto", "gini", "entropy", "squared_error"] = Field(
            default="auto", description="Split criterion; gini for classes, squared_error for values when auto."
        )

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Optuna search space."""
        return {
            "max_depth": trial.suggest_int("max_depth", 2, 16),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 100, log=True),
        }

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, cats: list[int], ctx: FitContext) -> None:
        from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

        cfg = self.config
        crit = cfg.criterion  # type: ignore[attr-defined]
        common = dict(
            max_depth=cfg.max_depth,  # type: ignore[attr-defined]
            min_samples_leaf=cfg.min_samples_leaf,  # type: ignore[attr-defined]
            max_features=cfg.max_features,  # type: ignore[attr-defined]
            random_state=self.seed,
        )
        if self._classifier():
            est = DecisionTreeClassifier(criterion="gini" if crit in ("auto", "squared_error") else crit, **common)
        else:
            est = DecisionTreeRegressor(criterion="squared_error", **common)
        est.fit(X, y, sample_weight=w)
        self._store([est], getattr(est, "classes_", None))


@register_model
class RandomForestModel(_TreeBase):
    """Random forest: bagged CART trees with random feature subsets."""

    name: ClassVar[str] = "random_forest"
    complexity: ClassVar[int] = 4
    description: ClassVar[str] = "Random forest (bagging of decision trees)."
    contract_params: ClassVar[dict[str, Any]] = {"n_estimators": 10}

    class Config(_TreeConfig):
        """Hyperparameters of the random forest."""

        n_estimators: int = Field(default=100, ge=1, description="Number of trees.")
        max_depth: int | None = Field(default=16, ge=1, description="Deepest level of a tree; unlimited when unset.")
        max_features: float | Literal["sqrt", "log2"] | None = Field(
            default="sqrt", description="Features considered per split: a fraction, sqrt, log2, or all when unset."
        )
        min_samples_leaf: int = Field(default=2, ge=1, description="Fewest training rows in a leaf.")
        max_samples: float | None = Field(
            default=None, gt=0, le=1, description="Fraction of rows drawn for each tree; all when unset."
        )
        n_jobs: int = Field(default=1, ge=1, description="Threads used while fitting.")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Optuna search space."""
        return {
            "n_estimators": trial.suggest_int("n_estimators", 50, 400, log=True),
            "max_depth": trial.suggest_int("max_depth", 4, 24),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 50, log=True),
            "max_features": trial.suggest_float("max_features", 0.1, 1.0),
        }

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, cats: list[int], ctx: FitContext) -> None:
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        cfg = self.config
        common = dict(
            n_estimators=cfg.n_estimators,  # type: ignore[attr-defined]
            max_depth=cfg.max_depth,  # type: ignore[attr-defined]
            min_samples_leaf=cfg.min_samples_leaf,  # type: ignore[attr-defined]
            max_features=cfg.max_features,  # type: ignore[attr-defined]
            max_samples=cfg.max_samples,  # type: ignore[attr-defined]
            n_jobs=cfg.n_jobs,  # type: ignore[attr-defined]
            random_state=self.seed,
        )
        est = RandomForestClassifier(**common) if self._classifier() else RandomForestRegressor(**common)
        est.fit(X, y, sample_weight=w)
        self._store(list(est.estimators_), getattr(est, "classes_", None))
