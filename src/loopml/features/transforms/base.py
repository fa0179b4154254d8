"""The transform protocol and its registry.

A transform is one link of a feature's chain. It is fitted on the training split only, then
applied by the *same* code to a batch and to one row:

- ``transform(values)`` works on a whole column (a float64 array, a :class:`Categorical`, a
  list of texts or images) and is what training and batch prediction call;
- ``row_fn()`` returns a compiled scalar function built from the same fitted constants and
  lookup tables, for the online path (no pandas, no allocation of the pipeline per call).

Each transform declares what it accepts and produces (``numeric``, ``category``, ``text``,
``timestamp``, ``image``; ``columns`` means it ends the chain with one or more output
columns), how it treats missing values and unseen categories, and, if its row path is not
bit-identical to its batch path, why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from loopml.errors import SpecError

TRANSFORMS: dict[str, type[Transform]] = {}

NUMERIC = "numeric"
CATEGORY = "category"
TEXT = "text"
TIMESTAMP = "timestamp"
IMAGE = "image"
COLUMNS = "columns"


class Transform:
    """Base of every registered transform (see the module docstring).

    Hyperparameters live in ``config`` (the spec model of the transform, unchanged);
    learned state lives in attributes ending in ``_`` and round-trips through
    :meth:`get_state` / :meth:`set_state` as plain JSON data.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[BaseModel]]
    accepts: ClassVar[frozenset[str]] = frozenset()
    produces: ClassVar[str | None] = None  # None: the same kind it received
    categorical_output: ClassVar[bool] = False  # output holds integer category codes
    # the batch output is a scipy CSR matrix (wide and mostly zeros, e.g. TF-IDF); the row path then
    # gives (indices, values) through ``row_sparse_fn`` besides the dense ``row_fn``
    sparse_output: ClassVar[bool] = False
    needs_target: ClassVar[bool] = False
    exact_row_parity: ClassVar[bool] = True
    parity_reason: ClassVar[str] = ""
    on_missing: ClassVar[str] = ""
    on_unseen: ClassVar[str] = "not applicable"
    # Machine-readable forms of the two declarations above, checked by the contract suite:
    # missing_output: "nan" (NaN out), "zeros", "filled" (a finite value), "refuse" (DataError)
    # unseen_output: "zero" (code 0), "unknown_column" (last column is 1), "prior", "finite", None (n/a)
    missing_output: ClassVar[str] = "nan"
    unseen_output: ClassVar[str | None] = None
    # the kind of raw column and the config used by the contract suite to exercise the transform
    example_kind: ClassVar[str] = "numeric"
    example_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: BaseModel, column: str, kind: str) -> None:
        self.config = config
        self.column = column
        self.kind = kind  # the kind of value this link receives
        self.fitted_ = False

    # -- fitting --------------------------------------------------------------------------
    def fit(self, values: Any, y: np.ndarray | None = None) -> Transform:
        """Learn the state from training values; returns ``self``. Never mutates ``values``."""
        self._fit(values, y)
        self.fitted_ = True
        return self

    def fit_transform(self, values: Any, y: np.ndarray | None = None) -> Any:
        """Fit, then return the training output (out-of-fold where the transform needs it)."""
        return self.fit(values, y).transform(values)

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        raise NotImplementedError

    # -- applying -------------------------------------------------------------------------
    def transform(self, values: Any) -> Any:
        """Apply to a whole column."""
        raise NotImplementedError

    def row_fn(self) -> Callable[[Any], Any]:
        """A compiled function applying the transform to one value."""
        raise NotImplementedError

    # -- shape ----------------------------------------------------------------------------
    def output_kind(self) -> str:
        """Kind of value this link hands to the next one."""
        return self.produces or self.kind

    def output_names(self, base: str) -> list[str]:
        """Names of the output columns when this link ends the chain with ``columns``."""
        return [base]

    def side_names(self, base: str) -> list[str]:
        """Extra output columns emitted next to the chain (e.g. a missing indicator)."""
        return []

    def side_batch(self, values: Any) -> list[np.ndarray]:
        """The side columns for a batch (given the values this link receives)."""
        return []

    def side_row_fn(self) -> Callable[[Any], tuple[float, ...]] | None:
        """Compiled side-column function for one value, or None without side columns."""
        return None

    # -- state ----------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Learned state as plain JSON data."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore the state written by :meth:`get_state`."""
        self.fitted_ = True

    def stats(self) -> dict[str, Any]:
        """A short human summary of the fitted state (for ``loopml features show``)."""
        return self.get_state()

    def check_fitted(self) -> None:
        """Raise if used before ``fit``."""
        if not self.fitted_:
            raise SpecError(f"transform `{self.name}` of column `{self.column}` is used before it was fitted")


def register_transform(cls: type[Transform]) -> type[Transform]:
    """Class decorator: make a transform available to the spec by its ``name``."""
    if not cls.name:
        raise ValueError(f"transform class {cls.__qualname__} has no name")
    TRANSFORMS[cls.name] = cls
    return cls


def key_counts(keys: list[str | None], codes: np.ndarray) -> dict[str | None, int]:
    """How often each distinct key occurs (codes may point to equal keys after imputation)."""
    counts = np.bincount(codes, minlength=len(keys)) if len(codes) else np.zeros(len(keys), dtype=np.int64)
    out: dict[str | None, int] = {}
    for k, c in zip(keys, counts.tolist()):
        if c:
            out[k] = out.get(k, 0) + int(c)
    return out


def by_frequency(counts: dict[str | None, int], min_frequency: int = 1) -> list[str | None]:
    """Keys with at least ``min_frequency`` rows, most frequent first (ties by key; missing last)."""
    kept = [(k, c) for k, c in counts.items() if c >= min_frequency]
    kept.sort(key=lambda kc: (-kc[1], kc[0] is None, kc[0] or ""))
    return [k for k, _ in kept]


def key_label(key: str | None) -> str:
    """Display label of a category key."""
    return "<missing>" if key is None else key
