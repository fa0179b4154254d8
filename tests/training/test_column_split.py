"""A predefined split: `training.split: {type: column, column: part}` for data that comes split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from loopml.errors import DataError, SpecError
from loopml.spec.task import Task
from loopml.spec.training import Split
from loopml.training.splits import split_indices

TASK = Task(type="binary", target="y")


def _table(parts: list[str | None]) -> pa.Table:
    n = len(parts)
    return pa.table({"x": np.arange(n, dtype=np.float64), "y": np.arange(n) % 2, "part": parts})


def test_rows_go_where_the_column_says() -> None:
    parts = ["train", "TEST", " valid ", "train", "dev", "test", "train"]
    out = split_indices(_table(parts), Split(type="column", column="part"), TASK, seed=0)
    assert out["train"].tolist() == [0, 3, 6]
    assert out["valid"].tolist() == [2, 4]  # `dev` is a default name of the validation split
    assert out["test"].tolist() == [1, 5]
    # the seed changes nothing: the data decides
    again = split_indices(_table(parts), Split(type="column", column="part"), TASK, seed=99)
    assert all(np.array_equal(out[k], again[k]) for k in out)


def test_value_names_are_configurable_and_may_be_numbers() -> None:
    t = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1], "fold": [1, 2, 3, 1]})
    split = Split(type="column", column="fold", values={"train": ["1"], "valid": ["2"], "test": ["3"]})
    out = split_indices(t, split, TASK, seed=0)
    assert out["train"].tolist() == [0, 3] and out["valid"].tolist() == [1] and out["test"].tolist() == [2]


def test_unknown_values_are_named_with_their_count_and_first_row() -> None:
    parts = ["train", "valid", "test", "holdout", "train", "holdout"]
    with pytest.raises(DataError) as err:
        split_indices(_table(parts), Split(type="column", column="part"), TASK, seed=0)
    msg = err.value.message
    assert "split column `part`" in msg and "'holdout' (2 rows)" in msg and "first at row 3" in msg
    assert "'train'" in msg and "'test'" in msg  # what was expected


def test_an_empty_split_is_an_error_naming_it() -> None:
    with pytest.raises(DataError, match=r"no row is in the valid split.*'test' \(1\), 'train' \(2\)"):
        split_indices(_table(["train", "test", "train"]), Split(type="column", column="part"), TASK, seed=0)


def test_missing_column_and_missing_values() -> None:
    with pytest.raises(SpecError, match=r"training\.split\.column: column `nope` is not in the table"):
        split_indices(_table(["train"] * 3), Split(type="column", column="nope"), TASK, seed=0)
    with pytest.raises(DataError, match=r"`part` has 1 missing value\(s\) \(first at row 1\)"):
        split_indices(_table(["train", None, "test", "valid"]), Split(type="column", column="part"), TASK, seed=0)


def test_spec_rules() -> None:
    with pytest.raises(ValidationError, match="needs `column`"):
        Split(type="column")
    with pytest.raises(ValidationError, match="only used by `type: column`"):
        Split(type="random", column="part")
    with pytest.raises(ValidationError, match="names both the train and the test split"):
        Split(type="column", column="part", values={"train": ["a"], "valid": ["b"], "test": ["A"]})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Split(type="column", column="part", values={"training": ["a"]})


SPEC = """\
spec_version: 1
project: {{name: given-split}}
task: {{type: binary, target: y}}
data:
  sources:
    rows: {{type: csv, path: {csv}}}
training:
  split: {{type: column, column: part}}
  candidates: [{{type: prior}}, {{type: logistic}}]
evaluation: {{bootstrap_resamples: 20}}
"""


def _write(proj: Path, parts: list[str]) -> Path:
    rng = np.random.default_rng(0)
    n = len(parts)
    x = rng.normal(size=n)
    y = (x + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    csv = proj / "rows.csv"
    pacsv.write_csv(pa.table({"id": np.arange(n), "x": x, "y": y, "part": parts}), csv)
    (proj / "loopml.yaml").write_text(SPEC.format(csv=csv))
    return csv


def test_loopml_run_uses_the_given_split(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    parts = ["train"] * 200 + ["valid"] * 60 + ["test"] * 40
    np.random.default_rng(1).shuffle(parts)
    _write(project, parts)
    proc = cli("run", "-p", str(project), "--quiet")
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 1: a gate may refuse; the split is the point
    from loopml.lineage import list_executions
    from loopml.workspace import Workspace

    ws = Workspace.open(project)
    train = next(e for e in list_executions(ws) if e["stage"] == "train" and e["status"] == "success")
    outputs = train["outputs"]
    for k, want in (("train", 200), ("valid", 60), ("test", 40)):
        t = pq.read_table(ws.artifacts.open_verified(outputs[k]))
        assert t.num_rows == want
        assert sorted(t.column("id").to_pylist()) == [i for i, p in enumerate(parts) if p == k]
    from loopml.training.bundle import load_bundle

    # the split's name is not a feature of the model (features were inferred from the columns)
    assert load_bundle(ws, outputs["bundle"]).transform.input_columns == ["id", "x"]


def test_loopml_run_names_an_unknown_split_value(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    parts = ["train"] * 20 + ["valid"] * 5 + ["tset"] * 5
    _write(project, parts)
    proc = cli("run", "-p", str(project), "--quiet")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "split column `part`" in out and "'tset' (5 rows)" in out, out
    assert "Traceback" not in out
