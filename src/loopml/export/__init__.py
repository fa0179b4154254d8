"""Portable artifacts of a model version: the transform and the model as one ONNX graph (``loopml export``)."""

from loopml.export.onnx_export import PARITY_TOLERANCE, Parity, bundle_to_onnx, check_parity, feeds
from loopml.export.transform_onnx import EXPORTED, REFUSED, ExportRefused

__all__ = ["EXPORTED", "PARITY_TOLERANCE", "REFUSED", "ExportRefused", "Parity", "bundle_to_onnx", "check_parity",
           "feeds"]
