"""Permutation importance by input column: a text feature is one entry, bounded by a time budget."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from loopml.evaluation.analysis import input_permutation_importance
from loopml.evaluation.data import EvalData
from loopml.evaluation.metrics import compute_metric
from loopml.features import FeaturePipeline
from loopml.spec.features import Feature
from loopml.spec.task import Task
from loopml.training.models import make_model

WORDS = ["good", "bad", "great", "awful", "fine", "meh", "nice", "poor", "ok", "superb", "weak", "strong"]


def _data(n: int = 400, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    city = rng.choice(["a", "b", "c"], size=n)
    docs = [" ".join(rng.choice(WORDS, size=6)) for _ in range(n)]
    pos = np.array([d.count("good") + d.count("great") - d.count("bad") for d in docs], dtype=np.float64)
    y = ((0.8 * pos + 0.5 * x + rng.normal(scale=0.5, size=n)) > 0).astype(np.int64)
    return pa.table({"review": docs, "x": x, "city": city, "noise": rng.normal(size=n)}), y


def _fitted(features: list[Feature]) -> tuple[FeaturePipeline, object, pa.Table, np.ndarray, EvalData]:
    table, y = _data()
    pipe = FeaturePipeline(features, task=Task(type="binary", target="y"))
    X = pipe.fit_transform(table, y)
    model = make_model("logistic", task="binary").fit(X, y)
    test, yt = _data(seed=1)
    data = EvalData("binary", yt, model.score(pipe.transform_batch(test)))
    return pipe, model, test, yt, data


FEATURES = [
    Feature(column="review", kind="text", transforms=[{"type": "tfidf"}]),
    Feature(column="x", kind="numeric"),
    Feature(column="noise", kind="numeric"),
    Feature(column="city", kind="categorical", transforms=[{"type": "onehot"}]),
    Feature(column="city", kind="categorical", name="city_x", transforms=[{"type": "cross", "with_columns": ["noise"]}]),
]


def test_a_text_feature_is_one_entry_and_the_signal_ranks_first() -> None:
    pipe, model, test, _, data = _fitted(FEATURES)
    X = pipe.transform_batch(test)
    rows, info = input_permutation_importance(model.score, pipe, test, X, data, "roc_auc", repeats=2, seed=0,
                                              budget_s=600)
    by = {r["feature"]: r for r in rows}
    assert set(by) == {"review", "x", "noise", "city"}  # one per input column, however many model columns
    assert by["review"]["model_columns"] == len(pipe.chains[0].output_names()) > 5
    assert by["city"]["model_columns"] == len(pipe.chains[3].output_names()) + 1  # onehot + the cross
    assert rows[0]["feature"] == "review" and rows[0]["importance"] > 0.1
    assert by["x"]["importance"] > by["noise"]["importance"]
    assert all(r["repeats"] == 2 for r in rows)
    assert info["stopped_early"] is False and info["columns_measured"] == 4 and info["shuffles"] == 8
    assert info["note"] is None


def test_permuting_output_blocks_equals_shuffling_the_raw_column() -> None:
    """Row-permuting a chain's outputs is the same as re-running the transforms on the shuffled column."""
    pipe, model, test, _, data = _fitted(FEATURES)
    X = pipe.transform_batch(test)
    rows, _ = input_permutation_importance(model.score, pipe, test, X, data, "roc_auc", repeats=1, seed=7,
                                           budget_s=600)
    base = compute_metric("roc_auc", data.with_score(model.score(X), "b"))
    rng = np.random.default_rng(7)
    expected = {}
    for c in pipe.input_columns:
        perm = rng.permutation(test.num_rows)
        k = test.column_names.index(c)
        shuffled = test.set_column(k, c, test.column(c).take(pa.array(perm)))
        expected[c] = base - compute_metric("roc_auc", data.with_score(model.score(pipe.transform_batch(shuffled)), "p"))
    for r in rows:
        assert np.isclose(r["importance"], expected[r["feature"]], atol=1e-12), r


def test_the_budget_stops_it_and_says_so() -> None:
    pipe, model, test, _, data = _fitted(FEATURES)
    X = pipe.transform_batch(test)
    lines: list[str] = []
    rows, info = input_permutation_importance(model.score, pipe, test, X, data, "roc_auc", repeats=3, seed=0,
                                              budget_s=1e-9, progress=lines.append)
    assert info["stopped_early"] is True and info["shuffles"] < 12
    assert "stopped at its 1e-09s budget" in info["note"] and "importance_budget_s" in info["note"]
    assert len(rows) == info["columns_measured"] == len(lines)
    # with room, every shuffle reports a progress line naming the column
    lines.clear()
    input_permutation_importance(model.score, pipe, test, X, data, "roc_auc", repeats=1, budget_s=600,
                                 progress=lines.append)
    assert [ln.split("`")[1] for ln in lines] == pipe.input_columns
    assert lines[0].startswith("importance: input column 1/4 `review`, shuffle 1/1")
