"""A model version ready to serve: input schema, fitted transform and a low-overhead predictor.

One core for online and batch: :meth:`Servable.predict_one` fills a pre-allocated row buffer
(through the bundle's compiled ``transform_row``, or directly for raw numeric inputs) and calls
the single-row fast path; :meth:`Servable.predict_table` runs the batch transform and the
vectorised predictor over an Arrow table. Both give the same scores for the same input.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa

from loopml.errors import ModelError
from loopml.serving.predictor import GenericPredictor, LightGBMFastPredictor
from loopml.serving.schema import InputSchema

_NUM = frozenset({int, float})


def _row_getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """``row -> tuple of its values in schema order`` (``operator.itemgetter``; a 1-tuple for one name)."""
    if not names:
        return lambda row: ()
    if len(names) == 1:
        name = names[0]
        return lambda row: (row[name],)
    return operator.itemgetter(*names)

#: up to this many rows a request is scored row by row on the single-row fast path. Measured here
#: (200 trees, 25 inputs): with a transform, row by row beats Arrow table + batch transform + matrix
#: predict up to several hundred rows; without one, they cost the same above a few dozen rows and
#: the matrix path lets the log take the inputs as one block.
ROWWISE_MAX = 24
ROWWISE_MAX_TRANSFORM = 256
#: rows per slice when a worker thread builds the inputs of a large request (a few ms of C per slice)
BLOCK_SLICE = 1024
#: the batch path scores at most this many matrix cells at once (rows × features; 64 MiB of float32)
DENSE_SLICE_CELLS = 16_000_000


class Servable:
    """One loaded model version.

    Parameters
    ----------
    version_id
        Registry version id (``v3``); reported with every prediction.
    schema
        The raw inputs the version accepts.
    task
        ``binary``, ``multiclass``, ``regression`` or ``ranking``.
    predictor
        Single-row predictor whose ``buffer`` holds the transformed row.
    transform_row, transform_batch
        The fitted feature transform (``None``: the raw numeric inputs are the features).
    threshold
        Decision threshold turning a binary score into a class.
    """

    def __init__(
        self,
        version_id: str,
        schema: InputSchema,
        task: str,
        predictor: LightGBMFastPredictor | GenericPredictor,
        *,
        transform_row: Callable[[dict[str, Any]], np.ndarray] | None = None,
        transform_batch: Callable[[pa.Table], np.ndarray] | None = None,
        threshold: float = 0.5,
        bundle_digest: str | None = None,
        finish: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if transform_row is None and not schema.all_numeric:
            raise ModelError(f"model version {version_id}: string inputs need a fitted transform")
        self.version_id = version_id
        self.schema = schema
        self.task = task
        self.threshold = threshold
        self.bundle_digest = bundle_digest
        self.classes: list[Any] = []  # class values by code (classification bundles); feedback labels are codes
        self._pred = predictor
        self._buf = predictor.buffer
        #: the row buffer :meth:`predict_one` fills (the raw inputs when :attr:`raw_numeric`; read, never written, by the log)
        self.row_buffer = predictor.buffer
        self._names = schema.names
        self._getter = _row_getter(schema.names)
        # one row into a float64 buffer: struct.pack_into of the values (int and float only, checked before)
        self._pack = (struct.Struct(f"={len(schema.names)}d").pack_into
                      if transform_row is None and predictor.buffer.dtype == np.float64
                      and predictor.buffer.shape == (len(schema.names),) and schema.names else None)
        self._buf_bytes: Any = predictor.buffer.data.cast("B") if self._pack is not None else None
        self._transform_row = transform_row
        self._transform_batch = transform_batch
        self._binary = task == "binary"
        self._multiclass = task == "multiclass"
        self._finish = finish
        #: without a transform the row buffer holds the raw inputs: the log copies it instead of the dict
        self.raw_numeric = transform_row is None
        #: the raw inputs of the last :meth:`predict_many` call on the matrix path (for the log): a float
        #: matrix without a transform, else the Arrow table the batch transform read
        self.last_matrix: np.ndarray | None = None
        self.last_table: pa.Table | None = None

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_booster(
        cls, version_id: str, booster: Any, schema: InputSchema, task: str = "binary", threshold: float = 0.5
    ) -> Servable:
        """A LightGBM booster over raw numeric inputs (no transform): float64 row buffer."""
        if len(schema.names) != booster.num_feature():
            raise ModelError(
                f"model version {version_id}: the booster expects {booster.num_feature()} features, "
                f"the input schema has {len(schema.names)}"
            )
        return cls(version_id, schema, task, LightGBMFastPredictor(booster, np.float64), threshold=threshold)

    @classmethod
    def from_bundle(cls, version_id: str, bundle: Any, bundle_digest: str | None = None,
                    backend: str = "python") -> Servable:
        """A training bundle (model + fitted FeaturePipeline + manifest) from ``loopml.training.bundle``.

        LightGBM models with a built-in objective get the single-row fast path (the same trees,
        so the same scores as ``Bundle.predict_row``); any other model scores through its own
        ``score``. Down-sampling recalibration recorded in the manifest is applied on both paths.
        """
        manifest = dict(getattr(bundle, "manifest", {}) or {})
        transform = bundle.transform
        raw_schema = manifest.get("input_schema") or dict(transform.input_schema)
        schema = InputSchema.from_mapping({c: str(raw_schema.get(c, "any")) for c in transform.input_columns})
        model = bundle.model
        task = str(getattr(model, "task", manifest.get("task", "binary")))
        n_features = len(transform.feature_names)
        booster = getattr(model, "booster_", None)
        fast = (
            booster is not None
            and getattr(model, "name", "") == "lightgbm"
            and getattr(model, "objective_", None) != "focal"
            and task in ("binary", "regression", "multiclass")
        )
        predictor: LightGBMFastPredictor | GenericPredictor
        if backend == "onnx":  # the model as ONNX in ONNX Runtime (loopml.export.serving)
            from loopml.export.serving import OnnxScorer, model_artifact

            predictor = GenericPredictor(OnnxScorer(model_artifact(bundle)), n_features, np.float32)
        elif fast:
            predictor = LightGBMFastPredictor(booster, np.float32)
        else:
            predictor = GenericPredictor(model.score, n_features, np.float32)
        negative_rate = (manifest.get("calibration") or {}).get("negative_rate")
        finish = None
        if negative_rate is not None and task == "binary":
            from loopml.training.sampling import recalibrate

            rate = float(negative_rate)

            def finish(s: np.ndarray) -> np.ndarray:
                return recalibrate(s, rate)

        threshold = float(manifest.get("threshold", 0.5) or 0.5)
        servable = cls(
            version_id, schema, task, predictor, transform_row=transform.transform_row,
            transform_batch=transform.transform_batch, threshold=threshold, bundle_digest=bundle_digest,
            finish=finish,
        )
        servable.classes = list(manifest.get("classes") or [])
        return servable

    @property
    def scorer(self) -> str:
        """What scores this version: ``lightgbm`` (the C fast path), ``compiled`` (its trees as
        machine code, :mod:`loopml.serving.compiled`) or ``model`` (the model's own ``score``)."""
        if isinstance(self._pred, LightGBMFastPredictor):
            return "compiled" if self._pred.compiled is not None else "lightgbm"
        return "model"

    # -- one row -----------------------------------------------------------------------------
    def predict_one(self, row: dict[str, Any]) -> tuple[float, float]:
        """``(score, prediction)`` of one validated-on-the-fly row (raises ``RequestInvalid``)."""
        if self._transform_row is None:
            try:
                vals: Any = self._getter(row)  # the values in schema order (one C call)
            except (KeyError, TypeError):
                self.schema.raise_for([row])
                raise
            if not _NUM.issuperset(map(type, vals)):  # (not bool, str, None...: numpy would take "1.5" and True)
                vals = self._slow_values(row)
            pack = self._pack
            if pack is not None:
                try:
                    pack(self._buf_bytes, 0, *vals)  # float64 buffer: struct writes it ~3x faster than numpy
                except (OverflowError, struct.error):
                    try:
                        self._buf[:] = vals  # (numpy's own error, or the NaN of a null)
                    except OverflowError:  # an integer beyond float64: a 422 naming the field
                        self.schema.raise_for([row])
                        raise
            else:
                self._buf[:] = vals
        else:
            if not self.schema.valid(row):
                self.schema.raise_for([row])
            self._buf[:] = self._transform_row(row)
        return self._score()

    def _score(self) -> tuple[float, float]:
        """``(score, prediction)`` of the row in the buffer."""
        score = self._pred.predict_buffer()
        if self._finish is not None:
            score = float(self._finish(np.array([score]))[0])
        if self._multiclass:
            probs = self._pred.outputs()
            k = int(np.argmax(probs))
            return float(probs[k]), float(k)
        if self._binary:  # the decision at the version's threshold
            return score, 1.0 if score >= self.threshold else 0.0
        return score, score

    def set_batch_threads(self, n: int) -> None:
        """Threads of multi-row predictions (0: all cores). Models scored through their own
        ``score`` (not the LightGBM fast path) keep their own threading."""
        if isinstance(self._pred, LightGBMFastPredictor):
            self._pred.batch_threads = n

    def raw_copy(self) -> np.ndarray:
        """A copy of the raw inputs of the last :meth:`predict_one` (only when :attr:`raw_numeric`)."""
        return self._buf.copy()

    def _slow_values(self, row: dict[str, Any]) -> list[float]:
        self.schema.raise_for([row])  # raises unless the only oddities are allowed nulls
        return [math.nan if row[n] is None else row[n] for n in self._names]

    # -- many rows ---------------------------------------------------------------------------
    def predict_many(self, rows: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Scores and predictions of several rows (every problem of every row in one 422)."""
        self.last_matrix = None
        self.last_table = None
        if not rows:
            return np.zeros(0), np.zeros(0)
        limit = ROWWISE_MAX if self._transform_row is None else ROWWISE_MAX_TRANSFORM
        if len(rows) <= limit and not self._multiclass:
            valid = self.schema.valid
            if not all(valid(r) for r in rows):
                self.schema.raise_for(rows, many=True)
            if self._transform_row is None:
                out = [self.predict_one(r) for r in rows]
            else:
                transform, buf, score = self._transform_row, self._buf, self._score
                out = []
                for r in rows:
                    buf[:] = transform(r)
                    out.append(score())
            arr = np.asarray(out, dtype=np.float64)
            return np.ascontiguousarray(arr[:, 0]), np.ascontiguousarray(arr[:, 1])
        if self._transform_row is None:
            x = self._matrix(rows, rows)
            self.last_matrix = x
            scores = self._pred.predict_matrix(x)
        else:
            valid = self.schema.valid
            if not all(valid(r) for r in rows):
                self.schema.raise_for(rows, many=True)
            table = pa.Table.from_pylist(rows)
            self.last_table = table
            scores = self.predict_table(table)
        return self._split(np.asarray(scores))

    def _matrix(self, part: list[Any], rows: list[Any]) -> np.ndarray:
        """The float64 input matrix of ``part`` (a slice of ``rows``) for a model without a transform;
        any invalid value raises the schema's error over all ``rows``."""
        names = self._names
        x: np.ndarray | None = None
        try:
            vals = list(map(self._getter, part))  # tuples in schema order (C loops, no bytecode per value)
            # one pass over the value types (numpy would silently parse "1.5" and True)
            if set(map(type, chain.from_iterable(vals))) <= _NUM:
                x = np.array(vals, dtype=np.float64)
                if not np.isfinite(x).all():
                    x = None
        except (KeyError, TypeError, ValueError):
            x = None
        if x is None:
            self.schema.raise_for(rows, many=True)
            x = np.array([[math.nan if r[n] is None else r[n] for n in names] for r in part], dtype=np.float64)
        return x

    def predict_block(self, rows: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | pa.Table | None]:
        """Scores, predictions and the raw inputs (a float matrix, or the Arrow table the transform
        read; for the log) of many rows, on the vectorised path.

        Touches no shared state (not the row buffer, not :attr:`last_matrix`), so a worker thread
        may call it while the event loop scores single rows. The inputs are built in slices of
        :data:`BLOCK_SLICE` rows: each slice is one short C call, between which the interpreter
        hands the GIL to the event loop.
        """
        if not rows:
            return np.zeros(0), np.zeros(0), None
        if self._transform_row is None:
            parts = [self._matrix(rows[i : i + BLOCK_SLICE], rows) for i in range(0, len(rows), BLOCK_SLICE)]
            matrix = parts[0] if len(parts) == 1 else np.concatenate(parts)
            return (*self._split(np.asarray(self._pred.predict_matrix(matrix))), matrix)
        valid = self.schema.valid
        if not all(valid(r) for r in rows):
            self.schema.raise_for(rows, many=True)
        tables = [pa.Table.from_pylist(rows[i : i + BLOCK_SLICE]) for i in range(0, len(rows), BLOCK_SLICE)]
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
        return (*self._split(self.predict_table(table)), table)

    def _split(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if scores.ndim == 2:
            k = scores.argmax(axis=1)
            return scores[np.arange(len(k)), k].astype(np.float64), k.astype(np.float64)
        scores = scores.astype(np.float64, copy=False)
        if self._binary:
            return scores, (scores >= self.threshold).astype(np.float64)
        return scores, scores

    # -- batches -----------------------------------------------------------------------------
    def transform_table(self, table: pa.Table) -> np.ndarray:
        """Feature matrix of an Arrow table (the batch twin of the row path)."""
        if self._transform_batch is not None:
            return self._transform_batch(table)
        missing = [n for n in self._names if n not in table.column_names]
        if missing:
            raise ModelError(
                f"model version {self.version_id}: input columns missing from the table: {', '.join(missing)}"
            )
        cols = [np.asarray(table.column(n).to_numpy(zero_copy_only=False), dtype=np.float64) for n in self._names]
        return np.column_stack(cols) if cols else np.zeros((table.num_rows, 0))

    def predict_table(self, table: pa.Table) -> np.ndarray:
        """Scores of every row of an Arrow table (batch path: vectorised transform and predictor).

        A wide feature matrix (a TF-IDF vocabulary of tens of thousands of terms) is built and scored
        in slices of rows, so the dense matrix the predictor reads stays within ``DENSE_SLICE_CELLS``.
        """
        width = max(int(self._buf.shape[0]), 1)
        step = max(DENSE_SLICE_CELLS // width, 1)
        if table.num_rows > step:
            parts = [self.predict_table(table.slice(i, step)) for i in range(0, table.num_rows, step)]
            return np.concatenate(parts)
        scores = np.asarray(self._pred.predict_matrix(self.transform_table(table)))
        if scores.ndim == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        return self._finish(scores) if self._finish is not None else scores

    def predict_table_full(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """Scores and predictions of every row of an Arrow table."""
        return self._split(self.predict_table(table))
