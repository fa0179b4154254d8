"""A small ONNX graph builder: unique names, constants as initializers, one node per call.

The export writes the fitted feature transform and the model by hand with standard ONNX
operators (and ``ai.onnx.ml`` ones such as ``LabelEncoder``), so the graph says exactly what
the numpy code computes; converters (onnxmltools) are used where a model has its own format.

The finished graph is compacted (:func:`compact`): internal tensors get short names and identical
constants are stored once, so a device file carries no debug names. A model's learned tensors
(``const(..., weight=True)``: dense weights and biases, embedding and factor tables) are named
``W<id>`` (:func:`is_weight`): weight compression (float16, int8) touches those and nothing else,
never the transform's exact constants (category levels, index tables, scaling constants).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: opsets the exported graphs use (ONNX Runtime >= 1.16 runs them, in Python and in Node.js)
OPSET = 17
ML_OPSET = 3
#: operators newer than :data:`OPSET`: a graph using one is written with that opset (ONNX Runtime >= 1.17)
NEWER_OPS = {"RegexFullMatch": 20}
DOUBLE = TensorProto.DOUBLE
FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
STRING = TensorProto.STRING
BOOL = TensorProto.BOOL
#: how a learned tensor's name starts before and after :func:`compact`
WEIGHT_MARK = "W."
_WEIGHT_NAME = re.compile(r"W[0-9a-z]+")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


class GraphBuilder:
    """Accumulates nodes, initializers, inputs and outputs of one graph."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.opset = OPSET  # raised by an operator of :data:`NEWER_OPS`
        self._n = 0

    def name(self, hint: str) -> str:
        """A fresh tensor name."""
        self._n += 1
        safe = "".join(c if c.isalnum() or c in "_." else "_" for c in hint)[:40]
        return f"{self.prefix}{safe}_{self._n}"

    def const(self, value: Any, dtype: Any, hint: str = "c", *, weight: bool = False) -> str:
        """An initializer holding ``value`` as a numpy array of ``dtype`` (``weight``: a learned tensor of the model)."""
        arr = np.asarray(value, dtype=dtype)
        name = self.name(hint)
        if weight:
            name = WEIGHT_MARK + name
        if arr.dtype == object:
            t = helper.make_tensor(name, STRING, arr.shape, [str(v).encode("utf-8") for v in arr.ravel()])  # type: ignore[misc]
        else:
            t = numpy_helper.from_array(arr, name)
        self.initializers.append(t)
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, *, domain: str = "",
           n_out: int = 1, **attrs: Any) -> str:
        """Add one node; returns its (first) output name."""
        outs = [self.name(hint or op_type) for _ in range(n_out)]
        if not domain:
            self.opset = max(self.opset, NEWER_OPS.get(op_type, OPSET))
        self.nodes.append(helper.make_node(op_type, inputs, outs, domain=domain or None, **attrs))
        return outs[0]

    def op_multi(self, op_type: str, inputs: list[str], n_out: int, hint: str | None = None, **attrs: Any) -> list[str]:
        """A node with several outputs."""
        outs = [self.name(hint or op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs

    def input(self, name: str, elem_type: int, shape: list[Any]) -> str:
        """Declare a graph input."""
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, tensor: str, name: str, elem_type: int, shape: list[Any]) -> None:
        """Expose ``tensor`` as the graph output ``name``."""
        self.nodes.append(helper.make_node("Identity", [tensor], [name]))
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def model(self, graph_name: str, doc: str = "") -> onnx.ModelProto:
        """The finished model (ONNX opset :data:`OPSET`, or the newer one an operator needs; ``ai.onnx.ml``
        :data:`ML_OPSET`)."""
        g = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs, self.initializers)
        opsets = [helper.make_opsetid("", self.opset), helper.make_opsetid("ai.onnx.ml", ML_OPSET)]
        m = helper.make_model(g, opset_imports=opsets, producer_name="loopml", doc_string=doc)
        m.ir_version = max(8, helper.find_min_ir_version_for(opsets))
        return compact(m)

    # -- small helpers used by the transform and model writers ------------------------------------
    def where_nan(self, x: str, then: str) -> str:
        """``then`` where ``x`` is NaN, else ``x``."""
        return self.op("Where", [self.op("IsNaN", [x]), then, x], "where_nan")

    def column(self, X: str, j: int) -> str:
        """Column ``j`` of a 2-D tensor as (N, 1)."""
        return self.op("Gather", [X, self.const([j], np.int64, "col")], f"col{j}", axis=1)

    def columns(self, X: str, idx: list[int]) -> str:
        """Columns ``idx`` of a 2-D tensor as (N, len(idx))."""
        return self.op("Gather", [X, self.const(list(idx), np.int64, "cols")], "cols", axis=1)


def _short(k: int) -> str:
    out = ""
    while True:
        k, r = divmod(k, 36)
        out = _DIGITS[r] + out
        if k == 0:
            return out


def is_weight(name: str) -> bool:
    """Whether an initializer of a compacted graph is a learned tensor of the model (see :func:`compact`)."""
    return _WEIGHT_NAME.fullmatch(name) is not None


def compact(m: onnx.ModelProto) -> onnx.ModelProto:
    """Short names for every internal tensor (``W<id>`` for a model weight, lower-case base-36 ids otherwise) and
    each distinct constant stored once; graph inputs and outputs keep their names. Changes nothing computed.

    A graph with subgraphs (``If``/``Loop`` attributes, which may name outer tensors) is left as it is.
    """
    g = m.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        return m
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    # identical constants (same type, shape and bytes; a weight only with a weight) become one initializer
    first: dict[tuple[Any, ...], str] = {}
    same: dict[str, str] = {}
    unique = []
    for init in g.initializer:
        body = onnx.TensorProto()
        body.CopyFrom(init)
        body.name = ""
        key = (init.name.startswith(WEIGHT_MARK) or is_weight(init.name), body.SerializeToString())
        if key in first:
            same[init.name] = first[key]
        else:
            first[key] = init.name
            unique.append(init)
    renamed: dict[str, str] = {}
    counters = {True: 0, False: 0}

    def short(name: str) -> str:
        name = same.get(name, name)
        if name == "" or name in keep:
            return name
        if name not in renamed:
            weight = name.startswith(WEIGHT_MARK) or is_weight(name)
            while True:
                new = ("W" if weight else "") + _short(counters[weight])
                counters[weight] += 1
                if new not in keep:
                    break
            renamed[name] = new
        return renamed[name]

    for init in unique:
        init.name = short(init.name)
    del g.initializer[:]
    g.initializer.extend(unique)
    for node in g.node:
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
        node.name = ""
    for vi in g.value_info:
        vi.name = short(vi.name)
    return m
