"""TF-IDF stays sparse (CSR) into the models that take it, with a vocabulary not capped at 256 terms,
and one row still equals the batch, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from loopml.features import FeaturePipeline
from loopml.spec import Spec
from loopml.spec.features import Feature
from loopml.spec.task import Task
from loopml.training.bundle import Bundle
from loopml.training.models import FitContext, make_model, model_class
from loopml.training.selection import prepare_training_data


def _corpus(n: int, seed: int) -> tuple[list[str | None], np.ndarray]:
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(900)]  # far more than 256 distinct terms, each in many documents
    docs: list[str | None] = []
    y = np.zeros(n, dtype=np.int64)
    for r in range(n):
        words = list(rng.choice(vocab, size=12))
        if rng.random() < 0.5:
            words += ["refund", "broken"]
            y[r] = 1
        docs.append(" ".join(words) if r % 17 else None)  # some missing documents
    return docs, y


def _table(n: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    docs, y = _corpus(n, seed)
    rng = np.random.default_rng(seed + 1)
    return pa.table({"text": pa.array(docs, pa.string()), "age": rng.normal(40, 10, n), "y": y}), y


FEATURES = [Feature(column="text", kind="text"), Feature(column="age", kind="numeric")]


def test_default_tfidf_is_sparse_and_wide_and_row_equals_batch() -> None:
    table, y = _table(600, 0)
    pipe = FeaturePipeline(FEATURES, task=Task(type="binary", target="y"))
    X = pipe.fit_transform(table, y, sparse=True)
    assert sp.issparse(X) and X.format == "csr" and X.dtype == np.float32
    width = len(pipe.feature_names)
    assert width > 256 + 1  # the vocabulary is not capped at 256 terms
    assert X.nnz < 0.05 * X.shape[0] * X.shape[1]  # only the non-zero weights are stored
    test, _ = _table(200, 1)
    Xs = pipe.transform_batch(test, sparse=True)
    Xd = pipe.transform_batch(test)  # the dense contract still holds for dense consumers
    assert isinstance(Xd, np.ndarray) and Xd.dtype == np.float32
    assert np.array_equal(Xs.toarray(), Xd)
    for i, row in enumerate(test.to_pylist()):
        assert np.array_equal(pipe.transform_row(row), Xd[i]), i
    # the state round-trips and the reloaded row path agrees too
    again = FeaturePipeline.from_json(pipe.to_json())
    assert np.array_equal(again.transform_row(test.to_pylist()[3]), Xd[3])


def test_min_df_drops_rare_terms() -> None:
    t = pa.table({"text": ["apple pie", "apple tart", "kiwi"], "y": [0, 1, 0]})
    p = FeaturePipeline([Feature(column="text", kind="text")], task=Task(type="binary", target="y"))
    p.fit(t, np.array([0, 1, 0]))
    assert p.feature_names == ["text__tfidf[apple]"]  # seen in 2 documents; the rest once
    p1 = FeaturePipeline([Feature(column="text", kind="text", transforms=[{"type": "tfidf", "min_df": 1}])],
                         task=Task(type="binary", target="y")).fit(t, np.array([0, 1, 0]))
    assert len(p1.feature_names) > 4


SPEC = {
    "task": {"type": "binary", "target": "y"},
    "features": {"inputs": [f.model_dump(mode="json") for f in FEATURES]},
    "training": {"candidates": [{"type": "prior"}]},
}


@pytest.mark.parametrize("model", ["lightgbm", "logistic"])
def test_sparse_text_goes_into_the_model_and_row_equals_batch(model: str, tmp_path: Path) -> None:
    train, _ = _table(800, 0)
    valid, _ = _table(200, 1)
    test, y_test = _table(200, 2)
    data = prepare_training_data(Spec.model_validate(SPEC), train, valid)
    assert sp.issparse(data.X_train) and sp.issparse(data.X_valid)
    assert model_class(model).accepts_sparse
    params = {"n_estimators": 30} if model == "lightgbm" else {}
    m = make_model(model, task="binary", **params)
    m.fit(data.X_train, data.y_train, None, data.categorical, context=FitContext(eval_X=data.X_valid,
                                                                               eval_y=data.y_valid))
    bundle = Bundle(data.transform, m, {})
    X = bundle.matrix(test)
    assert sp.issparse(X)  # the model is given the CSR matrix as is
    batch = bundle.predict_table(test)
    rows = np.array([bundle.predict_row(r) for r in test.to_pylist()])
    assert np.array_equal(rows, batch)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y_test, batch) > 0.9  # it learned from the text
    # save/load keeps the sparse pass-through and the scores
    m.save(tmp_path / "m")
    loaded = type(m).load(tmp_path / "m")
    assert np.array_equal(loaded.score(X), m.score(X))


def test_a_dense_only_model_gets_a_dense_matrix_and_says_so() -> None:
    train, _ = _table(300, 0)
    valid, _ = _table(100, 1)
    data = prepare_training_data(Spec.model_validate(SPEC), train, valid)
    cls = model_class("decision_tree")
    assert not cls.accepts_sparse  # the flag says it: it is densified for it
    m = make_model("decision_tree", task="binary").fit(data.X_train, data.y_train, None, data.categorical)
    bundle = Bundle(data.transform, m, {})
    assert isinstance(bundle.matrix(valid), np.ndarray)
    assert np.array_equal(m.score(data.X_valid), m.score(data.X_valid.toarray()))


def test_serving_scores_a_wide_text_batch_in_slices_as_the_bundle_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from loopml.serving import servable as S

    train, _ = _table(600, 0)
    valid, _ = _table(100, 1)
    test, _ = _table(50, 2)
    data = prepare_training_data(Spec.model_validate(SPEC), train, valid)
    m = make_model("lightgbm", task="binary", n_estimators=20).fit(data.X_train, data.y_train, None, data.categorical)
    bundle = Bundle(data.transform, m, {})
    sv = S.Servable.from_bundle("v1", bundle)
    width = len(data.feature_names)
    monkeypatch.setattr(S, "DENSE_SLICE_CELLS", width * 7)  # 7 rows per slice: 8 slices for 50 rows
    expected = bundle.predict_table(test)  # CSR into LightGBM
    assert np.array_equal(sv.predict_table(test), expected)
    assert np.array_equal(np.array([sv.predict_one(r)[0] for r in test.to_pylist()]), expected)


def test_baselines_take_the_sparse_matrix_as_is() -> None:
    """prior/mean/most_popular read the row count or one column: a huge TF-IDF matrix is never densified."""
    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.random(30_000), (rng.integers(0, 300_000, 30_000), rng.integers(0, 1_000, 30_000))),
                      shape=(300_000, 1_000))  # 300M cells: too big to densify
    y = (np.arange(300_000) % 3 == 0).astype(np.int64)
    for name, task in (("prior", "binary"), ("mean", "regression")):
        assert model_class(name).accepts_sparse
        s = make_model(name, task=task).fit(X, y).score(X[:5])
        assert s.shape == (5,) and np.all(s == s[0])
    with pytest.raises(Exception, match="takes dense input only"):
        make_model("decision_tree", task="binary").fit(X, y)
