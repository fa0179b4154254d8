"""The fitted feature transform (:class:`~loopml.features.FeaturePipeline`) as ONNX operators.

Graph inputs are the raw input columns, one tensor of shape (N, 1) each:

- a numeric column is ``double`` (a missing value is NaN), as the pipeline reads it;
- a categorical column is ``string`` holding the canonical category text (``7``, ``7.0`` and
  ``"7"`` are the category ``"7"``, see :func:`loopml.features.values.canon_category`); the empty
  string is a missing value.

Each chain is written link by link with the fitted constants: impute (``Where``/``IsNaN``), scale
(``Sub``/``Div``), log (``Log`` of ``Max(x, 0) + 1``), clip (``Max``/``Min``), discretize (a sum of
``GreaterOrEqual`` against the edges), and the category lookups (``ai.onnx.ml.LabelEncoder`` for
strings, an ``Equal`` match against the keys for numbers turned into categories): ordinal,
embedding ids, one-hot and target encoding. A string vocabulary is stored once per lookup, as int64
codes, with integer-looking ids stored as numbers (:meth:`TransformWriter._string_lookup`). The blocks
are concatenated in float64 and cast to float32, like ``transform_batch``. Transforms without an exact
ONNX form are refused by name (:data:`REFUSED`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loopml.errors import ModelError
from loopml.export.graph import DOUBLE, FLOAT, INT64, STRING, GraphBuilder

#: transforms that cannot be written with standard ONNX operators, and why
REFUSED: dict[str, str] = {
    "hash": "crc32 of the category text has no ONNX operator (use ordinal or embedding_ids)",
    "cross": "the hashed cross (crc32) has no ONNX operator",
    "date_parts": "timestamp inputs (calendar parts) are not part of the portable graph",
    "tfidf": "text tokenisation has no standard ONNX operator",
    "sentence_embedding": "the sentence encoder is a separate network, not part of the portable graph",
    "image_pixels": "image decoding is not part of the portable graph",
}
#: transforms the export writes as ONNX operators
EXPORTED: tuple[str, ...] = ("impute", "scale", "log", "clip", "discretize", "ordinal", "embedding_ids",
                             "onehot", "target_encode")
MISSING_TEXT = ""
#: category text that is a canonical integer (``str(int(text)) == text``, at most 18 digits so it fits int64)
INT_KEY = re.compile(r"0|-?[1-9][0-9]{0,17}")
#: at least this many integer keys in a vocabulary are stored as int64 numbers (fewer: as text, one node)
INT_KEYS_MIN = 64


class ExportRefused(ModelError):
    """A transform or a model of the bundle has no ONNX form; the message names it and why."""


@dataclass
class _State:
    kind: str  # num | cat_str | cat_num | cols
    tensor: str
    remap: dict[Any, Any] = field(default_factory=dict)


def _refuse(what: str, feature: str, why: str) -> ExportRefused:
    return ExportRefused(f"cannot export to ONNX: transform `{what}` of feature `{feature}`: {why}",
                         hint=f"exported transforms: {', '.join(EXPORTED)}")


def _whole(v: float) -> bool:
    """A value an int64 code holds exactly (not -0.0, whose sign a code would lose)."""
    return float(v).is_integer() and abs(v) < 2.0**53 and not (v == 0 and math.copysign(1.0, v) < 0)


def _compose(remap: dict[Any, Any], table: dict[Any, tuple[float, ...]], default: tuple[float, ...]
             ) -> dict[Any, tuple[float, ...]]:
    """``key -> table[remap(key)]`` over every key whose value can differ from the default."""
    keys = dict.fromkeys([*table, *remap])
    out = {}
    for k in keys:
        v = table.get(remap.get(k, k), default)
        if v != default or k in remap or k in table:
            out[k] = v
    return out


class TransformWriter:
    """Writes the chains of a fitted pipeline into a :class:`GraphBuilder`."""

    def __init__(self, b: GraphBuilder) -> None:
        self.b = b
        self.inputs: dict[str, str] = {}

    # -- inputs ---------------------------------------------------------------------------------
    def _input(self, column: str, kind: str) -> str:
        if column not in self.inputs:
            elem = DOUBLE if kind == "numeric" else STRING
            self.inputs[column] = self.b.input(column, elem, ["N", 1])
        return self.inputs[column]

    # -- lookups ----------------------------------------------------------------------------------
    def lookup(self, s: _State, table: dict[Any, tuple[float, ...]], default: tuple[float, ...], feature: str,
               what: str) -> str:
        """(N, C) float64: ``table[key]`` per row (after the state's key remapping), ``default`` otherwise."""
        b = self.b
        eff = _compose(s.remap, table, default)
        C = len(default)
        if s.kind == "cat_str":
            if MISSING_TEXT in eff and None in eff and eff[MISSING_TEXT] != eff[None]:
                raise _refuse(what, feature, "the empty string is a category of its own, but the graph's string "
                              "inputs use it for a missing value")
            keys = [MISSING_TEXT if k is None else str(k) for k in eff]
            if not keys:
                return self._constant_rows(s.tensor, default)
            return self._string_lookup(s.tensor, dict(zip(keys, eff.values(), strict=True)), default)
        # numbers turned into categories: match the float value of each canonical key
        keys_f: list[float] = []
        rows: list[tuple[float, ...]] = []
        for k, v in eff.items():
            if k is None:
                continue
            try:
                f = float(k)
            except ValueError:
                continue  # a text key no number can equal
            if f in keys_f or f != f:
                continue
            keys_f.append(f)
            rows.append(v)
        missing_row = eff.get(None, table.get(s.remap.get(None, None), default))
        if not keys_f:
            out = self._constant_rows(s.tensor, default)
        else:
            eq = b.op("Cast", [b.op("Equal", [s.tensor, b.const(keys_f, np.float64, "keys")])], "eq", to=DOUBLE)
            hit = b.op("MatMul", [eq, b.const(np.asarray(rows, dtype=np.float64).reshape(len(rows), C),
                                              np.float64, "vals")])
            none = b.op("Sub", [b.const(1.0, np.float64), b.op("ReduceSum", [eq, b.const([1], np.int64)], keepdims=1)])
            out = b.op("Add", [hit, b.op("Mul", [none, b.const(np.asarray(default, np.float64).reshape(1, C),
                                                                np.float64)])])
        miss = b.op("IsNaN", [s.tensor])
        return b.op("Where", [miss, b.const(np.asarray(missing_row, np.float64).reshape(1, C), np.float64), out])

    def _string_lookup(self, x: str, table: dict[str, tuple[float, ...]], default: tuple[float, ...]) -> str:
        """(N, C) float64 rows of ``table`` for the string column ``x``; ``default`` for any other text.

        The vocabulary is stored once: one ``LabelEncoder`` maps each key to an int64 code, the value itself when
        every value is a whole number (ordinal codes, embedding ids, one-hot positions), else the 1-based index of
        the key's row among the distinct rows (0: the default), gathered from a small float64 table. Keys that are
        canonical integers (:data:`INT_KEY`, e.g. ``"507109115"``) are stored as int64 numbers (about half the
        bytes of their text) when there are at least :data:`INT_KEYS_MIN` of them: a text matching the pattern
        (``RegexFullMatch``) is cast to int64 and looked up among them, any other text among the remaining keys,
        so ``"007"``, ``"+7"`` or ``" 7"`` stay unknown as in the Python transform.
        """
        b = self.b
        C = len(default)
        rows = list(table.values())
        direct = C == 1 and all(_whole(v[0]) for v in [*rows, default])
        if direct:
            codes = [int(v[0]) for v in rows]
            none = int(default[0])
        else:
            # the most shared rows first: their indices are the shortest varints (1 byte below 128)
            distinct = [r for r, _ in Counter(rows).most_common()]
            at = {r: i + 1 for i, r in enumerate(distinct)}
            codes = [at[r] for r in rows]
            none = 0
        ints = {k: c for k, c in zip(table, codes, strict=True) if INT_KEY.fullmatch(k)}
        if len(ints) < INT_KEYS_MIN:
            ints = {}
        texts = {k: c for k, c in zip(table, codes, strict=True) if k not in ints}
        code = (b.op("LabelEncoder", [x], "lookup", domain="ai.onnx.ml", keys_strings=list(texts),
                     values_int64s=list(texts.values()), default_int64=none)
                if texts else b.const(none, np.int64, "none"))
        if ints:
            match = b.op("RegexFullMatch", [x], "is_int", pattern=INT_KEY.pattern)
            number = b.op("Cast", [b.op("Where", [match, x, b.const("0", object, "zero")])], "as_int", to=INT64)
            by_int = b.op("LabelEncoder", [number], "lookup_int", domain="ai.onnx.ml",
                          keys_int64s=[int(k) for k in ints], values_int64s=list(ints.values()), default_int64=none)
            code = b.op("Where", [match, by_int, code], "code")
        if direct:
            return b.op("Cast", [code], "lookup_d", to=DOUBLE)
        values = np.asarray([default, *distinct], dtype=np.float64).reshape(-1, C)
        flat = b.op("Reshape", [code, b.const([-1], np.int64)])
        return b.op("Gather", [b.const(values, np.float64, "rows"), flat], "lookup_rows", axis=0)

    def _constant_rows(self, like: str, row: tuple[float, ...]) -> str:
        b = self.b
        n = b.op("Slice", [b.op("Shape", [like]), b.const([0], np.int64), b.const([1], np.int64)])
        shape = b.op("Concat", [n, b.const([len(row)], np.int64)], axis=0)
        return b.op("Expand", [b.const(np.asarray(row, np.float64).reshape(1, -1), np.float64), shape])

    # -- chains -----------------------------------------------------------------------------------
    def chain(self, ch: Any) -> list[str]:
        """The output blocks (N, width) float64 of one chain: main output(s), then side columns."""
        from loopml.features.pipeline import KIND_STATE
        from loopml.features.transforms.base import CATEGORY, NUMERIC

        feature = ch.name
        kind = ch.feature.kind
        first = ch.transforms[0].name if ch.transforms else kind
        if KIND_STATE[kind] not in (NUMERIC, CATEGORY):
            name = first if first in REFUSED else kind
            raise _refuse(name, feature, REFUSED.get(name, f"{kind} inputs are not part of the portable graph"))
        for t in ch.transforms:
            if t.name in REFUSED:
                raise _refuse(t.name, feature, REFUSED[t.name])
            if t.name not in EXPORTED:
                raise _refuse(t.name, feature, "no ONNX writer for this transform")
        x = self._input(ch.column, kind)
        s = _State("num" if kind == "numeric" else "cat_str", x)
        sides: list[str] = []
        for link in ch.links:
            t = link.t
            if link.convert_from is not None:
                if s.kind != "num":
                    raise _refuse(t.name, feature, f"{link.convert_from} values turned into categories")
                s = _State("cat_num", s.tensor)
            sides += self._side(t, s, feature)
            s = self._link(t, s, feature)
        if s.kind not in ("num", "cols"):
            raise _refuse(ch.transforms[-1].name if ch.transforms else kind, feature,
                          "the chain ends on category keys")
        return [s.tensor, *sides]

    def _side(self, t: Any, s: _State, feature: str) -> list[str]:
        if t.name != "impute" or not t.config.add_indicator:
            return []
        b = self.b
        if s.kind == "num":
            return [b.op("Cast", [b.op("IsNaN", [s.tensor])], "missing", to=DOUBLE)]
        return [self.lookup(s, {None: (1.0,)}, (0.0,), feature, t.name)]

    def _link(self, t: Any, s: _State, feature: str) -> _State:
        b = self.b
        name = t.name
        if name == "impute":
            fill = t.fill_
            if fill is None:
                raise _refuse(name, feature, "strategy `drop` refuses a row, which a graph cannot do")
            if s.kind == "num":
                return _State("num", b.where_nan(s.tensor, b.const(float(fill), np.float64, "fill")))
            cur = s.remap
            new = {k: (fill if cur.get(k, k) is None else cur.get(k, k)) for k in [*cur, None]}
            return _State(s.kind, s.tensor, new)
        if s.kind == "num" and name in ("scale", "log", "clip", "discretize"):
            x = s.tensor
            if name == "scale":
                y = b.op("Div", [b.op("Sub", [x, b.const(t.center_, np.float64)]), b.const(t.scale_, np.float64)])
            elif name == "log":
                pos = b.op("Max", [x, b.const(0.0, np.float64)])
                y = b.op("Log", [b.op("Add", [pos, b.const(1.0, np.float64)])])
                y = b.op("Where", [b.op("IsNaN", [x]), x, y])
            elif name == "clip":
                y = b.op("Min", [b.op("Max", [x, b.const(t.lo_, np.float64)]), b.const(t.hi_, np.float64)])
                y = b.op("Where", [b.op("IsNaN", [x]), x, y])
            else:
                edges = list(t.edges_)
                if edges:
                    ge = b.op("Cast", [b.op("GreaterOrEqual", [x, b.const(edges, np.float64, "edges")])], to=DOUBLE)
                    idx = b.op("ReduceSum", [ge, b.const([1], np.int64)], keepdims=1)
                else:
                    idx = b.op("Mul", [x, b.const(0.0, np.float64)])
                y = b.op("Where", [b.op("IsNaN", [x]), x, idx])
            return _State("num", y)
        if s.kind in ("cat_str", "cat_num"):
            if name in ("ordinal", "embedding_ids"):
                table: dict[Any, tuple[float, ...]] = {k: (float(v),) for k, v in t._codes().items()}
                return _State("num", self.lookup(s, table, (0.0,), feature, name))
            if name == "onehot":
                k = len(t.categories_)
                idx = self.lookup(s, {c: (float(i),) for c, i in t.index_.items()}, (float(k),), feature, name)
                eq = b.op("Equal", [idx, b.const(np.arange(k + 1, dtype=np.float64)[None, :], np.float64)])
                return _State("cols", b.op("Cast", [eq], "onehot", to=DOUBLE))
            if name == "target_encode":
                return _State("cols", self.lookup(s, dict(t.table_), tuple(t.prior_row_), feature, name))
        raise _refuse(name, feature, f"no ONNX form for it on {s.kind} values")


def write_transform(b: GraphBuilder, pipeline: Any) -> str:
    """Write the whole pipeline; returns the (N, n_features) float32 tensor name."""
    w = TransformWriter(b)
    blocks: list[str] = []
    for ch in pipeline.chains:
        blocks += w.chain(ch)
    for col in pipeline.input_columns:  # crosses' partner columns are refused above; keep the order of inputs
        if col not in w.inputs:
            raise ExportRefused(f"cannot export to ONNX: input column `{col}` is read by no exported chain")
    if not blocks:
        raise ExportRefused("cannot export to ONNX: the feature pipeline has no output columns")
    cat = blocks[0] if len(blocks) == 1 else b.op("Concat", blocks, "features64", axis=1)
    return b.op("Cast", [cat], "features", to=FLOAT)


def input_kinds(pipeline: Any) -> dict[str, str]:
    """``{column: "double" | "string"}`` of the graph inputs, in graph order."""
    out: dict[str, str] = {}
    for ch in pipeline.chains:
        out.setdefault(ch.column, "double" if ch.feature.kind == "numeric" else "string")
    return out
