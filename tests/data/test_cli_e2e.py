"""End to end through the CLI: init a project on a real dataset, ingest + validate, inspect, rerun."""

from __future__ import annotations

import json
from pathlib import Path

DATA_SECTION = """data:
  sources:
    ratings:
      type: csv
      path: {path}
      delimiter: "\\t"
      header: false
      columns: [user_id, item_id, rating, ts]
  labels: {{type: threshold, column: rating, op: ">=", value: 4}}
  verification: {{unique_keys: [user_id, item_id]}}
"""


def test_init_run_inspect_rerun(cli, tmp_path: Path, datasets: Path) -> None:  # type: ignore[no-untyped-def]
    proj = tmp_path / "ml"
    cli("init", str(proj), check=True)
    spec = (proj / "loopml.yaml").read_text()
    assert "data:\n  sources: {}\n" in spec
    spec = spec.replace("data:\n  sources: {}\n", DATA_SECTION.format(path=datasets / "movielens_100k" / "u.data"))
    (proj / "loopml.yaml").write_text(spec)

    first = cli("run", "-p", str(proj), "--until", "validate", "-q", check=True)
    assert "ingest: success" in first.stdout and "validate: success" in first.stdout

    snaps = cli("data", "snapshots", "-p", str(proj), check=True)
    assert "100,000" in snaps.stdout and "full" in snaps.stdout
    listed = [json.loads(line) for line in cli("data", "snapshots", "-p", str(proj), "--json", check=True).stdout.splitlines()]
    assert len(listed) == 1 and listed[0]["row_count"] == 100_000 and listed[0]["kind"] == "full"
    shown = cli("data", "show", "latest", "-p", str(proj), "-n", "2", check=True)
    assert "user_id" in shown.stdout and "label" in shown.stdout and "100,000 rows in total" in shown.stdout
    manifest = json.loads(cli("data", "show", "v1", "-p", str(proj), "--json", check=True).stdout)
    assert manifest["row_count"] == 100_000 and manifest["sources"]["ratings"]["files"][0]["sha256"]

    again = cli("run", "-p", str(proj), "--until", "validate", "-q", check=True)
    assert "ingest: cache hit" in again.stdout and "validate: cache hit" in again.stdout

    prof = cli("data", "profile", "-p", str(proj), check=True)
    assert "rating" in prof.stdout and "100,000 rows" in prof.stdout
    val = cli("data", "validate", "-p", str(proj), check=True)
    assert "PASSED" in val.stdout and ".html" in val.stdout
    assert (proj / "schema.yaml").exists()
    refused = cli("data", "infer-schema", "-p", str(proj))
    assert refused.returncode != 0 and "already exists" in refused.stderr
    cli("data", "infer-schema", "-p", str(proj), "--force", check=True)
    q = cli("data", "quarantine", "-p", str(proj), check=True)
    assert "quarantine is empty" in q.stdout


def test_cli_failure_messages(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proj = tmp_path / "bad"
    proj.mkdir()
    (proj / "loopml.yaml").write_text("data:\n  sources:\n    x: {type: csv, path: x.csv}\n")
    (proj / "x.csv").write_text("a,b\n1,2\n3\n")
    r = cli("run", "-p", str(proj), "--until", "validate", "-q")
    assert r.returncode == 1
    assert "x.csv line 3: malformed line '3'" in r.stderr
    none = cli("data", "show", "latest", "-p", str(proj))
    assert none.returncode == 1 and "snapshot `latest` not found" in none.stderr


def test_run_prints_failing_checks_and_stops(cli, tmp_path: Path, datasets: Path) -> None:  # type: ignore[no-untyped-def]
    proj = tmp_path / "credit"
    proj.mkdir()
    text = (datasets / "german_credit" / "credit-g.csv").read_text()
    (proj / "credit.csv").write_text(text)
    (proj / "loopml.yaml").write_text("data:\n  sources:\n    c: {type: csv, path: credit.csv, quote: \"'\"}\n")
    cli("run", "-p", str(proj), "--until", "validate", "-q", check=True)
    (proj / "credit.csv").write_text(text.replace("radio/tv", "hovercraft"))  # 28% unknown purpose
    r = cli("run", "-p", str(proj), "--until", "validate")
    assert r.returncode == 1
    assert "FAILED" in r.stderr and "purpose" in r.stderr  # the checks table
    flat = " ".join(r.stderr.split())
    assert "credit.csv line 2: 'hovercraft'" in flat  # the first failing value, with its file and line
    assert "1,000 rows read = " in flat  # rows per source file
    assert "validate: failed" in r.stdout and "report: " in r.stderr
    q = cli("data", "quarantine", "-p", str(proj), "--limit", "2", check=True)
    assert "hovercraft" in q.stdout and "complete quarantine files" in q.stdout
