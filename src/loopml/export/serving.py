"""The ONNX backend of the server: a version's model scored by ONNX Runtime (``loopml serve --backend onnx``).

The server keeps its validated, compiled row transform (and the batch transform); the model part is the
version's ONNX graph on the float32 feature matrix, compressed the way the on-device selection chose it
(``manifest["device"]["technique"]``: ``int8`` or ``fp16`` weights), so the cloud path can serve the
compressed model when it is the better trade. Only the weights are compressed (activations stay float32),
so a row scored alone gives the score it gets inside a batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: what ``--backend`` accepts
BACKENDS = ("python", "onnx")


def model_artifact(bundle: Any) -> bytes:
    """The bundle's model as ONNX (features in, ``score`` out), with the chosen variant's weight compression."""
    from loopml.export.compression import for_device
    from loopml.export.onnx_export import model_to_onnx

    return for_device(bundle, bytes(model_to_onnx(bundle).SerializeToString()))[1]


class OnnxScorer:
    """``score(X)`` of a float matrix through one ONNX Runtime session (one intra-op thread)."""

    def __init__(self, model_bytes: bytes) -> None:
        from loopml.export.onnx_export import session

        self.session = session(model_bytes, threads=1)
        self.size_bytes = len(model_bytes)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(X, dtype=np.float32)
        return np.asarray(self.session.run(["score"], {"features": x})[0], dtype=np.float64)
