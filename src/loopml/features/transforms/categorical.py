"""Categorical encoders: ordinal, one-hot, hashing, target encoding, embedding ids, crosses.

All of them work on canonical category keys (:mod:`loopml.features.values`): the batch path
applies the scalar core to each *distinct* key once and gathers per row, so the row path and
the batch path share the same lookup tables.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from loopml.errors import SpecError
from loopml.features.transforms.base import (
    CATEGORY,
    COLUMNS,
    NUMERIC,
    TEXT,
    Transform,
    by_frequency,
    key_counts,
    key_label,
    register_transform,
)
from loopml.features.values import Categorical
from loopml.spec.features import Cross, EmbeddingIds, Hashing, OneHot, Ordinal, TargetEncode

MISSING_HASH_KEY = "\x00<missing>"
FNV_PRIME = 16777619
MASK32 = 0xFFFFFFFF


def stable_hash(key: str | None) -> int:
    """crc32 of the key's UTF-8 bytes (process-independent, unlike Python's ``hash``)."""
    return zlib.crc32((MISSING_HASH_KEY if key is None else key).encode("utf-8"))


def _key_to_json(k: str | None) -> str | None:
    return k


class _CodeLookup(Transform):
    """Shared core of the transforms that map a category to a float code, 0 for unknown."""

    def _codes(self) -> dict[str | None, float]:
        raise NotImplementedError

    def transform(self, values: Any) -> Any:
        self.check_fitted()
        m = self._codes()
        return values.map(lambda k: m.get(k, 0.0))

    def row_fn(self) -> Callable[[Any], Any]:
        self.check_fitted()
        get = self._codes().get
        return lambda k: get(k, 0.0)


@register_transform
class OrdinalTransform(_CodeLookup):
    """Integer codes 1..k (declared order, or most frequent first); 0 is the unknown bucket."""

    name = "ordinal"
    missing_output = "filled"
    unseen_output = "zero"
    example_kind = "categorical"
    Config = Ordinal
    accepts = frozenset({CATEGORY, NUMERIC, TEXT})
    produces = NUMERIC
    categorical_output = True
    on_missing = "a category of its own when seen in training (learned order), else code 0"
    on_unseen = "code 0 (unknown bucket)"
    config: Ordinal

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        if self.config.order is not None:
            cats: list[str | None] = list(dict.fromkeys(self.config.order))
        else:
            cats = by_frequency(key_counts(values.keys, values.codes), self.config.min_frequency)
        self.categories_ = cats
        self._index()

    def _index(self) -> None:
        self.mapping_: dict[str | None, float] = {k: float(i + 1) for i, k in enumerate(self.categories_)}

    def _codes(self) -> dict[str | None, float]:
        return self.mapping_

    def get_state(self) -> dict[str, Any]:
        return {"categories": self.categories_}

    def set_state(self, state: dict[str, Any]) -> None:
        self.categories_ = list(state["categories"])
        self._index()
        super().set_state(state)

    def stats(self) -> dict[str, Any]:
        cats = [key_label(k) for k in self.categories_]
        return {"n_categories": len(cats), "codes": {c: i + 1 for i, c in enumerate(cats[:12])},
                "unknown_code": 0}


@register_transform
class OneHotTransform(Transform):
    """One 0/1 column per frequent category plus an ``<unknown>`` column."""

    name = "onehot"
    missing_output = "filled"
    unseen_output = "unknown_column"
    example_kind = "categorical"
    Config = OneHot
    accepts = frozenset({CATEGORY, NUMERIC, TEXT})
    produces = COLUMNS
    on_missing = "its own column when frequent in training, else the <unknown> column"
    on_unseen = "the <unknown> column"
    config: OneHot

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        cats = by_frequency(key_counts(values.keys, values.codes), self.config.min_frequency)
        if self.config.max_categories is not None:
            cats = cats[: self.config.max_categories]
        self.categories_ = cats
        self._index()

    def _index(self) -> None:
        k = len(self.categories_)
        self.index_: dict[str | None, int] = {c: i for i, c in enumerate(self.categories_)}
        rows = {}
        for c, i in self.index_.items():
            r = [0.0] * (k + 1)
            r[i] = 1.0
            rows[c] = tuple(r)
        unknown = [0.0] * (k + 1)
        unknown[k] = 1.0
        self.rows_ = rows
        self.unknown_row_ = tuple(unknown)

    def output_names(self, base: str) -> list[str]:
        return [f"{base}={key_label(c)}" for c in self.categories_] + [f"{base}=<unknown>"]

    def transform(self, values: Any) -> Any:
        self.check_fitted()
        k = len(self.categories_)
        idx = values.map(lambda c: self.index_.get(c, k), dtype=np.int64)
        out = np.zeros((len(idx), k + 1), dtype=np.float64)
        out[np.arange(len(idx)), idx] = 1.0
        return out

    def row_fn(self) -> Callable[[Any], Any]:
        self.check_fitted()
        get, unknown = self.rows_.get, self.unknown_row_
        return lambda c: get(c, unknown)

    def get_state(self) -> dict[str, Any]:
        return {"categories": self.categories_}

    def set_state(self, state: dict[str, Any]) -> None:
        self.categories_ = list(state["categories"])
        self._index()
        super().set_state(state)

    def stats(self) -> dict[str, Any]:
        return {"n_columns": len(self.categories_) + 1,
                "categories": [key_label(c) for c in self.categories_[:12]]}


@register_transform
class HashTransform(Transform):
    """Bucket = crc32(category) mod n_buckets (no vocabulary; collisions accepted)."""

    name = "hash"
    missing_output = "filled"
    unseen_output = "finite"
    example_kind = "categorical"
    Config = Hashing
    accepts = frozenset({CATEGORY, NUMERIC, TEXT})
    produces = NUMERIC
    categorical_output = True
    on_missing = "hashed as the reserved key <missing>"
    on_unseen = "hashed like any category (no vocabulary)"
    config: Hashing

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        return None

    def transform(self, values: Any) -> Any:
        self.check_fitted()
        n = self.config.n_buckets
        return values.map(lambda k: float(stable_hash(k) % n))

    def row_fn(self) -> Callable[[Any], Any]:
        self.check_fitted()
        n = self.config.n_buckets
        return lambda k: float(stable_hash(k) % n)

    def stats(self) -> dict[str, Any]:
        return {"n_buckets": self.config.n_buckets}


@register_transform
class TargetEncodeTransform(Transform):
    """Smoothed mean target per category; on the training split the values are out-of-fold.

    Binary and regression targets give one column; multiclass targets give one column per
    class (P(class | category)). ``fit_transform`` returns the out-of-fold encoding so that a
    row's own label never leaks into its feature.
    """

    name = "target_encode"
    missing_output = "filled"
    unseen_output = "prior"
    example_kind = "categorical"
    Config = TargetEncode
    accepts = frozenset({CATEGORY, NUMERIC, TEXT})
    produces = COLUMNS
    needs_target = True
    on_missing = "a category of its own when seen in training, else the prior"
    on_unseen = "the prior (training mean of the target)"
    config: TargetEncode

    @staticmethod
    def _unique_codes(values: Categorical) -> tuple[np.ndarray, list[str | None]]:
        uniq: dict[str | None, int] = {}
        remap = np.array([uniq.setdefault(k, len(uniq)) for k in values.keys], dtype=np.int64)
        return (remap[values.codes] if len(values.codes) else values.codes), list(uniq)

    def _encode(self, codes: np.ndarray, y: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.config.smoothing
        prior = y.mean(axis=0) if len(y) else np.zeros(y.shape[1])
        cnt = np.bincount(codes, minlength=n_keys).astype(np.float64)
        sums = np.stack([np.bincount(codes, weights=y[:, j], minlength=n_keys) for j in range(y.shape[1])], axis=1)
        return (sums + s * prior) / (cnt[:, None] + s), prior

    def _check_y(self, y: np.ndarray | None) -> np.ndarray:
        if y is None:
            raise SpecError(f"feature `{self.column}`: target_encode needs the target (pass y to fit)")
        y2 = np.asarray(y, dtype=np.float64)
        return y2.reshape(-1, 1) if y2.ndim == 1 else y2

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        y2 = self._check_y(y)
        codes, keys = self._unique_codes(values)
        enc, prior = self._encode(codes, y2, len(keys))
        self.categories_ = keys
        self.encoding_ = enc.tolist()
        self.prior_ = prior.tolist()
        self._index()

    def _index(self) -> None:
        self.table_: dict[str | None, tuple[float, ...]] = {
            k: tuple(float(v) for v in row) for k, row in zip(self.categories_, self.encoding_)
        }
        self.prior_row_ = tuple(float(v) for v in self.prior_)

    def fit_transform(self, values: Any, y: np.ndarray | None = None) -> Any:
        self.fit(values, y)
        y2 = self._check_y(y)
        codes, keys = self._unique_codes(values)
        n = len(codes)
        folds = np.random.default_rng(0).permutation(n) % self.config.folds
        out = np.empty((n, y2.shape[1]), dtype=np.float64)
        for f in range(self.config.folds):
            inside = folds == f
            enc, _ = self._encode(codes[~inside], y2[~inside], len(keys))
            out[inside] = enc[codes[inside]]
        return out

    def output_names(self, base: str) -> list[str]:
        k = len(self.prior_)
        return [f"{base}__te"] if k == 1 else [f"{base}__te_{j}" for j in range(k)]

    def transform(self, values: Any) -> Any:
        self.check_fitted()
        table, prior = self.table_, self.prior_row_
        k = len(prior)
        lut = np.array([table.get(key, prior) for key in values.keys], dtype=np.float64).reshape(-1, k)
        return lut[values.codes] if len(values.codes) else np.zeros((0, k))

    def row_fn(self) -> Callable[[Any], Any]:
        self.check_fitted()
        get, prior = self.table_.get, self.prior_row_
        return lambda key: get(key, prior)

    def get_state(self) -> dict[str, Any]:
        return {"categories": self.categories_, "encoding": self.encoding_, "prior": self.prior_}

    def set_state(self, state: dict[str, Any]) -> None:
        self.categories_ = list(state["categories"])
        self.encoding_ = [list(map(float, r)) for r in state["encoding"]]
        self.prior_ = [float(v) for v in state["prior"]]
        self._index()
        super().set_state(state)

    def stats(self) -> dict[str, Any]:
        return {"n_categories": len(self.categories_), "prior": self.prior_,
                "smoothing": self.config.smoothing, "folds": self.config.folds}


@register_transform
class EmbeddingIdsTransform(_CodeLookup):
    """Index 1..V for ids seen at least ``min_frequency`` times; 0 is out-of-vocabulary."""

    name = "embedding_ids"
    missing_output = "filled"
    unseen_output = "zero"
    example_kind = "categorical"
    Config = EmbeddingIds
    accepts = frozenset({CATEGORY, NUMERIC, TEXT})
    produces = NUMERIC
    categorical_output = True
    on_missing = "an id of its own when frequent in training, else the OOV index 0"
    on_unseen = "the OOV index 0"
    config: EmbeddingIds

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        self.vocab_ = by_frequency(key_counts(values.keys, values.codes), self.config.min_frequency)
        self._index()

    def _index(self) -> None:
        self.index_: dict[str | None, float] = {k: float(i + 1) for i, k in enumerate(self.vocab_)}

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding table (vocabulary plus the OOV index)."""
        return len(self.vocab_) + 1

    def _codes(self) -> dict[str | None, float]:
        return self.index_

    def get_state(self) -> dict[str, Any]:
        return {"vocab": self.vocab_}

    def set_state(self, state: dict[str, Any]) -> None:
        self.vocab_ = list(state["vocab"])
        self._index()
        super().set_state(state)

    def stats(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "dim": self.config.dim, "oov_index": 0}


