"""Input encoding shared by the linear and neural models.

Numeric columns are standardised with statistics from the training rows (missing values
become the mean, i.e. 0 after standardising); categorical columns (integer codes) keep
their most frequent levels and map every other level, unseen or missing, to index 0.
The same arrays encode one row or a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class InputEncoder:
    """Fitted standardisation and category vocabularies.

    Attributes
    ----------
    numeric : indices of numeric columns in X.
    mean, std : statistics of the numeric columns.
    categorical : indices of categorical columns.
    vocab : per categorical column, the sorted kept codes; level ``vocab[j][i]`` maps to ``i + 1``.
    """

    numeric: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    categorical: np.ndarray
    vocab: list[np.ndarray]

    @classmethod
    def fit(cls, X: np.ndarray, categorical: list[int], max_levels: int, w: np.ndarray | None = None) -> InputEncoder:
        """Learn statistics from ``X``; keep at most ``max_levels`` levels per categorical column."""
        cats = np.asarray(sorted(categorical), dtype=np.int64)
        num = np.asarray([j for j in range(X.shape[1]) if j not in set(cats.tolist())], dtype=np.int64)
        Xn = X[:, num]
        with np.errstate(all="ignore"):
            mean = np.nanmean(Xn, axis=0) if Xn.shape[0] else np.zeros(len(num))
            std = np.nanstd(Xn, axis=0) if Xn.shape[0] else np.ones(len(num))
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
        vocab = []
        for j in cats:
            col = X[:, j]
            col = col[np.isfinite(col)]
            if col.size == 0:
                vocab.append(np.zeros(0))
                continue
            levels, counts = np.unique(col, return_counts=True)
            if levels.size > max_levels:
                keep = np.argsort(-counts, kind="stable")[:max_levels]
                levels = np.sort(levels[keep])
            vocab.append(levels.astype(np.float64))
        return cls(num, mean, std, cats, vocab)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes (kept levels + the index 0 for other/unknown)."""
        return [len(v) + 1 for v in self.vocab]

    def numeric_matrix(self, X: np.ndarray) -> np.ndarray:
        """Standardised numeric columns; missing values become 0 (the training mean)."""
        Z = (X[:, self.numeric] - self.mean) / self.std
        return np.where(np.isfinite(Z), Z, 0.0)

    def category_indices(self, X: np.ndarray) -> np.ndarray:
        """Integer index per categorical column: 1..len(vocab) for kept levels, 0 otherwise."""
        out = np.zeros((X.shape[0], len(self.categorical)), dtype=np.int64)
        for k, (j, levels) in enumerate(zip(self.categorical, self.vocab)):
            if levels.size == 0:
                continue
            col = X[:, j]
            pos = np.clip(np.searchsorted(levels, col), 0, levels.size - 1)
            hit = levels[pos] == col
            out[:, k] = np.where(hit, pos + 1, 0)
        return out

    def dense(self, X: np.ndarray) -> np.ndarray:
        """Standardised numerics followed by one-hot columns of the kept levels."""
        parts = [self.numeric_matrix(X)]
        if len(self.categorical):
            idx = self.category_indices(X)
            for k, levels in enumerate(self.vocab):
                oh = np.zeros((X.shape[0], levels.size), dtype=np.float64)
                rows = np.nonzero(idx[:, k] > 0)[0]
                oh[rows, idx[rows, k] - 1] = 1.0
                parts.append(oh)
        return np.hstack(parts) if len(parts) > 1 else parts[0]

    def to_arrays(self, prefix: str = "enc_") -> dict[str, np.ndarray]:
        """Arrays for an npz file."""
        out = {
            f"{prefix}numeric": self.numeric,
            f"{prefix}mean": self.mean,
            f"{prefix}std": self.std,
            f"{prefix}categorical": self.categorical,
        }
        for k, v in enumerate(self.vocab):
            out[f"{prefix}vocab_{k}"] = v
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "enc_") -> InputEncoder:
        """Inverse of :meth:`to_arrays`."""
        cats = arrays[f"{prefix}categorical"].astype(np.int64)
        vocab = [arrays[f"{prefix}vocab_{k}"] for k in range(len(cats))]
        return cls(
            arrays[f"{prefix}numeric"].astype(np.int64), arrays[f"{prefix}mean"], arrays[f"{prefix}std"], cats, vocab
        )
