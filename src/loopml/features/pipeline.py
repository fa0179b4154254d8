"""``FeaturePipeline``: every input feature's chain of transforms, fitted once, applied two ways.

>>> import pyarrow as pa
>>> from loopml.spec.features import Features
>>> t = pa.table({"age": [20.0, None, 40.0], "city": ["a", "b", None], "label": [0, 1, 0]})
>>> p = FeaturePipeline.from_spec(Features()).fit(t)  # inputs inferred: label excluded
>>> p.feature_names
['age', 'city']
>>> p.transform_batch(t)[1].tolist(), p.transform_row({"age": None, "city": "b"}).tolist()
([30.0, 2.0], [30.0, 2.0])

The batch path (``transform_batch``, a float32 matrix) and the online path (``transform_row``,
a float32 vector from a dict of raw values) share one fitted state: the row path is compiled
once into closures over the same constants and lookup tables.

Wide sparse outputs (TF-IDF) stay sparse on request: ``transform_batch(table, sparse=True)``
returns a float32 scipy CSR matrix when a chain produces one (models that declare
``accepts_sparse`` take it; the default dense matrix serves every other consumer). The row path
writes a sparse chain's non-zero weights into a zeroed vector, so a 50,000-term vocabulary costs
the row its terms, not its width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from loopml.errors import DataError, SpecError
from loopml.features import values as V
from loopml.features.transforms import TRANSFORMS, Transform
from loopml.features.transforms.base import CATEGORY, COLUMNS, IMAGE, NUMERIC, TEXT, TIMESTAMP
from loopml.features.transforms.categorical import CrossTransform, EmbeddingIdsTransform
from loopml.features.transforms.numeric import ImputeTransform
from loopml.spec.features import (
    DateParts,
    Feature,
    Features,
    ImagePixels,
    Impute,
    Ordinal,
    Tfidf,
)
from loopml.spec.task import Task

FORMAT = "loopml.features/1"
KIND_STATE = {"numeric": NUMERIC, "categorical": CATEGORY, "text": TEXT, "timestamp": TIMESTAMP, "image": IMAGE}
DEFAULT_TAIL: dict[str, Callable[[], Any]] = {
    CATEGORY: lambda: Ordinal(type="ordinal"),
    TEXT: lambda: Tfidf(type="tfidf"),
    TIMESTAMP: lambda: DateParts(type="date_parts"),
    IMAGE: lambda: ImagePixels(type="image_pixels"),
}
_BATCH_READERS: dict[str, Callable[[pa.Table, str], Any]] = {
    NUMERIC: V.numeric_batch,
    CATEGORY: V.categorical_batch,
    TEXT: V.text_batch,
    TIMESTAMP: V.timestamp_batch,
    IMAGE: V.pixels_batch,
}
_ROW_READERS: dict[str, Callable[[Any, str], Any]] = {
    NUMERIC: V.to_float,
    CATEGORY: V.canon_category,
    TEXT: V.to_text,
    TIMESTAMP: V.to_epoch_seconds,
    IMAGE: V.to_pixels,
}


def _batch_to_category(values: Any, state: str, column: str) -> V.Categorical:
    arr = pa.array(values, type=pa.float64()) if state == NUMERIC else pa.array(values, type=pa.string())
    return V.categorical_batch(pa.table({column: arr}), column)


class _Link:
    """One transform in a chain, and whether its input is first turned into categories."""

    def __init__(self, transform: Transform, convert_from: str | None) -> None:
        self.t = transform
        self.convert_from = convert_from


class Chain:
    """The transforms of one input feature, from its raw column to its output columns."""

    def __init__(self, feature: Feature) -> None:
        self.feature = feature
        self.column = feature.column
        self.name = feature.name or feature.column
        self.links: list[_Link] = []
        state = KIND_STATE[feature.kind]
        configs = list(feature.transforms)
        i = 0
        while True:
            if i < len(configs):
                cfg = configs[i]
            elif state in DEFAULT_TAIL:
                cfg = DEFAULT_TAIL[state]()
            else:
                break
            if state == COLUMNS:
                raise SpecError(
                    f"feature `{self.name}`: transform `{cfg.type}` comes after a transform that already produced "
                    "its output columns (put onehot, target_encode, date_parts, tfidf, sentence_embedding and "
                    "image_pixels last)"
                )
            cls = TRANSFORMS[cfg.type]
            convert: str | None = None
            if state not in cls.accepts or (state in (NUMERIC, TEXT) and cls.produces is not None
                                            and CATEGORY in cls.accepts):
                if state in (NUMERIC, TEXT) and CATEGORY in cls.accepts:
                    convert, state = state, CATEGORY
                else:
                    raise SpecError(
                        f"feature `{self.name}`: transform `{cfg.type}` needs {' or '.join(sorted(cls.accepts))} "
                        f"values, but the column holds {state} values at that point",
                        hint="set the feature's `kind` or reorder its transforms",
                    )
            t = cls(cfg, self.column, state)
            self.links.append(_Link(t, convert))
            state = t.output_kind()
            i += 1
        self.final_state = state

    # -- shape ------------------------------------------------------------------------------
    @property
    def transforms(self) -> list[Transform]:
        """The transforms in order (default tail included)."""
        return [link.t for link in self.links]

    @property
    def other_columns(self) -> list[str]:
        """Raw columns this chain reads besides its own (crosses)."""
        out: list[str] = []
        for t in self.transforms:
            if isinstance(t, CrossTransform):
                out += t.other_columns
        return out

    def output_names(self) -> list[str]:
        """Names of the output columns, main output(s) first then side columns."""
        main = self.links[-1].t.output_names(self.name) if self.final_state == COLUMNS else [self.name]
        sides = [n for t in self.transforms for n in t.side_names(self.name)]
        return main + sides

    def main_is_categorical(self) -> bool:
        """Whether the single main output holds integer category codes."""
        flag = False
        for t in self.transforms:
            if t.categorical_output:
                flag = True
            elif not isinstance(t, ImputeTransform):
                flag = False
        return flag and self.final_state != COLUMNS

    def needs_target(self) -> bool:
        """Whether fitting needs the target."""
        return any(t.needs_target for t in self.transforms)

    # -- batch ------------------------------------------------------------------------------
    def _run(self, table: pa.Table, y: np.ndarray | None, fit: bool) -> list[np.ndarray]:
        state = KIND_STATE[self.feature.kind]
        v = _BATCH_READERS[state](table, self.column)
        sides: list[np.ndarray] = []
        for link in self.links:
            t = link.t
            if link.convert_from is not None:
                v = _batch_to_category(v, link.convert_from, self.column)
            if fit and not isinstance(t, CrossTransform):
                out = t.fit_transform(v, y)
                sides += t.side_batch(v)
                v = out
                continue
            if fit:
                t.fit(v, y)
            sides += t.side_batch(v)
            if isinstance(t, CrossTransform):
                v = t.transform_cross(v, [V.categorical_batch(table, c) for c in t.other_columns])
            else:
                v = t.transform(v)
        if sp.issparse(v):
            return [sp.csr_matrix(v, dtype=np.float64), *(s[:, None] for s in sides)]
        main = np.asarray(v, dtype=np.float64)
        if main.ndim == 1:
            main = main[:, None]
        return [main, *(s[:, None] for s in sides)]

    def fit_transform(self, table: pa.Table, y: np.ndarray | None) -> list[np.ndarray]:
        """Fit every link on the training table (each on the previous link's training output)."""
        for t in self.transforms:
            t.fitted_ = False
        return self._run(table, y, fit=True)

    def transform_batch(self, table: pa.Table) -> list[np.ndarray]:
        """Output blocks for a batch."""
        return self._run(table, None, fit=False)

    # -- row --------------------------------------------------------------------------------
    def sparse_row(self) -> Callable[[dict[str, Any]], tuple[np.ndarray, np.ndarray]] | None:
        """For a chain that is one sparse-output transform: ``row -> (indices, values)``; else None."""
        if len(self.links) != 1 or self.links[0].convert_from is not None or not self.links[0].t.sparse_output:
            return None
        t = self.links[0].t
        if t.side_names(self.name):
            return None
        col = self.column
        reader = _ROW_READERS[KIND_STATE[self.feature.kind]]
        fn = t.row_sparse_fn()  # type: ignore[attr-defined]

        def run(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
            return fn(reader(row[col], col))  # type: ignore[no-any-return]
        return run

    def compile_row(self) -> Callable[[dict[str, Any], list[float]], None]:
        """A closure writing this feature's outputs for one row into a list."""
        col = self.column
        reader = _ROW_READERS[KIND_STATE[self.feature.kind]]
        fns: list[Callable[[Any], Any]] = []
        sides: list[tuple[int, Callable[[Any], tuple[float, ...]]]] = []
        crosses: dict[int, tuple[Callable[[Any, tuple[Any, ...]], float], list[str]]] = {}
        canon = V.canon_category
        for link in self.links:
            t = link.t
            if link.convert_from is not None:
                def to_key(x: Any, _c: str = col) -> Any:
                    return canon(x, _c)
                fns.append(to_key)
            sf = t.side_row_fn()
            if sf is not None:
                sides.append((len(fns), sf))
            if isinstance(t, CrossTransform):
                crosses[len(fns)] = (t.row_cross_fn(), t.other_columns)
                fns.append(lambda x: x)  # placeholder, replaced in the general path
            else:
                fns.append(t.row_fn())
        terminal = self.final_state == COLUMNS
        image_out = terminal and self.links[-1].t.name in ("image_pixels", "sentence_embedding")

        if not sides and len(crosses) == 1 and len(fns) == 1 + (self.links[0].convert_from is not None):
            cf, others = next(iter(crosses.values()))
            if len(others) == 1 and not terminal:
                o0 = others[0]
                pre = fns[0] if len(fns) == 2 else None

                def run_x(row: dict[str, Any], out: list[float]) -> None:
                    v = reader(row[col], col)
                    if pre is not None:
                        v = pre(v)
                    out.append(cf(v, (canon(row[o0], o0),)))
                return run_x
        if not sides and not crosses:
            if len(fns) == 1:
                f0 = fns[0]
                if terminal:
                    if image_out:
                        def run_t1a(row: dict[str, Any], out: list[float]) -> None:
                            out.extend(f0(reader(row[col], col)).tolist())
                        return run_t1a

                    def run_t1(row: dict[str, Any], out: list[float]) -> None:
                        out.extend(f0(reader(row[col], col)))
                    return run_t1

                def run_1(row: dict[str, Any], out: list[float]) -> None:
                    out.append(f0(reader(row[col], col)))
                return run_1
            if len(fns) == 2 and not terminal:
                g0, g1 = fns

                def run_2(row: dict[str, Any], out: list[float]) -> None:
                    out.append(g1(g0(reader(row[col], col))))
                return run_2

        def run(row: dict[str, Any], out: list[float]) -> None:
            v = reader(row[col], col)
            extra: list[float] = []
            si = 0
            for i, f in enumerate(fns):
                while si < len(sides) and sides[si][0] == i:
                    extra.extend(sides[si][1](v))
                    si += 1
                if i in crosses:
                    cf, others = crosses[i]
                    v = cf(v, tuple(canon(row[c], c) for c in others))
                else:
                    v = f(v)
            if terminal:
                out.extend(v.tolist() if isinstance(v, np.ndarray) else v)
            else:
                out.append(v)
            out.extend(extra)
        return run

    # -- state ------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Feature, column, chain and fitted statistics (for ``loopml features show``)."""
        def label(t: Transform) -> str:
            cfg = t.config.model_dump(exclude={"type"})
            keep = {k: v for k, v in cfg.items() if v not in (None, [], False)}
            inner = ", ".join(f"{k}={v}" for k, v in list(keep.items())[:3])
            return f"{t.name}({inner})" if inner else t.name
        return {
            "feature": self.name,
            "column": self.column,
            "kind": self.feature.kind,
            "chain": " → ".join(label(t) for t in self.transforms),
            "outputs": self.output_names(),
            "stats": {t.name: t.stats() for t in self.transforms if t.fitted_},
        }


def _infer_inputs(table: pa.Table, task: Task | None) -> list[Feature]:
    skip: set[str] = set()
    if task is not None:
        skip |= {task.target, *task.entity_keys}
        skip |= {c for c in (task.item_key, task.group_key, task.timestamp) if c}
    else:
        skip.add("label")
    out: list[Feature] = []
    for field in table.schema:
        t = field.type
        if field.name in skip or field.name.startswith("__"):
            continue
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
            out.append(Feature(column=field.name, kind="numeric", transforms=[Impute(type="impute", strategy="median")]))
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            out.append(Feature(column=field.name, kind="categorical", transforms=[Ordinal(type="ordinal")]))
        elif pa.types.is_timestamp(t) or pa.types.is_date(t):
            out.append(Feature(column=field.name, kind="timestamp", transforms=[DateParts(type="date_parts")]))
    return out


class FeaturePipeline:
    """Fitted feature transforms for one model: raw columns in, a float32 matrix or vector out.

    Parameters
    ----------
    inputs
        The declared features (``spec.features.inputs``); empty means infer them from the
        training table at :meth:`fit` (numbers → median imputation, text → ordinal codes with
        an unknown bucket, timestamps → date parts), leaving out the target, keys and timestamp.
    task
        The task section (target, keys, timestamp and type) of the spec.
    """

    def __init__(self, inputs: list[Feature], task: Task | None = None) -> None:
        self.inputs = list(inputs)
        self.task = task
        self.inferred = not inputs
        self.chains: list[Chain] = [Chain(f) for f in self.inputs]
        self._check_names()
        self._runners: list[Callable[[dict[str, Any], list[float]], None]] | None = None
        self.fitted = False

    @classmethod
    def from_spec(cls, features: Features, task: Task | None = None) -> FeaturePipeline:
        """A pipeline from the ``features`` and ``task`` sections of a spec."""
        return cls(features.inputs, task=task)

    def _check_names(self) -> None:
        seen: dict[str, str] = {}
        for ch in self.chains:
            for n in ch.output_names() if all(t.fitted_ for t in ch.transforms) else [ch.name]:
                if n in seen:
                    raise SpecError(f"feature name `{n}` is produced twice (by `{seen[n]}` and `{ch.name}`)",
                                    hint="give one of them a distinct `name`")
                seen[n] = ch.name

    # -- fit --------------------------------------------------------------------------------
    def _target(self, y: np.ndarray | None, n: int) -> np.ndarray | None:
        if y is None:
            return None
        y = np.asarray(y)
        if len(y) != n:
            raise DataError(f"target has {len(y)} values but the table has {n} rows")
        ttype = self.task.type if self.task is not None else "binary"
        if ttype == "multiclass":
            classes, idx = np.unique(y, return_inverse=True)
            out = np.zeros((n, len(classes)))
            out[np.arange(n), idx] = 1.0
            return out
        if y.dtype.kind in "biuf":
            out_y: np.ndarray = y.astype(np.float64)
            return out_y
        pos = self.task.positive_label if self.task is not None else None
        if pos is not None:
            out_p: np.ndarray = (y == pos).astype(np.float64)
            return out_p
        raise DataError(f"target values are not numeric (e.g. {y[0]!r}); set task.positive_label or encode them")

    def drop_mask(self, table: pa.Table) -> np.ndarray:
        """True for rows to keep: False where a column declared ``impute: drop`` is missing."""
        keep = np.ones(table.num_rows, dtype=bool)
        for ch in self.chains:
            if any(isinstance(t, ImputeTransform) and t.config.strategy == "drop" for t in ch.transforms):
                if KIND_STATE[ch.feature.kind] == NUMERIC:
                    keep &= ~np.isnan(V.numeric_batch(table, ch.column))
                else:
                    cats = V.categorical_batch(table, ch.column)
                    keep &= cats.map(lambda k: k is not None, dtype=bool)
        return keep

    def fit_transform(self, table: pa.Table, y: np.ndarray | None = None, *, sparse: bool = False) -> Any:
        """Fit on the training table and return its matrix (target encodings out-of-fold).

        Rows missing a column declared ``impute: drop`` are left out of fitting; the returned
        matrix then has only the kept rows (see :meth:`drop_mask`). ``sparse``: as in
        :meth:`transform_batch`.
        """
        if self.inferred:
            self.inputs = _infer_inputs(table, self.task)
            self.chains = [Chain(f) for f in self.inputs]
        keep = self.drop_mask(table)
        if not keep.all():
            table = table.filter(pa.array(keep))
            y = None if y is None else np.asarray(y)[keep]
        Y = self._target(y, table.num_rows)
        if Y is None and any(ch.needs_target() for ch in self.chains):
            raise SpecError("target_encode needs the target: pass y to FeaturePipeline.fit")
        blocks: list[np.ndarray] = []
        for ch in self.chains:
            blocks += ch.fit_transform(table, Y)
        self.fitted = True
        self._check_names()
        self._compile()
        return self._stack(blocks, table.num_rows, sparse)

    def fit(self, table: pa.Table, y: np.ndarray | None = None) -> FeaturePipeline:
        """Fit every feature on the training table (training split only); returns ``self``."""
        self.fit_transform(table, y)
        return self

    # -- apply ------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not self.fitted:
            raise SpecError("FeaturePipeline is used before fit() (or from_json())")

    @staticmethod
    def _stack(blocks: list[Any], n: int, sparse: bool = False) -> Any:
        if not blocks:
            return np.zeros((n, 0), dtype=np.float32)
        with np.errstate(over="ignore"):  # values beyond float32 become ±inf, in both paths
            if sparse and any(sp.issparse(b) for b in blocks):
                out = sp.hstack([sp.csr_matrix(b) for b in blocks], format="csr").astype(np.float32)
                out.sort_indices()
                return out
            # each block cast straight into its columns: a float64 concatenation first would hold the whole
            # matrix twice more (1.2 GB extra for 7.3M rows x 20 columns, the 10M-row demo's training split)
            widths = [b.shape[1] for b in blocks]
            out = np.empty((n, sum(widths)), dtype=np.float32)
            at = 0
            for b, w in zip(blocks, widths):
                out[:, at : at + w] = b.toarray() if sp.issparse(b) else b
                at += w
            return out

    @property
    def has_sparse(self) -> bool:
        """Whether a chain produces a sparse block (``transform_batch(sparse=True)`` then gives CSR)."""
        return any(ch.links and ch.links[-1].t.sparse_output for ch in self.chains)

    def transform_batch(self, table: pa.Table, *, sparse: bool = False) -> Any:
        """Matrix (rows × features, float32) for an Arrow table of raw columns.

        ``sparse=True``: a float32 scipy CSR matrix when a chain produces sparse output (TF-IDF),
        the same values as the dense matrix; a dense array otherwise.
        """
        self._check_fitted()
        blocks: list[Any] = []
        for ch in self.chains:
            blocks += ch.transform_batch(table)
        return self._stack(blocks, table.num_rows, sparse)

    def _compile(self) -> None:
        runners: list[Callable[[dict[str, Any], list[float]], None]] = []
        sparse: list[tuple[int, Callable[[dict[str, Any]], tuple[np.ndarray, np.ndarray]]]] = []
        dense_pos: list[int] = []
        for ch, (a, b) in zip(self.chains, self.output_spans()):
            fn = ch.sparse_row()
            if fn is None:
                runners.append(ch.compile_row())
                dense_pos.extend(range(a, b))
            else:
                sparse.append((a, fn))
        self._runners = runners
        self._sparse_rows = sparse
        self._dense_pos = np.asarray(dense_pos, dtype=np.int64)
        self._width = len(self.feature_names)

    def transform_row(self, row: dict[str, Any]) -> np.ndarray:
        """Vector (float32) for one row given as a dict of raw values; equals the batch row."""
        runners = self._runners
        if runners is None:
            self._check_fitted()
            self._compile()
            runners = self._runners or []
        out: list[float] = []
        try:
            for run in runners:
                run(row, out)
            if self._sparse_rows:
                # wide sparse chains (TF-IDF): zeros, then each chain's non-zero weights at its offset
                with np.errstate(over="ignore"):
                    vec = np.zeros(self._width, dtype=np.float32)
                    vec[self._dense_pos] = np.array(out, dtype=np.float32)
                    for offset, fn in self._sparse_rows:
                        idx, vals = fn(row)
                        vec[offset + idx] = vals.astype(np.float32)
                return vec
        except KeyError as exc:
            raise DataError(f"input row has no column `{exc.args[0]}` (needed: {', '.join(self.input_columns)})",
                            hint="send every input column; use null for a missing value") from None
        with np.errstate(over="ignore"):
            return np.array(out, dtype=np.float32)

    # -- shape ------------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        """Names of the output columns, in order."""
        return [n for ch in self.chains for n in ch.output_names()]

    @property
    def input_columns(self) -> list[str]:
        """Raw columns the pipeline reads."""
        cols: dict[str, None] = {}
        for ch in self.chains:
            cols[ch.column] = None
            for c in ch.other_columns:
                cols[c] = None
        return list(cols)

    @property
    def input_schema(self) -> dict[str, str]:
        """``{column: kind}`` of the raw inputs (numeric, categorical, text, timestamp, image)."""
        out: dict[str, str] = {}
        for ch in self.chains:
            out.setdefault(ch.column, ch.feature.kind)
            for c in ch.other_columns:
                out.setdefault(c, "categorical")
        return out

    @property
    def categorical_features(self) -> list[int]:
        """Indices of output columns holding integer category codes (for LightGBM)."""
        idx, pos = [], 0
        for ch in self.chains:
            if ch.main_is_categorical():
                idx.append(pos)
            pos += len(ch.output_names())
        return idx

    @property
    def embedding_features(self) -> dict[int, dict[str, int]]:
        """``{output index: {"vocab_size": V, "dim": d}}`` of id columns meant for learned embeddings."""
        out, pos = {}, 0
        for ch in self.chains:
            last = ch.transforms[-1] if ch.transforms else None
            if isinstance(last, EmbeddingIdsTransform):
                out[pos] = {"vocab_size": last.vocab_size, "dim": last.config.dim}
            pos += len(ch.output_names())
        return out

    def output_spans(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of each chain's output columns in the matrix, in chain order."""
        spans, pos = [], 0
        for ch in self.chains:
            width = len(ch.output_names())
            spans.append((pos, pos + width))
            pos += width
        return spans

    def chains_reading(self, column: str) -> list[int]:
        """Indices of the chains that read the raw ``column`` (as their own column or as a cross partner)."""
        return [i for i, ch in enumerate(self.chains) if ch.column == column or column in ch.other_columns]

    def transform_chain(self, i: int, table: pa.Table, *, sparse: bool = False) -> Any:
        """The output columns (float32, rows × width) of chain ``i`` alone, for a batch."""
        self._check_fitted()
        return self._stack(self.chains[i].transform_batch(table), table.num_rows, sparse)

    def describe(self) -> list[dict[str, Any]]:
        """One entry per feature: chain, outputs and fitted statistics."""
        return [ch.describe() for ch in self.chains]

    # -- persistence ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Plain data (no pickle): the features, and each transform's fitted state."""
        self._check_fitted()
        return {
            "format": FORMAT,
            "task": None if self.task is None else self.task.model_dump(mode="json"),
            "inferred": self.inferred,
            "inputs": [f.model_dump(mode="json") for f in self.inputs],
            "states": [[{"type": t.name, "state": t.get_state()} for t in ch.transforms] for ch in self.chains],
            "feature_names": self.feature_names,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeaturePipeline:
        """Rebuild a fitted pipeline written by :meth:`to_json`."""
        if data.get("format") != FORMAT:
            raise SpecError(f"not a loopml feature pipeline (format {data.get('format')!r}, expected {FORMAT!r})")
        task = None if data.get("task") is None else Task.model_validate(data["task"])
        inputs = [Feature.model_validate(f) for f in data["inputs"]]
        p = cls(inputs, task=task)
        p.inferred = bool(data.get("inferred", False))
        for ch, states in zip(p.chains, data["states"], strict=True):
            if [t.name for t in ch.transforms] != [s["type"] for s in states]:
                raise SpecError(f"feature `{ch.name}`: saved transforms {[s['type'] for s in states]} do not "
                                f"match the chain {[t.name for t in ch.transforms]}")
            for t, s in zip(ch.transforms, states):
                t.set_state(s["state"])
        p.fitted = True
        if p.feature_names != data.get("feature_names", p.feature_names):
            raise SpecError("saved feature names do not match the rebuilt pipeline")
        p._compile()
        return p