@register_transform
class CrossTransform(Transform):
    """Hashed cross of this column with ``with_columns``: bucket of (a, b, ...) combined crc32 values."""

    name = "cross"
    missing_output = "filled"
    unseen_output = "finite"
    example_kind = "categorical"
    example_config = {"with_columns": ["C2"]}
    Config = Cross
    accepts = frozenset({CATEGORY, NUMERIC, TEXT})
    produces = NUMERIC
    categorical_output = True
    on_missing = "a missing part hashes as the reserved key <missing>"
    on_unseen = "hashed like any combination (no vocabulary)"
    config: Cross

    @property
    def other_columns(self) -> list[str]:
        """The raw columns crossed with this one."""
        return list(self.config.with_columns)

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        return None

    def transform_cross(self, values: Categorical, others: list[Categorical]) -> np.ndarray:
        """Batch: combine the per-column hashes of this column and the others."""
        self.check_fitted()
        h = values.map(stable_hash, dtype=np.uint64)
        for o in others:
            h = ((h * np.uint64(FNV_PRIME)) ^ o.map(stable_hash, dtype=np.uint64)) & np.uint64(MASK32)
        return (h % np.uint64(self.config.n_buckets)).astype(np.float64)

    def transform(self, values: Any) -> Any:
        raise SpecError(f"feature `{self.column}`: cross needs the other columns (the pipeline passes them)")

    def row_cross_fn(self) -> Callable[[Any, tuple[Any, ...]], float]:
        """Row: the same combination on one value and the other columns' keys."""
        self.check_fitted()
        n = self.config.n_buckets

        def f(key: Any, others: tuple[Any, ...]) -> float:
            h = stable_hash(key)
            for o in others:
                h = ((h * FNV_PRIME) ^ stable_hash(o)) & MASK32
            return float(h % n)
        return f

    def row_fn(self) -> Callable[[Any], Any]:
        f = self.row_cross_fn()
        return lambda key: f(key, ())

    def stats(self) -> dict[str, Any]:
        return {"with_columns": self.other_columns, "n_buckets": self.config.n_buckets}


__all__ = [
    "CrossTransform",
    "EmbeddingIdsTransform",
    "HashTransform",
    "OneHotTransform",
    "OrdinalTransform",
    "TargetEncodeTransform",
    "stable_hash",
]
