"""Input encoding shared by the linear and neural models.

Numeric columns are standardised with statistics from the training rows (missing values
become the mean, i.e. 0 after standardising); categorical columns (integer codes) keep
their most frequent levels and map every other level, unseen or missing, to index 0.
The same arrays encode one row or a batch.

Fitted on a sparse (CSR) matrix, the numeric columns that are mostly zeros (TF-IDF terms) pass
through unscaled and stay sparse (``passthrough``); centring them would make them dense.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

#: rows encoded at once when a matrix is large: the float64 temporaries stay O(block), not O(rows)
ENCODE_BLOCK_ROWS = 65_536


def _blocks(n: int) -> range:
    return range(0, n, ENCODE_BLOCK_ROWS)


def _column_stats(X: Any, num: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of columns ``num`` ignoring NaN (as ``np.nanmean`` / ``np.nanstd``),
    accumulated over blocks of rows: two passes, no copy of the columns."""
    k = len(num)
    sums, counts, sq = np.zeros(k), np.zeros(k), np.zeros(k)
    for a in _blocks(X.shape[0]):
        Xb = _columns(X[a : a + ENCODE_BLOCK_ROWS], num)
        seen = ~np.isnan(Xb)
        sums += np.where(seen, Xb, 0.0).sum(axis=0)
        counts += seen.sum(axis=0)
    with np.errstate(all="ignore"):
        mean = sums / counts
        for a in _blocks(X.shape[0]):
            Xb = _columns(X[a : a + ENCODE_BLOCK_ROWS], num)
            d = Xb - mean
            sq += np.where(np.isnan(Xb), 0.0, d * d).sum(axis=0)
        return mean, np.sqrt(sq / counts)


