"""Signals of a window from a prediction log: the multivariate check inside a monitoring cycle, and
quality per model version."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loopml.monitoring.loop import run_cycle
from loopml.spec import parse_spec_text
from loopml.workspace import Workspace
from tests.monitoring.logdata import feedback_segment, prediction_segment


def _correlated(n: int, rho: float, rng: np.random.Generator) -> pa.Table:
    a, b = rng.normal(size=n), rng.normal(size=n)
    return pa.table({"x": a, "y": rho * a + np.sqrt(1 - rho**2) * b})


def test_cycle_sees_a_joint_shift_through_the_domain_classifier(project: Path) -> None:
    rng = np.random.default_rng(11)
    pq.write_table(_correlated(5000, 0.9, rng), project / "ref.parquet")
    spec = parse_spec_text(
        """
monitoring:
  drift: {reference: ref.parquet, window: 1h, multivariate: true}
  alerts:
    - {name: joint, metric: drift.multivariate.auc, op: ">=", threshold: 0.6, window: 1h}
    - {name: marginal, metric: drift.share, op: ">", threshold: 0.0, window: 1h}
""",
        "loopml.yaml",
    )
    ws = Workspace.open(project, spec)
    now = dt.datetime.now(dt.UTC)
    cur = _correlated(3000, -0.9, rng)  # same marginals, flipped correlation
    score = 1 / (1 + np.exp(-cur.column("x").to_numpy()))
    ts = [now - dt.timedelta(minutes=5)] * 3000
    v1 = prediction_segment(ws.root, cur.slice(0, 1500), score[:1500], ts[:1500], model_version="v1")
    v2 = prediction_segment(ws.root, cur.slice(1500), score[1500:], ts[1500:], model_version="v2")
    y = (rng.uniform(size=3000) < score).astype(float)
    y[1500:] = rng.integers(0, 2, 1500)  # v2's outcomes are unrelated to its scores
    feedback_segment(ws.root, v1 + v2, y, now)

    result = run_cycle(ws, retraining=False)
    sig = result.windows["1h"]
    assert sig.metrics["drift.share"] == 0.0
    assert sig.metrics["drift.multivariate.auc"] > 0.8
    assert sig.drift is not None and sig.drift.multivariate is not None and sig.drift.multivariate.drifted
    fired = {f.rule for f in result.firings}
    assert "joint" in fired and "marginal" not in fired
    # quality is measured per model version: only the overall AUC is in the rule, the split is in the evidence
    assert sig.quality_by_version["v1"]["roc_auc"] > 0.65 > sig.quality_by_version["v2"]["roc_auc"]


def test_multiclass_cbpe_estimates_accuracy_from_confidence(project: Path) -> None:
    """Calibrated on yesterday's labelled predictions; today's harder traffic (lower confidence) has no labels
    yet, and the estimate already shows the accuracy it will have."""
    spec = parse_spec_text(
        "task: {type: multiclass, target: kind}\nmonitoring:\n  drift: {window: 1d}\n", "loopml.yaml"
    )
    ws = Workspace.open(project, spec)
    rng = np.random.default_rng(5)
    now = dt.datetime.now(dt.UTC)

    def traffic(n: int, low: float, high: float, at: dt.datetime) -> tuple[list[str], np.ndarray, np.ndarray]:
        conf = rng.uniform(low, high, n)
        pred = rng.integers(0, 3, n).astype(float)
        right = rng.uniform(size=n) < conf
        label = np.where(right, pred, (pred + rng.integers(1, 3, n)) % 3)
        inputs = pa.table({"x": rng.normal(size=n)})
        rids = prediction_segment(ws.root, inputs, conf, [at] * n, threshold=None)
        # the logged prediction is the class; the writer logged the score there, so rewrite it as the class
        seg = sorted((ws.root / "logs" / "predictions").glob("*.parquet"))[-1]
        t = pq.read_table(seg)
        pq.write_table(t.set_column(t.column_names.index("prediction"), "prediction", pa.array(pred)), seg)
        return rids, label, pred

    old, y_old, _ = traffic(4000, 0.34, 1.0, now - dt.timedelta(days=1, hours=2))
    feedback_segment(ws.root, old, y_old, now - dt.timedelta(hours=20))
    _, y_new, p_new = traffic(3000, 0.34, 0.7, now - dt.timedelta(minutes=10))  # no labels yet
    sig = run_cycle(ws, retraining=False).windows["1d"]
    assert "quality.accuracy" not in sig.metrics  # nothing labelled today
    assert sig.metrics["cbpe.accuracy"] == pytest.approx(0.52, abs=0.03)  # the mean confidence of today's traffic
    assert sig.metrics["cbpe.accuracy"] < 0.6
    # and it is what the labels will say when they arrive
    assert sig.metrics["cbpe.accuracy"] == pytest.approx(float(np.mean(y_new == p_new)), abs=0.03)


def test_a_cycle_says_when_served_rows_are_still_in_the_journal(project: Path) -> None:
    from loopml.serving.journal import Journal, JournalWriter
    from loopml.serving.logs import now_us, prediction_log_dir
    from loopml.serving.schema import InputSchema

    spec = parse_spec_text("monitoring:\n  drift: {window: 1h}\n", "loopml.yaml")
    ws = Workspace.open(project, spec)
    schema = InputSchema.from_mapping({"x": "float64"})
    journal = Journal(prediction_log_dir(ws.root), "predictions", writer=False)
    for i in range(50):
        journal.append((f"r{i}", now_us(), "v1", "production", 0.5, 1.0, {"x": float(i)}, schema))
    journal.flush()
    notes = run_cycle(ws, retraining=False).notes
    assert any("still in the service's journal" in n and "60 s" in n for n in notes), notes
    journal.close()
    JournalWriter(prediction_log_dir(ws.root), "predictions").pass_once()
    assert not any("journal" in n for n in run_cycle(ws, retraining=False).notes)
