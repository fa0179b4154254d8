"""LightGBM fitted data-parallel over Ray workers, with Ray Train's ``LightGBMTrainer``.

Used by the ``lightgbm`` model when ``training.executor`` is ``ray`` (the final fit of a candidate, and
its refit; tuning trials stay one fit per Ray task). The training rows are dealt to
``training.ray_workers`` shards (row ``i`` to worker ``i mod k``; for ranking, whole queries), each
shard an Arrow table in Ray's object store (``ray.data.from_arrow``) that only its worker reads. Every
worker also reads the whole validation split, so each computes the same validation metric on the
same (synchronised) model and early stopping stops every worker at the same round. LightGBM's own
distributed learner (``tree_learner=data``, the machines list from Ray Train's
``get_network_params``) builds each tree from histograms summed over the workers.

Worker 0 writes the model as LightGBM text into Ray Train's checkpoint; it is read back here as text
(no pickle) and becomes an ordinary :class:`~loopml.training.models.gbm.LightGBMModel`, so the bundle,
evaluation, registry and serving see no difference.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from loopml.errors import ModelError

_LABEL, _WEIGHT, _GROUP = "__label", "__weight", "__group"


def shard_rows(n: int, workers: int, group: np.ndarray | None) -> list[np.ndarray]:
    """Row indices of each worker's shard: row ``i`` to worker ``i mod k``, or whole groups dealt in turn.

    >>> [s.tolist() for s in shard_rows(5, 2, None)]
    [[0, 2, 4], [1, 3]]
    >>> [s.tolist() for s in shard_rows(5, 2, np.array([7, 3, 7, 3, 9]))]
    [[1, 3, 4], [0, 2]]
    """
    if group is None:
        return [np.arange(r, n, workers) for r in range(workers)]
    order = np.argsort(group, kind="stable")  # each group contiguous, groups in ascending id order
    _, starts = np.unique(group[order], return_index=True)
    ends = np.append(starts[1:], n)
    return [
        np.concatenate([order[starts[j]:ends[j]] for j in range(r, len(starts), workers)] or [np.empty(0, np.int64)])
        for r in range(workers)
    ]


def _table(X: np.ndarray, y: np.ndarray, w: np.ndarray | None, g: np.ndarray | None) -> Any:
    import pyarrow as pa

    cols: dict[str, Any] = {f"f{i}": pa.array(X[:, i]) for i in range(X.shape[1])}
    cols[_LABEL] = pa.array(y)
    if w is not None:
        cols[_WEIGHT] = pa.array(w)
    if g is not None:
        cols[_GROUP] = pa.array(g)
    return pa.table(cols)


def _read_shard(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(X, y, weight, group) of this worker's dataset ``name`` (Arrow blocks from the object store)."""
    import pyarrow as pa
    import ray.train

    it = ray.train.get_dataset_shard(name)
    parts = list(it.iter_batches(batch_size=None, batch_format="pyarrow"))
    t = pa.concat_tables(parts) if parts else pa.table({})
    feats = [c for c in t.column_names if not c.startswith("__")]
    X = np.column_stack([t.column(c).to_numpy() for c in feats]) if feats else np.empty((t.num_rows, 0))
    y = t.column(_LABEL).to_numpy()
    w = t.column(_WEIGHT).to_numpy() if _WEIGHT in t.column_names else None
    g = t.column(_GROUP).to_numpy() if _GROUP in t.column_names else None
    return X, y, w, g


