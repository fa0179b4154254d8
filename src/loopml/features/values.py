"""Raw values in, typed values out: the one place that reads a column or a row field.

Both paths (a batch read from an Arrow table, a single value read from a dict) go through
the functions here, so a category, a number or a timestamp means the same thing in training
and in serving. Categories are canonical strings (``5``, ``5.0`` and ``"5"`` are the same
category); a missing category is ``None``; a missing number is NaN.

>>> canon_category(5.0, "x"), canon_category("a", "x"), canon_category(None, "x")
('5', 'a', None)
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopml.errors import DataError

NAN = float("nan")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
ONE_US = dt.timedelta(microseconds=1)


def _bad(column: str, value: Any, expected: str) -> DataError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return DataError(f"column `{column}`: expected {expected}, got {shown} ({type(value).__name__})")


# -- categories --------------------------------------------------------------------------------
def canon_category(value: Any, column: str) -> str | None:
    """Canonical string of a categorical value (``None`` when missing).

    Integers and integral floats become their integer text, so ``7``, ``7.0`` and ``"7"``
    are one category; NaN is missing.
    """
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return None
    if t is bool or isinstance(value, np.bool_):
        return "true" if value else "false"
    if t is int or isinstance(value, np.integer):
        return str(int(value))
    if t is float or isinstance(value, np.floating | Decimal):
        f = float(value)
        if f != f:
            return None
        if f.is_integer() and abs(f) < 1e18:
            return str(int(f))
        return repr(f)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise _bad(column, value, "a category (text or number)")


@dataclass(frozen=True)
class Categorical:
    """A batch of categories as codes into a list of canonical keys (``None`` = missing)."""

    codes: np.ndarray  # int64, one per row
    keys: list[str | None]  # canonical key of each code

    def map(self, fn: Any, dtype: Any = np.float64) -> np.ndarray:
        """Apply a scalar function to each distinct key and gather the results per row."""
        table = np.array([fn(k) for k in self.keys], dtype=dtype) if self.keys else np.zeros(0, dtype=dtype)
        return table[self.codes] if len(self.codes) else np.zeros(0, dtype=dtype)

    def map_keys(self, fn: Any) -> Categorical:
        """A new batch whose keys are ``fn(key)`` (e.g. imputation)."""
        return Categorical(self.codes, [fn(k) for k in self.keys])

    def values(self) -> list[str | None]:
        """The key of every row (for tests and small batches)."""
        return [self.keys[c] for c in self.codes.tolist()]

    def __len__(self) -> int:
        return len(self.codes)


def _column(table: pa.Table, column: str) -> pa.Array:
    if column not in table.column_names:
        raise DataError(
            f"column `{column}` is missing from the input table (columns: {', '.join(table.column_names[:30])})"
        )
    col = table.column(column)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def categorical_batch(table: pa.Table, column: str) -> Categorical:
    """Read a column as categories (vectorised: each distinct value is canonicalised once)."""
    arr = _column(table, column)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_list(arr.type) or pa.types.is_struct(arr.type) or pa.types.is_map(arr.type):
        first = next((v for v in arr.to_pylist() if v is not None), None)
        raise _bad(column, first, "a category (text or number)")
    if pa.types.is_null(arr.type):
        return Categorical(np.zeros(len(arr), dtype=np.int64), [None])
    enc = pc.dictionary_encode(arr)
    keys = [canon_category(v, column) for v in enc.dictionary.to_pylist()]
    idx = enc.indices
    if idx.null_count:
        keys.append(None)
        idx = pc.fill_null(idx, len(keys) - 1)
    codes = np.asarray(idx.to_numpy(zero_copy_only=False), dtype=np.int64)
    return Categorical(codes, keys)


# -- numbers -----------------------------------------------------------------------------------
def to_float(value: Any, column: str) -> float:
    """A number as float (``None``/NaN → NaN, bool → 0/1); text and other types are errors."""
    t = type(value)
    if t is float:
        return value  # type: ignore[no-any-return]
    if t is int:
        return float(value)
    if value is None:
        return NAN
    if t is bool:
        return 1.0 if value else 0.0
    if isinstance(value, np.integer | np.floating | np.bool_ | Decimal):
        return float(value)
    raise _bad(column, value, "a number")


def numeric_batch(table: pa.Table, column: str) -> np.ndarray:
    """Read a column as float64 with NaN for missing; text columns are an error naming a value."""
    arr = _column(table, column)
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if arr.null_count == len(arr):
        return np.full(len(arr), NAN)  # every value missing: the column's type says nothing (CSV infers text)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
            or pa.types.is_decimal(t) or pa.types.is_null(t)):
        first = next((v for v in arr.to_pylist() if v is not None), None)
        raise _bad(column, first, "a number")
    out = pc.cast(arr, pa.float64(), safe=False)
    if out.null_count:
        out = pc.fill_null(out, NAN)
    return np.array(out.to_numpy(zero_copy_only=False), dtype=np.float64, copy=True)


# -- timestamps --------------------------------------------------------------------------------
def to_epoch_seconds(value: Any, column: str) -> float:
    """A timestamp as seconds since 1970-01-01 UTC (naive times are UTC; numbers are epoch seconds)."""
    if value is None:
        return NAN
    t = type(value)
    if t is float or t is int or isinstance(value, np.integer | np.floating):
        return float(value)
    if t is str:
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _bad(column, value, "an ISO 8601 timestamp") from None
    if isinstance(value, np.datetime64):
        value = value.astype("datetime64[us]").astype(dt.datetime)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return float(((value - EPOCH) // ONE_US) / 1e6)
    if isinstance(value, dt.date):
        return float((value - EPOCH.date()).days * 86400)
    raise _bad(column, value, "a timestamp")


def timestamp_batch(table: pa.Table, column: str) -> np.ndarray:
    """Read a timestamp, date, ISO text or epoch-seconds column as float64 epoch seconds."""
    arr = _column(table, column)
    t = arr.type
    if arr.null_count == len(arr):
        return np.full(len(arr), NAN)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        vals = arr.to_pylist()
        return np.array([to_epoch_seconds(v, column) for v in vals], dtype=np.float64)
    if pa.types.is_date(t):
        days = pc.cast(arr.cast(pa.date32()), pa.int32())
        out = np.array(pc.fill_null(pc.cast(days, pa.float64()), NAN).to_numpy(zero_copy_only=False))
        return out * 86400.0
    if pa.types.is_timestamp(t):
        us = pc.cast(arr.cast(pa.timestamp("us", tz=t.tz)), pa.int64())
        f = np.array(pc.fill_null(pc.cast(us, pa.float64()), NAN).to_numpy(zero_copy_only=False))
        return f / 1e6
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return numeric_batch(table, column)
    first = next((v for v in arr.to_pylist() if v is not None), None)
    raise _bad(column, first, "a timestamp")


# -- text and images ---------------------------------------------------------------------------
def to_text(value: Any, column: str) -> str | None:
    """Text value (``None`` when missing)."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, float) and math.isnan(value):
        return None
    raise _bad(column, value, "text")


