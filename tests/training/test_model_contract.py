"""The contract every registered model keeps, run over the whole registry and every task it handles.

Exceptions are declared on the model class (``contract_exceptions``, with a reason), never here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loopml.errors import ModelError, SpecError
from loopml.training.models import MODELS, BaseModel, FitContext, make_model

from .conftest import Matrix

CASES = [(name, task) for name in sorted(MODELS) for task in sorted(MODELS[name].task_types)]


def _skip_if_declared(name: str, check: str) -> None:
    reason = MODELS[name].contract_exceptions.get(check)
    if reason:
        pytest.skip(f"{name} declares: {reason}")


_CACHE: dict[tuple[str, str, int], BaseModel] = {}


def _fit(name: str, m: Matrix, seed: int = 0, X: np.ndarray | None = None) -> BaseModel:
    """A fitted model (cached per model, task and seed when fitted on the shared matrix)."""
    key = (name, m.task, seed)
    if X is None and key in _CACHE:
        return _CACHE[key]
    model = _fit_new(name, m, seed, X)
    if X is None:
        _CACHE[key] = model
    return model


def _fit_new(name: str, m: Matrix, seed: int, X: np.ndarray | None) -> BaseModel:
    model = make_model(name, task=m.task, seed=seed, **MODELS[name].contract_params)
    ctx = FitContext(group=m.group, feature_names=m.feature_names, extra={"item_key": "item_id"})
    return model.fit(m.X if X is None else X, m.y, None, m.categorical, context=ctx)


@pytest.fixture(params=CASES, ids=[f"{n}-{t}" for n, t in CASES])
def case(request: pytest.FixtureRequest, matrices: dict[str, Matrix]) -> tuple[str, Matrix]:
    name, task = request.param
    return name, matrices[task]


def test_fit_returns_self_and_scores_have_the_task_shape(case: tuple[str, Matrix]) -> None:
    name, m = case
    model = make_model(name, task=m.task, **MODELS[name].contract_params)
    ctx = FitContext(group=m.group, feature_names=m.feature_names, extra={"item_key": "item_id"})
    assert model.fit(m.X, m.y, None, m.categorical, context=ctx) is model
    s = model.score(m.X[:7])
    if m.task == "multiclass":
        assert s.shape == (7, 3)
        np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=1e-9)
    else:
        assert s.shape == (7,)
    if m.task == "binary" and model.supports_proba:
        p = model.predict_proba(m.X[:7])
        assert np.all((p >= 0) & (p <= 1))
        assert set(np.unique(model.predict(m.X[:7]))) <= {0, 1}
    assert np.all(np.isfinite(s))


def test_inputs_are_not_mutated(case: tuple[str, Matrix]) -> None:
    name, m = case
    X, y = m.X.copy(), m.y.copy()
    model = _fit(name, m, X=X)
    model.score(X)
    np.testing.assert_array_equal(X, m.X)
    np.testing.assert_array_equal(y, m.y)


def test_save_load_gives_identical_predictions(case: tuple[str, Matrix], tmp_path: Path) -> None:
    name, m = case
    _skip_if_declared(name, "save_load")
    model = _fit(name, m)
    model.save(tmp_path / "m")
    files = {p.suffix for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert files <= {".json", ".npz", ".txt", ".safetensors"}, f"unexpected file types {files}"
    loaded = BaseModel.load(tmp_path / "m")
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.score(m.X), model.score(m.X))


def test_fixed_seed_gives_identical_results(case: tuple[str, Matrix]) -> None:
    name, m = case
    _skip_if_declared(name, "determinism")
    a, b = _fit(name, m, seed=7), _fit_new(name, m, 7, None)
    np.testing.assert_array_equal(a.score(m.X), b.score(m.X))


def test_one_row_equals_the_batch(case: tuple[str, Matrix]) -> None:
    name, m = case
    model = _fit(name, m)
    batch = model.score(m.X[:25])
    rows = np.stack([model.score(m.X[i : i + 1])[0] for i in range(25)])
    np.testing.assert_array_equal(rows, batch)


def test_wrong_number_of_columns_is_a_clear_error(case: tuple[str, Matrix]) -> None:
    name, m = case
    model = _fit(name, m)
    with pytest.raises(ModelError, match=rf"fitted on {m.X.shape[1]} feature column\(s\) but got {m.X.shape[1] - 1}"):
        model.score(m.X[:3, :-1])


def test_unknown_parameter_names_the_candidate_and_the_field() -> None:
    with pytest.raises(SpecError) as err:
        make_model("lightgbm", where="training.candidates[1] (gbm)", num_leafs=8)
    assert "training.candidates[1] (gbm).params.num_leafs" in str(err.value)
    with pytest.raises(SpecError, match=r"params\.learning_rate.*less than or equal to 1"):
        make_model("lightgbm", learning_rate=3.0)


def test_a_model_refuses_a_task_it_does_not_handle() -> None:
    with pytest.raises(ModelError, match="does not handle task `regression`"):
        make_model("logistic", task="regression")


def test_every_model_has_a_described_config_and_a_description() -> None:
    for name, cls in MODELS.items():
        assert cls.description, name
        assert cls.Config.model_config.get("extra") == "forbid", name
        for field, info in cls.Config.model_fields.items():
            assert info.description, f"{name}.{field} has no description"


@pytest.mark.parametrize("loss", ["auto", "pairwise"])
def test_neural_ranking_losses_learn_an_order(matrices: dict[str, Matrix], loss: str) -> None:
    from loopml.training.metrics import ndcg_at_k

    m = matrices["ranking"]
    model = make_model("mlp", task="ranking", epochs=20, hidden=[16], learning_rate=5e-3, loss=loss)
    model.fit(m.X, m.y, None, m.categorical, context=FitContext(group=m.group))
    rng = np.random.default_rng(0)
    assert ndcg_at_k(m.y, model.score(m.X), m.group, 10) > ndcg_at_k(m.y, rng.random(len(m.y)), m.group, 10) + 0.05
    with pytest.raises(ModelError, match="applies to ranking"):
        make_model("mlp", task="binary", loss="pairwise").fit(m.X[:50], (m.y[:50] > 3).astype(int))
