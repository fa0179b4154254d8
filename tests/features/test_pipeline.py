"""FeaturePipeline behaviour beyond the per-transform contract: inference, leakage, drops, errors, metadata."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from loopml.errors import DataError, SpecError
from loopml.features import FeaturePipeline
from loopml.spec.features import Feature, Features
from loopml.spec.task import Task


def test_default_inference_excludes_target_keys_and_timestamp(ratings: pa.Table, german: pa.Table) -> None:
    task = Task(target="rating", type="regression", entity_keys=["user_id"], timestamp="ts")
    p = FeaturePipeline.from_spec(Features(), task=task).fit(ratings)
    assert p.feature_names == ["item_id"]  # numeric → impute median
    assert p.chains[0].transforms[0].name == "impute"
    g = FeaturePipeline.from_spec(Features(), task=Task(target="class")).fit(german)
    assert "class" not in g.feature_names and "purpose" in g.feature_names
    kinds = {c.name: [t.name for t in c.transforms] for c in g.chains}
    assert kinds["purpose"] == ["ordinal"] and kinds["age"] == ["impute"]
    # string columns are category codes; LightGBM gets their indices
    assert g.categorical_features == [g.feature_names.index(c) for c in g.feature_names
                                      if german.schema.field(c).type == pa.string()]
    # unseen category → the unknown code 0
    row = {**german.slice(0, 1).to_pylist()[0], "purpose": "space travel"}
    assert g.transform_row(row)[g.feature_names.index("purpose")] == 0.0


def test_target_encoding_is_out_of_fold_on_the_training_split(criteo: pa.Table) -> None:
    """A unique id per row is the worst case: in-sample encoding would copy each row's own label."""
    n = criteo.num_rows
    t = criteo.append_column("row_id", pa.array([f"r{i}" for i in range(n)]))
    y = np.asarray(criteo.column("label").to_numpy(), dtype=float)
    p = FeaturePipeline([Feature(column="row_id", kind="categorical",
                                 transforms=[{"type": "target_encode", "smoothing": 1.0}])])
    oof = p.fit_transform(t, y)[:, 0]
    in_sample = p.transform_batch(t)[:, 0]
    leak = np.corrcoef(in_sample, y)[0, 1]
    honest = np.corrcoef(oof, y)[0, 1]
    assert leak > 0.9  # what leakage looks like
    assert abs(honest) < 0.1  # out-of-fold: unseen ids fall back to the prior of the other folds
    assert np.allclose(oof, oof[0], atol=0.05)


def test_multiclass_target_encoding_has_one_column_per_class(tweets: pa.Table) -> None:
    t = tweets.append_column("first_word", pa.array([s.split()[0] if s.split() else "" for s in
                                                    tweets.column("tweet").to_pylist()]))
    p = FeaturePipeline([Feature(column="first_word", kind="categorical", transforms=[{"type": "target_encode"}])],
                        task=Task(target="class", type="multiclass"))
    p.fit(t, t.column("class").to_numpy())
    assert p.feature_names == ["first_word__te_0", "first_word__te_1", "first_word__te_2"]
    X = p.transform_batch(t)
    assert np.allclose(X.sum(axis=1), 1.0, atol=1e-5)


def test_impute_drop_masks_rows_and_refuses_them_at_scoring(criteo: pa.Table) -> None:
    p = FeaturePipeline([Feature(column="I1", transforms=[{"type": "impute", "strategy": "drop"}]),
                         Feature(column="I2")])
    keep = p.drop_mask(criteo)
    missing = np.isnan(np.asarray(criteo.column("I1").to_numpy(zero_copy_only=False), dtype=float))
    assert missing.any() and np.array_equal(keep, ~missing)
    X = p.fit_transform(criteo)
    assert X.shape[0] == int(keep.sum())
    with pytest.raises(DataError, match="I1"):
        p.transform_batch(criteo)
    with pytest.raises(DataError, match="I1"):
        p.transform_row({"I1": None, "I2": 1.0})
    assert p.transform_row({"I1": 3.0, "I2": 1.0}).tolist() == [3.0, 1.0]


