"""Linear models: logistic regression, linear (ridge) regression and a linear SVM.

Fitted with scikit-learn on standardised numerics plus one-hot categorical levels
(:class:`~loopml.training.models.encoding.InputEncoder`); saved as arrays and scored with
numpy, so a single row and a batch run the same few lines. They take sparse input (TF-IDF):
the mostly-zero columns stay sparse, unscaled, through fitting and scoring.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from loopml.training.models.base import (
    BaseModel,
    FitContext,
    ModelConfig,
    load_arrays,
    register_model,
    rowdot,
    save_arrays,
    sigmoid,
    softmax,
)
from loopml.training.models.encoding import InputEncoder

#: rows scored at once by the linear models (each row is scored on its own: blocks change no bit)
SCORE_BLOCK_ROWS = 65_536


class _LinearBase(BaseModel):
    """Shared encoder, linear scores and persistence."""

    accepts_sparse: ClassVar[bool] = True
    coef_: np.ndarray
    exports_onnx: ClassVar[bool] = True  # written as one ONNX graph by `loopml export` (loopml.export)
    intercept_: np.ndarray
    encoder_: InputEncoder

    def _design(self, X: Any, cats: list[int], w: np.ndarray | None, *, sparse: bool = False) -> Any:
        """The design matrix; ``sparse``: one CSR matrix whose one-hot block stores only the ones (for solvers
        that take CSR: memory grows with rows × columns of X, not rows × kept levels)."""
        self.encoder_ = InputEncoder.fit(X, cats, self.config.max_levels, w)  # type: ignore[attr-defined]
        if sparse:
            return self.encoder_.design_sparse(X)
        Z = self.encoder_.dense(X)
        S = self.encoder_.sparse_part(X)
        return Z if S is None else sp.hstack([sp.csr_matrix(Z), S], format="csr")

    def _linear(self, X: Any) -> np.ndarray:
        if X.shape[0] > SCORE_BLOCK_ROWS:  # rows are scored independently: blocks bound the dense one-hot copy
            return np.concatenate([self._linear(X[i : i + SCORE_BLOCK_ROWS])
                                   for i in range(0, X.shape[0], SCORE_BLOCK_ROWS)])
        Z = self.encoder_.dense(X)
        d = Z.shape[1]
        out = rowdot(Z, self.coef_[:, :d])
        S = self.encoder_.sparse_part(X)
        if S is not None:  # row by row over the stored entries: the same sums for a row and a batch
            out = out + np.asarray(S @ np.ascontiguousarray(self.coef_[:, d:].T))
        return out + self.intercept_  # type: ignore[no-any-return]

    def _state(self, path: Path) -> dict[str, Any]:
        save_arrays(path, "linear.npz", coef=self.coef_, intercept=self.intercept_, **self.encoder_.to_arrays())
        return {}

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        a = load_arrays(path, "linear.npz")
        self.coef_, self.intercept_ = a["coef"], a["intercept"]
        self.encoder_ = InputEncoder.from_arrays(a)


class _LinearConfig(ModelConfig):
    max_levels: int = Field(default=50, ge=1, description="Most frequent levels one-hot encoded per categorical column.")


def _fit_quietly(est: Any, Z: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; quality is judged on validation
        return est.fit(Z, y, sample_weight=w)


@register_model
class LogisticModel(_LinearBase):
    """L2-regularised logistic regression (log loss; multinomial cross-entropy for multiclass).

    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    >>> m = LogisticModel(task="binary").fit(X, y)
    >>> bool(m.predict_proba(np.array([[3.0]]))[0] > 0.5)
    True
    """

    name: ClassVar[str] = "logistic"
    complexity: ClassVar[int] = 1
    description: ClassVar[str] = "Logistic regression with L2 penalty (log loss / cross-entropy)."
    task_types: ClassVar[frozenset[str]] = frozenset({"binary", "multiclass"})

    class Config(_LinearConfig):
        """Hyperparameters of logistic regression."""

        C: float = Field(default=1.0, gt=0, description="Inverse L2 regularisation strength.")
        max_iter: int = Field(default=500, ge=10, description="Iterations of the L-BFGS solver.")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Optuna search space."""
        return {"C": trial.suggest_float("C", 1e-3, 1e2, log=True)}

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, cats: list[int], ctx: FitContext) -> None:
        from sklearn.linear_model import LogisticRegression

        Z = self._design(X, cats, w, sparse=True)
        cfg = self.config
        if np.unique(y).size < 2:
            p = np.bincount(y, minlength=self.n_classes_) + 0.5
            logp = np.log(p / p.sum())
            self.coef_ = np.zeros((1 if self.task == "binary" else self.n_classes_, Z.shape[1]))
            self.intercept_ = np.array([logp[1] - logp[0]]) if self.task == "binary" else logp
            return
        est = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, random_state=self.seed)  # type: ignore[attr-defined]
        _fit_quietly(est, Z, y, w)
        coef, inter = est.coef_, est.intercept_
        if self.task == "multiclass" and len(est.classes_) != self.n_classes_:
            full_c = np.zeros((self.n_classes_, Z.shape[1]))
            full_i = np.full(self.n_classes_, -30.0)
            if len(est.classes_) == 2:  # sklearn returns one row for two classes
                coef = np.vstack([-coef[0] / 2, coef[0] / 2])
                inter = np.array([-inter[0] / 2, inter[0] / 2])
            full_c[est.classes_] = coef
            full_i[est.classes_] = inter
            coef, inter = full_c, full_i
        self.coef_, self.intercept_ = np.asarray(coef, dtype=np.float64), np.asarray(inter, dtype=np.float64)

    def _score(self, X: np.ndarray) -> np.ndarray:
        z = self._linear(X)
        return sigmoid(z[:, 0]) if self.task == "binary" else softmax(z)


