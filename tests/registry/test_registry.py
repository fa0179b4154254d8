"""The registry on a real workspace (SQLite metadata, artifact store)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from loopml.errors import GateFailed, LoopMLError, NotFound
from loopml.pipeline.stage import StageContext
from loopml.registry import IllegalTransition, Registry
from loopml.registry.stages import RegisterStage
from loopml.workspace import Workspace

PASSED = {"approved": True, "gates": [{"gate": "roc_auc >= 0.6", "passed": True, "evidence": {"roc_auc": 0.7}}]}
FAILED = {"approved": False, "gates": [{"gate": "roc_auc >= 0.9", "passed": False, "evidence": {"roc_auc": 0.7}}]}


@pytest.fixture
def ws(project: Path) -> Workspace:
    return Workspace.open(project)


def _bundle(ws: Workspace, tag: str) -> str:
    return ws.put_artifact_bytes(json.dumps({"format": "test", "tag": tag}).encode(), kind="bundle", name=tag)


def test_register_creates_numbered_candidates_with_a_recorded_transition(ws: Workspace) -> None:
    reg = Registry(ws)
    v1 = reg.register(_bundle(ws, "a"), verdict=PASSED, lineage={"data_snapshot": "abc"}, actor="ci")
    v2 = reg.register(_bundle(ws, "b"), verdict=FAILED, lineage={})
    assert (v1.version_id, v2.version_id) == ("v1", "v2")
    assert v1.state == v2.state == "candidate"
    assert v1.approved and not v2.approved
    assert reg.get("1").lineage == {"data_snapshot": "abc"}
    first = reg.history("v1")[0]
    assert (first.from_state, first.to_state, first.actor) == (None, "candidate", "ci")


def test_registering_the_same_bundle_twice_gives_the_same_version(ws: Workspace) -> None:
    reg = Registry(ws)
    d = _bundle(ws, "a")
    assert reg.register(d, verdict=PASSED, lineage={}).version_id == reg.register(d, verdict=PASSED, lineage={}).version_id
    assert len(reg.list()) == 1


def test_register_refuses_a_missing_bundle(ws: Workspace) -> None:
    with pytest.raises(NotFound, match="not in the artifact store"):
        Registry(ws).register("0" * 64, verdict=PASSED, lineage={})


def test_promotion_archives_the_previous_production_version(ws: Workspace) -> None:
    reg = Registry(ws)
    reg.register(_bundle(ws, "a"), verdict=PASSED, lineage={})
    reg.register(_bundle(ws, "b"), verdict=PASSED, lineage={})
    reg.promote("v1", actor="alice", reason="first")
    reg.promote("v2", actor="bob", reason="better auc")
    assert reg.production().version_id == "v2"  # type: ignore[union-attr]
    assert reg.get("v1").state == "archived"
    moved = [(t.version_id, t.from_state, t.to_state, t.actor) for t in reg.history()][2:]
    assert moved == [("v1", "candidate", "production", "alice"), ("v1", "production", "archived", "bob"),
                     ("v2", "candidate", "production", "bob")]
    assert "replaced by v2" in reg.history("v1")[-1].reason


def test_failed_gates_block_promotion_unless_forced_and_the_force_is_recorded(ws: Workspace) -> None:
    reg = Registry(ws)
    reg.register(_bundle(ws, "a"), verdict=FAILED, lineage={})
    with pytest.raises(GateFailed, match=r"roc_auc >= 0.9") as exc:
        reg.promote("v1", reason="ship it")
    assert exc.value.status == 412
    for state in ("shadow", "canary"):
        with pytest.raises(GateFailed):
            reg.transition("v1", state, reason="try")
    with pytest.raises(LoopMLError, match="needs a reason"):
        reg.promote("v1", reason="  ", force=True)
    v = reg.promote("v1", reason="hotfix approved by on-call", force=True, actor="carol")
    assert v.state == "production"
    last = reg.history("v1")[-1]
    assert last.forced and last.actor == "carol" and last.reason == "hotfix approved by on-call"


def test_illegal_transitions_are_refused_and_leave_state_unchanged(ws: Workspace) -> None:
    reg = Registry(ws)
    reg.register(_bundle(ws, "a"), verdict=PASSED, lineage={})
    reg.transition("v1", "archived", reason="abandoned")
    with pytest.raises(IllegalTransition, match="from archived to canary"):
        reg.transition("v1", "canary", reason="retry")
    with pytest.raises(IllegalTransition, match="already in archived"):
        reg.transition("v1", "archived", reason="again")
    assert reg.get("v1").state == "archived"
    assert len(reg.history("v1")) == 2


def test_history_answers_which_version_served_when_and_rollback_restores(ws: Workspace) -> None:
    reg = Registry(ws)
    for tag in "abc":
        reg.register(_bundle(ws, tag), verdict=PASSED, lineage={})
    reg.promote("v1", reason="r1")
    time.sleep(0.02)
    t_mid_v1 = dt.datetime.now(dt.UTC)
    time.sleep(0.02)
    reg.promote("v2", reason="r2")
    time.sleep(0.02)
    t_mid_v2 = dt.datetime.now(dt.UTC)
    assert reg.serving_at(t_mid_v1).version_id == "v1"  # type: ignore[union-attr]
    assert reg.serving_at(t_mid_v2).version_id == "v2"  # type: ignore[union-attr]
    assert reg.serving_at(t_mid_v1 - dt.timedelta(days=1)) is None
    back = reg.rollback(reason="v2 regressed CTR", actor="dave")
    assert back.version_id == "v1" and reg.get("v2").state == "archived"
    periods = [(p.version_id, p.until is None) for p in reg.serving_periods()]
    assert periods == [("v1", False), ("v2", False), ("v1", True)]
    assert "rollback from v2" in reg.history("v1")[-1].reason


def test_rollback_without_a_previous_version_is_a_clear_error(ws: Workspace) -> None:
    reg = Registry(ws)
    with pytest.raises(NotFound, match="nothing to roll back"):
        reg.rollback(reason="x")
    reg.register(_bundle(ws, "a"), verdict=PASSED, lineage={})
    reg.promote("v1", reason="first")
    with pytest.raises(NotFound, match="first version to serve"):
        reg.rollback(reason="x")


def test_unknown_version_names_the_known_ones(ws: Workspace) -> None:
    reg = Registry(ws)
    reg.register(_bundle(ws, "a"), verdict=PASSED, lineage={})
    with pytest.raises(NotFound, match=r"`v9` not found \(versions: v1\)"):
        reg.get("v9")


def test_register_stage_records_verdict_and_lineage_and_promotes_the_first_approved(ws: Workspace) -> None:
    bundle = ws.put_artifact_bytes(json.dumps({"task": "binary", "model_type": "lightgbm"}).encode(), kind="bundle", name="b")
    report = ws.put_artifact_bytes(json.dumps({**PASSED, "metrics": {"roc_auc": 0.71}}).encode(), kind="json", name="report")
    ctx = StageContext(workspace=ws, execution_id="exec1", inputs={"train": {"bundle": bundle}, "evaluate": {"report": report}},
                       show_progress=False)
    result = RegisterStage(ws.spec).run(ctx)
    out = json.loads(ws.artifacts.get_bytes(result.outputs["version"]))
    assert out == {"version_id": "v1", "state": "production", "approved": True, "bundle": bundle, "promoted": True}
    v = Registry(ws).get("v1")
    assert v.verdict["gates"][0]["gate"] == "roc_auc >= 0.6"
    assert v.lineage["bundle"] == bundle and v.lineage["evaluation_report"] == report
    assert "feature_set" in v.lineage
    assert v.meta["metrics"] == {"roc_auc": 0.71} and v.meta["model_type"] == "lightgbm"
    # a second, failed model is registered but stays a candidate
    bundle2 = ws.put_artifact_bytes(b'{"task": "binary"}', kind="bundle", name="b2")
    report2 = ws.put_artifact_bytes(json.dumps(FAILED).encode(), kind="json", name="report2")
    ctx2 = StageContext(workspace=ws, execution_id="exec2", inputs={"train": {"bundle": bundle2}, "evaluate": {"report": report2}},
                        show_progress=False)
    assert RegisterStage(ws.spec).run(ctx2).summary["state"] == "candidate"
    assert Registry(ws).production().version_id == "v1"  # type: ignore[union-attr]
