"""Signals: every watched metric of one window, in one flat namespace the alert rules refer to.

Metric names::

    drift.share  drift.count  drift.max_psi  drift.max_effect  drift.rows
    drift.feature.<column>.{psi,js,wasserstein,effect,p_value,drifted}
    drift.prediction.{psi,js,wasserstein,effect,drifted}     (the score distribution)
    drift.multivariate.auc                                   (when monitoring.drift.multivariate)
    quality.<metric>  quality.rows                           (labelled rows of the window)
    cbpe.<metric>                                            (estimated, binary tasks)
    labels.new                                               (labels since the last retraining)
    volume.predictions
    ops.requests ops.errors ops.error_rate ops.requests_per_s ops.latency_p50_ms ops.latency_p99_ms
    ops.cpu_percent ops.memory_mb
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from loopml.errors import LoopMLError
from loopml.monitoring import logs
from loopml.monitoring.drift import DriftEngine, DriftReport, ReferenceProfile
from loopml.monitoring.quality import Calibrator, cbpe_from_calibrated, task_metrics
from loopml.workspace import Workspace

PREDICTION = "score"  # the model's score distribution, compared like an input (metrics: drift.prediction.*)
PROFILE_FORMAT = 3  # bump when ReferenceProfile changes: cached profiles on disk are then recomputed


@dataclass
class WindowSignals:
    """The metrics of one window with the evidence behind them."""

    start: dt.datetime
    end: dt.datetime
    metrics: dict[str, float] = field(default_factory=dict)
    drift: DriftReport | None = None
    quality_by_version: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    arms: list[dict[str, Any]] = field(default_factory=list)  #: rollout health per arm (`monitoring.rollout`)


def watched_columns(ws: Workspace, log_columns: list[str], reference_columns: list[str]) -> list[str]:
    """Input columns compared: the spec's list, else log inputs present in the reference minus keys/target/time."""
    spec = ws.spec
    if spec.monitoring.drift.features:
        return list(spec.monitoring.drift.features)
    skip = {spec.task.target, spec.task.timestamp, spec.task.group_key, spec.task.item_key, *spec.task.entity_keys}
    return [c for c in log_columns if c in reference_columns and c not in skip]


def production_bundle(ws: Workspace) -> tuple[Any, str] | None:
    """(bundle, version id) of the production model, when the registry and training packages can load it."""
    try:
        from loopml.registry import Registry
        from loopml.training.bundle import load_bundle
    except ImportError:
        return None
    prod = Registry(ws).production()
    if prod is None:
        return None
    return load_bundle(ws, prod.bundle_digest), prod.version_id


def _profile_cache_key(source: str, columns: list[str], engine: DriftEngine, extra: str) -> str:
    blob = json.dumps(
        [PROFILE_FORMAT, source, columns, engine.categorical, engine.max_int_categories, engine.sample_rows, extra], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class ReferenceCache:
    """The reference and its profile, computed once per (reference content, columns, production model) and
    kept on disk under ``.loopml/monitoring/profiles/``: a check with a cached profile never reads the reference."""

    def __init__(self, ws: Workspace, engine: DriftEngine) -> None:
        self.ws = ws
        self.engine = engine
        self._source: logs.ReferenceSource | None = None
        self._table: pa.Table | None = None
        self.notes: list[str] = []

    def source(self) -> logs.ReferenceSource:
        """Where the reference is."""
        if self._source is None:
            self._source = logs.reference_source(self.ws)
        return self._source

    def column_names(self) -> list[str]:
        """The reference's columns (read from the file footer)."""
        return self.source().column_names(self.ws)

    def table(self) -> tuple[pa.Table, str]:
        """The reference table (read once, verified)."""
        if self._table is None:
            self._table = self.source().read(self.ws)
        return self._table, self.source().label

    def profile(self, columns: list[str]) -> ReferenceProfile:
        """Profile of ``columns`` plus the production model's score distribution on the reference."""
        src = self.source()
        prod_version = ""
        try:
            from loopml.registry import Registry

            prod = Registry(self.ws).production()
            prod_version = prod.version_id if prod else ""
        except ImportError:
            pass
        key = _profile_cache_key(src.key, columns, self.engine, prod_version)
        path = self.ws.root / "monitoring" / "profiles" / f"{key}.json"
        if path.exists():
            return ReferenceProfile.from_json(json.loads(path.read_text()))
        table, label = self.table()
        ref = table.select(columns)
        bundle = None
        if prod_version and self.ws.spec.task.type in ("binary", "regression"):
            try:
                bundle = production_bundle(self.ws)
            except LoopMLError as exc:
                self.notes.append(f"prediction drift skipped: production model cannot be loaded ({exc})")
        if bundle is not None:
            try:
                sample = table if table.num_rows <= 200_000 else table.slice(0, 200_000)
                scores = np.asarray(bundle[0].predict_table(sample), dtype=np.float64).reshape(-1)
                ref_scores = np.full(ref.num_rows, np.nan)
                ref_scores[: len(scores)] = scores
                ref = ref.append_column(PREDICTION, pa.array(ref_scores))
            except Exception as exc:  # a model that cannot score its own training data: say so, keep going
                self.notes.append(f"prediction drift skipped: scoring the reference failed ({exc})")
        profile = self.engine.profile(ref, source=label)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(profile.to_json()))
        tmp.replace(path)
        return profile


