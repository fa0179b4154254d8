"""Dataset construction on real data: splits, sampling, class imbalance and labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loopml.errors import DataError, SpecError
from loopml.spec.task import Task
from loopml.spec.training import Sampling, Split
from loopml.training.imbalance import (
    _focal_grad,
    class_weights,
    focal_grad_hess,
    focal_loss,
    oversample,
    undersample,
)
from loopml.training.labels import encode_labels
from loopml.training.sampling import (
    importance_sample,
    negative_downsample,
    recalibrate,
    reservoir_sample,
    sample_training_rows,
)
from loopml.training.splits import split_indices

from .conftest import read_kdd, read_movielens


@pytest.fixture(scope="module")
def kdd(datasets: Path) -> pa.Table:
    return read_kdd(datasets)


@pytest.fixture(scope="module")
def ratings(datasets: Path) -> pa.Table:
    return read_movielens(datasets)


def _cover(parts: dict[str, np.ndarray], n: int) -> None:
    allrows = np.concatenate([parts["train"], parts["valid"], parts["test"]])
    assert len(allrows) == n and len(np.unique(allrows)) == n


def test_stratified_split_keeps_the_click_rate_in_every_part(kdd: pa.Table) -> None:
    task = Task(type="binary", target="click")
    parts = split_indices(kdd, Split(type="stratified"), task, seed=0)
    _cover(parts, kdd.num_rows)
    y = np.asarray(kdd.column("click").to_numpy())
    rates = {k: y[v].mean() for k, v in parts.items()}
    assert max(rates.values()) - min(rates.values()) < 0.002
    assert abs(len(parts["valid"]) / kdd.num_rows - 0.15) < 0.001
    again = split_indices(kdd, Split(type="stratified"), task, seed=0)
    np.testing.assert_array_equal(again["test"], parts["test"])


def test_time_split_trains_on_the_past(ratings: pa.Table) -> None:
    task = Task(type="regression", target="rating", timestamp="timestamp")
    parts = split_indices(ratings, Split(type="time", valid_fraction=0.1, test_fraction=0.1), task, seed=0)
    _cover(parts, ratings.num_rows)
    ts = np.asarray(ratings.column("timestamp").to_numpy())
    assert ts[parts["train"]].max() < ts[parts["valid"]].min()
    assert ts[parts["valid"]].max() < ts[parts["test"]].min()


def test_group_split_puts_no_user_in_two_parts(ratings: pa.Table) -> None:
    task = Task(type="ranking", target="rating", group_key="user_id")
    parts = split_indices(ratings, Split(type="group"), task, seed=1)
    _cover(parts, ratings.num_rows)
    users = np.asarray(ratings.column("user_id").to_numpy())
    sets = {k: set(users[v].tolist()) for k, v in parts.items()}
    assert not (sets["train"] & sets["valid"]) and not (sets["train"] & sets["test"]) and not (sets["valid"] & sets["test"])
    assert 0.1 < len(parts["test"]) / ratings.num_rows < 0.2


def test_random_split_and_bad_split_specs(kdd: pa.Table) -> None:
    task = Task(type="binary", target="click")
    _cover(split_indices(kdd, Split(type="random"), task, seed=0), kdd.num_rows)
    with pytest.raises(SpecError, match="time_column"):
        split_indices(kdd, Split(type="time"), task, seed=0)
    with pytest.raises(SpecError, match="column `nope` is not in the table"):
        split_indices(kdd, Split(type="group", group_column="nope"), task, seed=0)
    with pytest.raises(SpecError, match="below 1"):
        split_indices(kdd, Split(valid_fraction=0.5, test_fraction=0.5), task, seed=0)


def test_reservoir_sample_streams_in_bounded_memory(kdd: pa.Table, tmp_path: Path) -> None:
    path = tmp_path / "kdd.parquet"
    pq.write_table(kdd, path, row_group_size=4096)
    batches = pq.ParquetFile(path).iter_batches(batch_size=1000)
    sample, pos = reservoir_sample(batches, 2000, seed=0)
    assert sample.num_rows == 2000 and len(np.unique(pos)) == 2000
    # the kept rows are the stream's rows at those positions
    assert sample.column("ad_id").to_pylist() == kdd.column("ad_id").take(pa.array(pos)).to_pylist()
    # uniform: positions spread over the whole stream, click rate preserved
    assert abs(np.mean(pos) / kdd.num_rows - 0.5) < 0.03
    y = np.asarray(kdd.column("click").to_numpy())
    assert abs(np.asarray(sample.column("click").to_numpy()).mean() - y.mean()) < 0.025


def test_importance_sampling_weights_keep_totals_unbiased(kdd: pa.Table) -> None:
    impressions = np.asarray(kdd.column("impression").to_numpy(), dtype=np.float64)
    s = np.sqrt(impressions)
    totals = []
    for seed in range(20):
        rows, w = importance_sample(s, 4000, seed)
        totals.append(np.sum(w * impressions[rows]))
    assert abs(np.mean(totals) / impressions.sum() - 1) < 0.03
    with pytest.raises(DataError, match=">= 0"):
        importance_sample(np.array([1.0, -1.0]), 1, 0)


def test_negative_downsampling_then_recalibration_restores_the_click_rate(kdd: pa.Table) -> None:
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(kdd.column("click").to_numpy())
    X = np.column_stack([np.log1p(np.asarray(kdd.column(c).to_numpy(), dtype=np.float64))
                         for c in ("impression", "depth", "position")])
    rows = negative_downsample(y, 0.2, seed=0)
    assert np.all(y[rows].sum() == y.sum())  # every positive kept
    q = LogisticRegression().fit(X[rows], y[rows]).predict_proba(X)[:, 1]
    assert q.mean() > 2 * y.mean()  # trained on the down-sampled rate
    assert abs(recalibrate(q, 0.2).mean() - y.mean()) < 0.01


def test_sampling_spec_dispatch_and_errors(kdd: pa.Table) -> None:
    y = np.asarray(kdd.column("click").to_numpy())
    s = sample_training_rows(Sampling(type="stratified", max_rows=5000), y, "binary", 0)
    assert abs(len(s.rows) - 5000) <= 2 and abs(y[s.rows].mean() - y.mean()) < 0.002
    s = sample_training_rows(Sampling(type="negative_downsample", negative_rate=0.5), y, "binary", 0)
    assert s.negative_rate == 0.5
    with pytest.raises(SpecError, match="negative_rate"):
        sample_training_rows(Sampling(type="negative_downsample"), y, "binary", 0)
    with pytest.raises(SpecError, match="binary tasks"):
        sample_training_rows(Sampling(type="negative_downsample", negative_rate=0.5), y.astype(float), "regression", 0)


def test_class_imbalance_tools(kdd: pa.Table) -> None:
    y = np.asarray(kdd.column("click").to_numpy())
    w = class_weights(y)
    assert w[y == 1].sum() == pytest.approx(w[y == 0].sum())
    over = oversample(y, 0)
    assert (y[over] == 1).sum() == (y[over] == 0).sum() == (y == 0).sum()
    under = undersample(y, 0)
    assert (y[under] == 1).sum() == (y[under] == 0).sum() == (y == 1).sum()


def test_focal_gradient_matches_the_loss_and_reduces_to_log_loss() -> None:
    z = np.linspace(-4, 4, 41)
    for label in (0.0, 1.0):
        y = np.full_like(z, label)
        eps = 1e-6
        numeric = (focal_loss(z + eps, y, 2.0, 0.25) - focal_loss(z - eps, y, 2.0, 0.25)) / (2 * eps)
        np.testing.assert_allclose(_focal_grad(z, y, 2.0, 0.25), numeric, atol=1e-6)
    g, h = focal_grad_hess(z, np.ones_like(z), 0.0, 0.5)
    p = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(g, 0.5 * (p - 1), atol=1e-9)
    np.testing.assert_allclose(h, 0.5 * p * (1 - p), atol=1e-6)


def test_labels_from_the_label_column(german: pa.Table) -> None:
    with pytest.raises(DataError, match="positive_label"):
        encode_labels(german, Task(type="binary", target="class"))
    lab = encode_labels(german, Task(type="binary", target="class", positive_label="bad"))
    assert lab.y.sum() == 300 and lab.classes == ["good", "bad"]
    multi = encode_labels(german, Task(type="multiclass", target="purpose"))
    assert len(multi.classes) == multi.y.max() + 1
    with pytest.raises(DataError, match="`nope` is not in the table"):
        encode_labels(german, Task(target="nope"))
    t = pa.table({"label": pa.array([1, None, 0, 1], pa.int64())})
    lab = encode_labels(t, Task(type="binary"))
    assert lab.labeled.tolist() == [True, False, True, True]
