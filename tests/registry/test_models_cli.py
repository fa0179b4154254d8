"""`loopml models ...` end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from loopml.registry import Registry
from loopml.workspace import Workspace

FAILED = {"approved": False, "gates": [{"gate": "roc_auc >= 0.9", "passed": False, "evidence": {}}]}
PASSED = {"approved": True, "gates": [{"gate": "roc_auc >= 0.6", "passed": True, "evidence": {}}]}


def test_models_commands(project: Path, datasets: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from tests.serving.conftest import SPEC
    from tests.serving.helpers import click_table, train_bundle

    (project / "loopml.yaml").write_text(SPEC)
    ws = Workspace.open(project)
    reg = Registry(ws)
    table = click_table(datasets, 2000)
    for seed, (tag, verdict) in enumerate((("a", PASSED), ("b", FAILED))):
        d = train_bundle(ws, table, n_estimators=5, seed=seed)  # real bundles: a promotion loads them first
        reg.register(d, verdict=verdict, lineage={"data_snapshot": f"snap-{tag}"}, meta={"model_type": "lightgbm"})
    p = str(project)

    out = cli("models", "list", "-p", p, check=True).stdout
    assert "v1" in out and "v2" in out and "roc_auc >= 0.9" in out

    r = cli("models", "promote", "v1", "--reason", "first model", "--actor", "alice", "-p", p, check=True)
    assert "v1 is now production" in r.stdout

    refused = cli("models", "promote", "v2", "--reason", "try", "-p", p)
    assert refused.returncode == 1
    assert "did not pass its evaluation gates (roc_auc >= 0.9)" in refused.stderr
    assert "--force" in refused.stderr

    missing_reason = cli("models", "promote", "v2", "-p", p)
    assert missing_reason.returncode != 0 and "reason" in (missing_reason.stderr + missing_reason.stdout)

    forced = cli("models", "promote", "v2", "--reason", "on-call override", "--force", "-p", p, check=True)
    assert "v2 is now production (archived v1)" in forced.stdout

    shown = json.loads(cli("models", "show", "v2", "--json", "-p", p, check=True).stdout)
    assert shown["state"] == "production" and shown["lineage"] == {"data_snapshot": "snap-b"}

    hist = cli("models", "history", "-p", p, check=True).stdout
    assert "served in production" in hist and "on-call override" in hist and "alice" in hist

    back = cli("models", "rollback", "--reason", "bad metrics", "-p", p, check=True)
    assert "v1 is serving again" in back.stdout
    assert Registry(Workspace.open(project)).production().version_id == "v1"  # type: ignore[union-attr]

    at = cli("models", "history", "--at", "2000-01-01T00:00:00", "-p", p, check=True).stdout
    assert "no version was in production" in at
    bad = cli("models", "history", "--at", "yesterday", "-p", p)
    assert bad.returncode == 1 and "not an ISO 8601 time" in bad.stderr
