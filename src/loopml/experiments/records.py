"""Experiments in the metadata database: who started which challenger, the plan, and how it ended.

Table ``experiments`` on the shared :data:`loopml.workspace.metadata.METADATA`; every start and stop is
also a registry transition (challenger → shadow/canary, then → production or archived), so the
registry history tells the same story with the reasons.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Column, DateTime, String, Table, Text, desc, insert, select, update

from loopml.errors import LoopMLError, NotFound
from loopml.workspace import Workspace
from loopml.workspace.metadata import METADATA

experiments = Table(
    "experiments",
    METADATA,
    Column("name", String(200), primary_key=True),
    Column("routing", String(20), nullable=False),  # shadow, canary, ab
    Column("version_id", String(40), nullable=False),  # the challenger
    Column("status", String(20), nullable=False),  # running, promoted, rolled_back
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("started_by", Text, nullable=False),
    Column("plan", JSON),  # planned sample size (loopml.experiments.planning.Plan) or null
    Column("stopped_at", DateTime(timezone=True)),
    Column("stopped_by", Text),
    Column("decision_reason", Text),
    Column("evidence", JSON),  # the analysis at the stop
)


def ensure_table(ws: Workspace) -> None:
    """Create the table if the workspace database lacks it."""
    METADATA.create_all(ws.engine, tables=[experiments])


def record_start(ws: Workspace, name: str, routing: str, version_id: str, actor: str,
                 plan: dict[str, Any] | None) -> None:
    """Record a started experiment (a name can run once: stop it before reusing it)."""
    ensure_table(ws)
    if get(ws, name, missing_ok=True) is not None:
        raise LoopMLError(f"experiment `{name}` already exists; set deployment.routing.experiment to a new name")
    with ws.engine.begin() as conn:
        conn.execute(insert(experiments).values(
            name=name, routing=routing, version_id=version_id, status="running", started_at=dt.datetime.now(dt.UTC),
            started_by=actor, plan=plan))


def record_stop(ws: Workspace, name: str, status: str, actor: str, reason: str, evidence: dict[str, Any] | None) -> None:
    """Record how an experiment ended."""
    with ws.engine.begin() as conn:
        conn.execute(update(experiments).where(experiments.c.name == name).values(
            status=status, stopped_at=dt.datetime.now(dt.UTC), stopped_by=actor, decision_reason=reason,
            evidence=evidence))


def get(ws: Workspace, name: str | None = None, *, missing_ok: bool = False) -> dict[str, Any] | None:
    """One experiment by name, or the latest started; ``None`` (with ``missing_ok``) when there is none."""
    ensure_table(ws)
    q = select(experiments).order_by(desc(experiments.c.started_at)).limit(1)
    if name is not None:
        q = select(experiments).where(experiments.c.name == name)
    with ws.engine.connect() as conn:
        row = conn.execute(q).mappings().first()
    if row is None and not missing_ok:
        raise NotFound(f"no experiment {'named `' + name + '`' if name else 'started'} in this project",
                       hint="start one with `loopml experiment start VERSION -r why`")
    return dict(row) if row is not None else None


__all__ = ["experiments", "get", "record_start", "record_stop"]
