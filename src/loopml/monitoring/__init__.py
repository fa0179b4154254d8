"""Monitoring and the closed loop: operations, drift, delayed-label quality, alerts, retraining.

Public API (imported lazily so ``loopml.monitoring.drift`` stays cheap to import):

* :class:`DriftEngine`, :class:`ReferenceProfile`, :class:`DriftReport` (``loopml.monitoring.drift``)
* :func:`run_cycle` (``loopml.monitoring.loop``): one evaluation of every rule, with retraining
* :func:`quality_by_window`, :func:`cbpe_estimate` (``loopml.monitoring.quality``)
* :func:`write_report` (``loopml.monitoring.report``)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DriftEngine": "loopml.monitoring.drift",
    "DriftReport": "loopml.monitoring.drift",
    "ReferenceProfile": "loopml.monitoring.drift",
    "run_cycle": "loopml.monitoring.loop",
    "CycleResult": "loopml.monitoring.loop",
    "quality_by_window": "loopml.monitoring.quality",
    "cbpe_estimate": "loopml.monitoring.quality",
    "write_report": "loopml.monitoring.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'loopml.monitoring' has no attribute {name!r}")