@register_model
class LinearRegressionModel(_LinearBase):
    """Ridge regression (squared error); also a pointwise ranker."""

    name: ClassVar[str] = "linear"
    complexity: ClassVar[int] = 1
    description: ClassVar[str] = "Linear regression with L2 penalty (squared error); pointwise for ranking."
    task_types: ClassVar[frozenset[str]] = frozenset({"regression", "ranking"})
    supports_proba: ClassVar[bool] = False

    class Config(_LinearConfig):
        """Hyperparameters of ridge regression."""

        alpha: float = Field(default=1.0, ge=0, description="L2 regularisation strength.")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Optuna search space."""
        return {"alpha": trial.suggest_float("alpha", 1e-4, 1e3, log=True)}

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, cats: list[int], ctx: FitContext) -> None:
        from sklearn.linear_model import Ridge

        Z = self._design(X, cats, w)
        est = _fit_quietly(Ridge(alpha=self.config.alpha), Z, y, w)  # type: ignore[attr-defined]
        self.coef_ = np.atleast_2d(np.asarray(est.coef_, dtype=np.float64))
        self.intercept_ = np.atleast_1d(np.asarray(est.intercept_, dtype=np.float64))

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._linear(X)[:, 0]


@register_model
class LinearSVMModel(_LinearBase):
    """Linear support vector machine (hinge loss) with Platt-scaled probabilities."""

    name: ClassVar[str] = "linear_svm"
    complexity: ClassVar[int] = 1
    description: ClassVar[str] = "Linear SVM (squared hinge), probabilities by Platt scaling."
    task_types: ClassVar[frozenset[str]] = frozenset({"binary", "multiclass"})

    class Config(_LinearConfig):
        """Hyperparameters of the linear SVM."""

        C: float = Field(default=1.0, gt=0, description="Inverse regularisation strength.")
        max_iter: int = Field(default=2000, ge=10, description="Iterations of the liblinear solver.")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Optuna search space."""
        return {"C": trial.suggest_float("C", 1e-3, 1e1, log=True)}

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, cats: list[int], ctx: FitContext) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        Z = self._design(X, cats, w, sparse=True)
        cfg = self.config
        if np.unique(y).size < 2:
            self.coef_ = np.zeros((1 if self.task == "binary" else self.n_classes_, Z.shape[1]))
            self.intercept_ = np.zeros(self.coef_.shape[0])
            self.platt_coef_ = np.zeros((self.coef_.shape[0], self.coef_.shape[0]))
            self.platt_intercept_ = np.zeros(self.coef_.shape[0])
            return
        svm = _fit_quietly(
            LinearSVC(C=cfg.C, max_iter=cfg.max_iter, random_state=self.seed), Z, y, w  # type: ignore[attr-defined]
        )
        coef, inter = np.atleast_2d(svm.coef_), np.atleast_1d(svm.intercept_)
        if self.task == "multiclass" and coef.shape[0] != self.n_classes_:
            full_c = np.zeros((self.n_classes_, Z.shape[1]))
            full_i = np.full(self.n_classes_, -1e3)
            if coef.shape[0] == 1:
                coef, inter = np.vstack([-coef[0], coef[0]]), np.array([-inter[0], inter[0]])
            full_c[svm.classes_] = coef
            full_i[svm.classes_] = inter
            coef, inter = full_c, full_i
        self.coef_, self.intercept_ = coef.astype(np.float64), inter.astype(np.float64)
        D = Z @ self.coef_.T + self.intercept_
        platt = _fit_quietly(LogisticRegression(C=1e3, max_iter=500), D, y, w)
        pc, pi = np.atleast_2d(platt.coef_), np.atleast_1d(platt.intercept_)
        if self.task == "multiclass" and pc.shape[0] != self.n_classes_:
            full_c = np.zeros((self.n_classes_, D.shape[1]))
            full_i = np.full(self.n_classes_, -30.0)
            if pc.shape[0] == 1:
                pc, pi = np.vstack([-pc[0] / 2, pc[0] / 2]), np.array([-pi[0] / 2, pi[0] / 2])
            full_c[platt.classes_] = pc
            full_i[platt.classes_] = pi
            pc, pi = full_c, full_i
        self.platt_coef_, self.platt_intercept_ = pc.astype(np.float64), pi.astype(np.float64)

    def _score(self, X: np.ndarray) -> np.ndarray:
        z = rowdot(self._linear(X), self.platt_coef_) + self.platt_intercept_
        return sigmoid(z[:, 0]) if self.task == "binary" else softmax(z)

    def _state(self, path: Path) -> dict[str, Any]:
        save_arrays(path, "platt.npz", coef=self.platt_coef_, intercept=self.platt_intercept_)
        return super()._state(path)

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        super()._restore(path, state)
        a = load_arrays(path, "platt.npz")
        self.platt_coef_, self.platt_intercept_ = a["coef"], a["intercept"]
