"""Helpers shared by the data and validation tests: projects from YAML text, running stages."""

from __future__ import annotations

from pathlib import Path

from loopml.pipeline import Runner, RunReport
from loopml.spec import parse_spec_text
from loopml.workspace import Workspace


def make_ws(project: Path, spec_yaml: str) -> Workspace:
    """Write ``loopml.yaml`` into ``project`` and open its workspace."""
    (project / "loopml.yaml").write_text(spec_yaml, encoding="utf-8")
    return Workspace.open(project, parse_spec_text(spec_yaml))


def run_stages(ws: Workspace, until: str = "validate", force: bool = False) -> RunReport:
    """Run ingest (and validate) under the workspace lock."""
    from loopml.data.stages import IngestStage
    from loopml.validation.stages import ValidateStage

    stages = [IngestStage(ws.spec), ValidateStage(ws.spec)]
    with ws.lock():
        return Runner(ws, stages, show_progress=False).run(until=until, force=force)
