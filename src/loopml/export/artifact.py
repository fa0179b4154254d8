"""Export a registered model version as one ONNX file, checked against the Python bundle on its test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from loopml.errors import NotFound
from loopml.export.onnx_export import Parity, bundle_to_onnx, check_parity


@dataclass
class Exported:
    """What ``loopml export --format onnx`` wrote and measured."""

    version_id: str
    model_type: str
    path: Path
    size_bytes: int
    inputs: dict[str, str]
    parity: Parity
    compression: str | None = None  # the on-device winner's weight compression applied after the parity check
    drift: Parity | None = None  # ONNX (compressed) vs Python on the same rows: the measured drift


def resolve_version(ws: Any, version: str | None) -> Any:
    """The named registry version, else production, else the newest registered one."""
    from loopml.registry import Registry

    reg = Registry(ws)
    if version:
        return reg.get(version)
    v = reg.production()
    if v is None:
        versions = reg.list(None)
        if not versions:
            raise NotFound("no model version is registered yet", hint="`loopml run` trains and registers one")
        v = max(versions, key=lambda x: x.number)
    return v


def held_out_split(ws: Any, version: Any) -> pa.Table:
    """The ``test`` split written by the training execution that produced the version's bundle."""
    from sqlalchemy import select

    from loopml.workspace.metadata import executions

    producer = version.lineage.get("training_execution") or ws.artifact_info(version.bundle_digest).get("producer")
    with ws.engine.connect() as conn:
        row = conn.execute(select(executions).where(executions.c.execution_id == producer)).mappings().first()
    digest = ((row or {}).get("outputs") or {}).get("test")
    if not digest:
        raise NotFound(f"version {version.version_id}: the test split of its training run is not recorded "
                       "(needed for the parity check)", hint="rerun `loopml run` to train it again")
    return pq.read_table(ws.artifacts.open_verified(digest))


def export_onnx(ws: Any, version: str | None, out: Path) -> Exported:
    """Write the version as ONNX to ``out`` after its parity check on the test split passes.

    A version chosen on-device as an ``int8``/``fp16`` variant (``manifest["device"]["technique"]``) is written
    with that compression, after the float32 parity check; its drift from the Python bundle is measured.
    """
    from loopml.errors import ModelError
    from loopml.export.transform_onnx import input_kinds
    from loopml.training.bundle import load_bundle

    v = resolve_version(ws, version)
    bundle = load_bundle(ws, v.bundle_digest)
    onx = bundle_to_onnx(bundle)
    data = onx.SerializeToString()
    table = held_out_split(ws, v)
    parity = check_parity(bundle, data, table)
    if not parity.ok:
        raise ModelError(f"version {v.version_id}: ONNX scores differ from the Python bundle: {parity.line()}",
                         hint="nothing was written")
    from loopml.export.compression import for_device

    drift = None
    compression, data = for_device(bundle, data)
    if compression is not None:  # the file the device runs: its drift is measured, not bounded
        drift = check_parity(bundle, data, table, tolerance=float("inf"))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return Exported(v.version_id, bundle.model.name, out, len(data), input_kinds(bundle.transform), parity,
                    compression, drift)