def _columns(X: Any, idx: np.ndarray) -> np.ndarray:
    """Columns ``idx`` of a dense or CSR matrix as a dense float array."""
    if sp.issparse(X):
        return np.asarray(X[:, idx].toarray(), dtype=np.float64)
    return np.asarray(X[:, idx])


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
    passthrough: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def fit(cls, X: Any, categorical: list[int], max_levels: int, w: np.ndarray | None = None) -> InputEncoder:
        """Learn statistics from ``X``; keep at most ``max_levels`` levels per categorical column."""
        cats = np.asarray(sorted(categorical), dtype=np.int64)
        num = np.asarray([j for j in range(X.shape[1]) if j not in set(cats.tolist())], dtype=np.int64)
        passthrough = np.zeros(0, dtype=np.int64)
        if sp.issparse(X):
            # mostly-zero numeric columns (TF-IDF terms) stay sparse and unscaled
            nnz = np.diff(sp.csc_matrix(X).indptr)
            sparse_cols = nnz[num] < 0.5 * max(X.shape[0], 1)
            passthrough, num = num[sparse_cols], num[~sparse_cols]
        if X.shape[0]:
            mean, std = _column_stats(X, num)
        else:
            mean, std = np.zeros(len(num)), np.ones(len(num))
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
        vocab = []
        for j in cats:
            col = _columns(X, np.asarray([j]))[:, 0]
            col = col[np.isfinite(col)]
            if col.size == 0:
                vocab.append(np.zeros(0))
                continue
            levels, counts = np.unique(col, return_counts=True)
            if levels.size > max_levels:
                keep = np.argsort(-counts, kind="stable")[:max_levels]
                levels = np.sort(levels[keep])
            vocab.append(levels.astype(np.float64))
        return cls(num, mean, std, cats, vocab, passthrough)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes (kept levels + the index 0 for other/unknown)."""
        return [len(v) + 1 for v in self.vocab]

    def numeric_matrix(self, X: Any, dtype: Any = np.float64) -> np.ndarray:
        """Standardised numeric columns; missing values become 0 (the training mean).

        Computed in float64 and stored as ``dtype``, a block of rows at a time for a large ``X``."""
        if X.shape[0] <= ENCODE_BLOCK_ROWS:
            Z = (_columns(X, self.numeric) - self.mean) / self.std
            return np.where(np.isfinite(Z), Z, 0.0).astype(dtype, copy=False)
        out = np.empty((X.shape[0], len(self.numeric)), dtype=dtype)
        for a in _blocks(X.shape[0]):
            out[a : a + ENCODE_BLOCK_ROWS] = self.numeric_matrix(X[a : a + ENCODE_BLOCK_ROWS])
        return out

    def category_indices(self, X: np.ndarray) -> np.ndarray:
        """Integer index per categorical column: 1..len(vocab) for kept levels, 0 otherwise."""
        out = np.zeros((X.shape[0], len(self.categorical)), dtype=np.int64)
        for k, (j, levels) in enumerate(zip(self.categorical, self.vocab)):
            if levels.size == 0:
                continue
            col = _columns(X, np.asarray([j]))[:, 0]
            pos = np.clip(np.searchsorted(levels, col), 0, levels.size - 1)
            hit = levels[pos] == col
            out[:, k] = np.where(hit, pos + 1, 0)
        return out

    def sparse_part(self, X: Any) -> Any:
        """The pass-through columns as CSR (float64, non-finite values as 0), or None when there are none.

        A dense row and a CSR batch give the same stored entries in the same order, so products
        with them sum the same terms in the same order (row == batch, bit for bit).
        """
        if self.passthrough.size == 0:
            return None
        if sp.issparse(X):
            Z = sp.csr_matrix(X[:, self.passthrough], dtype=np.float64)
        else:
            Z = sp.csr_matrix(np.asarray(X[:, self.passthrough], dtype=np.float64))
        Z.data[~np.isfinite(Z.data)] = 0.0
        Z.eliminate_zeros()
        Z.sort_indices()
        return Z

    def dense(self, X: Any) -> np.ndarray:
        """Standardised numerics followed by one-hot columns of the kept levels (pass-through columns
        not included: see :meth:`sparse_part`)."""
        parts = [self.numeric_matrix(X)]
        if len(self.categorical):
            idx = self.category_indices(X)
            for k, levels in enumerate(self.vocab):
                oh = np.zeros((X.shape[0], levels.size), dtype=np.float64)
                rows = np.nonzero(idx[:, k] > 0)[0]
                oh[rows, idx[rows, k] - 1] = 1.0
                parts.append(oh)
        return np.hstack(parts) if len(parts) > 1 else parts[0]

    def onehot_csr(self, X: Any) -> sp.csr_matrix:
        """The one-hot columns of :meth:`dense` as CSR: one stored 1.0 per row and kept level, nothing else."""
        widths = np.asarray([v.size for v in self.vocab], dtype=np.int64)
        idx = self.category_indices(X)
        hit = idx > 0
        offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
        indices = (idx - 1 + offsets[None, :])[hit]  # row-major: by row, then by column (offsets increase)
        indptr = np.concatenate([[0], np.cumsum(hit.sum(axis=1))]).astype(np.int64)
        data = np.ones(indices.size, dtype=np.float64)
        return sp.csr_matrix((data, indices, indptr), shape=(X.shape[0], int(widths.sum())))

    def design_sparse(self, X: Any) -> sp.csr_matrix:
        """The columns of :meth:`dense` then :meth:`sparse_part`, as one CSR matrix, without the dense one-hot
        block (which grows as rows × kept levels: 1.7 GB for 700k rows and 300 levels in float64).

        A large ``X`` is encoded a block of rows at a time into arrays sized once (a first pass counts each
        row's entries): memory is the result plus one block, not the COO and stacked copies of the whole
        matrix (7.9 GB for 7.3M rows × 20 columns)."""
        n = X.shape[0]
        if n <= ENCODE_BLOCK_ROWS:
            return self._design_block(X)
        counts = np.zeros(n, dtype=np.int64)
        for a in _blocks(n):
            counts[a : a + ENCODE_BLOCK_ROWS] = np.diff(self._design_block(X[a : a + ENCODE_BLOCK_ROWS]).indptr)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        del counts
        width = len(self.numeric) + int(sum(v.size for v in self.vocab)) + len(self.passthrough)
        index_dtype = np.int32 if max(int(indptr[-1]), width) < 2**31 else np.int64
        indptr = indptr.astype(index_dtype)
        data = np.empty(int(indptr[-1]), dtype=np.float64)
        indices = np.empty(int(indptr[-1]), dtype=index_dtype)
        for a in _blocks(n):
            B = self._design_block(X[a : a + ENCODE_BLOCK_ROWS])
            lo, hi = int(indptr[a]), int(indptr[min(a + ENCODE_BLOCK_ROWS, n)])
            data[lo:hi] = B.data
            indices[lo:hi] = B.indices
        return sp.csr_matrix((data, indices, indptr), shape=(n, width))

    def _design_block(self, X: Any) -> sp.csr_matrix:
        parts = [sp.csr_matrix(self.numeric_matrix(X))]
        if len(self.categorical):
            parts.append(self.onehot_csr(X))
        S = self.sparse_part(X)
        if S is not None:
            parts.append(S)
        return sp.hstack(parts, format="csr") if len(parts) > 1 else parts[0]

    def to_arrays(self, prefix: str = "enc_") -> dict[str, np.ndarray]:
        """Arrays for an npz file."""
        out = {
            f"{prefix}numeric": self.numeric,
            f"{prefix}mean": self.mean,
            f"{prefix}std": self.std,
            f"{prefix}categorical": self.categorical,
            f"{prefix}passthrough": self.passthrough,
        }
        for k, v in enumerate(self.vocab):
            out[f"{prefix}vocab_{k}"] = v
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "enc_") -> InputEncoder:
        """Inverse of :meth:`to_arrays`."""
        cats = arrays[f"{prefix}categorical"].astype(np.int64)
        vocab = [arrays[f"{prefix}vocab_{k}"] for k in range(len(cats))]
        passthrough = arrays.get(f"{prefix}passthrough", np.zeros(0, dtype=np.int64)).astype(np.int64)
        return cls(
            arrays[f"{prefix}numeric"].astype(np.int64), arrays[f"{prefix}mean"], arrays[f"{prefix}std"], cats, vocab,
            passthrough,
        )
