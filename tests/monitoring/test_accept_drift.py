"""A drift-triggered retraining accepts the drift in its own verification, and only then."""

from __future__ import annotations


def test_drift_triggered_retraining_accepts_the_drift_only_then(tmp_path) -> None:
    from loopml.monitoring.retrain import Trigger, _retraining_workspace
    from loopml.spec import parse_spec_text
    from loopml.workspace import Workspace

    ws = Workspace.open(tmp_path, parse_spec_text("data: {verification: {severities: {range: warning}}}\n"))
    drift = Trigger("alert", "alert `d`", {"rule": "d", "metric": "drift.share"})
    quality = Trigger("alert", "alert `q`", {"rule": "q", "metric": "quality.roc_auc"})
    run_ws, accepted = _retraining_workspace(ws, [drift])
    assert run_ws.spec.data.verification.severities == {"range": "warning", "psi": "warning"}
    assert accepted is not None and "`d`" in accepted
    assert ws.spec.data.verification.severities == {"range": "warning"}  # the project's spec is untouched
    assert _retraining_workspace(ws, [quality]) == (ws, None)
    assert _retraining_workspace(ws, [Trigger("schedule", "7d")]) == (ws, None)
    explicit = Workspace.open(tmp_path / "e", parse_spec_text("data: {verification: {severities: {psi: error}}}\n"))
    assert _retraining_workspace(explicit, [drift]) == (explicit, None)  # the user's explicit choice wins
    off = Workspace.open(tmp_path / "o", parse_spec_text("monitoring: {retraining: {accept_drift: false}}\n"))
    assert _retraining_workspace(off, [drift]) == (off, None)
