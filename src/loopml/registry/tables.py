"""Metadata tables of the registry, declared on the shared :data:`loopml.workspace.metadata.METADATA`."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, ForeignKey, Integer, String, Table, Text

from loopml.workspace.metadata import METADATA

model_versions = Table(
    "model_versions",
    METADATA,
    Column("version_id", String(40), primary_key=True),
    Column("number", Integer, nullable=False, unique=True),
    Column("bundle_digest", String(64), nullable=False, index=True),
    Column("state", String(20), nullable=False, index=True),
    Column("approved", Boolean, nullable=False),
    Column("verdict", JSON, nullable=False),  # the evaluation report's gate verdicts
    Column("lineage", JSON, nullable=False),  # data snapshot, feature set, training run, evaluation
    Column("meta", JSON, nullable=False),  # task, model type, metrics: what `models list` shows
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
)

model_transitions = Table(
    "model_transitions",
    METADATA,
    Column("transition_id", Integer, primary_key=True, autoincrement=True),
    Column("version_id", String(40), ForeignKey("model_versions.version_id"), nullable=False, index=True),
    Column("from_state", String(20)),  # None for the registration itself
    Column("to_state", String(20), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("forced", Boolean, nullable=False, default=False),
)

#: every evaluation of a registered version (history kept); the latest one is the version's verdict
model_evaluations = Table(
    "model_evaluations",
    METADATA,
    Column("evaluation_id", Integer, primary_key=True, autoincrement=True),
    Column("version_id", String(40), ForeignKey("model_versions.version_id"), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("approved", Boolean, nullable=False),
    Column("verdict", JSON, nullable=False),  # gates, verdict line, primary metric, baseline, vs production
    Column("report", String(200)),  # the report artifact digest (or file) it came from
    Column("source", String(200), nullable=False),  # evaluate stage, register stage, `loopml evaluate --bundle`
    Column("actor", String(200), nullable=False),
)
