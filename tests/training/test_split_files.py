"""The train stage writes its split files a chunk at a time: the same rows, in the same order, as a ``take``."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import loopml.training.stages as stages
from loopml.spec.task import Task
from loopml.spec.training import Split
from loopml.training.splits import split_indices


@pytest.mark.parametrize("kind", ["random", "stratified"])
def test_chunked_split_files_equal_a_take_of_each_split(
    datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    table = pcsv.read_csv(datasets / "german_credit" / "credit-g.csv")
    parts = split_indices(table, Split(type=kind), Task(type="binary", target="class", positive_label="bad"), 3)
    monkeypatch.setattr(stages, "SPLIT_CHUNK_ROWS", 97)  # many chunks, splits cut across them
    paths = {k: tmp_path / f"{k}.parquet" for k in parts}
    stages.write_splits(table, parts, paths)
    for k, idx in parts.items():
        got = pq.read_table(paths[k])
        assert got.num_rows == len(idx) > 0
        assert got.equals(table.take(pa.array(idx))), k


def test_an_empty_or_unsorted_split_is_written_as_given(tmp_path: Path) -> None:
    table = pa.table({"x": np.arange(50), "s": [f"r{i}" for i in range(50)]})
    parts = {"train": np.arange(0, 50, 2), "valid": np.array([49, 1, 3]), "test": np.array([], dtype=np.int64)}
    paths = {k: tmp_path / f"{k}.parquet" for k in parts}
    stages.write_splits(table, parts, paths)
    assert pq.read_table(paths["valid"]).column("x").to_pylist() == [49, 1, 3]
    empty = pq.read_table(paths["test"])
    assert empty.num_rows == 0 and empty.schema.equals(table.schema)
    assert pq.read_table(paths["train"]).column("s").to_pylist() == [f"r{i}" for i in range(0, 50, 2)]


def test_docstring_examples() -> None:
    result = doctest.testmod(stages, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
