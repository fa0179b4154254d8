"""Ensembles over any registered models: bagging and stacking.

Members are named by registered type with their own parameters (validated through each
member's config); each member is saved in its own sub-folder with its own format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from loopml.errors import ModelError
from loopml.training.models.base import (
    BaseModel,
    FitContext,
    ModelConfig,
    load_arrays,
    make_model,
    register_model,
    rowdot,
    save_arrays,
    sigmoid,
    softmax,
)


class Member(ModelConfig):
    """One member model of an ensemble."""

    type: str = Field(description="Registered model name.")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters of the member's own config.")


def _build(member: Member, task: str, seed: int, where: str) -> BaseModel:
    return make_model(member.type, task=task, seed=seed, where=where, **member.params)


def _sub_context(ctx: FitContext, rows: np.ndarray | None) -> FitContext:
    if rows is None:
        return ctx
    return FitContext(
        group=ctx.group[rows] if ctx.group is not None else None,
        eval_X=ctx.eval_X,
        eval_y=ctx.eval_y,
        eval_group=ctx.eval_group,
        feature_names=ctx.feature_names,
        report=None,
        focal_gamma=ctx.focal_gamma,
        extra=ctx.extra,
    )


class _Ensemble(BaseModel):
    # sparse input goes through to the members; each densifies it when it cannot take it
    accepts_sparse: ClassVar[bool] = True
    members_: list[BaseModel]

    def _save_members(self, path: Path) -> None:
        for i, m in enumerate(self.members_):
            m.save(path / f"member_{i}")

    def _load_members(self, path: Path, n: int) -> None:
        self.members_ = [BaseModel.load(path / f"member_{i}") for i in range(n)]


@register_model
class BaggingModel(_Ensemble):
    """Bootstrap aggregation: copies of one model fitted on resampled rows, scores averaged.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0); X = rng.normal(size=(200, 2)); y = (X[:, 0] > 0).astype(int)
    >>> cfg = BaggingModel.Config(base=Member(type="decision_tree"), n_estimators=5)
    >>> float(((BaggingModel(cfg).fit(X, y).predict(X)) == y).mean()) > 0.9
    True
    """

    name: ClassVar[str] = "bagging"
    complexity: ClassVar[int] = 6
    description: ClassVar[str] = "Bagging over any registered model."
    contract_params: ClassVar[dict[str, Any]] = {"n_estimators": 3}

    class Config(ModelConfig):
        """Which model is bagged and how rows are drawn."""

        base: Member = Field(default_factory=lambda: Member(type="decision_tree"), description="The bagged model.")
        n_estimators: int = Field(default=10, ge=1, description="Number of copies.")
        max_samples: float = Field(default=1.0, gt=0, le=1, description="Fraction of rows drawn for each copy.")
        bootstrap: bool = Field(default=True, description="Draw rows with replacement.")

    def __init__(self, config: ModelConfig | None = None, *, task: str = "binary", seed: int = 0) -> None:
        super().__init__(config, task=task, seed=seed)
        # fail early, naming the member, when the base does not handle this task or its params are wrong
        _build(self.config.base, task, seed, "bagging.base")  # type: ignore[attr-defined]

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, cats: list[int], ctx: FitContext) -> None:
        cfg = self.config
        rng = np.random.default_rng(self.seed)
        n = X.shape[0]
        members = []
        for i in range(cfg.n_estimators):  # type: ignore[attr-defined]
            if self.task == "ranking" and ctx.group is not None:
                groups = np.unique(ctx.group)
                k = max(1, round(cfg.max_samples * len(groups)))  # type: ignore[attr-defined]
                pick = rng.choice(groups, size=k, replace=cfg.bootstrap)  # type: ignore[attr-defined]
                rows = np.flatnonzero(np.isin(ctx.group, np.unique(pick)))
            else:
                k = max(1, round(cfg.max_samples * n))  # type: ignore[attr-defined]
                rows = np.sort(rng.choice(n, size=k, replace=cfg.bootstrap))  # type: ignore[attr-defined]
            m = _build(cfg.base, self.task, self.seed + i, "bagging.base")  # type: ignore[attr-defined]
            m.fit(X[rows], y[rows], w[rows] if w is not None else None, cats, context=_sub_context(ctx, rows))
            members.append(m)
        self.members_ = members

    def _score(self, X: np.ndarray) -> np.ndarray:
        return np.mean([m.score(X) for m in self.members_], axis=0)  # type: ignore[no-any-return]

    def _state(self, path: Path) -> dict[str, Any]:
        self._save_members(path)
        return {"n_members": len(self.members_)}

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        self._load_members(path, int(state["n_members"]))


def _folds(n: int, y: np.ndarray, group: np.ndarray | None, k: int, seed: int, task: str) -> list[np.ndarray]:
    from loopml.training.splits import fold_ids

    fold = fold_ids(y, group, k, seed, task)
    return [np.flatnonzero(fold == i) for i in range(k)]


@register_model
class StackingModel(_Ensemble):
    """Stacking: out-of-fold scores of the members feed a linear meta-model.

    Binary: logistic regression on the members' logits; multiclass: multinomial logistic
    regression on their class probabilities; regression and ranking: ridge regression.
    """

    name: ClassVar[str] = "stacking"
    complexity: ClassVar[int] = 7
    description: ClassVar[str] = "Stacking of any registered models under a linear meta-model."

    class Config(ModelConfig):
        """The stacked members and the meta-model."""

        estimators: list[Member] = Field(
            default_factory=list,
            description="Member models; when empty: logistic + lightgbm for classes, linear + lightgbm otherwise.",
        )
        cv: int = Field(default=5, ge=2, description="Folds used for the out-of-fold scores.")
        meta_C: float = Field(default=1.0, gt=0, description="Inverse L2 penalty of the meta-model.")
        passthrough: Literal[False] = Field(default=False, description="Reserved: raw features are not passed on.")

    contract_params: ClassVar[dict[str, Any]] = {"cv": 2}

    def __init__(self, config: ModelConfig | None = None, *, task: str = "binary", seed: int = 0) -> None:
        super().__init__(config, task=task, seed=seed)
        for i, m in enumerate(self._members()):
            _build(m, task, seed, f"stacking.estimators[{i}]")

    def _members(self) -> list[Member]:
        given = list(self.config.estimators)  # type: ignore[attr-defined]
        if given:
            return given
        first = "logistic" if self.task in ("binary", "multiclass") else "linear"
        return [Member(type=first), Member(type="lightgbm")]

    def _meta_features(self, scores: list[np.ndarray]) -> np.ndarray:
        cols = []
        for s in scores:
            if self.task == "binary":
                p = np.clip(s, 1e-6, 1 - 1e-6)
                cols.append(np.log(p / (1 - p))[:, None])
            elif self.task == "multiclass":
                cols.append(np.log(np.clip(s, 1e-6, 1)))
            else:
                cols.append(s[:, None])
        return np.hstack(cols)

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, cats: list[int], ctx: FitContext) -> None:
        from sklearn.linear_model import LogisticRegression, Ridge

        cfg = self.config
        specs = self._members()
        n = X.shape[0]
        folds = _folds(n, y, ctx.group if self.task == "ranking" else None, cfg.cv, self.seed, self.task)  # type: ignore[attr-defined]
        oof: list[np.ndarray] = []
        for i, spec in enumerate(specs):
            out: np.ndarray | None = None
            for f, test_rows in enumerate(folds):
                if test_rows.size == 0:
                    continue
                train_rows = np.setdiff1d(np.arange(n), test_rows, assume_unique=True)
                m = _build(spec, self.task, self.seed + f, f"stacking.estimators[{i}]")
                m.fit(X[train_rows], y[train_rows], w[train_rows] if w is not None else None, cats,
                      context=_sub_context(ctx, train_rows))
                s = m.score(X[test_rows])
                if out is None:
                    out = np.zeros((n, *s.shape[1:]))
                out[test_rows] = s
            if out is None:  # no fold had test rows: only possible with no training rows at all
                raise ModelError("model `stacking` needs at least one training row")
            oof.append(out)
        Z = self._meta_features(oof)
        if self.task in ("binary", "multiclass"):
            if np.unique(y).size < 2:
                raise ModelError("model `stacking` needs at least two classes in the training rows")
            meta = LogisticRegression(C=cfg.meta_C, max_iter=1000).fit(Z, y, sample_weight=w)  # type: ignore[attr-defined]
            coef, inter = np.atleast_2d(meta.coef_), np.atleast_1d(meta.intercept_)
            if self.task == "multiclass" and coef.shape[0] != self.n_classes_:
                full_c, full_i = np.zeros((self.n_classes_, Z.shape[1])), np.full(self.n_classes_, -30.0)
                if coef.shape[0] == 1:
                    coef, inter = np.vstack([-coef[0] / 2, coef[0] / 2]), np.array([-inter[0] / 2, inter[0] / 2])
                full_c[meta.classes_], full_i[meta.classes_] = coef, inter
                coef, inter = full_c, full_i
        else:
            meta = Ridge(alpha=1.0 / cfg.meta_C).fit(Z, y, sample_weight=w)  # type: ignore[attr-defined]
            coef, inter = np.atleast_2d(meta.coef_), np.atleast_1d(meta.intercept_)
        self.meta_coef_, self.meta_intercept_ = coef.astype(np.float64), inter.astype(np.float64)
        self.members_ = []
        for i, spec in enumerate(specs):
            m = _build(spec, self.task, self.seed, f"stacking.estimators[{i}]")
            self.members_.append(m.fit(X, y, w, cats, context=_sub_context(ctx, None)))

    def _score(self, X: np.ndarray) -> np.ndarray:
        z = rowdot(self._meta_features([m.score(X) for m in self.members_]), self.meta_coef_) + self.meta_intercept_
        if self.task == "binary":
            return sigmoid(z[:, 0])
        if self.task == "multiclass":
            return softmax(z)
        return z[:, 0]

    def _state(self, path: Path) -> dict[str, Any]:
        self._save_members(path)
        save_arrays(path, "meta.npz", coef=self.meta_coef_, intercept=self.meta_intercept_)
        return {"n_members": len(self.members_)}

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        self._load_members(path, int(state["n_members"]))
        a = load_arrays(path, "meta.npz")
        self.meta_coef_, self.meta_intercept_ = a["coef"], a["intercept"]
