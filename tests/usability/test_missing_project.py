"""Every command that opens a project refuses a folder that does not exist, names it, and creates nothing there."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

COMMANDS = [
    ["data", "snapshots"], ["data", "quarantine"], ["features", "show"], ["monitor", "drift"],
    ["monitor", "history"], ["evaluate"], ["experiment", "status"], ["export", "--format", "onnx", "-o", "m.onnx"],
    ["predict", "--row", "{}"], ["serve", "--port", "0"], ["models", "list"], ["runs"], ["run"], ["train"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_missing_project_folder_is_refused_and_nothing_is_created(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "no-such-project"
    p = run_cli(*command, "-p", str(missing), cwd=tmp_path, timeout=120)
    assert p.returncode != 0, p.stdout + p.stderr
    assert "does not exist" in p.stderr and str(missing) in p.stderr.replace("\n", ""), p.stderr
    assert "Traceback" not in p.stderr
    assert not missing.exists(), f"`loopml {' '.join(command)}` created {missing}"
