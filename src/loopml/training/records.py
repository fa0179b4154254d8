"""Trial records in the metadata database: parameters, metrics, artifacts and durations.

Every tuning trial (``kind='trial'``) and every final candidate fit (``kind='final'``) of a
``train`` execution is one row of ``training_trials``, linked to the execution (and so to
its run and lineage).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, Integer, String, Table, Text, insert, select, update

from loopml.workspace import Workspace, utcnow
from loopml.workspace.metadata import METADATA

training_trials = Table(
    "training_trials",
    METADATA,
    Column("trial_id", String(40), primary_key=True),
    Column("execution_id", String(40), index=True),
    Column("candidate", String(200), nullable=False),
    Column("model_type", String(100), nullable=False),
    Column("kind", String(10), nullable=False),  # trial | final
    Column("number", Integer, nullable=False),
    Column("state", String(20), nullable=False),  # complete | pruned | failed
    Column("params", JSON),
    Column("metrics", JSON),
    Column("intermediate", JSON),
    Column("artifacts", JSON),
    Column("duration_s", Float),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("error", Text),
)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and callable(v.item):
        return _clean(v.item())
    return v


class TrialRecorder:
    """Writes trial rows for one execution.

    >>> rec = TrialRecorder(ws, execution_id)  # doctest: +SKIP
    >>> rec("trial", {"candidate": "lightgbm", "model_type": "lightgbm", "number": 3})  # doctest: +SKIP
    """

    def __init__(self, ws: Workspace, execution_id: str | None) -> None:
        self.ws = ws
        self.execution_id = execution_id
        self._final_ids: dict[str, str] = {}
        METADATA.create_all(ws.engine, tables=[training_trials])

    def __call__(self, kind: str, row: dict[str, Any]) -> None:
        trial_id = uuid.uuid4().hex[:16]
        if kind == "final":
            self._final_ids[row["candidate"]] = trial_id
        with self.ws.engine.begin() as conn:
            conn.execute(
                insert(training_trials).values(
                    trial_id=trial_id,
                    execution_id=self.execution_id,
                    candidate=row["candidate"],
                    model_type=row["model_type"],
                    kind=kind,
                    number=int(row.get("number", -1)),
                    state=row.get("state", "complete"),
                    params=_clean(row.get("params") or {}),
                    metrics=_clean(row.get("metrics") or {}),
                    intermediate=_clean(row.get("intermediate") or []),
                    artifacts=_clean(row.get("artifacts") or {}),
                    duration_s=row.get("duration_s"),
                    created_at=utcnow(),
                    error=row.get("error"),
                )
            )

    def attach_artifacts(self, candidate: str, artifacts: dict[str, str]) -> None:
        """Record the artifacts (e.g. the bundle digest) of a candidate's final fit."""
        tid = self._final_ids.get(candidate)
        if tid is None:
            return
        with self.ws.engine.begin() as conn:
            conn.execute(update(training_trials).where(training_trials.c.trial_id == tid).values(artifacts=artifacts))


def list_trials(ws: Workspace, execution_id: str | None = None) -> list[dict[str, Any]]:
    """Trial rows, of one execution or all, oldest first."""
    METADATA.create_all(ws.engine, tables=[training_trials])
    q = select(training_trials).order_by(training_trials.c.created_at)
    if execution_id is not None:
        q = q.where(training_trials.c.execution_id == execution_id)
    with ws.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings().all()]
