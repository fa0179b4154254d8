"""Degenerate data through the whole pipeline, through the CLI (`loopml run`): each run ends in a verdict
(approved or not, with a reason) or in one clear, named error — never a traceback, never a crash.

Cases, for binary classification and regression: 20 rows, one class in a split (regression: a constant
target), constant columns, an all-missing column, a single feature, extreme (finite) values.
Budgets are tiny (fixed candidates, 50 bootstrap resamples) so the file stays well under two minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

Rows = list[dict[str, object]]

CANDIDATES = {
    "binary": "[{type: prior}, {type: logistic}, {type: lightgbm, params: {n_estimators: 10, num_leaves: 4}}]",
    "regression": "[{type: mean}, {type: linear}, {type: lightgbm, params: {n_estimators: 10, num_leaves: 4}}]",
}

INPUTS = """
    - {column: a, transforms: [{type: impute}, {type: scale}]}
    - {column: b}
    - {column: c, kind: categorical, transforms: [{type: onehot}]}"""


def _rows(n: int, *, seed: int = 0) -> Rows:
    rng = np.random.default_rng(seed)
    out: Rows = []
    for i in range(n):
        a = float(rng.normal())
        out.append({"a": round(a, 4), "b": int(rng.integers(0, 5)), "c": "xyz"[i % 3],
                    "y": round(2 * a + float(rng.normal()), 4), "label": int(a + rng.normal() > 0)})
    return out


def _twenty(rows: Rows) -> Rows:
    return rows[:20]


def _one_class(rows: Rows) -> Rows:
    # one positive in 60 rows (random split): at least two of train/valid/test hold a single class;
    # for regression the target is constant
    for i, r in enumerate(rows):
        r["label"] = int(i == 7)
        r["y"] = 5.0
    return rows


def _constant(rows: Rows) -> Rows:
    for r in rows:
        r["a"], r["b"], r["c"] = 1.5, 3, "same"
    return rows


def _all_missing(rows: Rows) -> Rows:
    for r in rows:
        r["a"] = None
    return rows


def _extreme(rows: Rows) -> Rows:
    for i, r in enumerate(rows):
        if i % 4 == 0:
            r["a"] = 1e300 if i % 8 == 0 else -1e300
        if i % 5 == 0:
            r["b"] = 10**18
    return rows


CASES: dict[str, tuple[int, Callable[[Rows], Rows], str]] = {
    # name: (rows generated, shaping, features.inputs)
    "twenty_rows": (20, _twenty, INPUTS),
    "one_class_in_a_split": (60, _one_class, INPUTS),
    "constant_columns": (60, _constant, INPUTS),
    "all_missing_column": (60, _all_missing, INPUTS),
    "single_feature": (60, lambda rows: rows, "\n    - {column: b}"),
    "extreme_values": (80, _extreme, INPUTS),
}


def _write_csv(path: Path, rows: Rows) -> None:
    cols = list(rows[0])
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join("" if r[c] is None else repr(r[c]) if isinstance(r[c], float) else str(r[c]) for c in cols))
    path.write_text("\n".join(lines) + "\n")


def _spec(task: str, inputs: str, split: str) -> str:
    target = "label" if task == "binary" else "y"
    other = "y" if task == "binary" else "label"
    return f"""
project: {{name: degenerate}}
task: {{type: {task}, target: {target}}}
data:
  sources:
    d: {{type: csv, path: d.csv}}
  transform: "SELECT * EXCLUDE ({other}) FROM d"
features:
  inputs:{inputs}
training:
  split: {{type: {split}}}
  candidates: {CANDIDATES[task]}
evaluation:
  bootstrap_resamples: 50
"""


@pytest.mark.parametrize("task", ["binary", "regression"])
@pytest.mark.parametrize("case", list(CASES))
def test_degenerate_data_ends_in_a_verdict_or_one_named_error(project: Path, task: str, case: str) -> None:
    n, shape, inputs = CASES[case]
    _write_csv(project / "d.csv", shape(_rows(n)))
    split = "random" if case == "one_class_in_a_split" else ("stratified" if task == "binary" else "random")
    (project / "loopml.yaml").write_text(_spec(task, inputs, split))
    res = run_cli("run", "-q", "-p", str(project), timeout=300)
    out = res.stdout + res.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    assert "crashed" not in out, out  # a crash wrapped by the runner is still a bug to fix
    assert "Warning" not in res.stderr, res.stderr  # e.g. numpy overflow warnings on ±1e300
    if res.returncode == 0:
        verdict = [line for line in res.stdout.splitlines() if line.startswith("verdict: ")]
        assert len(verdict) == 1, res.stdout
        assert verdict[0].startswith(("verdict: APPROVED (", "verdict: NOT APPROVED (")), verdict[0]
        if "NOT APPROVED" in verdict[0]:
            assert verdict[0].split("): ", 1)[1].strip(), verdict[0]  # a reason
        assert (project / ".loopml" / "reports" / "evaluation.html").is_file()
    else:
        assert res.returncode == 1, out
        first = res.stderr.splitlines()[0]
        assert first.startswith("error: stage `"), res.stderr  # names the stage


def test_report_charts_draw_undefined_and_degenerate_values() -> None:
    import json

    from loopml.webui.export import confusion_cells, interval_bars, tojson_safe, xy_chart

    # undefined metrics (None/NaN), one point, a constant series and ±1e300 give strict chart data
    line = xy_chart("t", [("a", [None, 0.5, float("nan")], [0.1, None, 0.2]), ("b", [2.0, 2.0], [3.0, 3.0])])
    assert line["x"] == [0.5, 2.0, 2.0]  # points without an x are left out
    assert line["series"][0]["values"] == [None, None, None] and line["series"][1]["values"] == [None, 3.0, 3.0]
    wide = xy_chart("t", [("c", [-1e300, 1e300], [1e300, float("-inf")])])
    assert wide["series"][0]["values"] == [1e300, None]
    bars = interval_bars("t", ["x", "y", "z"], [None, 0.3, float("inf")], lower=[None, 0.1, float("nan")],
                         upper=[None, 0.5, 1.0])
    assert bars["series"][0]["values"] == [None, 0.3, None] and bars["series"][0]["lower"] == [None, 0.1, None]
    for spec in (line, wide, bars):
        text = str(tojson_safe(spec))
        assert "NaN" not in text and "Infinity" not in text
        json.loads(text)
    cells = confusion_cells({"matrix": [[3, None], [float("nan"), 5]], "labels": [0, 1]})
    assert [[c["value"] for c in row] for row in cells] == [[3, None], [None, 5]]
