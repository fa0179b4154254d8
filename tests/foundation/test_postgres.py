"""The metadata database on a real PostgreSQL server (started by the test) behaves like SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopml.lineage import lineage, list_executions
from loopml.pipeline import Runner, pipeline_for
from loopml.spec import parse_spec_text
from loopml.workspace import Workspace
from tests.services import postgres_server


@pytest.mark.service
def test_runner_and_lineage_on_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPML_PLUGINS", "tests.foundation.plugin_stages")
    monkeypatch.setenv("LOOPML_TEST_STAGES", "1")
    with postgres_server() as url:
        spec = parse_spec_text(f"project: {{name: pg}}\nworkspace: {{metadata_url: '{url}'}}\n")
        proj = tmp_path / "proj"
        proj.mkdir()
        ws = Workspace.open(proj, spec)
        assert ws.engine.dialect.name == "postgresql"
        stages = pipeline_for(spec)
        with ws.lock():
            first = Runner(ws, stages, show_progress=False).run()
            second = Runner(ws, stages, show_progress=False).run()
        assert [o.status for o in first.outcomes] == ["success"] * 3
        assert [o.status for o in second.outcomes] == ["cached"] * 3
        gamma = first.outcomes[-1].outputs["count"]
        assert [s.stage for s in lineage(ws, gamma)] == ["gamma", "beta", "alpha"]
        assert len(list_executions(ws)) == 6
        assert not (proj / ".loopml" / "metadata.sqlite").exists()
