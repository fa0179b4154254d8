"""Labels: the target column turned into what models learn from.

binary: 0/1 (``task.positive_label`` names the positive value when labels are not 0/1 or
booleans); multiclass: codes 0..k-1 of the sorted class values; regression: floats;
ranking: graded relevance (floats, non-negative). Rows without a label cannot be learned
from; they are counted and left out of training, never silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopml.errors import DataError
from loopml.spec.task import Task


@dataclass
class Labels:
    """Encoded labels of a table and how to decode them."""

    y: np.ndarray
    labeled: np.ndarray  # bool mask of rows with a label
    classes: list[Any]  # class values by code (classification), empty otherwise


def _column(table: pa.Table, name: str, what: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise DataError(
            f"{what} column `{name}` is not in the table (columns: {', '.join(table.column_names[:30])})",
            hint="set task.target (or the split/sampling column) to an existing column",
        )
    return table.column(name)


def encode_labels(table: pa.Table, task: Task, classes: list[Any] | None = None) -> Labels:
    """Encode ``task.target`` of ``table``; ``classes`` fixes the class order (from training)."""
    col = _column(table, task.target, "target")
    labeled = ~np.asarray(pc.is_null(col, nan_is_null=True).to_numpy(zero_copy_only=False), dtype=bool)
    values = col.to_numpy(zero_copy_only=False)
    if task.type in ("regression", "ranking"):
        try:
            y = np.where(labeled, values, 0).astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(
                f"target `{task.target}` must be numeric for task `{task.type}`, got values like {values[0]!r}"
            ) from None
        if task.type == "ranking" and np.any(y[labeled] < 0):
            bad = y[labeled][y[labeled] < 0][0]
            raise DataError(f"target `{task.target}`: ranking relevance must be >= 0, got {bad}")
        return Labels(y, labeled, [])
    present = values[labeled]
    if task.type == "binary":
        if task.positive_label is not None:
            pos = task.positive_label
            if present.dtype.kind in "biuf" and isinstance(pos, str):
                raise DataError(f"task.positive_label {pos!r} is text but target `{task.target}` is numeric")
            y = np.zeros(len(values), dtype=np.int64)
            y[labeled] = (present == pos).astype(np.int64)
            uniq = np.unique(present.astype(str)) if present.dtype.kind not in "biuf" else np.unique(present)
            neg = [u for u in uniq.tolist() if u != pos]
            return Labels(y, labeled, [neg[0] if len(neg) == 1 else "other", pos])
        uniq = np.unique(present)
        ok = set(uniq.tolist()) <= {0, 1}
        if not ok:
            shown = ", ".join(repr(u) for u in uniq[:5].tolist())
            raise DataError(
                f"target `{task.target}` of a binary task holds {len(uniq)} distinct value(s) ({shown}); "
                "expected 0/1 or booleans",
                hint="set task.positive_label to the value that counts as positive",
            )
        y = np.zeros(len(values), dtype=np.int64)
        y[labeled] = present.astype(np.int64)
        return Labels(y, labeled, [0, 1])
    # multiclass
    if classes is None:
        classes = sorted(np.unique(present).tolist(), key=lambda v: (str(type(v)), v))
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros(len(values), dtype=np.int64)
    unknown = [v for v in np.unique(present).tolist() if v not in index]
    if unknown:
        raise DataError(
            f"target `{task.target}` holds class(es) not seen in training: {', '.join(map(repr, unknown[:5]))}"
        )
    y[labeled] = np.asarray([index[v] for v in present.tolist()], dtype=np.int64)
    return Labels(y, labeled, list(classes))


def group_ids(table: pa.Table, task: Task) -> np.ndarray | None:
    """Integer id of the ranked list (``task.group_key``) each row belongs to, for ranking."""
    if task.type != "ranking":
        return None
    key = task.group_key or (task.entity_keys[0] if task.entity_keys else None)
    if key is None:
        raise DataError("a ranking task needs task.group_key (the query or user each ranked list belongs to)")
    col = _column(table, key, "group")
    _, inv = np.unique(np.asarray(col.to_numpy(zero_copy_only=False)).astype(str), return_inverse=True)
    return inv.astype(np.int64)
