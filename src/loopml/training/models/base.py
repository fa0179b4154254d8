"""The model protocol, the model registry and the shared base class.

Every model is a class registered by name in :data:`MODELS` with its own pydantic
``Config`` (``extra="forbid"``, a description on every field). Hyperparameters are the
config; learned state ends in ``_``; ``fit`` returns ``self``; ``save``/``load`` write
plain files (JSON, npz, LightGBM text, safetensors), never pickle.

Models see a float matrix ``X`` (the output of the fitted feature pipeline) and integer
coded labels: ``0/1`` for binary, ``0..k-1`` for multiclass, floats for regression and
graded relevance for ranking. Scores (:meth:`BaseModel.score`) are what a bundle serves:
P(positive) for binary, class probabilities for multiclass, the value otherwise.

>>> import numpy as np
>>> from loopml.training.models import make_model
>>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
>>> m = make_model("prior", task="binary").fit(X, y)
>>> m.predict_proba(X).round(2).tolist()
[0.5, 0.5, 0.5, 0.5]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel as PydanticModel
from pydantic import ConfigDict, ValidationError

from loopml.errors import ModelError, NotFound, SpecError

TASKS = frozenset({"binary", "multiclass", "regression", "ranking"})
FORMAT = "loopml-model/1"
#: a sparse matrix is densified for a model without ``accepts_sparse`` only up to this many cells
DENSE_CELLS_MAX = 200_000_000


class ModelConfig(PydanticModel):
    """Base of every model's config: unknown keys fail, every field is described."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


@dataclass
class FitContext:
    """Optional information a model may use while fitting.

    Attributes
    ----------
    group : per-row group ids (ranking: the query or user each row belongs to).
    eval_X, eval_y, eval_group : a validation set for early stopping and pruning.
    feature_names : names of the columns of ``X``.
    report : ``report(step, value)`` called with intermediate validation scores (higher is
        better); it raises ``optuna.TrialPruned`` when the trial should stop.
    focal_gamma : train with the focal loss with this gamma (binary classifiers that
        declare ``supports_focal_loss``).
    """

    group: np.ndarray | None = None
    eval_X: np.ndarray | None = None
    eval_y: np.ndarray | None = None
    eval_group: np.ndarray | None = None
    feature_names: list[str] | None = None
    report: Callable[[int, float], None] | None = None
    focal_gamma: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Model(Protocol):
    """What every registered model implements (fit, predict, save/load)."""

    Config: ClassVar[type[ModelConfig]]
    name: ClassVar[str]
    task_types: ClassVar[frozenset[str]]
    supports_proba: ClassVar[bool]

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        sample_weight: np.ndarray | None = None,
        categorical: list[int] | None = None,
        *,
        context: FitContext | None = None,
    ) -> Self:
        """Learn from ``X`` (float matrix) and ``y``; returns ``self``."""
        ...

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class index (classifiers) or value (regression, ranking) per row."""
        ...

    def save(self, path: Path) -> None:
        """Write the fitted model into the folder ``path`` (no pickle)."""
        ...


MODELS: dict[str, type[BaseModel]] = {}


def register_model(cls: type[BaseModel]) -> type[BaseModel]:
    """Class decorator: make a model available by its ``name``."""
    if not cls.name:
        raise ValueError(f"model class {cls.__qualname__} has no name")
    MODELS[cls.name] = cls
    return cls


def model_class(name: str) -> type[BaseModel]:
    """The registered model class called ``name``; a clear error listing the names otherwise."""
    from loopml.training.models import load_builtin_models

    load_builtin_models()
    try:
        return MODELS[name]
    except KeyError:
        raise NotFound(
            f"model type `{name}` is not registered (registered: {', '.join(sorted(MODELS))})",
            hint="`loopml zoo` lists every model and its parameters",
        ) from None


def validate_config(cls: type[BaseModel], params: dict[str, Any], where: str) -> ModelConfig:
    """Validate ``params`` through the model's config; errors name ``where`` and each field."""
    try:
        return cls.Config(**params)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "params"
            value = err.get("input")
            problems.append(f"{where}.params.{loc}: {err['msg']} (got {value!r})")
        raise SpecError(f"invalid parameters for model `{cls.name}` in {where}", problems) from None


def make_model(name: str, *, task: str = "binary", seed: int = 0, where: str | None = None, **params: Any) -> BaseModel:
    """Build an unfitted model by registered name, validating ``params`` through its config."""
    cls = model_class(name)
    config = validate_config(cls, params, where or f"model `{name}`")
    return cls(config, task=task, seed=seed)


