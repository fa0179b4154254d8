"""A small ONNX graph builder: unique names, constants as initializers, one node per call.

The export writes the fitted feature transform and the model by hand with standard ONNX
operators (and ``ai.onnx.ml`` ones such as ``LabelEncoder``), so the graph says exactly what
the numpy code computes; converters (onnxmltools) are used where a model has its own format.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: opsets the exported graphs use (ONNX Runtime >= 1.16 runs them, in Python and in Node.js)
OPSET = 17
ML_OPSET = 3
DOUBLE = TensorProto.DOUBLE
FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
STRING = TensorProto.STRING
BOOL = TensorProto.BOOL


class GraphBuilder:
    """Accumulates nodes, initializers, inputs and outputs of one graph."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        """A fresh tensor name."""
        self._n += 1
        safe = "".join(c if c.isalnum() or c in "_." else "_" for c in hint)[:40]
        return f"{self.prefix}{safe}_{self._n}"

    def const(self, value: Any, dtype: Any, hint: str = "c") -> str:
        """An initializer holding ``value`` as a numpy array of ``dtype``."""
        arr = np.asarray(value, dtype=dtype)
        name = self.name(hint)
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
        """The finished model (ONNX opset :data:`OPSET`, ``ai.onnx.ml`` :data:`ML_OPSET`)."""
        g = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs, self.initializers)
        m = helper.make_model(
            g, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
            producer_name="loopml", doc_string=doc,
        )
        m.ir_version = 8
        return m

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
