"""The ``train`` stage: split, sample, fit the feature pipeline, tune, measure and select.

Inputs: the ``features`` stage's ``table``. Outputs: ``bundle`` (the winner's manifest),
``train``/``valid``/``test`` (Parquet splits of the features table), ``leaderboard`` (JSON)
and ``leaderboard_html``.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loopml.errors import StageError
from loopml.pipeline import BaseStage, StageContext, StageResult, register_stage
from loopml.pipeline.resources import MemoryFloor
from loopml.spec import Spec
from loopml.training.bundle import save_bundle
from loopml.training.labels import encode_labels
from loopml.training.leaderboard import leaderboard_html
from loopml.training.records import TrialRecorder
from loopml.training.sampling import reservoir_sample
from loopml.training.selection import prepare_training_data, select_model
from loopml.training.splits import SPLITS, split_indices


def _progress(show: bool) -> AbstractContextManager[Any]:
    if not show:
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]train[/bold] {task.description}"), BarColumn(), TimeElapsedColumn(), transient=True)


#: rows of the features table filtered into the split files at once
SPLIT_CHUNK_ROWS = 1 << 20


def write_splits(table: pa.Table, parts: dict[str, np.ndarray], paths: dict[str, Any]) -> None:
    """Write each split's rows of ``table`` to its Parquet file, a chunk of rows at a time.

    Memory beyond ``table`` is one chunk's rows, not a copy of each split. The files hold the
    rows in ``parts``' order, as ``table.take(parts[k])`` would (the split indices are sorted;
    unsorted ones are taken as given).

    >>> import tempfile, pathlib, numpy as np, pyarrow as pa, pyarrow.parquet as pq
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> t = pa.table({"x": list(range(10))})
    >>> parts = {"train": np.array([0, 2, 4, 6, 8]), "valid": np.array([1, 3, 5]), "test": np.array([7, 9])}
    >>> paths = {k: d / f"{k}.parquet" for k in parts}
    >>> write_splits(t, parts, paths)
    >>> pq.read_table(paths["valid"]).column("x").to_pylist()
    [1, 3, 5]
    """
    n = table.num_rows
    code = np.full(n, -1, dtype=np.int8)
    for i, k in enumerate(parts):
        code[parts[k]] = i
    for i, k in enumerate(parts):
        idx = parts[k]
        if len(idx) > 1 and not bool(np.all(idx[1:] > idx[:-1])):
            pq.write_table(table.take(pa.array(idx)), paths[k])
            continue
        with pq.ParquetWriter(paths[k], table.schema) as writer:
            if len(idx) == 0:
                writer.write_table(table.slice(0, 0))
            for start in range(0, n, SPLIT_CHUNK_ROWS):
                mask = code[start : start + SPLIT_CHUNK_ROWS] == i
                if mask.any():
                    writer.write_table(table.slice(start, len(mask)).filter(pa.array(mask)))


@register_stage
class TrainStage(BaseStage):
    """Builds the dataset, trains and tunes the candidates, and selects the model the requirements allow."""

    name: ClassVar[str] = "train"
    requires: ClassVar[tuple[str, ...]] = ("features",)
    order: ClassVar[int] = 40
    description: ClassVar[str] = "split, sample, fit features on train, tune candidates, measure, select"

    def config(self, spec: Spec) -> Any:
        return {
            "task": spec.task.model_dump(mode="json"),
            "features": spec.features.model_dump(mode="json"),
            "training": spec.training.model_dump(mode="json"),
            "constraints": spec.requirements.constraints.model_dump(mode="json"),
            "bootstrap": spec.evaluation.bootstrap_resamples,
        }

    def memory_floor(self, ctx: StageContext) -> MemoryFloor:
        """It reads its input table whole."""
        return ctx.input_table_floor("features", "table")

    @staticmethod
    def _quarantine_unlabeled(ctx: StageContext, table: pa.Table, labeled: np.ndarray) -> pa.Table:
        from loopml.validation.quarantine import DB_LIMIT, write_quarantine

        target = ctx.spec.task.target
        bad = np.flatnonzero(~labeled)
        rows = table.take(pa.array(bad[:DB_LIMIT])).to_pylist()
        entries = [
            {"row_index": int(i), "check": "training.label_missing", "column": target, "value": None,
             "reason": f"target `{target}` is missing: the row can be neither learned from nor evaluated",
             "row": row}
            for i, row in zip(bad[:DB_LIMIT].tolist(), rows)
        ]
        write_quarantine(ctx.workspace, entries, execution_id=ctx.execution_id, snapshot_id=None)
        return table.filter(pa.array(labeled))

    def run(self, ctx: StageContext) -> StageResult:
        ws = ctx.workspace
        spec = ctx.spec
        tr = spec.training
        table = pq.read_table(ws.artifacts.open_verified(ctx.input("features", "table")))
        lab = encode_labels(table, spec.task)
        unlabeled = int((~lab.labeled).sum())
        if unlabeled:
            # rows without a label cannot be learned from nor scored: quarantined, with the reason
            table = self._quarantine_unlabeled(ctx, table, lab.labeled)
            lab = encode_labels(table, spec.task)
        strata = lab.y if spec.task.type in ("binary", "multiclass") else None
        parts = split_indices(table, tr.split, spec.task, tr.seed, y=strata)
        if tr.split.type == "column" and not spec.features.inputs and tr.split.column in table.column_names:
            # the split's name is bookkeeping, not a signal: inferred features leave it out
            table = table.drop([tr.split.column])
        outputs: dict[str, str] = {}
        split_paths = {k: ctx.temp_path(".parquet") for k in SPLITS}
        write_splits(table, parts, split_paths)
        del table  # the splits are read back from their files: the whole table and a split never coexist
        sampled = False
        if tr.sampling.type == "reservoir" and tr.sampling.max_rows is not None:
            # stream the training split from disk: memory stays O(max_rows)
            batches = pq.ParquetFile(split_paths["train"]).iter_batches(batch_size=65536)
            train, _ = reservoir_sample(batches, tr.sampling.max_rows, tr.seed)
            sampled = True
        else:
            train = pq.read_table(split_paths["train"])
        valid = pq.read_table(split_paths["valid"])
        for k in SPLITS:
            outputs[k] = ctx.put_file(split_paths[k], kind="table", name=f"{k}-split", move=True,
                                      meta={"rows": len(parts[k])})
        data = prepare_training_data(spec, train, valid, sampled=sampled)
        if not sampled and data.train_table is train:
            # every split row is labeled (the unlabeled ones were quarantined above): the refit, when there is one,
            # reads the training rows back from their split file instead of holding them through every fit
            train_ref = outputs["train"]
            data.train_table = None
            data.train_reader = lambda: pq.read_table(ws.artifacts.open_verified(train_ref))
        del train
        data.scratch_dir = str(ws.artifacts.tmp)  # Ray Train's run files stay in the workspace
        recorder = TrialRecorder(ws, ctx.execution_id)
        with _progress(ctx.show_progress) as prog:
            task_id = prog.add_task("starting", total=1.0) if prog is not None else None

            def progress(msg: str, frac: float) -> None:
                if prog is not None:
                    prog.update(task_id, description=msg[:70], completed=frac)

            selection = select_model(data, record=recorder, progress=progress)
        for res in selection.results:
            if res.bundle is None:
                continue
            res.bundle.manifest["training"] = {
                "metric": selection.metric.name,
                "value": res.value,
                "rows": data.counts,
                "splits": {k: outputs[k] for k in SPLITS},
                "latency_p99_ms": res.latency.p99_ms if res.latency else None,
                "winner": res is selection.winner,
            }
            res.bundle_digest = save_bundle(ws, res.bundle, producer=ctx.execution_id)
            recorder.attach_artifacts(res.name, {"bundle": res.bundle_digest})
        board = selection.to_json()
        board["rows"] = {**data.counts, **{f"{k}_split_rows": len(parts[k]) for k in SPLITS}}
        outputs["leaderboard"] = ctx.put_bytes(
            json.dumps(board, indent=1, default=str).encode(), kind="leaderboard", name="leaderboard"
        )
        page = leaderboard_html(board, title=f"{spec.project.name}: leaderboard")
        ws.publish_report("leaderboard.html", page, execution_id=ctx.execution_id)
        outputs["leaderboard_html"] = ctx.put_bytes(page.encode(), kind="html", name="leaderboard.html")
        if selection.winner.bundle_digest is None:
            raise StageError(f"train: the winner `{selection.winner.name}` has no saved bundle")
        outputs["bundle"] = selection.winner.bundle_digest
        if selection.device_onnx is not None:  # deployment_target on-device: the chosen variant's ONNX file
            outputs["device_model"] = ctx.put_bytes(selection.device_onnx, kind="onnx",
                                                    name=f"device:{selection.winner.name}")
        w = selection.winner
        return StageResult(
            outputs=outputs,
            summary={
                "winner": w.name,
                "model_type": w.model_type,
                "metric": selection.metric.name,
                "value": w.value,
                "latency_p99_ms": w.latency.p99_ms if w.latency else None,
                "size_mb": w.size_mb,
                "why": selection.why,
                "candidates": len(selection.results),
                "unlabeled_quarantined": unlabeled,
                **data.counts,
            },
        )
