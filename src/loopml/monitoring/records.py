"""Monitoring's tables in the metadata database: checks, alerts, retraining decisions, ops samples.

Declared on the shared :data:`loopml.workspace.metadata.METADATA`; :func:`ensure_tables`
creates them in a workspace opened before this module was imported.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    String,
    Table,
    Text,
    desc,
    insert,
    select,
    update,
)

from loopml.workspace import Workspace
from loopml.workspace.metadata import METADATA

monitor_checks = Table(
    "monitor_checks",
    METADATA,
    Column("check_id", String(40), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False, index=True),
    Column("ended_at", DateTime(timezone=True)),
    Column("status", String(20), nullable=False),  # running, ok, alerting, failed
    Column("metrics", JSON),  # {window: {metric: value}}
    Column("notes", JSON),  # what could not be computed and why
    Column("error", Text),
)

monitor_alerts = Table(
    "monitor_alerts",
    METADATA,
    Column("alert_id", String(40), primary_key=True),
    Column("check_id", String(40), nullable=False, index=True),
    Column("rule", String(200), nullable=False, index=True),
    Column("metric", String(200), nullable=False),
    Column("op", String(4), nullable=False),
    Column("threshold", Float, nullable=False),
    Column("value", Float, nullable=False),
    Column("window", String(20), nullable=False),
    Column("severity", String(20), nullable=False),
    Column("fired_at", DateTime(timezone=True), nullable=False, index=True),
    Column("new", Boolean, nullable=False),  # False while the same rule keeps firing check after check
    Column("retrain", Boolean, nullable=False),
    Column("evidence", JSON),
    Column("hooks", JSON),  # results of the command / webhook
)

monitor_decisions = Table(
    "monitor_decisions",
    METADATA,
    Column("decision_id", String(40), primary_key=True),
    Column("check_id", String(40), index=True),
    Column("decided_at", DateTime(timezone=True), nullable=False, index=True),
    Column("triggers", JSON, nullable=False),  # why retraining was (or was not) started
    Column("action", String(20), nullable=False),  # retrain, skip
    Column("status", String(20), nullable=False),  # running, approved, rejected, failed, skipped
    Column("run_id", String(40)),
    Column("version_id", String(100)),
    Column("evidence", JSON),  # gates, metrics, exported rows, stage outcomes
    Column("ended_at", DateTime(timezone=True)),
    Column("error", Text),
)

monitor_ops_samples = Table(
    "monitor_ops_samples",
    METADATA,
    Column("sample_id", String(40), primary_key=True),
    Column("scraped_at", DateTime(timezone=True), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("data", JSON, nullable=False),  # cumulative counters, histogram buckets, gauges
)

TABLES = [monitor_checks, monitor_alerts, monitor_decisions, monitor_ops_samples]


def new_id() -> str:
    """A short random id."""
    return uuid.uuid4().hex[:16]


def ensure_tables(ws: Workspace) -> None:
    """Create monitoring's tables if the workspace database lacks them."""
    METADATA.create_all(ws.engine, tables=TABLES)


def insert_row(ws: Workspace, table: Table, **values: Any) -> None:
    """Insert one row."""
    with ws.engine.begin() as conn:
        conn.execute(insert(table).values(**values))


def update_row(ws: Workspace, table: Table, key: str, key_value: str, **values: Any) -> None:
    """Update one row by its primary key."""
    with ws.engine.begin() as conn:
        conn.execute(update(table).where(table.c[key] == key_value).values(**values))


def recent(ws: Workspace, table: Table, order_col: str, limit: int = 20, **where: Any) -> list[dict[str, Any]]:
    """Newest rows of a table, optionally filtered by equality on columns."""
    q = select(table).order_by(desc(table.c[order_col])).limit(limit)
    for k, v in where.items():
        q = q.where(table.c[k] == v)
    with ws.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings().all()]
