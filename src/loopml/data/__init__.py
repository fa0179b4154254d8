"""Data collection: sources, ETL, natural labels, privacy and immutable lake snapshots.

Public API
----------
- :func:`build_examples` — read the spec's sources and build the example table (Arrow).
- :func:`read_source` / :data:`READERS` — source readers registered by ``type``.
- :func:`list_snapshots`, :func:`get_snapshot`, :func:`read_snapshot` — the lake.
- :class:`IngestStage` (in ``loopml.data.stages``) — the ``ingest`` pipeline stage.
"""

from loopml.data.etl import EtlResult, build_examples
from loopml.data.privacy import apply_privacy
from loopml.data.snapshots import Snapshot, get_snapshot, list_snapshots, read_snapshot
from loopml.data.sources import READERS, read_source

__all__ = [
    "READERS",
    "EtlResult",
    "Snapshot",
    "apply_privacy",
    "build_examples",
    "get_snapshot",
    "list_snapshots",
    "read_snapshot",
    "read_source",
]
