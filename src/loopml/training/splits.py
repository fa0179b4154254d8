"""Train / validation / test splits: random, stratified, time-based, group-based and given by a column.

Every split is a deterministic function of the table, the spec and the seed, returning
row indices (sorted) for ``train``, ``valid`` and ``test``.

>>> import numpy as np, pyarrow as pa
>>> from loopml.spec.training import Split
>>> from loopml.spec.task import Task
>>> t = pa.table({"label": [0, 1] * 50})
>>> parts = split_indices(t, Split(type="stratified"), Task(), seed=0)
>>> [len(parts[k]) for k in ("train", "valid", "test")]
[70, 15, 15]
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopml.errors import DataError, SpecError
from loopml.spec.task import Task
from loopml.spec.training import Split

SPLITS = ("train", "valid", "test")


def _sizes(n: int, split: Split) -> tuple[int, int]:
    n_test = round(n * split.test_fraction)
    n_valid = round(n * split.valid_fraction)
    if split.valid_fraction + split.test_fraction >= 1:
        raise SpecError(
            f"training.split: valid_fraction + test_fraction = {split.valid_fraction + split.test_fraction:g}; "
            "it must be below 1 to leave rows for training"
        )
    return n_valid, n_test


def _finish(order: np.ndarray, n_valid: int, n_test: int) -> dict[str, np.ndarray]:
    n = len(order)
    test = order[: n_test]
    valid = order[n_test : n_test + n_valid]
    train = order[n_test + n_valid : n]
    return {"train": np.sort(train), "valid": np.sort(valid), "test": np.sort(test)}


def random_split(n: int, split: Split, seed: int) -> dict[str, np.ndarray]:
    """Rows shuffled and cut by the fractions."""
    n_valid, n_test = _sizes(n, split)
    return _finish(np.random.default_rng(seed).permutation(n), n_valid, n_test)


def stratified_split(strata: np.ndarray, split: Split, seed: int) -> dict[str, np.ndarray]:
    """Each stratum (class, or quantile bin of a numeric target) cut by the same fractions."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in SPLITS}
    levels, counts = np.unique(strata, return_counts=True)
    n_valid_all, n_test_all = _sizes(len(strata), split)

    def allocate(total: int, frac: float) -> np.ndarray:
        # largest remainder: per-stratum counts that add up to the global count
        want = counts * frac
        base = np.floor(want).astype(np.int64)
        extra = total - int(base.sum())
        if extra > 0:
            base[np.argsort(-(want - base), kind="stable")[:extra]] += 1
        return np.asarray(base, dtype=np.int64)

    tests, valids = allocate(n_test_all, split.test_fraction), allocate(n_valid_all, split.valid_fraction)
    for s, n_test, n_valid in zip(levels, tests, valids):
        rows = np.flatnonzero(strata == s)
        for k, v in _finish(rows[rng.permutation(len(rows))], int(n_valid), int(n_test)).items():
            parts[k].append(v)
    return {k: np.sort(np.concatenate(v)) if v else np.zeros(0, dtype=np.int64) for k, v in parts.items()}


def time_split(times: np.ndarray, split: Split) -> dict[str, np.ndarray]:
    """Train on the past, validate on what follows, test on the most recent rows.

    Rows sharing a timestamp never straddle a boundary: ties go to the later split, so
    every training time is strictly before every validation time, and so on.
    """
    n = len(times)
    n_valid, n_test = _sizes(n, split)
    order = np.argsort(times, kind="stable")
    st = times[order]
    cut_test = n - n_test
    cut_valid = cut_test - n_valid
    # move cuts back to the first row of a tied block
    if 0 < cut_test < n:
        cut_test = int(np.searchsorted(st, st[cut_test], side="left"))
    if 0 < cut_valid < n:
        cut_valid = int(np.searchsorted(st, st[min(cut_valid, n - 1)], side="left"))
    cut_valid = min(cut_valid, cut_test)
    return {
        "train": np.sort(order[:cut_valid]),
        "valid": np.sort(order[cut_valid:cut_test]),
        "test": np.sort(order[cut_test:]),
    }


def group_split(groups: np.ndarray, split: Split, seed: int) -> dict[str, np.ndarray]:
    """Whole groups go to one split (no user in two splits), filled to the row fractions."""
    n = len(groups)
    n_valid, n_test = _sizes(n, split)
    uniq, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    perm = np.random.default_rng(seed).permutation(len(uniq))
    csum = np.cumsum(counts[perm])
    g_test = perm[csum <= n_test] if n_test else perm[:0]
    if n_test and g_test.size == 0:
        g_test = perm[:1]
    rest = perm[len(g_test) :]
    csum2 = np.cumsum(counts[rest])
    g_valid = rest[csum2 <= n_valid] if n_valid else rest[:0]
    if n_valid and g_valid.size == 0 and len(rest) > 1:
        g_valid = rest[:1]
    assign = np.zeros(len(uniq), dtype=np.int64)  # 0 train, 1 valid, 2 test
    assign[g_valid] = 1
    assign[g_test] = 2
    a = assign[inv]
    return {"train": np.flatnonzero(a == 0), "valid": np.flatnonzero(a == 1), "test": np.flatnonzero(a == 2)}


