"""Columnar views of an Arrow table shared by the profile and the row-level checks.

Each column is converted once: numbers and timestamps to a float64 numpy array (timestamps as
epoch seconds) with a validity mask and a sorted copy of the valid values (from which
distinct values, counts and quantiles come without hashing); strings and booleans to
dictionary codes with per-value counts. Everything is vectorised (numpy / Arrow compute).

>>> import pyarrow as pa
>>> cols = Columns(pa.table({"x": [3, None, 1, 3]}))
>>> c = cols.get("x")
>>> c.missing, c.uniques.tolist(), c.counts.tolist()
(1, [1.0, 3.0], [1, 2])
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_UNIT_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}

#: text that reads as a number (Arrow's float parser then converts it): decimals, exponents and the
#: non-finite spellings inf, infinity and nan (any case), after surrounding whitespace is trimmed
NUMBER_TEXT = r"(?i)^[-+]?((\d+\.?\d*|\.\d+)(e[-+]?\d+)?|inf|infinity|nan)$"
#: control bytes that have no business inside a field (tab, newline and carriage return are allowed)
CONTROL_BYTES = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]"


def text_numbers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, True where the text is a number) of a string array, vectorised.

    Numbers that overflow (``1e309``) read as infinite, ``nan`` as NaN; other text and nulls
    give NaN with False.
    """
    trimmed = pc.utf8_trim_whitespace(values)
    is_num = np.asarray(pc.fill_null(pc.match_substring_regex(trimmed, NUMBER_TEXT), False)
                        .to_numpy(zero_copy_only=False), dtype=bool)
    out = np.full(len(values), np.nan)
    if is_num.any():
        idx = np.flatnonzero(is_num)
        out[idx] = pc.cast(trimmed.take(pa.array(idx)), pa.float64()).to_numpy(zero_copy_only=False)
    return out, is_num


def kind_of(t: pa.DataType) -> str:
    """Coarse kind of an Arrow type: numeric, boolean, temporal, string or other."""
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "temporal"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return "string"
    return "other"


def to_seconds(arr: pa.Array) -> np.ndarray:
    """Epoch seconds (float64, NaN for nulls) of a timestamp or date array."""
    t = arr.type
    if pa.types.is_timestamp(t):
        ints = pc.cast(arr, pa.int64())
        factor = _UNIT_S[t.unit]
    elif pa.types.is_date32(t):
        ints = pc.cast(arr, pa.int32())
        factor = 86400.0
    else:  # date64: milliseconds
        ints = pc.cast(arr, pa.int64())
        factor = 1e-3
    out: np.ndarray = ints.to_numpy(zero_copy_only=False).astype(np.float64) * factor
    if arr.null_count:
        out[~arr.is_valid().to_numpy(zero_copy_only=False)] = np.nan
    return out


