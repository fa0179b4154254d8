"""Where the service gets its model versions: the workspace registry, or one model file.

A source answers two questions: which versions should be loaded now, in which state
(:meth:`ModelSource.snapshot`), and how to load one (:meth:`ModelSource.load`). The server polls
the snapshot and swaps atomically when it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from loopml.errors import LoopMLError, ModelError, NotFound
from loopml.serving.schema import InputSchema
from loopml.serving.servable import Servable


class ModelSource(Protocol):
    """Supplies the versions to serve."""

    def snapshot(self) -> dict[str, str]:
        """Version id → state, for every version that should be loaded (production, canary, shadow)."""
        ...

    def load(self, version_id: str) -> Servable:
        """Load one version (verifying its files)."""
        ...


def load_version(ws: Any, version_id: str, bundle_digest: str, *, batch_threads: int = 0,
                 backend: str = "python") -> Servable:
    """A registry version as a :class:`Servable`, through ``loopml.training.bundle.load_bundle``.

    ``batch_threads``: threads of a multi-row prediction (0: all cores, for batch jobs; the server
    uses 1: it runs on one core, where more OpenMP threads only contend).
    """
    try:
        from loopml.training.bundle import load_bundle
    except ImportError as exc:  # the training package is optional at import time
        raise ModelError(f"cannot load model bundles: loopml.training.bundle is unavailable ({exc})") from None
    bundle = load_bundle(ws, bundle_digest)
    servable = Servable.from_bundle(version_id, bundle, bundle_digest=bundle_digest, backend=backend)
    servable.set_batch_threads(batch_threads)
    return servable


class RegistrySource:
    """The versions the workspace registry puts on traffic."""

    def __init__(self, ws: Any, backend: str = "python") -> None:
        from loopml.registry import Registry

        self.ws = ws
        self.registry = Registry(ws)
        self.backend = backend  # python, or onnx: the model scored by ONNX Runtime (loopml.export.serving)

    def snapshot(self) -> dict[str, str]:
        """Versions in production, canary or shadow."""
        return {
            v.version_id: v.state for v in self.registry.list() if v.state in ("production", "canary", "shadow")
        }

    def load(self, version_id: str) -> Servable:
        """Load a registered version's bundle."""
        v = self.registry.get(version_id)
        return load_version(self.ws, v.version_id, v.bundle_digest, batch_threads=1, backend=self.backend)


class FileSource:
    """One LightGBM model text file served directly, without a workspace (``loopml serve --model-file``).

    Every input is numeric, named by the model's feature names (as LightGBM saved them), so the
    request rows are ``{feature_name: number}``.
    """

    def __init__(self, path: str | Path, task: str = "binary") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise NotFound(f"model file {self.path} does not exist")
        self.task = task
        self.version_id = f"file:{self.path.name}"

    def snapshot(self) -> dict[str, str]:
        """The file, always in production."""
        return {self.version_id: "production"}

    def load(self, version_id: str) -> Servable:
        """Parse the model file (LightGBM text format; never pickle)."""
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_file=str(self.path))
        except Exception as exc:  # LightGBM raises its own error type with the parser message
            raise ModelError(f"{self.path}: not a LightGBM text model ({exc})") from None
        schema = InputSchema.from_mapping({name: "float64" for name in booster.feature_name()})
        servable = Servable.from_booster(self.version_id, booster, schema, self.task)
        servable.set_batch_threads(1)
        return servable


def describe_error(exc: BaseException) -> str:
    """One line for logs."""
    return str(exc) if isinstance(exc, LoopMLError) else f"{type(exc).__name__}: {exc}"