def column_split(values: np.ndarray, split: Split) -> dict[str, np.ndarray]:
    """The data comes split: each row's split is named by a column (``split.values`` maps names to splits).

    Values are compared as text, case-insensitively, surrounding spaces ignored. A value that names no
    split, or a split no row is marked with, is an error naming the column, the values and their counts.
    """
    col = split.column or "?"
    names = {v.strip().lower(): part for part in SPLITS for v in getattr(split.values, part)}
    keys = np.array([str(v).strip().lower() for v in values.tolist()], dtype=str)
    uniq, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    unknown = [(u, int(c)) for u, c in zip(uniq.tolist(), counts.tolist()) if u not in names]
    if unknown:
        first = int(np.flatnonzero(~np.isin(uniq, list(names)))[0])
        row = int(np.flatnonzero(inv == first)[0])
        shown = ", ".join(f"{u!r} ({c} row{'s' if c != 1 else ''})" for u, c in unknown[:8])
        raise DataError(
            f"split column `{col}`: value(s) {shown} name no split (first at row {row}); expected one of "
            + "; ".join(f"{part}: {', '.join(repr(v) for v in getattr(split.values, part))}" for part in SPLITS),
            hint="fix the data, or map the values with training.split.values.{train,valid,test}",
        )
    part_of = np.array([SPLITS.index(names[u]) for u in uniq.tolist()], dtype=np.int64)[inv]
    out = {k: np.flatnonzero(part_of == i) for i, k in enumerate(SPLITS)}
    empty = [k for k in SPLITS if out[k].size == 0]
    if empty:
        found = ", ".join(f"{u!r} ({int(c)})" for u, c in zip(uniq.tolist(), counts.tolist()))
        raise DataError(
            f"split column `{col}`: no row is in the {' and '.join(empty)} split (no value "
            + "; ".join(" / ".join(repr(v) for v in getattr(split.values, k)) for k in empty)
            + f"); the column holds {found}",
            hint="every split needs rows: train to fit, valid to select, test to evaluate",
        )
    return out


def fold_ids(y: np.ndarray, group: np.ndarray | None, k: int, seed: int, task: str) -> np.ndarray:
    """Fold number (0..k-1) of every row: whole groups for ranking, stratified by class for classifiers."""
    n = len(y)
    rng = np.random.default_rng(seed)
    fold = np.empty(n, dtype=np.int64)
    if group is not None:
        _, inv = np.unique(group, return_inverse=True)
        fold = (rng.permutation(int(inv.max()) + 1) % k)[inv]
    elif task in ("binary", "multiclass"):
        for c in np.unique(y):
            rows = np.flatnonzero(y == c)
            fold[rows[rng.permutation(len(rows))]] = np.arange(len(rows)) % k
    else:
        fold = rng.permutation(n) % k
    return fold


def _numeric_column(table: pa.Table, name: str, field: str) -> np.ndarray:
    if name not in table.column_names:
        raise SpecError(
            f"training.split.{field}: column `{name}` is not in the table "
            f"(columns: {', '.join(table.column_names[:30])})"
        )
    col = table.column(name)
    nulls = int(pc.sum(pc.is_null(col, nan_is_null=True)).as_py() or 0)
    if nulls:
        raise DataError(f"split column `{name}` has {nulls} missing value(s); every row needs one to be placed")
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        col = pc.cast(col, pa.timestamp("us")) if pa.types.is_date(col.type) else col
        return np.asarray(col.to_numpy(zero_copy_only=False)).astype("datetime64[us]").astype(np.int64)
    return np.asarray(col.to_numpy(zero_copy_only=False))


def split_indices(
    table: pa.Table, split: Split, task: Task, seed: int, y: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Row indices of ``train``, ``valid`` and ``test`` for the spec's split.

    Parameters
    ----------
    table : the example table.
    split : ``spec.training.split``.
    task : ``spec.task`` (target, timestamp and keys supply defaults for the split columns).
    seed : random seed.
    y : encoded labels (stratified split); read from the target column when omitted.
    """
    n = table.num_rows
    if n < 3:
        raise DataError(f"the example table has {n} row(s); at least 3 are needed to split train/valid/test")
    if split.type == "random":
        return random_split(n, split, seed)
    if split.type == "stratified":
        if y is None:
            from loopml.training.labels import encode_labels

            y = encode_labels(table, task).y
        strata = np.asarray(y)
        if task.type in ("regression", "ranking"):
            qs = np.quantile(strata, np.linspace(0, 1, 11)[1:-1])
            strata = np.searchsorted(qs, strata)
        return stratified_split(strata, split, seed)
    if split.type == "column":
        name = split.column or ""
        if name not in table.column_names:
            raise SpecError(
                f"training.split.column: column `{name}` is not in the table "
                f"(columns: {', '.join(table.column_names[:30])})"
            )
        c = table.column(name)
        nulls = int(c.null_count)
        if nulls:
            first = int(np.flatnonzero(np.asarray(pc.is_null(c).to_numpy(zero_copy_only=False)))[0])
            raise DataError(f"split column `{name}` has {nulls} missing value(s) (first at row {first}); every row "
                            "needs train, valid or test")
        return column_split(np.asarray(c.to_numpy(zero_copy_only=False)), split)
    if split.type == "time":
        col = split.time_column or task.timestamp
        if col is None:
            raise SpecError("training.split: a time split needs `time_column` (or task.timestamp)")
        return time_split(_numeric_column(table, col, "time_column"), split)
    col = split.group_column or task.group_key or (task.entity_keys[0] if task.entity_keys else None)
    if col is None:
        raise SpecError("training.split: a group split needs `group_column` (or task.group_key / entity_keys)")
    g = _numeric_column(table, col, "group_column")
    return group_split(np.asarray(g).astype(str) if g.dtype.kind == "O" else g, split, seed)
