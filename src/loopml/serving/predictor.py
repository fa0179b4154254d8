"""Low-overhead predictors for one row and for batches.

Measured on this machine (200 trees, 31 leaves, 25 columns, one thread): ``Booster.predict`` on
one numpy row costs 26-120 µs (it validates, copies and builds a prediction object per call);
LightGBM's C single-row fast path (``LGBM_BoosterPredictForMatSingleRowFast`` with a prepared
``FastConfig``) costs about a quarter of that and gives bit-identical scores, so it is the
online path. Batches go through ``Booster.predict`` on a 2-D matrix (vectorised, multi-threaded).
"""

from __future__ import annotations

import contextlib
import ctypes
from typing import Any, Protocol

import numpy as np

from loopml.errors import ModelError

C_API_DTYPE_FLOAT32 = 0
C_API_DTYPE_FLOAT64 = 1
C_API_PREDICT_NORMAL = 0


class RowPredictor(Protocol):
    """Scores one prepared feature row (``buffer``) and batches of rows."""

    buffer: np.ndarray

    def predict_buffer(self) -> float:
        """Score of the row currently held in ``buffer``."""
        ...

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Scores of a 2-D matrix of rows (one score per row, or class probabilities for multiclass)."""
        ...


class LightGBMFastPredictor:
    """LightGBM's single-row fast path through ctypes, on a pre-allocated row buffer.

    The caller writes feature values into :attr:`buffer` (float32 or float64, as chosen) and calls
    :meth:`predict_buffer`. Not thread-safe: one instance per thread (the server has one loop).

    Examples
    --------
    >>> import lightgbm as lgb, numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 3)); y = (X[:, 0] > 0).astype(float)
    >>> b = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, y), 5)
    >>> p = LightGBMFastPredictor(b, np.float64)
    >>> p.buffer[:] = X[0]
    >>> bool(abs(p.predict_buffer() - b.predict(X[:1])[0]) < 1e-12)
    True
    """

    def __init__(self, booster: Any, dtype: type[np.floating[Any]] = np.float32, batch_threads: int = 0) -> None:
        from lightgbm.basic import _LIB, _c_str  # type: ignore[attr-defined]

        self.booster = booster
        self.batch_threads = batch_threads  # 0: all cores (batch jobs); the server sets 1
        self.num_features = int(booster.num_feature())
        self.num_outputs = int(booster.num_model_per_iteration())
        self.buffer = np.zeros(self.num_features, dtype=dtype)
        self._out = np.zeros(max(self.num_outputs, 1), dtype=np.float64)
        self._first = (ctypes.c_double * len(self._out)).from_buffer(self._out.data)  # outputs read as Python floats
        self._out_len = ctypes.c_int64(0)
        self._lib = _LIB
        self._handle = ctypes.c_void_p()
        dtype_code = C_API_DTYPE_FLOAT32 if self.buffer.dtype == np.float32 else C_API_DTYPE_FLOAT64
        rc = _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle,
            ctypes.c_int(C_API_PREDICT_NORMAL),
            ctypes.c_int(0),
            ctypes.c_int(-1),
            ctypes.c_int(dtype_code),
            ctypes.c_int32(self.num_features),
            _c_str("num_threads=1"),
            ctypes.byref(self._handle),
        )
        if rc != 0:
            raise ModelError(f"LightGBM refused the single-row fast path: {_LIB.LGBM_GetLastError().decode()}")
        # bind everything once: the hot call is one foreign call with pre-built arguments
        self._call = _LIB.LGBM_BoosterPredictForMatSingleRowFast
        self._args = (
            self._handle,
            self.buffer.ctypes.data_as(ctypes.c_void_p),
            ctypes.byref(self._out_len),
            self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
        )

        #: the same trees as machine code, once :mod:`loopml.serving.compiled` installed them
        self.compiled: Any = None

    def install_compiled(self, forest: Any) -> None:
        """Score with ``forest`` (a :class:`loopml.serving.compiled.CompiledForest` of these trees,
        checked against LightGBM) from now on: one row from :attr:`buffer` (widened to float64
        when it is float32, exactly as LightGBM reads it), and matrices when one thread scores
        them (the server's; batch jobs keep LightGBM's threads). Call it where no prediction runs
        (the server's event loop): the next call uses it."""
        fn, buf, out = forest.fn_raw, self.buffer, self._out
        row = buf if buf.dtype == np.float64 else np.zeros(self.num_features, dtype=np.float64)
        self._row64 = row  # kept alive with its address
        # pre-built ctypes arguments (fn_raw converts nothing), and the first output read as a
        # ctypes double: a Python float without a numpy scalar in between
        row_ptr, out_ptr = ctypes.c_void_p(row.ctypes.data), ctypes.c_void_p(out.ctypes.data)
        start, end = ctypes.c_int32(0), ctypes.c_int32(1)
        first = self._first
        if row is buf:
            def predict_buffer() -> float:
                fn(row_ptr, out_ptr, start, end)
                return first[0]
        else:
            copyto = np.copyto

            def predict_buffer() -> float:
                copyto(row, buf)
                fn(row_ptr, out_ptr, start, end)
                return first[0]
        self.compiled = forest
        self.predict_buffer = predict_buffer  # type: ignore[method-assign]

    def predict_buffer(self) -> float:
        """Score of the row in :attr:`buffer` (first output; see :meth:`outputs` for multiclass)."""
        if self._call(*self._args) != 0:
            raise ModelError(f"LightGBM prediction failed: {self._lib.LGBM_GetLastError().decode()}")
        return self._first[0]

    def outputs(self) -> np.ndarray:
        """All outputs of the last :meth:`predict_buffer` call (class probabilities for multiclass)."""
        return self._out.copy()

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Scores of a 2-D matrix (vectorised ``Booster.predict``, or the compiled trees on one thread)."""
        if self.compiled is not None and self.batch_threads == 1:
            return np.asarray(self.compiled.predict(x))
        return np.asarray(self.booster.predict(x, num_threads=self.batch_threads))

    def close(self) -> None:
        """Free the prepared fast configuration (idempotent)."""
        if self._handle:
            self._lib.LGBM_FastConfigFree(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the library may be gone already
            self.close()


class GenericPredictor:
    """Fallback for any model with ``predict_matrix``-like behaviour through a callable on 2-D input."""

    def __init__(self, fn: Any, num_features: int, dtype: type[np.floating[Any]] = np.float32) -> None:
        self._fn = fn
        self.buffer = np.zeros(num_features, dtype=dtype)
        self._row = self.buffer.reshape(1, -1)
        self._last = np.zeros(1)

    def predict_buffer(self) -> float:
        """Score of the row in ``buffer``."""
        self._last = np.asarray(self._fn(self._row)).reshape(-1)
        return float(self._last[0])

    def outputs(self) -> np.ndarray:
        """All outputs of the last call."""
        return self._last.copy()

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Scores of a 2-D matrix."""
        return np.asarray(self._fn(x))