def text_batch(table: pa.Table, column: str) -> list[str | None]:
    """Read a text column as a list of str/None."""
    arr = _column(table, column)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_null(arr.type)):
        first = next((v for v in arr.to_pylist() if v is not None), None)
        raise _bad(column, first, "text")
    return arr.to_pylist()  # type: ignore[no-any-return]


def to_pixels(value: Any, column: str) -> np.ndarray | None:
    """An image as a flat float64 array of pixel values (list, nested list, array or raw bytes)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return np.frombuffer(bytes(value), dtype=np.uint8).astype(np.float64)
    if isinstance(value, np.ndarray | list | tuple):
        try:
            return np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise _bad(column, value, "an array of pixel values") from None
    raise _bad(column, value, "an array of pixel values")


def pixels_batch(table: pa.Table, column: str) -> list[np.ndarray | None]:
    """Read an image column (list, fixed-size list or binary) as flat float64 arrays."""
    arr = _column(table, column)
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        first = next((v for v in arr.to_pylist() if v is not None), None)
        raise _bad(column, first, "an array of pixel values")
    if not (pa.types.is_binary(t) or pa.types.is_large_binary(t)) and arr.null_count == 0 and len(arr):
        lengths = np.asarray(pc.list_value_length(arr).to_numpy(zero_copy_only=False))
        if (lengths == lengths[0]).all():  # equal sizes: one vectorised copy instead of Python lists
            flat = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
            return list(flat.reshape(len(arr), int(lengths[0])))
    return [to_pixels(v, column) for v in arr.to_pylist()]