def drift_signals(
    ws: Workspace, engine: DriftEngine, cache: ReferenceCache, current: pa.Table, out: WindowSignals
) -> None:
    """Fill the drift metrics of a window."""
    spec = ws.spec.monitoring.drift
    if current.num_rows < spec.min_rows:
        out.notes.append(f"drift not judged: {current.num_rows} logged rows < monitoring.drift.min_rows={spec.min_rows}")
        return
    try:
        ref_columns = cache.column_names()
    except LoopMLError as exc:
        out.notes.append(f"drift not judged: {exc.message}")
        return
    columns = watched_columns(ws, logs.input_columns(current), ref_columns)
    if not columns:
        out.notes.append("drift not judged: the prediction log and the reference share no input column")
        return
    profile = cache.profile(columns)
    out.notes.extend(n for n in cache.notes if n not in out.notes)
    cur = current.select([c for c in columns if c in current.column_names])
    if PREDICTION in profile.columns and "score" in current.column_names:
        cur = cur.append_column(PREDICTION, current.column("score"))
    report = engine.compare(profile, cur)
    if spec.multivariate:
        report.multivariate = engine.domain_classifier(
            cache.table()[0], current, [c for c in columns if c in current.column_names]
        )
        out.metrics["drift.multivariate.auc"] = report.multivariate.auc
    out.drift = report
    inputs = [f for f in report.features if f.name != PREDICTION]
    m = out.metrics
    m["drift.rows"] = float(report.n_current)
    m["drift.count"] = float(sum(f.drifted for f in inputs))
    m["drift.share"] = m["drift.count"] / len(inputs) if inputs else 0.0
    m["drift.max_psi"] = max((f.psi for f in inputs), default=0.0)
    m["drift.max_effect"] = max((f.effect for f in inputs), default=0.0)
    for f in report.features:
        prefix = "drift.prediction" if f.name == PREDICTION else f"drift.feature.{f.name}"
        m[f"{prefix}.psi"] = f.psi
        m[f"{prefix}.js"] = f.js
        m[f"{prefix}.effect"] = f.effect
        m[f"{prefix}.p_value"] = f.p_value
        m[f"{prefix}.drifted"] = float(f.drifted)
        if f.wasserstein is not None:
            m[f"{prefix}.wasserstein"] = f.wasserstein


def _floats(table: pa.Table, name: str) -> np.ndarray:
    import pyarrow.compute as pc

    return np.asarray(pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def quality_signals(ws: Workspace, labelled: pa.Table, out: WindowSignals) -> None:
    """Fill ``quality.*`` from the window's labelled predictions (overall and per model version)."""
    if labelled.num_rows == 0:
        out.notes.append("quality not measured: no labelled predictions in the window yet")
        return
    task = ws.spec.task.type
    y, score = _floats(labelled, "label"), _floats(labelled, "score")
    pred = _floats(labelled, "prediction") if "prediction" in labelled.column_names else score
    out.metrics["quality.rows"] = float(labelled.num_rows)
    for k, v in task_metrics(task, y, score, pred).items():
        out.metrics[f"quality.{k}"] = v
    versions = np.asarray(labelled.column("model_version").to_pylist(), dtype=object)
    for version in sorted({str(x) for x in versions}):
        mask = versions == version
        out.quality_by_version[version] = {"rows": float(mask.sum()), **task_metrics(task, y[mask], score[mask], pred[mask])}


def fit_cbpe_calibrator(ws: Workspace, before: dt.datetime | None) -> tuple[Calibrator, str] | None:
    """Calibrator for CBPE, fitted on a labelled reference the model did not train on.

    The production model's own test split scored by it (as NannyML uses a reference period),
    else the labelled logged predictions made before ``before``.
    """
    multiclass = ws.spec.task.type == "multiclass"
    fitted = None if multiclass else _calibrate_on_test_split(ws)
    if fitted is not None:
        return fitted
    labelled = logs.read_labelled(ws, None, before)
    if labelled.num_rows >= 200:
        y = _floats(labelled, "label")
        if multiclass and "prediction" in labelled.column_names:
            # the score is the model's confidence in its predicted class: calibrate it to P(correct)
            y = (y == _floats(labelled, "prediction")).astype(np.float64)
            target = "correct"
        else:
            target = "positive"
        if 0 < y.sum() < len(y):
            cal = Calibrator(target).fit(_floats(labelled, "score"), y)
            return cal, f"{labelled.num_rows} labelled logged predictions"
    return None


def _calibrate_on_test_split(ws: Workspace) -> tuple[Calibrator, str] | None:
    found = logs.production_output(ws, "test")
    if found is None:
        return None
    try:
        bundle = production_bundle(ws)
    except LoopMLError:
        return None
    if bundle is None:
        return None
    import pyarrow.parquet as pq

    test = pq.read_table(ws.artifacts.open_verified(found[0]))
    target = ws.spec.task.target
    if target not in test.column_names or test.num_rows < 50:
        return None
    try:
        scores = np.asarray(bundle[0].predict_table(test), dtype=np.float64).reshape(-1)
    except Exception:  # a bundle that cannot score its own test split: fall back to the log
        return None
    if ws.spec.task.positive_label is not None:
        raw = np.asarray(test.column(target).to_pylist(), dtype=object)
        y = (raw == ws.spec.task.positive_label).astype(np.float64)
    else:
        y = _floats(test, target)
    if not 0 < (y > 0.5).sum() < len(y):
        return None
    return Calibrator().fit(scores, y), f"test split {found[0][:12]} of {bundle[1]} scored by it"


def cbpe_signals(current: pa.Table, calibrator: Calibrator | None, out: WindowSignals) -> None:
    """Fill ``cbpe.*`` (estimated quality of every prediction in the window)."""
    if calibrator is None or current.num_rows == 0 or "score" not in current.column_names:
        return
    for k, v in cbpe_from_calibrated(calibrator, _floats(current, "score")).items():
        if not math.isnan(v):
            out.metrics[f"cbpe.{k}"] = v