@dataclass
class ColumnData:
    """One column, converted once."""

    name: str
    array: pa.Array  # or, for numbers and timestamps, the table's pa.ChunkedArray
    kind: str
    n: int
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def valid(self) -> np.ndarray:
        """True where the value is present and usable (not null; a number also not NaN or infinite)."""
        if self.kind in ("numeric", "temporal"):
            return np.asarray(np.isfinite(self.values))
        return self.present

    @cached_property
    def present(self) -> np.ndarray:
        """True where the value is not null (a NaN or infinite number is present)."""
        if self.array.null_count == 0:
            return np.ones(self.n, dtype=bool)
        return np.asarray(self.array.is_valid().to_numpy(zero_copy_only=False))

    @cached_property
    def nonfinite(self) -> np.ndarray:
        """True where a number is present but NaN or infinite (floats only; False elsewhere)."""
        if self.kind != "numeric" or not pa.types.is_floating(self.array.type):
            return np.zeros(self.n, dtype=bool)
        return np.asarray(self.present & ~np.isfinite(self.values))

    @cached_property
    def numbers(self) -> tuple[np.ndarray, np.ndarray]:
        """(float64 values, True where the text is a number) of a string column, over its distinct values."""
        codes, _ = self.codes
        dictionary = self._dictionary
        u_vals, u_num = text_numbers(dictionary)
        safe = np.where(codes >= 0, codes, 0)
        vals = u_vals[safe] if u_vals.size else np.full(self.n, np.nan)
        num = (u_num[safe] & (codes >= 0)) if u_num.size else np.zeros(self.n, dtype=bool)
        return np.where(codes >= 0, vals, np.nan), num

    @property
    def missing(self) -> int:
        """Number of missing values."""
        return int(self.n - self.valid.sum())

    @cached_property
    def values(self) -> np.ndarray:
        """float64 values (NaN for missing) of a numeric or temporal column."""
        arr = self.array
        if self.kind == "temporal":
            return to_seconds(arr)
        if pa.types.is_decimal(arr.type) or pa.types.is_integer(arr.type):
            # beyond 2**53 an integer has no exact float64; the nearest one is what the checks compare
            arr = pc.cast(arr, pa.float64(), safe=False)
        # Arrow turns nulls of a float array into NaN
        out: np.ndarray = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)
        return out

    @cached_property
    def sorted(self) -> np.ndarray:
        """The valid (finite) values, sorted."""
        v = self.values
        return np.sort(v[self.valid]) if self.missing else np.sort(v)

    @cached_property
    def _uniq(self) -> tuple[Any, np.ndarray]:
        if self.kind in ("numeric", "temporal"):
            s = self.sorted
            if s.size == 0:
                return s, np.zeros(0, dtype=np.int64)
            flag = np.empty(s.size, dtype=bool)
            flag[0] = True
            np.not_equal(s[1:], s[:-1], out=flag[1:])
            idx = np.flatnonzero(flag)
            return s[idx], np.diff(np.append(idx, s.size))
        vc = pc.value_counts(self.array)  # hash-based, one pass; nulls come as a null value
        values, counts = vc.field("values"), vc.field("counts")
        keep = values.is_valid()
        return values.filter(keep), np.asarray(counts.filter(keep).to_numpy(zero_copy_only=False), dtype=np.int64)

    @property
    def uniques(self) -> Any:
        """Distinct valid values: a sorted float64 numpy array for numbers, an Arrow array otherwise."""
        return self._uniq[0]

    @property
    def counts(self) -> np.ndarray:
        """Occurrences of each of :attr:`uniques`."""
        return self._uniq[1]

    @cached_property
    def _encoded(self) -> Any:
        arr = self.array
        return arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)

    @property
    def _dictionary(self) -> pa.Array:
        return self._encoded.dictionary

    @cached_property
    def codes(self) -> tuple[np.ndarray, list[Any]]:
        """(int codes with -1 for missing, dictionary values) of a string or boolean column."""
        enc = self._encoded
        codes = enc.indices.to_numpy(zero_copy_only=False)
        codes = np.where(enc.indices.is_valid().to_numpy(zero_copy_only=False), codes, -1).astype(np.int64)
        return codes, enc.dictionary.to_pylist()

    def text_mask(self, pattern: str) -> np.ndarray:
        """True where a string value matches a regex (evaluated once per distinct value; the rows are
        looked up only when some value matches)."""
        values = self.uniques  # shared with the profile
        hit = pc.fill_null(pc.match_substring_regex(values, pattern), False)
        if not pc.any(hit).as_py():
            return np.zeros(self.n, dtype=bool)
        inside = pc.is_in(self.array, value_set=values.filter(hit))
        return np.asarray(pc.fill_null(inside, False).to_numpy(zero_copy_only=False), dtype=bool)

    def quantiles(self, qs: list[float] | tuple[float, ...]) -> list[float]:
        """Linear-interpolated quantiles of the valid values (from the sorted copy)."""
        s = self.sorted
        if s.size == 0:
            return []
        pos = np.asarray(qs) * (s.size - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, s.size - 1)
        frac = pos - lo
        return [float(v) for v in s[lo] * (1 - frac) + s[hi] * frac]


class Columns:
    """Lazily converted columns of one table (thread-safe per column)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._cache: dict[str, ColumnData] = {}
        self._lock = threading.Lock()

    def release_sorted(self) -> None:
        """Free the sorted copies (the profile needs them; the row-level checks do not)."""
        with self._lock:
            for col in self._cache.values():
                col.__dict__.pop("sorted", None)

    def forget(self, name: str) -> None:
        """Drop the converted column ``name`` (a later :meth:`get` converts it again)."""
        with self._lock:
            self._cache.pop(name, None)

    def get(self, name: str) -> ColumnData:
        """The converted column ``name``."""
        with self._lock:
            if name not in self._cache:
                col = self.table.column(name)
                kind = kind_of(col.type)
                # numbers and timestamps stay in the table's chunks (every use of them reads chunked arrays
                # alike; a combined copy would cost 8 bytes a row per column); text is combined for its codes
                arr: Any = col if kind in ("numeric", "temporal") or not isinstance(col, pa.ChunkedArray) \
                    else col.combine_chunks()
                if pa.types.is_dictionary(arr.type):  # one code path: plain values
                    arr = pc.cast(arr, arr.type.value_type)
                    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
                self._cache[name] = ColumnData(name, arr, kind_of(arr.type), self.table.num_rows)
            return self._cache[name]


__all__ = ["CONTROL_BYTES", "NUMBER_TEXT", "ColumnData", "Columns", "kind_of", "text_numbers", "to_seconds"]
