"""Phase one of a promotion: prove a version can serve before the registry records the transition.

Both ``POST /admin/promote`` and ``loopml models promote`` call :func:`verify_servable` first:
the bundle is loaded (every file's sha256 verified against its manifest) and one smoke
prediction is made. Only if that works does the registry record the transition (phase two), so
a corrupted version never becomes "production" in the registry while the servers keep serving
(or, after a restart, fail to serve) another one.
"""

from __future__ import annotations

import math
from typing import Any

from loopml.errors import LoopMLError, ModelError
from loopml.serving.schema import BOOLEAN, NUMERIC, STRING, InputSchema
from loopml.serving.servable import Servable

#: target states in which a version answers traffic (and must therefore be loadable)
SERVING = ("production", "canary", "shadow")


def smoke_row(schema: InputSchema) -> dict[str, Any]:
    """A row every version of ``schema`` must score: nulls where allowed, else zeros / empty strings."""
    row: dict[str, Any] = {}
    for f in schema.fields:
        if f.nullable:
            row[f.name] = None
        elif f.kind == NUMERIC:
            row[f.name] = 0.0
        elif f.kind == BOOLEAN:
            row[f.name] = False
        elif f.kind == STRING:
            row[f.name] = ""
        else:
            row[f.name] = ""
    return row


def verify_servable(ws: Any, version_id: str) -> Servable:
    """Load ``version_id`` from the registry of ``ws`` (checksums verified) and make a smoke prediction.

    Returns the loaded version (the server swaps it in without loading it again). Raises
    :class:`ModelError` naming the version and what failed; the registry is not touched.
    """
    from loopml.registry import Registry
    from loopml.serving.sources import load_version

    v = Registry(ws).get(version_id)
    try:
        servable = load_version(ws, v.version_id, v.bundle_digest, batch_threads=1)
        score, _ = servable.predict_one(smoke_row(servable.schema))
    except LoopMLError as exc:
        raise ModelError(f"refusing to promote {v.version_id}: it cannot be served ({exc}); the registry is unchanged") \
            from None
    except Exception as exc:  # a broken model file surfaces as the parser's own error type
        raise ModelError(f"refusing to promote {v.version_id}: it cannot be served ({type(exc).__name__}: {exc}); "
                         "the registry is unchanged") from None
    if not isinstance(score, float) or not math.isfinite(score):
        raise ModelError(f"refusing to promote {v.version_id}: its smoke prediction is {score!r}, not a finite number; "
                         "the registry is unchanged")
    return servable
