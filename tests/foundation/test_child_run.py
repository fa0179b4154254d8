"""A pipeline run in a fresh child process: its own pid in the run record, every stage's peak, errors as raised."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from loopml.errors import StageError
from loopml.lineage import list_executions
from loopml.pipeline.child import run_pipeline_in_child
from loopml.workspace import Workspace
from loopml.workspace.metadata import runs

SPEC = """\
spec_version: 1
project: {{name: credit}}
task: {{type: binary, target: class, positive_label: bad}}
data:
  sources:
    credit: {{type: csv, path: {csv}}}
training:
  split: {{type: stratified}}
  candidates: [{{type: prior}}, {{type: logistic}}]
evaluation: {{bootstrap_resamples: 20}}
"""


@pytest.fixture
def ws(project: Path, datasets: Path) -> Workspace:
    (project / "loopml.yaml").write_text(SPEC.format(csv=datasets / "german_credit" / "credit-g.csv"))
    return Workspace.open(project)


def test_the_run_happens_in_a_child_process_whose_pid_and_peak_are_recorded(ws: Workspace) -> None:
    with ws.lock() as lock:
        report, child = run_pipeline_in_child(ws, until="train", command="child test", lock_fd=lock.fileno())
    assert report.status == "success"
    assert [o.stage for o in report.outcomes] == ["ingest", "validate", "features", "train"]
    assert all(o.status == "success" and o.outputs for o in report.outcomes)
    assert child.pid != os.getpid() and child.exit_code == 0
    with pytest.raises(ProcessLookupError):  # it ended: its memory went back to the system
        os.kill(child.pid, 0)
    with ws.engine.connect() as conn:
        row = conn.execute(select(runs.c.pid, runs.c.command, runs.c.status).where(runs.c.run_id == report.run_id)).one()
    assert (row.pid, row.command, row.status) == (child.pid, "child test", "success")  # the child ran the Runner
    peaks = {e["stage"]: e["peak_rss_mb"] for e in list_executions(ws, report.run_id, 20)}
    assert set(peaks) == {"ingest", "validate", "features", "train"}
    for stage, peak in peaks.items():
        assert isinstance(peak, float) and peak > 20, stage
        # every stage ran in the child: none peaked above the child's own high-water mark
        assert peak <= child.peak_rss_bytes / 2**20 + 0.1, stage
    assert child.to_json()["peak_rss_mb"] == round(child.peak_rss_bytes / 2**20, 1)


def test_an_error_in_the_child_comes_back_as_the_same_error_with_its_message(ws: Workspace) -> None:
    with ws.lock(), pytest.raises(StageError, match="--until `nope`: no such stage in this pipeline") as info:
        run_pipeline_in_child(ws, until="nope")
    assert info.value.child.exit_code == 1  # type: ignore[attr-defined]
    assert info.value.child.pid != os.getpid()  # type: ignore[attr-defined]


def test_a_failed_stage_in_the_child_is_a_failed_outcome_naming_it(ws: Workspace, project: Path) -> None:
    (project / "loopml.yaml").write_text((project / "loopml.yaml").read_text().replace("target: class", "target: klass"))
    bad = Workspace.open(project)
    with bad.lock():
        report, child = run_pipeline_in_child(bad, until="train")
    assert report.status == "failed" and child.exit_code == 0
    failed = [o for o in report.outcomes if o.status == "failed"]
    assert len(failed) == 1 and "klass" in (failed[0].error or ""), failed
