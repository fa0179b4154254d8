"""Date and time parts of a timestamp, with cyclical (sin/cos) encodings of the periodic parts.

The calendar arithmetic is written once with ``//`` and ``%`` so the very same function runs
on a Python int (one row) and on an int64 array (a batch); sin/cos come from tables computed
once, so both paths read identical values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from loopml.features.transforms.base import COLUMNS, TIMESTAMP, Transform, register_transform
from loopml.spec.features import DateParts

PERIODS = {"month": 12, "day": 31, "dayofweek": 7, "hour": 24, "minute": 60}
OFFSETS = {"month": 1, "day": 1, "dayofweek": 0, "hour": 0, "minute": 0}
_TABLES = {
    p: (np.sin(2 * np.pi * np.arange(n) / n).tolist(), np.cos(2 * np.pi * np.arange(n) / n).tolist())
    for p, n in PERIODS.items()
}


def calendar(seconds: Any) -> dict[str, Any]:
    """Year, month, day, dayofweek (Monday=0), hour, minute of epoch seconds (int or int64 array, UTC)."""
    days = seconds // 86400
    sod = seconds - days * 86400
    # civil_from_days (H. Hinnant): proleptic Gregorian calendar from days since 1970-01-01
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 - 12 * (mp // 10)
    year = yoe + era * 400 + (month <= 2)
    return {
        "year": year,
        "month": month,
        "day": day,
        "dayofweek": (days + 3) % 7,
        "hour": sod // 3600,
        "minute": (sod % 3600) // 60,
    }


@register_transform
class DatePartsTransform(Transform):
    """Calendar parts of a timestamp; periodic parts as sin/cos pairs when ``cyclical``."""

    name = "date_parts"
    example_kind = "timestamp"
    Config = DateParts
    accepts = frozenset({TIMESTAMP})
    produces = COLUMNS
    on_missing = "every output column is NaN"
    config: DateParts

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        return None

    def _layout(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for p in self.config.parts:
            if self.config.cyclical and p in PERIODS:
                out += [(p, "sin"), (p, "cos")]
            else:
                out.append((p, "raw"))
        return out

    def output_names(self, base: str) -> list[str]:
        return [f"{base}__{p}" if enc == "raw" else f"{base}__{p}_{enc}" for p, enc in self._layout()]

    def transform(self, values: Any) -> Any:
        self.check_fitted()
        miss = np.isnan(values)
        secs = np.floor(np.where(miss, 0.0, values)).astype(np.int64)
        cal = calendar(secs)
        cols = []
        for p, enc in self._layout():
            v = cal[p]
            if enc == "raw":
                cols.append(np.asarray(v, dtype=np.float64))
            else:
                table = np.asarray(_TABLES[p][0 if enc == "sin" else 1])
                cols.append(table[np.asarray(v) - OFFSETS[p]])
        out = np.stack(cols, axis=1) if cols else np.zeros((len(values), 0))
        out[miss] = np.nan
        return out

    def row_fn(self) -> Callable[[Any], Any]:
        self.check_fitted()
        layout = [(p, enc, _TABLES[p][0 if enc == "sin" else 1] if enc != "raw" else None, OFFSETS.get(p, 0))
                  for p, enc in self._layout()]
        nan_row = tuple(float("nan") for _ in layout)
        floor = math.floor

        def f(x: float) -> tuple[float, ...]:
            if x != x:
                return nan_row
            cal = calendar(floor(x))
            return tuple(float(cal[p]) if table is None else table[cal[p] - off] for p, _, table, off in layout)
        return f

    def stats(self) -> dict[str, Any]:
        return {"parts": list(self.config.parts), "cyclical": self.config.cyclical}
