"""`loopml spec check` (and `loopml run`, which runs the same check first) against a sample of the data:
the target and inputs exist (with suggestions), kinds fit the transforms, the task fits the target."""

from __future__ import annotations

from pathlib import Path

from loopml.lineage import list_executions, list_runs
from loopml.pipeline.preflight import check_against_data
from loopml.spec import parse_spec_text
from loopml.workspace import Workspace
from tests.conftest import run_cli

CSV = "age,city,grade,score,note,label\n" + "".join(
    f"{20 + i},{['Oslo', 'Rome', 'Paris'][i % 3]},{i % 5 + 1},{i * 0.5},{'good day' if i % 2 else 'bad night'},{i % 2}\n"
    for i in range(40)
)

SPEC = """
project: {name: check}
task: {type: binary, target: TARGET}
data:
  sources:
    people: {type: csv, path: people.csv}
features:
  inputs:
    - {column: age, transforms: [{type: scale}]}
    - {column: city, kind: categorical, transforms: [{type: onehot}]}
training:
  candidates: [{type: prior}]
"""


def _project(project: Path, spec: str) -> Path:
    (project / "people.csv").write_text(CSV)
    (project / "loopml.yaml").write_text(spec)
    return project


def test_wrong_target_fails_spec_check_and_run_with_a_suggestion_before_any_stage(project: Path) -> None:
    _project(project, SPEC.replace("TARGET", "lable"))
    checked = run_cli("spec", "check", str(project))
    assert checked.returncode == 2, checked.stdout + checked.stderr
    err = checked.stderr
    assert "task.target: target `lable` is not a column of the example table (did you mean `label`?)" in err, err
    assert "columns: age, city, grade, score, note, label" in err  # the list holds the real target
    assert "loopml.yaml:3:" in err  # the line of task.target in the spec
    assert "Traceback" not in err

    ran = run_cli("run", "-q", "-p", str(project))
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "did you mean `label`?" in ran.stderr and "nothing was run" in ran.stderr
    assert "ingest" not in ran.stdout  # no stage started
    ws = Workspace.open(project)
    assert list_executions(ws) == [] and list_runs(ws, 10) == []
    assert not (project / ".loopml" / "lake" / "snapshots").exists() or not any(
        (project / ".loopml" / "lake" / "snapshots").iterdir()
    )

    # once fixed, the same spec passes the check, says what it looked at, and runs
    (project / "loopml.yaml").write_text(SPEC.replace("TARGET", "label"))
    ok = run_cli("spec", "check", str(project), check=True)
    assert "fits its data (a sample of 40 example rows, 6 columns)" in " ".join(ok.stdout.split())
    assert run_cli("run", "-q", "-p", str(project), "--until", "validate").returncode == 0


def test_kinds_that_do_not_fit_the_transforms_and_a_task_that_does_not_fit_the_target(project: Path) -> None:
    spec = SPEC.replace("TARGET", "grade").replace(
        "    - {column: age, transforms: [{type: scale}]}\n",
        "    - {column: age, kind: text, transforms: [{type: tfidf}]}\n"
        "    - {column: city, name: city_scaled, transforms: [{type: scale}]}\n"
        "    - {column: agge}\n",
    )
    _project(project, spec)
    res = run_cli("spec", "check", str(project))
    assert res.returncode == 2, res.stdout + res.stderr
    err = res.stderr
    assert "4 problem(s) against the data" in err, err
    # binary on a target with 5 values
    assert "task `binary` does not fit target `grade`" in err and "5 distinct value(s)" in err
    # tfidf on a numeric column
    assert "features.inputs[0]: column `age` holds numbers (int64) (e.g. 20)" in err and "`tfidf`" in err
    # scale on a string column
    assert "column `city` holds text (e.g. 'Oslo')" in err and "transform `scale`, which needs numbers" in err
    assert "input `agge` is not a column of the example table (did you mean `age`?)" in err
    # --no-data checks the spec file only
    assert run_cli("spec", "check", str(project), "--no-data").returncode == 0


def test_regression_on_text_and_what_is_not_a_problem(project: Path) -> None:
    base = SPEC.replace("type: binary, target: TARGET", "type: regression, target: note")
    _project(project, base)
    problems = check_against_data(parse_spec_text(base), project).problems
    assert [p.loc for p in problems] == [("task", "type")]
    assert "must be numeric for task `regression`" in problems[0].message and "'bad night'" in problems[0].message

    # numbers with a few odd values are not a kind problem (validation quarantines those rows)
    odd = CSV.replace("\n22,", "\nn/a,", 1)
    (project / "people.csv").write_text(odd)
    spec = parse_spec_text(SPEC.replace("TARGET", "label"))
    assert check_against_data(spec, project).problems == []
    # an input produced by a feature table is not reported missing
    with_table = parse_spec_text(SPEC.replace("TARGET", "label").replace(
        "training:\n",
        "  tables:\n    by_city: {entity: [city], timestamp: ts, aggregations: [{name: city_rate, function: rate, "
        "column: label}]}\ntraining:\n",
    ))
    with_table.features.inputs.append(with_table.features.inputs[0].model_copy(update={"column": "city_rate"}))
    assert check_against_data(with_table, project).problems == []


def test_unreadable_sources_leave_a_note_and_the_error_to_ingest(project: Path) -> None:
    (project / "loopml.yaml").write_text(SPEC.replace("TARGET", "label"))  # people.csv does not exist
    res = run_cli("spec", "check", str(project), check=True)
    assert "note" in res.stdout and "the data was not checked" in res.stdout and "people.csv" in res.stdout
    ran = run_cli("run", "-q", "-p", str(project))
    assert ran.returncode == 1 and "file not found" in ran.stderr and "stage `ingest`" in ran.stderr