def _train_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's loop on each worker: LightGBM data-parallel on the worker's shard."""
    import warnings

    import lightgbm as lgb
    import ray.train
    from ray.train import Checkpoint
    from ray.train.lightgbm import get_network_params

    rank = ray.train.get_context().get_world_rank()
    init_score = config["init_score"]

    def dataset(name: str, ref: Any = None) -> Any:
        X, y, w, g = _read_shard(name)
        sizes = np.unique(g, return_counts=True)[1] if g is not None else None  # rows come sorted by group
        init = np.full(len(y), init_score) if init_score is not None else None
        return lgb.Dataset(X, y, weight=w, group=sizes, init_score=init, categorical_feature=config["cats"] or "auto",
                           reference=ref, free_raw_data=True)

    params = {**config["params"], "tree_learner": "data", "pre_partition": True, **get_network_params()}
    train = dataset(f"train_{rank}")
    valid = [dataset("valid", ref=train)] if config["has_valid"] else []
    callbacks: list[Any] = []
    if valid and config["early_stopping_rounds"]:
        callbacks.append(lgb.early_stopping(config["early_stopping_rounds"], first_metric_only=True, verbose=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        booster = lgb.train(params, train, num_boost_round=config["rounds"], valid_sets=valid or None,
                            valid_names=["valid"] if valid else None, callbacks=callbacks)
    best = booster.best_iteration if valid and config["early_stopping_rounds"] else 0
    text = booster.model_to_string(num_iteration=best if best > 0 else None)
    metrics = {"rounds": int(booster.current_iteration()), "best_iteration": int(best)}
    if rank == 0:
        with tempfile.TemporaryDirectory() as d:
            Path(d, "model.txt").write_text(text)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))
    else:
        ray.train.report(metrics)


def train_lightgbm_on_ray(
    params: dict[str, Any],
    *,
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None,
    group: np.ndarray | None,
    cats: list[int],
    init_score: float | None,
    valid: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None,
    rounds: int,
    early_stopping_rounds: int | None,
    workers: int,
    storage: str | None = None,
) -> Any:
    """A ``lightgbm.Booster`` fitted by ``workers`` Ray Train workers (see the module docstring).

    Parameters
    ----------
    params : LightGBM parameters as the single-machine fit uses them (the objective may be a callable).
    X, y, w, group : the training rows (dense float64), labels, weights and query ids (ranking).
    init_score : a constant initial score for every row (the focal objective), else None.
    valid : (X, y, group) of the validation split, read whole by every worker (early stopping).
    storage : folder for Ray Train's run files (the checkpoint); on a cluster every node must see it.
    """
    import lightgbm as lgb

    from loopml.pipeline.executors import connect_ray

    connect_ray()
    import ray
    import ray.data
    import ray.train
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.lightgbm import LightGBMTrainer

    # Ray Train would wait for ever for CPUs that never come (e.g. when this stage itself holds one)
    free = float(ray.available_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]
    if free < workers:
        total = float(ray.cluster_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]
        raise ModelError(
            f"lightgbm on Ray: training.ray_workers is {workers} but the Ray cluster has {free:g} free CPU(s) "
            f"of {total:g}; each worker takes one", hint="lower training.ray_workers or add nodes to the cluster")
    shards = shard_rows(len(y), workers, group)
    if min(len(s) for s in shards) < 2:
        raise ModelError(f"lightgbm on Ray: {len(y)} training rows cannot be shared by {workers} workers "
                         "(training.ray_workers); lower it")
    ray.data.DataContext.get_current().enable_progress_bars = False
    datasets: dict[str, Any] = {f"train_{r}": ray.data.from_arrow(_table(X[s], y[s], None if w is None else w[s],
                                                          None if group is None else group[s]))
                for r, s in enumerate(shards)}
    if valid is not None:
        vX, vy, vg = valid
        if vg is not None:
            order = np.argsort(vg, kind="stable")
            vX, vy, vg = vX[order], vy[order], vg[order]
        datasets["valid"] = ray.data.from_arrow(_table(vX, vy, None, vg))
    config = {"params": params, "cats": list(cats), "init_score": init_score, "has_valid": valid is not None,
              "early_stopping_rounds": early_stopping_rounds, "rounds": int(rounds)}
    root = Path(storage) if storage else Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="loopml-ray-train-", dir=root))
    trainer = LightGBMTrainer(
        _train_per_worker,
        train_loop_config=config,
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=[]),  # already sharded: worker r reads train_r
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(run_dir), name=f"lightgbm-{uuid.uuid4().hex[:8]}"),
    )
    try:
        try:
            result = trainer.fit()
        except Exception as exc:  # Ray Train wraps the worker's error; one line names it
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"lightgbm on Ray Train ({workers} workers) failed: {first}") from exc
        if result.checkpoint is None:
            raise ModelError(f"lightgbm on Ray Train ({workers} workers): worker 0 reported no model")
        with result.checkpoint.as_directory() as d:
            text = Path(d, "model.txt").read_text()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return lgb.Booster(model_str=text)