class BaseModel:
    """Shared behaviour: config handling, input checks, scores and the save/load envelope.

    Subclasses set ``name``, ``Config``, ``task_types``, the capability flags and implement
    ``_fit``, ``_score`` (the one core used for a single row and for a batch) and
    ``_state``/``_restore`` (what is saved).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    task_types: ClassVar[frozenset[str]] = TASKS
    supports_proba: ClassVar[bool] = True
    supports_sample_weight: ClassVar[bool] = True
    supports_focal_loss: ClassVar[bool] = False
    # Takes a scipy CSR matrix as is (wide sparse features such as TF-IDF); other models get it densified
    # (refused with a clear error beyond DENSE_CELLS_MAX cells).
    accepts_sparse: ClassVar[bool] = False
    # `loopml export --format onnx` can write this model as ONNX operators (loopml.export.model_onnx).
    exports_onnx: ClassVar[bool] = False
    needs_group: ClassVar[bool] = False
    description: ClassVar[str] = ""
    # How complex the model family is (0 baselines, 1 linear, ... 7 stacking): among candidates whose
    # validation scores are within noise of each other, selection prefers the least complex.
    complexity: ClassVar[int] = 5
    # Contract-suite exceptions, declared here with a reason: {check name: reason}.
    contract_exceptions: ClassVar[dict[str, str]] = {}
    # Small parameters the contract suite fits with (keeps the suite fast; same code paths).
    contract_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: ModelConfig | None = None, *, task: str = "binary", seed: int = 0) -> None:
        if task not in self.task_types:
            raise ModelError(
                f"model `{self.name}` does not handle task `{task}` (it handles: {', '.join(sorted(self.task_types))})"
            )
        if config is None:
            config = self.Config()
        elif not isinstance(config, self.Config):
            raise ModelError(f"model `{self.name}` needs a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config
        self.task = task
        self.seed = seed
        self.n_features_in_: int | None = None
        self.n_classes_: int = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r}, task={self.task!r})"

    # -- input checks ---------------------------------------------------------------------
    def _check_X(self, X: Any, *, fitting: bool = False) -> Any:
        if sp.issparse(X):
            if not self.accepts_sparse:
                cells = int(X.shape[0]) * int(X.shape[1])
                if cells > DENSE_CELLS_MAX:
                    raise ModelError(
                        f"model `{self.name}` takes dense input only (accepts_sparse is false) and the sparse "
                        f"{X.shape[0]:,} × {X.shape[1]:,} feature matrix would need {cells * 8 / 1e9:.1f} GB dense",
                        hint="use a model that takes sparse input (lightgbm, logistic, linear, linear_svm, "
                        "bagging/stacking over them) or lower the tfidf max_features",
                    )
                X = X.toarray()
            else:
                if not fitting:
                    if self.n_features_in_ is None:
                        raise ModelError(f"model `{self.name}` is not fitted; call fit() first")
                    if X.shape[1] != self.n_features_in_:
                        raise ModelError(
                            f"model `{self.name}` was fitted on {self.n_features_in_} feature column(s) "
                            f"but got {X.shape[1]}"
                        )
                return sp.csr_matrix(X, dtype=np.float64)
        X = np.asarray(X)
        if X.ndim != 2:
            raise ModelError(f"model `{self.name}`: X must be a 2-D matrix, got {X.ndim} dimension(s)")
        if not fitting:
            if self.n_features_in_ is None:
                raise ModelError(f"model `{self.name}` is not fitted; call fit() first")
            if X.shape[1] != self.n_features_in_:
                raise ModelError(
                    f"model `{self.name}` was fitted on {self.n_features_in_} feature column(s) "
                    f"but got {X.shape[1]}"
                )
        return X.astype(np.float64, copy=False)

    def _check_y(self, y: np.ndarray, n: int) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != n:
            raise ModelError(f"model `{self.name}`: y must be 1-D with {n} values, got shape {y.shape}")
        if self.task in ("binary", "multiclass"):
            if not np.all(np.isfinite(y)) or np.any(y < 0) or np.any(y != np.round(y)):
                raise ModelError(f"model `{self.name}`: class labels must be integer codes 0..k-1")
            y = y.astype(np.int64)
            self.n_classes_ = 2 if self.task == "binary" else max(int(y.max()) + 1, 2)
            if self.task == "binary" and y.max() > 1:
                raise ModelError(f"model `{self.name}`: binary labels must be 0 or 1, found {int(y.max())}")
        else:
            y = y.astype(np.float64)
            if not np.all(np.isfinite(y)):
                raise ModelError(f"model `{self.name}`: the target has missing or infinite values")
        return y

    def _check_weight(self, w: np.ndarray | None, n: int) -> np.ndarray | None:
        if w is None:
            return None
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (n,):
            raise ModelError(f"model `{self.name}`: sample_weight must have shape ({n},), got {w.shape}")
        if np.any(w < 0) or not np.all(np.isfinite(w)):
            raise ModelError(f"model `{self.name}`: sample_weight must be finite and non-negative")
        return w

    # -- the protocol ---------------------------------------------------------------------
    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        sample_weight: np.ndarray | None = None,
        categorical: list[int] | None = None,
        *,
        context: FitContext | None = None,
    ) -> Self:
        """Fit on ``X`` and ``y`` (see the module docstring for the label coding).

        Parameters
        ----------
        X : float matrix (n_rows, n_features); not modified.
        y : labels, not modified.
        sample_weight : optional non-negative weight per row.
        categorical : indices of columns holding integer category codes.
        context : optional :class:`FitContext` (groups, validation set, pruning reporter).

        Returns
        -------
        self
        """
        Xc = self._check_X(X, fitting=True)
        if Xc.shape[0] == 0:
            raise ModelError(f"model `{self.name}`: cannot fit on zero rows")
        yc = self._check_y(y, Xc.shape[0])
        w = self._check_weight(sample_weight, Xc.shape[0])
        cats = sorted(set(categorical or []))
        bad = [c for c in cats if not 0 <= c < Xc.shape[1]]
        if bad:
            raise ModelError(f"model `{self.name}`: categorical column index {bad[0]} is outside 0..{Xc.shape[1] - 1}")
        ctx = context or FitContext()
        if self.needs_group and ctx.group is None:
            raise ModelError(f"model `{self.name}` needs the group (query) of each row for task `{self.task}`")
        self.n_features_in_ = Xc.shape[1]
        self.categorical_ = cats
        from threadpoolctl import threadpool_limits

        # one BLAS thread: small solves get slower, not faster, with more threads, and trials
        # already run in parallel processes on a machine shared with other work
        with threadpool_limits(limits=1, user_api="blas"):
            self._fit(Xc, yc, w, cats, ctx)
        return self

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, cats: list[int], ctx: FitContext) -> None:
        raise NotImplementedError

    def _score(self, X: np.ndarray) -> np.ndarray:
        """Scores of a checked float matrix: P(positive) (n,), class probs (n, k) or values (n,)."""
        raise NotImplementedError

    def fitted_params(self) -> dict[str, Any]:
        """Parameters that reproduce this fit without a validation set (e.g. the rounds early stopping chose)."""
        return {}

    def score(self, X: np.ndarray) -> np.ndarray:
        """What a bundle serves: P(positive), class probabilities, or the predicted value."""
        return self._score(self._check_X(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class index for classifiers, the value for regression and ranking."""
        s = self.score(X)
        if self.task == "binary":
            return (s >= 0.5).astype(np.int64)
        if self.task == "multiclass":
            return np.asarray(np.argmax(s, axis=1), dtype=np.int64)
        return s

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(positive) with shape (n,) for binary, class probabilities (n, k) for multiclass."""
        if self.task not in ("binary", "multiclass") or not self.supports_proba:
            raise ModelError(f"model `{self.name}` gives no probabilities for task `{self.task}`")
        return self.score(X)

    # -- persistence ------------------------------------------------------------------------
    def _state(self, path: Path) -> dict[str, Any]:
        """Write array files into ``path``; return the JSON-able rest of the fitted state."""
        raise NotImplementedError

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        """Inverse of :meth:`_state`."""
        raise NotImplementedError

    def save(self, path: Path) -> None:
        """Write the fitted model to the folder ``path``: ``model.json`` plus array files."""
        if self.n_features_in_ is None:
            raise ModelError(f"model `{self.name}` is not fitted; nothing to save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = self._state(path)
        doc = {
            "format": FORMAT,
            "type": self.name,
            "task": self.task,
            "seed": self.seed,
            "config": self.config.model_dump(mode="json"),
            "n_features_in": self.n_features_in_,
            "n_classes": self.n_classes_,
            "categorical": self.categorical_,
            "state": state,
        }
        (path / "model.json").write_text(json.dumps(doc, sort_keys=True, indent=1))

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a model written by :meth:`save` (dispatching on the saved type)."""
        path = Path(path)
        doc_path = path / "model.json"
        if not doc_path.exists():
            raise ModelError(f"{path}: not a saved model (no model.json)")
        try:
            doc = json.loads(doc_path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"{doc_path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        if doc.get("format") != FORMAT:
            raise ModelError(f"{doc_path}: unknown model format {doc.get('format')!r} (expected {FORMAT})")
        target = model_class(doc["type"])
        if cls is not BaseModel and not issubclass(target, cls):
            raise ModelError(f"{doc_path}: holds a `{doc['type']}` model, not `{cls.name}`")
        config = validate_config(target, doc["config"], str(doc_path))
        model = target(config, task=doc["task"], seed=doc["seed"])
        model.n_features_in_ = int(doc["n_features_in"])
        model.n_classes_ = int(doc["n_classes"])
        model.categorical_ = list(doc["categorical"])
        model._restore(path, doc["state"])
        return model  # type: ignore[return-value]


def save_arrays(path: Path, name: str, **arrays: np.ndarray) -> None:
    """Write arrays into ``path/name`` as an uncompressed npz (no pickled objects)."""
    with open(path / name, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]


def load_arrays(path: Path, name: str) -> dict[str, np.ndarray]:
    """Read arrays written by :func:`save_arrays`, refusing pickled objects."""
    try:
        with np.load(path / name, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ModelError(f"{path / name}: missing model file") from None
    except ValueError as exc:
        raise ModelError(f"{path / name}: unreadable arrays ({exc})") from None


def rowdot(Z: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``Z @ W.T`` computed row by row (einsum), so a single row gets bit-identical results to a batch.

    BLAS picks different kernels for one row and for many, which changes the last bits.
    """
    return np.einsum("nd,kd->nk", np.ascontiguousarray(Z), np.ascontiguousarray(W))  # type: ignore[no-any-return]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]
