"""The validate stage in the pipeline: schema inference, quarantine, failure with a report, caching."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from loopml.validation.quarantine import list_quarantine, quarantine_counts
from tests.data.helpers import make_ws, run_stages
from tests.webui.conftest import assert_self_contained

SPEC = """
task: {type: binary, target: class}
data:
  sources:
    credit: {type: csv, path: credit.csv, quote: "'"}
  verification: {max_quarantine_rate: 0.05}
"""


def _project(project: Path, datasets: Path) -> None:
    shutil.copy(datasets / "german_credit" / "credit-g.csv", project / "credit.csv")


def test_first_run_infers_schema_then_quarantines_bad_rows(project: Path, datasets: Path, cli) -> None:  # type: ignore[no-untyped-def]
    _project(project, datasets)
    ws = make_ws(project, SPEC)
    first = run_stages(ws)
    assert [o.status for o in first.outcomes] == ["success", "success"]
    v = first.outcomes[1]
    assert v.summary["schema_inferred"] and v.summary["kept_rows"] == 1000
    assert (project / "schema.yaml").exists() and (project / "schema.profile.json").exists()
    assert run_stages(ws).outcomes[1].status == "cached"  # untouched inferred schema keeps the cache
    # new data: two rows with an unknown purpose and a negative age
    text = (project / "credit.csv").read_text().splitlines()
    bad1 = text[1].replace("radio/tv", "spaceship", 1)
    cols = text[2].split(",")
    cols[12] = "-4"
    (project / "credit.csv").write_text("\n".join([*text, bad1, ",".join(cols)]) + "\n")
    second = run_stages(ws)
    assert [o.status for o in second.outcomes] == ["success", "success"]
    s = second.outcomes[1].summary
    assert s["rows"] == 1002 and s["kept_rows"] == 1000 and s["quarantined_rows"] == 2
    kept = pq.read_table(ws.artifacts.open_verified(second.outcomes[1].outputs["table"]))
    assert "spaceship" not in kept.column("purpose").to_pylist() and min(kept.column("age").to_pylist()) >= 19
    counts = {(c, col): n for c, col, n in quarantine_counts(ws)}
    assert counts == {("domain", "purpose"): 1, ("range", "age"): 1}
    rows = list_quarantine(ws, check="range")
    assert rows[0]["value"] == "-4" and rows[0]["row"]["age"] == -4 and rows[0]["row_index"] == 1001
    report = json.loads(ws.artifacts.get_bytes(second.outcomes[1].outputs["report"]))
    assert report["quarantined_rows"] == 2 and report["checks"][0]["passed"] is False  # failing first
    listed = cli("data", "quarantine", "-p", str(project), "--check", "domain", check=True).stdout
    assert "spaceship" in listed and "domain" in listed and "purpose" in listed
    html = ws.artifacts.get_bytes(second.outcomes[1].outputs["html"]).decode()
    assert html.count('data-spec="validation-hist-') == kept.num_columns == 21  # one histogram per column
    assert_self_contained(html)  # nothing fetched
    first_row = html[html.index('<tr><td class="'):][:60]
    assert ">FAIL<" in first_row  # failing checks first


def test_error_stops_the_pipeline_with_report(project: Path, datasets: Path) -> None:
    _project(project, datasets)
    ws = make_ws(project, SPEC)
    run_stages(ws)
    lines = (project / "credit.csv").read_text().splitlines()
    # drop the column `job` everywhere: a missing column is an error
    header = lines[0].split(",")
    j = header.index("job")
    rows = [",".join(c for i, c in enumerate(line.split(",")) if i != j) for line in lines
            if line.count(",") == len(header) - 1]
    (project / "credit.csv").write_text("\n".join(rows) + "\n")
    rep = run_stages(ws)
    assert rep.status == "failed"
    err = rep.outcomes[1].error or ""
    assert "columns[job]: column `job` (string) is missing" in err and "report:" in err
    html_path = Path(err.split("report: ")[1].split()[0])
    assert html_path.exists() and html_path.suffix == ".html"
    data = json.loads(html_path.with_suffix(".json").read_text())
    assert data["passed"] is False and data["counts"]["errors"] >= 1


def _stricter_age(text: str) -> str:
    """The inferred schema with age's minimum raised to 20 (the data's youngest is 19)."""
    return re.sub(r"(age: \{type: int64, nullable: false, max_missing_rate: 0.0, min: )\d+", r"\g<1>20", text)


def test_edited_schema_invalidates_the_cache(project: Path, datasets: Path) -> None:
    _project(project, datasets)
    ws = make_ws(project, SPEC)
    run_stages(ws)
    schema = project / "schema.yaml"
    schema.write_text(_stricter_age(schema.read_text()))
    rep = run_stages(ws)
    assert [o.status for o in rep.outcomes] == ["cached", "success"]
    assert rep.outcomes[1].summary["quarantined_rows"] > 0


def test_revalidating_a_snapshot_replaces_its_quarantine(project: Path, datasets: Path) -> None:
    _project(project, datasets)
    ws = make_ws(project, SPEC)
    run_stages(ws)
    schema = project / "schema.yaml"
    edited = _stricter_age(schema.read_text())
    assert edited != schema.read_text()
    schema.write_text(edited)
    run_stages(ws)
    first = dict(((c, col), n) for c, col, n in quarantine_counts(ws))
    run_stages(ws, force=True)
    assert dict(((c, col), n) for c, col, n in quarantine_counts(ws)) == first and first[("range", "age")] >= 1
