"""Contract checks over every registered metric (parametrised over the registry, no skip list).

The weighted kernel is the one core behind point estimates and the bootstrap, so each metric
must: give a finite value on well-formed data, not change when every weight is doubled or the
rows are shuffled, and give with integer weights exactly the value of the plainly computed
metric on the data with each unit repeated that many times.
"""

from __future__ import annotations

import numpy as np
import pytest

from loopml.evaluation.bootstrap import bootstrap_samples, point_estimates
from loopml.evaluation.data import EvalData
from loopml.evaluation.metrics import METRICS, build_kernel, compute_metric, metric_key

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "rug", "big", "small", "red"]


def make_data(task: str, seed: int = 0) -> EvalData:
    """Small, well-formed data for ``task`` with ties in the scores."""
    rng = np.random.default_rng(seed)
    if task == "binary":
        y = rng.integers(0, 2, 120)
        return EvalData(task, y, np.round(np.clip(0.3 * y + 0.7 * rng.random(120), 0, 1), 2))
    if task == "multiclass":
        y = rng.integers(0, 3, 150)
        p = rng.dirichlet([1, 1, 1], 150)
        p[np.arange(150), y] += 0.5
        return EvalData(task, y, p / p.sum(axis=1, keepdims=True))
    if task == "regression":
        y = rng.normal(5, 2, 100)
        return EvalData(task, y, y + rng.normal(0, 1, 100))
    if task == "ranking":
        groups = np.repeat(np.arange(30), 8)
        rel = rng.integers(0, 3, groups.size).astype(float)
        rel[::8] = 2.0  # every query has a relevant item
        items = rng.integers(0, 40, groups.size)
        return EvalData(task, rel, np.round(rel * 0.3 + rng.random(groups.size), 1), groups=groups, items=items,
                        catalogue_size=40)
    refs = [" ".join(rng.choice(WORDS, 8)) for _ in range(40)]
    hyps = [" ".join(r.split()[:5] + list(rng.choice(WORDS, 3))) for r in refs]
    return EvalData("text", refs, hyps)


def repeat_units(d: EvalData, counts: np.ndarray) -> EvalData:
    """The data with bootstrap unit i repeated counts[i] times (queries get fresh ids per copy)."""
    if d.task == "text":
        idx = np.repeat(np.arange(d.n), counts)
        return EvalData("text", [d.y[i] for i in idx], [d.score[i] for i in idx])
    if d.task == "ranking":
        _, codes = np.unique(d.groups, return_inverse=True)
        rows, gid = [], []
        nxt = 0
        for g, c in enumerate(counts):
            members = np.flatnonzero(codes == g)
            for _ in range(int(c)):
                rows.append(members)
                gid.append(np.full(members.size, nxt))
                nxt += 1
        r = np.concatenate(rows)
        return EvalData("ranking", d.y[r], d.score[r], groups=np.concatenate(gid), items=np.asarray(d.items)[r],
                        catalogue_size=d.catalogue_size)
    idx = np.repeat(np.arange(d.n), counts)
    return d.subset(np.ones(d.n, bool)).__class__(d.task, d.y[idx], d.score[idx], threshold=d.threshold)


def _cases() -> list[tuple[str, str]]:
    out = []
    for name, m in sorted(METRICS.items()):
        for task in m.tasks:
            out.append((metric_key(name, 5 if m.takes_k else None), task))
    return out


CASES = _cases()


@pytest.mark.parametrize(("key", "task"), CASES, ids=[f"{k}-{t}" for k, t in CASES])
def test_metric_finite_and_scale_invariant(key: str, task: str) -> None:
    d = make_data(task)
    k = build_kernel(key, d)
    one = k.evaluate(np.ones((1, d.units)))
    two = k.evaluate(np.full((1, d.units), 2.0))
    assert np.isfinite(one[0])
    assert two[0] == pytest.approx(one[0], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("key", "task"), CASES, ids=[f"{k}-{t}" for k, t in CASES])
def test_integer_weights_equal_repeated_rows(key: str, task: str) -> None:
    d = make_data(task)
    rng = np.random.default_rng(1)
    k = build_kernel(key, d)
    for _ in range(2):
        counts = rng.integers(1, 4, d.units)
        weighted = k.evaluate(counts[None, :].astype(np.uint8))[0]
        plain = compute_metric(key, repeat_units(d, counts))
        assert weighted == pytest.approx(plain, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("key", "task"), CASES, ids=[f"{k}-{t}" for k, t in CASES])
def test_row_order_does_not_matter(key: str, task: str) -> None:
    d = make_data(task)
    perm = np.random.default_rng(2).permutation(d.n)
    if task == "text":
        shuffled = EvalData("text", [d.y[i] for i in perm], [d.score[i] for i in perm])
    else:
        shuffled = EvalData(task, d.y[perm], d.score[perm], groups=None if d.groups is None else d.groups[perm],
                            items=None if d.items is None else np.asarray(d.items)[perm],
                            catalogue_size=d.catalogue_size)
    assert compute_metric(key, shuffled) == pytest.approx(compute_metric(key, d), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("key", "task"), CASES, ids=[f"{k}-{t}" for k, t in CASES])
def test_bootstrap_is_seeded_and_brackets_the_value(key: str, task: str) -> None:
    d = make_data(task)
    kernels = {key: build_kernel(key, d)}
    a = bootstrap_samples(kernels, d.units, 60, seed=3)[key]
    b = bootstrap_samples(kernels, d.units, 60, seed=3)[key]
    c = bootstrap_samples(kernels, d.units, 60, seed=4)[key]
    value = point_estimates(kernels, d.units)[key]
    assert np.array_equal(a, b, equal_nan=True)
    assert not np.array_equal(a, c, equal_nan=True) or np.nanstd(a) == 0
    finite = a[np.isfinite(a)]
    assert finite.size >= 55
    assert finite.min() <= value + 1e-12 and finite.max() >= value - 1e-12
