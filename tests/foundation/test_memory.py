"""Stage memory: every stage's peak RSS in the run record, and the spec's cap enforced early and while running."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from loopml.errors import StageError
from loopml.pipeline.resources import MB, MemoryWatch, current_rss
from tests.conftest import run_cli

SPEC = """\
spec_version: 1
project: {{name: credit}}
requirements:
  scale: {scale}
task: {{type: binary, target: class, positive_label: bad}}
data:
  sources:
    credit: {{type: csv, path: {csv}}}
training:
  split: {{type: stratified}}
  candidates: [{{type: prior}}, {{type: logistic}}]
evaluation: {{bootstrap_resamples: 20}}
"""


def _project(path: Path, datasets: Path, scale: str) -> Path:
    path.mkdir(exist_ok=True)
    (path / "loopml.yaml").write_text(SPEC.format(scale=scale, csv=datasets / "german_credit" / "credit-g.csv"))
    return path


def _executions(proj: Path) -> list[dict[str, object]]:
    proc = run_cli("runs", "-p", str(proj), "--json", "--limit", "50")
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout)["executions"])


def test_a_memory_cap_that_cannot_hold_fails_early_naming_the_stage_and_the_cap(
    tmp_path: Path, datasets: Path
) -> None:
    proj = _project(tmp_path / "capped", datasets, "{stage_memory_mb: {train: 0.05}}")
    proc = run_cli("run", "-q", "-p", str(proj))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "stage `train`" in out and "memory cap 0.05 MB (requirements.scale.stage_memory_mb.train)" in out
    assert "cannot hold" in out and "the stage was not started" in out
    # the estimate comes from the input table's rows and columns (its Parquet footer), before loading it
    assert "its input features.table (1,000 rows × 21 columns" in out
    assert "Traceback" not in out

    rows = {e["stage"]: e for e in _executions(proj)}
    for stage in ("ingest", "validate", "features"):  # uncapped stages ran, each with its peak recorded
        assert rows[stage]["status"] == "success"
        assert isinstance(rows[stage]["peak_rss_mb"], float) and rows[stage]["peak_rss_mb"] > 20
        assert rows[stage]["memory_cap_mb"] is None
    train = rows["train"]
    assert train["status"] == "failed" and train["memory_cap_mb"] == 0.05
    assert train["outputs"] is None  # nothing was trained
    assert "evaluate" not in rows

    table = run_cli("runs", "-p", str(proj), "--run", str(train["run_id"]))
    assert table.returncode == 0 and "peak MB" in table.stdout and "cap 0" in table.stdout


def test_every_stage_runs_under_a_cap_that_holds_and_reports_its_peak(tmp_path: Path, datasets: Path) -> None:
    proj = _project(tmp_path / "roomy", datasets, "{max_stage_memory_mb: 8000}")
    proc = run_cli("run", "-q", "-p", str(proj))
    assert proc.returncode == 0, proc.stderr
    rows = _executions(proj)
    assert {e["stage"] for e in rows} >= {"ingest", "validate", "features", "train", "evaluate", "register"}
    for e in rows:
        assert e["status"] == "success"
        assert isinstance(e["peak_rss_mb"], float) and 20 < e["peak_rss_mb"] < 8000
        assert e["memory_cap_mb"] == 8000
    again = run_cli("run", "-q", "-p", str(proj))  # cache hits did not run: no peak of their own
    assert again.returncode == 0, again.stderr
    hits = [e for e in _executions(proj) if e["status"] == "cached"]
    assert hits and all(e["peak_rss_mb"] is None for e in hits)


def test_a_cap_for_a_stage_the_pipeline_lacks_is_refused(tmp_path: Path, datasets: Path) -> None:
    proj = _project(tmp_path / "typo", datasets, "{stage_memory_mb: {trian: 100}}")
    proc = run_cli("run", "-q", "-p", str(proj))
    assert proc.returncode != 0
    assert "requirements.scale.stage_memory_mb: no stage `trian`" in proc.stdout + proc.stderr
    assert "train" in proc.stdout + proc.stderr


def test_the_watch_stops_a_stage_that_crosses_its_cap_while_running() -> None:
    cap = current_rss() + 200 * MB
    held: list[np.ndarray] = []
    with pytest.raises(StageError) as info, MemoryWatch("train", cap, "requirements.scale.max_stage_memory_mb"):
        for _ in range(30):  # up to 1.2 GB if nothing stopped it
            try:
                held.append(np.ones(40 * MB // 8))  # 40 MB, touched (above glibc's mmap threshold: fresh pages)
                for _ in range(50):  # Python instructions where the watch's exception lands
                    sum(range(2000))
            except Exception:  # a stage's broad handler does not swallow the cap
                pass
    message = str(info.value)
    assert "stage `train`" in message and "requirements.scale.max_stage_memory_mb" in message
    assert "was exceeded while it ran" in message
    assert 4 <= len(held) < 30  # it ran up to the cap (5 x 40 MB; the 5th may not be kept yet), then was stopped
    assert getattr(info.value, "peak_rss_bytes", 0) > cap
    held.clear()


def test_the_watch_measures_the_peak_of_its_stage() -> None:
    with MemoryWatch("features") as watch:
        block = np.ones(64 * MB // 8)  # 64 MB, touched
        time.sleep(0.3)  # held across samples (when an earlier test set the process's high-water mark higher)
        del block
    assert watch.peak_bytes is not None and watch.peak_bytes >= watch.start_bytes + 60 * MB
    assert watch.cap_bytes is None
