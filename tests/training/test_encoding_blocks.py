"""The input encoder works on large matrices a block of rows at a time, with the same results as at once."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import loopml.training.models.encoding as encoding
from loopml.training.models.encoding import InputEncoder

from .conftest import Matrix


def _german_with_gaps(matrices: dict[str, Matrix]) -> tuple[np.ndarray, list[int]]:
    m = matrices["binary"]
    X = np.vstack([m.X] * 7)  # 2,100 rows: many blocks of 97 rows, the last one short
    X[::13, 1] = np.nan  # missing numbers (mean-imputed) and missing categories (index 0)
    X[::17, m.categorical[0]] = np.nan
    return X, m.categorical


def test_column_statistics_match_nanmean_and_nanstd(matrices: dict[str, Matrix], monkeypatch: pytest.MonkeyPatch) -> None:
    X, cats = _german_with_gaps(matrices)
    monkeypatch.setattr(encoding, "ENCODE_BLOCK_ROWS", 97)
    enc = InputEncoder.fit(X, cats, max_levels=3)
    Xn = X[:, enc.numeric]
    np.testing.assert_allclose(enc.mean, np.nanmean(Xn, axis=0), rtol=1e-12)
    np.testing.assert_allclose(enc.std, np.nanstd(Xn, axis=0), rtol=1e-12)


def test_blockwise_design_and_numbers_equal_the_whole_matrix_at_once(
    matrices: dict[str, Matrix], monkeypatch: pytest.MonkeyPatch
) -> None:
    X, cats = _german_with_gaps(matrices)
    enc = InputEncoder.fit(X, cats, max_levels=3)
    whole = enc._design_block(X)  # every row at once: the reference
    numbers = enc.numeric_matrix(X)
    monkeypatch.setattr(encoding, "ENCODE_BLOCK_ROWS", 97)
    blocked = enc.design_sparse(X)
    assert blocked.shape == whole.shape and blocked.nnz == whole.nnz > X.shape[0]
    np.testing.assert_array_equal(blocked.indptr, whole.indptr)
    np.testing.assert_array_equal(blocked.indices, whole.indices)
    np.testing.assert_array_equal(blocked.data, whole.data)  # bit for bit
    np.testing.assert_array_equal(enc.numeric_matrix(X), numbers)
    as32 = enc.numeric_matrix(X, np.float32)
    assert as32.dtype == np.float32
    np.testing.assert_array_equal(as32, numbers.astype(np.float32))
    one = enc.design_sparse(X[5:6])  # a single row: the same entries as its row of the batch
    np.testing.assert_array_equal(one.toarray(), blocked[5].toarray())


def test_blockwise_design_keeps_sparse_passthrough_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(1000, 3))
    terms = sp.random(1000, 40, density=0.05, random_state=1, format="csr")  # TF-IDF-like: mostly zeros
    cat = rng.integers(0, 5, size=(1000, 1)).astype(np.float64)
    X = sp.hstack([sp.csr_matrix(dense), sp.csr_matrix(cat), terms], format="csr")
    enc = InputEncoder.fit(X, [3], max_levels=4)
    assert enc.passthrough.size == 40
    whole = enc._design_block(X)
    monkeypatch.setattr(encoding, "ENCODE_BLOCK_ROWS", 64)
    blocked = enc.design_sparse(X)
    assert (blocked != whole).nnz == 0 and blocked.nnz == whole.nnz
    np.testing.assert_array_equal(blocked.indices, whole.indices)
