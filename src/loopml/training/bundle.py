"""Model bundles: a fitted feature pipeline + a fitted model + a manifest, stored without pickle.

A bundle is saved as separate content-addressed artifacts (each model file, the transform
JSON) plus one JSON manifest listing their sha256 digests; :func:`load_bundle` verifies
every digest before anything is rebuilt.

>>> digest = save_bundle(ws, bundle, producer=execution_id)  # doctest: +SKIP
>>> b = load_bundle(ws, digest)  # doctest: +SKIP
>>> b.predict_row({"age": 31, "country": "DE"})  # doctest: +SKIP
0.173
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from loopml.errors import DataError, IntegrityError, ModelError
from loopml.training.models.base import BaseModel
from loopml.training.sampling import recalibrate

if TYPE_CHECKING:
    from loopml.features import FeaturePipeline
    from loopml.workspace import Workspace

BUNDLE_FORMAT = "loopml-bundle/1"


@dataclass
class Bundle:
    """What serving, evaluation and the registry load: transform + model + manifest.

    ``predict_table`` and ``predict_row`` return scores: P(positive) for binary, class
    probabilities for multiclass, the value for regression and ranking; both run the same
    transform and model code.
    """

    transform: FeaturePipeline
    model: BaseModel
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cal = self.manifest.get("calibration") or {}
        self._negative_rate: float | None = cal.get("negative_rate")
        self._inputs = list(self.transform.input_columns)

    @property
    def task(self) -> str:
        """The task type of the model."""
        return self.model.task

    def _finish(self, s: np.ndarray) -> np.ndarray:
        if self._negative_rate is not None and self.model.task == "binary":
            return recalibrate(s, self._negative_rate)
        return s

    def matrix(self, table: pa.Table) -> Any:
        """The model's input matrix for an Arrow table holding (at least) the input columns."""
        missing = [c for c in self._inputs if c not in table.column_names]
        if missing:
            raise DataError(
                f"input table is missing column(s) {', '.join(f'`{c}`' for c in missing)} "
                f"(model `{self.model.name}` needs: {', '.join(self._inputs)})"
            )
        # sparse (CSR) features go to a model that takes them as they are; the others get a dense matrix
        return self.transform.transform_batch(table, sparse=self.model.accepts_sparse)

    def predict_matrix(self, X: Any) -> np.ndarray:
        """Scores of a matrix made by :meth:`matrix` (this bundle's or an identical transform's)."""
        return self._finish(self.model.score(X))

    def predict_table(self, table: pa.Table) -> np.ndarray:
        """Scores for every row of an Arrow table holding (at least) the input columns."""
        return self.predict_matrix(self.matrix(table))

    def predict_row(self, row: dict[str, Any]) -> float | np.ndarray:
        """Score of one row given as ``{column: value}`` (what an online request holds)."""
        x = self.transform.transform_row(row)
        s = self._finish(self.model.score(x[None, :]))
        return s[0] if s.ndim == 2 else float(s[0])

    def files(self) -> dict[str, bytes]:
        """Every file of the bundle, by relative path: the model's files and ``transform.json``."""
        out: dict[str, bytes] = {}
        tmp = Path(tempfile.mkdtemp(prefix="loopml-bundle-"))
        try:
            self.model.save(tmp / "model")
            for p in sorted((tmp / "model").rglob("*")):
                if p.is_file():
                    out[str(p.relative_to(tmp))] = p.read_bytes()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out["transform.json"] = json.dumps(self.transform.to_json(), sort_keys=True, default=_json_default).encode()
        return out

    def size_bytes(self) -> int:
        """Total bytes of the bundle's files (model + transform)."""
        return sum(len(b) for b in self.files().values())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def input_schema(transform: FeaturePipeline, schema: pa.Schema | None) -> dict[str, str]:
    """``{column: arrow type}`` of the raw inputs (the transform's kinds when no schema is known)."""
    kinds = transform.input_schema
    if schema is None:
        return dict(kinds)
    return {c: (str(schema.field(c).type) if c in schema.names else kinds.get(c, "unknown")) for c in transform.input_columns}


def make_manifest(
    bundle_transform: FeaturePipeline,
    model: BaseModel,
    *,
    schema: pa.Schema | None = None,
    classes: list[Any] | None = None,
    negative_rate: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest fields that do not depend on where the files are stored."""
    return {
        "format": BUNDLE_FORMAT,
        "task": model.task,
        "model_type": model.name,
        "model_config": model.config.model_dump(mode="json"),
        "feature_names": list(bundle_transform.feature_names),
        "categorical_features": list(bundle_transform.categorical_features),
        "input_columns": list(bundle_transform.input_columns),
        "input_schema": input_schema(bundle_transform, schema),
        "classes": [c if isinstance(c, (int, float, str, bool)) else str(c) for c in (classes or [])],
        "calibration": {"negative_rate": negative_rate} if negative_rate is not None else {},
        **(extra or {}),
    }


def save_bundle(ws: Workspace, bundle: Bundle, producer: str | None) -> str:
    """Store every file of ``bundle`` and its manifest as artifacts; returns the manifest digest."""
    files = bundle.files()
    digests: dict[str, str] = {}
    for rel, data in files.items():
        kind = "transform" if rel == "transform.json" else "model-file"
        digests[rel] = ws.put_artifact_bytes(data, kind=kind, name=f"{bundle.model.name}:{rel}", producer=producer)
    manifest = {
        **bundle.manifest,
        "format": BUNDLE_FORMAT,
        "task": bundle.model.task,
        "model_type": bundle.model.name,
        "files": {k: v for k, v in digests.items() if k != "transform.json"},
        "transform": digests["transform.json"],
        "size_bytes": sum(len(b) for b in files.values()),
    }
    data = json.dumps(manifest, sort_keys=True, indent=1, default=_json_default).encode()
    digest = ws.put_artifact_bytes(
        data, kind="bundle", name=f"bundle:{bundle.model.name}", producer=producer,
        meta={"model_type": bundle.model.name, "task": bundle.model.task},
    )
    bundle.manifest = manifest
    return digest


def read_manifest(ws: Workspace, digest: str) -> dict[str, Any]:
    """The verified manifest of a bundle."""
    raw = ws.artifacts.get_bytes(digest)
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelError(f"bundle `{digest[:12]}`: manifest is not JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise ModelError(
            f"artifact `{digest[:12]}` is not a model bundle (format {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
            f"expected {BUNDLE_FORMAT})"
        )
    return manifest


def load_bundle(ws: Workspace, digest: str) -> Bundle:
    """Rebuild a bundle from its manifest digest, verifying the sha256 of every file."""
    from loopml.features import FeaturePipeline

    manifest = read_manifest(ws, digest)
    tmp = Path(tempfile.mkdtemp(prefix="loopml-load-", dir=ws.artifacts.tmp))
    try:
        for rel, d in manifest["files"].items():
            target = (tmp / rel).resolve()
            if tmp.resolve() not in target.parents:
                raise IntegrityError(f"bundle `{digest[:12]}`: file path {rel!r} escapes the bundle folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(ws.artifacts.get_bytes(d))
        model = BaseModel.load(tmp / "model")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    transform = FeaturePipeline.from_json(json.loads(ws.artifacts.get_bytes(manifest["transform"])))
    if list(transform.feature_names) != list(manifest.get("feature_names", transform.feature_names)):
        raise IntegrityError(f"bundle `{digest[:12]}`: the transform's feature names differ from the manifest")
    return Bundle(transform=transform, model=model, manifest=manifest)
