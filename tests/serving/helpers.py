"""Test helpers: real LightGBM bundles trained on a sample of the KDD 2012 click log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from loopml.spec import Spec
from loopml.workspace import Workspace

FEATURES = ["impression", "ad_id", "advertiser_id", "depth", "position", "keyword_id", "title_id", "user_id"]


def click_table(datasets: Path, n: int = 6000) -> pa.Table:
    """The first ``n`` rows of the real click log (label `click`), a few ids as strings."""
    t = pacsv.read_csv(datasets / "kdd2012_click_small" / "Click_prediction_small.csv").slice(0, n)
    cols = {c: t.column(c) for c in ["click", *FEATURES]}
    # advertiser as a string category, so the transform has real categorical work to do
    cols["advertiser_id"] = pc.cast(t.column("advertiser_id"), pa.string())
    return pa.table(cols)


def train_bundle(ws: Workspace, table: pa.Table, *, n_estimators: int = 30, seed: int = 0) -> str:
    """Fit a FeaturePipeline + LightGBM on ``table`` and save it as a bundle; returns the digest."""
    from loopml.features import FeaturePipeline
    from loopml.training.bundle import Bundle, make_manifest, save_bundle
    from loopml.training.models.base import make_model

    spec = ws.spec
    y = np.asarray(table.column("click").to_numpy(), dtype=np.float64)
    pipe = FeaturePipeline.from_spec(spec.features, task=spec.task).fit(table, y)
    X = pipe.transform_batch(table)
    model = make_model("lightgbm", task="binary", seed=seed, n_estimators=n_estimators).fit(
        X, y, categorical=pipe.categorical_features
    )
    bundle = Bundle(transform=pipe, model=model, manifest=make_manifest(pipe, model, schema=table.schema))
    return save_bundle(ws, bundle, producer=None)


def constant_bundle(ws: Workspace, table: pa.Table) -> str:
    """A bundle whose model answers the training click rate for every request."""
    from loopml.features import FeaturePipeline
    from loopml.training.bundle import Bundle, make_manifest, save_bundle
    from loopml.training.models.base import make_model

    y = np.asarray(table.column("click").to_numpy(), dtype=np.float64)
    pipe = FeaturePipeline.from_spec(ws.spec.features, task=ws.spec.task).fit(table, y)
    model = make_model("prior", task="binary").fit(pipe.transform_batch(table), y)
    return save_bundle(ws, Bundle(transform=pipe, model=model, manifest=make_manifest(pipe, model, schema=table.schema)),
                       producer=None)


def click_spec() -> Spec:
    """A spec whose task is the click label."""
    return Spec.model_validate({"task": {"type": "binary", "target": "click"}})


def rows_of(table: pa.Table, n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows as request dicts (without the label)."""
    return table.drop_columns(["click"]).slice(0, n).to_pylist()
