"""Gradient boosting with LightGBM: log loss, cross-entropy, L2, LambdaRank, or focal loss.

Saved as LightGBM's own model text; ``booster_`` is the ``lightgbm.Booster`` that serving
builds its fast path on.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from loopml.errors import ModelError
from loopml.training.imbalance import focal_grad_hess
from loopml.training.models.base import BaseModel, FitContext, ModelConfig, register_model, sigmoid

_METRIC = {"binary": "auc", "multiclass": "multi_logloss", "regression": "l2", "ranking": "ndcg"}


def group_sizes(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stable order that makes each group contiguous, and the size of each group in it."""
    order = np.argsort(group, kind="stable")
    _, sizes = np.unique(group[order], return_counts=True)
    return order, sizes


@register_model
class LightGBMModel(BaseModel):
    """LightGBM gradient-boosted trees; the loss follows the task.

    binary: log loss (or focal loss); multiclass: softmax cross-entropy; regression:
    squared error (or huber/l1); ranking: LambdaRank (listwise, NDCG) or rank_xendcg.
    Defaults are LightGBM's own (100 trees, 31 leaves, learning rate 0.1).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0); X = rng.normal(size=(200, 3)); y = (X[:, 0] > 0).astype(int)
    >>> m = LightGBMModel(task="binary").fit(X, y)
    >>> bool(m.predict_proba(X[:1])[0] > 0.5) == bool(y[0])
    True
    """

    name: ClassVar[str] = "lightgbm"
    exports_onnx: ClassVar[bool] = True  # through onnxmltools (binary, multiclass, regression; not focal)
    complexity: ClassVar[int] = 4
    description: ClassVar[str] = "LightGBM gradient boosting (log loss, cross-entropy, L2, LambdaRank, focal)."
    supports_focal_loss: ClassVar[bool] = True
    accepts_sparse: ClassVar[bool] = True  # a CSR matrix goes to LightGBM as is (TF-IDF stays sparse)

    class Config(ModelConfig):
        """Hyperparameters of LightGBM (names as in LightGBM's scikit-learn API)."""

        n_estimators: int = Field(default=100, ge=1, description="Boosting rounds (upper bound with early stopping).")
        learning_rate: float = Field(default=0.1, gt=0, le=1, description="Shrinkage per round.")
        num_leaves: int = Field(default=31, ge=2, description="Leaves per tree.")
        max_depth: int = Field(default=-1, description="Deepest level of a tree; -1 for no limit.")
        min_child_samples: int = Field(default=20, ge=1, description="Fewest rows in a leaf.")
        min_child_weight: float = Field(default=1e-3, ge=0, description="Smallest hessian sum in a leaf.")
        subsample: float = Field(default=1.0, gt=0, le=1, description="Fraction of rows bagged per round.")
        subsample_freq: int = Field(default=0, ge=0, description="Bag rows every this many rounds (0: never).")
        colsample_bytree: float = Field(default=1.0, gt=0, le=1, description="Fraction of features per tree.")
        reg_alpha: float = Field(default=0.0, ge=0, description="L1 penalty on leaf values.")
        reg_lambda: float = Field(default=0.0, ge=0, description="L2 penalty on leaf values.")
        min_split_gain: float = Field(default=0.0, ge=0, description="Smallest gain for a split.")
        cat_smooth: float = Field(default=10.0, ge=0, description="Smoothing of categorical splits.")
        max_cat_to_onehot: int = Field(default=4, ge=1, description="One-vs-rest splits for fewer categories.")
        objective: Literal["auto", "focal", "lambdarank", "rank_xendcg", "huber", "l1", "l2", "poisson"] = Field(
            default="auto", description="Loss; auto follows the task (binary, multiclass, l2, lambdarank)."
        )
        focal_gamma: float = Field(default=2.0, ge=0, description="Gamma of the focal loss (objective focal).")
        focal_alpha: float = Field(default=0.5, gt=0, lt=1, description="Weight of positives in the focal loss.")
        early_stopping_rounds: int | None = Field(
            default=None, ge=1, description="Stop when the validation metric has not improved for this many rounds."
        )
        eval_at: int = Field(default=10, ge=1, description="Cut-off k of NDCG@k for ranking.")
        n_jobs: int = Field(default=1, ge=1, description="Threads used for fitting (prediction uses one).")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Optuna search space (early stopping bounds the number of rounds)."""
        return {
            "n_estimators": 2000,
            "early_stopping_rounds": 50,
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 256, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 2, 200, log=True),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "subsample_freq": 1,
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
            "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 10.0, log=True),
        }

    def _objective(self, ctx: FitContext) -> str:
        obj = self.config.objective  # type: ignore[attr-defined]
        if obj == "auto":
            if ctx.focal_gamma is not None and self.task == "binary":
                return "focal"
            return {"binary": "binary", "multiclass": "multiclass", "regression": "l2", "ranking": "lambdarank"}[
                self.task
            ]
        allowed = {
            "binary": {"focal"},
            "multiclass": set(),
            "regression": {"huber", "l1", "l2", "poisson"},
            "ranking": {"lambdarank", "rank_xendcg"},
        }[self.task]
        if obj not in allowed:
            raise ModelError(
                f"model `lightgbm`: objective `{obj}` does not fit task `{self.task}` "
                f"(allowed: auto{', ' if allowed else ''}{', '.join(sorted(allowed))})"
            )
        return str(obj)

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, cats: list[int], ctx: FitContext) -> None:
        import lightgbm as lgb

        cfg = self.config
        objective = self._objective(ctx)
        params: dict[str, Any] = {
            "learning_rate": cfg.learning_rate,  # type: ignore[attr-defined]
            "num_leaves": cfg.num_leaves,  # type: ignore[attr-defined]
            "max_depth": cfg.max_depth,  # type: ignore[attr-defined]
            "min_child_samples": cfg.min_child_samples,  # type: ignore[attr-defined]
            "min_child_weight": cfg.min_child_weight,  # type: ignore[attr-defined]
            "bagging_fraction": cfg.subsample,  # type: ignore[attr-defined]
            "bagging_freq": cfg.subsample_freq,  # type: ignore[attr-defined]
            "feature_fraction": cfg.colsample_bytree,  # type: ignore[attr-defined]
            "lambda_l1": cfg.reg_alpha,  # type: ignore[attr-defined]
            "lambda_l2": cfg.reg_lambda,  # type: ignore[attr-defined]
            "min_gain_to_split": cfg.min_split_gain,  # type: ignore[attr-defined]
            "cat_smooth": cfg.cat_smooth,  # type: ignore[attr-defined]
            "max_cat_to_onehot": cfg.max_cat_to_onehot,  # type: ignore[attr-defined]
            "num_threads": cfg.n_jobs,  # type: ignore[attr-defined]
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
            "metric": _METRIC[self.task],
        }
        self.init_score_ = 0.0
        gamma = ctx.focal_gamma if ctx.focal_gamma is not None else cfg.focal_gamma  # type: ignore[attr-defined]
        if objective == "focal":
            alpha = cfg.focal_alpha  # type: ignore[attr-defined]
            p = float(np.clip(np.average(y, weights=w), 1e-6, 1 - 1e-6))
            self.init_score_ = float(np.log(p / (1 - p)))

            def fobj(preds: np.ndarray, data: Any) -> tuple[np.ndarray, np.ndarray]:
                g, h = focal_grad_hess(preds, data.get_label(), gamma, alpha)
                wt = data.get_weight()
                return (g * wt, h * wt) if wt is not None else (g, h)

            params["objective"] = fobj
        else:
            params["objective"] = objective
        if self.task == "multiclass":
            params["num_class"] = self.n_classes_
        if self.task == "ranking":
            params["eval_at"] = [cfg.eval_at]  # type: ignore[attr-defined]
            if np.any(y != np.round(y)) or np.any(y < 0):
                raise ModelError("model `lightgbm`: ranking relevance labels must be non-negative integers")
            params["label_gain"] = list(range(0, 2 * int(max(y.max(), 1)) + 2)) if y.max() > 30 else None
            if params["label_gain"] is None:
                del params["label_gain"]

        def dataset(Xd: np.ndarray, yd: np.ndarray, wd: np.ndarray | None, gd: np.ndarray | None, ref: Any = None) -> Any:
            init = np.full(len(yd), self.init_score_) if objective == "focal" else None
            if gd is not None:
                order, sizes = group_sizes(gd)
                Xd, yd = Xd[order], yd[order]
                wd = wd[order] if wd is not None else None
                init = init[order] if init is not None else None
                return lgb.Dataset(Xd, yd, weight=wd, group=sizes, init_score=init, categorical_feature=cats or "auto",
                                   reference=ref, free_raw_data=True)
            return lgb.Dataset(Xd, yd, weight=wd, init_score=init, categorical_feature=cats or "auto", reference=ref,
                               free_raw_data=True)

        group = ctx.group if self.task == "ranking" else None
        if self.task == "ranking" and group is None:
            raise ModelError("model `lightgbm` needs the group (query) of each row for ranking")
        ray_workers = int(ctx.extra.get("ray_workers") or 0)
        if ray_workers and not sp.issparse(X) and not sp.issparse(ctx.eval_X):
            self._fit_on_ray(params, X, y, w, group, cats, ctx, objective, ray_workers)
            return
        train = dataset(X, y, w, group)
        valid_sets: list[Any] = []
        callbacks: list[Any] = []
        if ctx.eval_X is not None and ctx.eval_y is not None:
            ey = np.asarray(ctx.eval_y)
            ey = ey.astype(np.int64) if self.task in ("binary", "multiclass") else ey.astype(np.float64)
            eg = ctx.eval_group if self.task == "ranking" else None
            if self.task != "ranking" or eg is not None:
                eX = ctx.eval_X if sp.issparse(ctx.eval_X) else np.asarray(ctx.eval_X, dtype=np.float64)
                valid_sets.append(dataset(eX, ey, None, eg, ref=train))
        if valid_sets and cfg.early_stopping_rounds:  # type: ignore[attr-defined]
            callbacks.append(lgb.early_stopping(cfg.early_stopping_rounds, first_metric_only=True, verbose=False))  # type: ignore[attr-defined]
        if valid_sets and ctx.report is not None:
            report = ctx.report

            def pruning(env: Any) -> None:
                it = env.iteration + 1
                if it % 10 == 0 and env.evaluation_result_list:
                    _, _, value, higher = env.evaluation_result_list[0][:4]
                    report(it, float(value if higher else -value))

            pruning.order = 40  # type: ignore[attr-defined]
            callbacks.append(pruning)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            booster = lgb.train(
                params,
                train,
                num_boost_round=cfg.n_estimators,  # type: ignore[attr-defined]
                valid_sets=valid_sets or None,
                valid_names=["valid"] if valid_sets else None,
                callbacks=callbacks,
            )
        best = booster.best_iteration if valid_sets and cfg.early_stopping_rounds else 0  # type: ignore[attr-defined]
        # keep only the rounds that helped, and predict from the text form that is saved:
        # the fitted and the reloaded model then agree bit for bit
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best if best > 0 else None))
        self.booster_ = booster
        self.objective_ = objective

    def _fit_on_ray(self, params: dict[str, Any], X: np.ndarray, y: np.ndarray, w: np.ndarray | None,
                    group: np.ndarray | None, cats: list[int], ctx: FitContext, objective: str, workers: int) -> None:
        """The same fit, data-parallel over Ray Train workers (``training.executor: ray``)."""
        from loopml.training.distributed import train_lightgbm_on_ray

        cfg = self.config
        valid = None
        if ctx.eval_X is not None and ctx.eval_y is not None:
            ey = np.asarray(ctx.eval_y)
            ey = ey.astype(np.int64) if self.task in ("binary", "multiclass") else ey.astype(np.float64)
            eg = ctx.eval_group if self.task == "ranking" else None
            if self.task != "ranking" or eg is not None:
                valid = (np.asarray(ctx.eval_X, dtype=np.float64), ey, eg)
        stop = cfg.early_stopping_rounds if valid is not None else None  # type: ignore[attr-defined]
        self.booster_ = train_lightgbm_on_ray(
            params, X=np.asarray(X, dtype=np.float64), y=y, w=w, group=group, cats=cats,
            init_score=self.init_score_ if objective == "focal" else None, valid=valid,
            rounds=cfg.n_estimators, early_stopping_rounds=stop, workers=workers,  # type: ignore[attr-defined]
            storage=ctx.extra.get("ray_storage"),
        )
        self.objective_ = objective

    def _score(self, X: np.ndarray) -> np.ndarray:
        if self.objective_ == "focal":
            raw = self.booster_.predict(X, raw_score=True, num_threads=1)
            return sigmoid(np.asarray(raw, dtype=np.float64) + self.init_score_)
        out = np.asarray(self.booster_.predict(X, num_threads=1), dtype=np.float64)
        if self.task == "multiclass" and out.ndim == 1:
            out = out.reshape(X.shape[0], -1)
        return out

    def fitted_params(self) -> dict[str, Any]:
        """The rounds kept, without early stopping (for a refit without validation data)."""
        return {"n_estimators": max(1, self.best_iteration_), "early_stopping_rounds": None}

    @property
    def best_iteration_(self) -> int:
        """Boosting rounds kept."""
        return int(self.booster_.num_trees() // max(1, self.n_classes_ if self.task == "multiclass" else 1))

    def _state(self, path: Path) -> dict[str, Any]:
        (path / "model.txt").write_text(self.booster_.model_to_string())
        return {"objective": self.objective_, "init_score": self.init_score_, "rounds": self.best_iteration_}

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        import lightgbm as lgb

        try:
            text = (path / "model.txt").read_text()
        except FileNotFoundError:
            raise ModelError(f"{path / 'model.txt'}: missing LightGBM model file") from None
        self.booster_ = lgb.Booster(model_str=text)
        self.objective_ = str(state["objective"])
        self.init_score_ = float(state["init_score"])
