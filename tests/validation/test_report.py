"""Reports: the terminal table lists failing checks first; JSON is complete; HTML is self-contained."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
from rich.console import Console

from loopml.spec.data import Verification
from loopml.validation.profile import profile_table
from loopml.validation.report import checks_table, render_html, write_reports
from loopml.validation.schema import infer_schema
from loopml.validation.validator import validate_table
from tests.webui.conftest import assert_self_contained

REF = pa.table({"k": list(range(200)), "c": ["a", "b"] * 100, "x": [float(i % 17) for i in range(200)]})


def _report():  # type: ignore[no-untyped-def]
    p = profile_table(REF)
    cur = REF.set_column(1, "c", pa.array(["a"] * 150 + ["zzz"] * 50))
    return validate_table(cur, infer_schema(p, unique_keys=["k"]), p, Verification(), snapshot="v9-test").report


def test_terminal_table_failing_first() -> None:
    console = Console(record=True, width=200)
    console.print(checks_table(_report()))
    text = console.export_text()
    lines = [ln for ln in text.splitlines() if "│" in ln and ("FAIL" in ln or " ok " in ln)]
    statuses = ["FAIL" if "FAIL" in ln else "ok" for ln in lines]
    assert statuses[0] == "FAIL" and statuses == sorted(statuses, key=lambda s: s != "FAIL")
    assert "validation of v9-test: FAILED" in text


def test_json_and_html_reports(tmp_path: Path) -> None:
    rep = _report()
    jp, hp = write_reports(rep, tmp_path, "r")
    data = json.loads(jp.read_text())
    assert data["passed"] is False and data["snapshot"] == "v9-test"
    assert data["quarantined_rows"] == 50 and data["counts"]["errors"] >= 1
    assert set(data["profile"]["columns"]) == {"k", "c", "x"}
    html = hp.read_text()
    assert html == render_html(rep)
    assert html.count('<div class="chart" data-spec="validation-hist-') == 3  # one histogram per column
    assert_self_contained(html)
    # failing checks, then the column summaries, then the passing checks folded away
    first_ok = html.index('<td class="ok">ok</td>')
    assert html.index("Failing checks") < html.index('<td class="fail">FAIL</td>') < html.index('id="columns"') < first_ok
    assert html.index("<details>") < first_ok