def test_embedding_ids_expose_vocabulary_sizes(criteo: pa.Table) -> None:
    p = FeaturePipeline([Feature(column="C3", kind="categorical",
                                 transforms=[{"type": "embedding_ids", "min_frequency": 2, "dim": 8}]),
                         Feature(column="I1")]).fit(criteo)
    info = p.embedding_features
    assert list(info) == [0] and info[0]["dim"] == 8
    codes = p.transform_batch(criteo)[:, 0]
    assert codes.max() == info[0]["vocab_size"] - 1 and codes.min() >= 0


def test_spec_and_data_errors_name_the_thing(criteo: pa.Table) -> None:
    with pytest.raises(SpecError, match="`scale` needs numeric"):
        FeaturePipeline([Feature(column="C1", kind="categorical", transforms=[{"type": "scale"}])])
    with pytest.raises(SpecError, match="after a transform that already produced"):
        FeaturePipeline([Feature(column="C1", kind="categorical",
                                 transforms=[{"type": "onehot"}, {"type": "scale"}])])
    with pytest.raises(SpecError, match="produced twice"):
        FeaturePipeline([Feature(column="I1"), Feature(column="I1")])
    p = FeaturePipeline([Feature(column="I1"), Feature(column="C1", kind="categorical")]).fit(criteo)
    with pytest.raises(DataError, match="column `C1`"):
        p.transform_row({"I1": 1.0})
    with pytest.raises(DataError, match="column `C1` is missing"):
        p.transform_batch(criteo.select(["I1"]))
    with pytest.raises(SpecError, match="before fit"):
        FeaturePipeline([Feature(column="I1")]).transform_batch(criteo)
    with pytest.raises(SpecError, match="format"):
        FeaturePipeline.from_json({"format": "pickle"})
    blob = p.to_json()
    blob["states"][1][0]["type"] = "hash"
    with pytest.raises(SpecError, match="do not match"):
        FeaturePipeline.from_json(json.loads(json.dumps(blob)))


def test_input_columns_and_schema_include_crossed_columns(criteo: pa.Table) -> None:
    p = FeaturePipeline([Feature(column="C1", kind="categorical",
                                 transforms=[{"type": "cross", "with_columns": ["C2", "C3"]}]),
                         Feature(column="I1")]).fit(criteo)
    assert p.input_columns == ["C1", "C2", "C3", "I1"]
    assert p.input_schema == {"C1": "categorical", "C2": "categorical", "C3": "categorical", "I1": "numeric"}
    assert p.categorical_features == [0]
    # equal category values of different Python types are one category
    r1 = p.transform_row({"C1": "7", "C2": 5, "C3": None, "I1": 1})
    r2 = p.transform_row({"C1": 7, "C2": 5.0, "C3": float("nan"), "I1": 1.0})
    assert np.array_equal(r1, r2)


def test_describe_lists_chain_outputs_and_statistics(criteo: pa.Table) -> None:
    p = FeaturePipeline([Feature(column="I1", transforms=[{"type": "impute", "add_indicator": True},
                                                          {"type": "scale"}])]).fit(criteo)
    d = p.describe()[0]
    assert d["chain"].startswith("impute(") and "scale" in d["chain"]
    assert d["outputs"] == ["I1", "I1__missing"]
    vals = np.asarray(criteo.column("I1").to_numpy(zero_copy_only=False), dtype=float)
    assert d["stats"]["impute"]["fill"] == pytest.approx(float(np.nanmedian(vals)))
    assert set(d["stats"]["scale"]) == {"center", "scale"}


def test_the_dense_stack_casts_each_block_into_its_columns_exactly_as_one_concatenation_would() -> None:
    import scipy.sparse as sp

    from loopml.features.pipeline import FeaturePipeline

    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(50, 3)), np.array([[1e300], [-1e300]] * 25), sp.random(50, 4, density=0.3, random_state=0),
              rng.integers(0, 5, size=(50, 2)), np.full((50, 1), np.nan)]
    got = FeaturePipeline._stack(blocks, 50)
    with np.errstate(over="ignore"):
        want = np.concatenate([b.toarray() if sp.issparse(b) else b for b in blocks], axis=1).astype(np.float32)
    assert got.dtype == np.float32 and got.shape == (50, 11)
    np.testing.assert_array_equal(got, want)  # ±inf beyond float32, NaN kept
    assert FeaturePipeline._stack([], 7).shape == (7, 0)
