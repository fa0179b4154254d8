"""Durations and time windows (``'5m'``, ``'1h'``, ``'1d'``, ``'7d'``)."""

from __future__ import annotations

import datetime as dt
import re

from loopml.errors import SpecError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str, *, field: str = "duration") -> dt.timedelta:
    """Parse ``'30s'``, ``'5m'``, ``'1h'``, ``'1d'`` or ``'2w'`` into a timedelta.

    Examples
    --------
    >>> parse_duration("5m")
    datetime.timedelta(seconds=300)
    """
    m = _RE.match(str(text))
    if not m:
        raise SpecError(
            f"{field}: `{text}` is not a duration (expected a number and a unit s, m, h, d or w, e.g. '5m', '1d')"
        )
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise SpecError(f"{field}: `{text}` must be longer than zero")
    return dt.timedelta(seconds=seconds)


def floor_time(ts: dt.datetime, width: dt.timedelta) -> dt.datetime:
    """Start of the window of length ``width`` (aligned to the Unix epoch) that holds ``ts``."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    w = width.total_seconds()
    secs = (ts - epoch).total_seconds()
    return epoch + dt.timedelta(seconds=(secs // w) * w)


def utcnow() -> dt.datetime:
    """Timezone-aware now in UTC."""
    return dt.datetime.now(dt.UTC)
