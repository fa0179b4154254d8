"""The metadata database: SQLite in the workspace by default, PostgreSQL through a URL.

Every subsystem declares its tables on the one shared :data:`METADATA` object so that
``create_all`` makes the whole schema in one go.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine

METADATA = MetaData()

runs = Table(
    "runs",
    METADATA,
    Column("run_id", String(40), primary_key=True),
    Column("command", Text, nullable=False),
    Column("status", String(20), nullable=False),  # running, success, failed, interrupted
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("pid", Integer),
    Column("error", Text),
)

executions = Table(
    "executions",
    METADATA,
    Column("execution_id", String(40), primary_key=True),
    Column("run_id", String(40), ForeignKey("runs.run_id"), nullable=False, index=True),
    Column("stage", String(100), nullable=False, index=True),
    Column("cache_key", String(64), nullable=False, index=True),
    Column("config_hash", String(64), nullable=False),
    Column("code_version", String(64), nullable=False),
    Column("status", String(20), nullable=False),  # running, success, failed, interrupted, cached
    Column("cached_from", String(40)),
    Column("inputs", JSON, nullable=False),  # {name: digest}
    Column("outputs", JSON),  # {name: digest}
    Column("summary", JSON),  # small stage-specific facts (rows, metrics) for tables and reports
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("duration_s", Float),
    Column("error", Text),
)

# "the newest execution of a stage" (design document, web UI) without reading every execution's JSON columns
executions_stage_time = Index("ix_executions_stage_started_at", executions.c.stage, executions.c.started_at)

# one row per stage execution that ran (not cache hits): its peak RSS and the cap it ran under
# (a table of its own so that workspaces made before it get it from create_all)
execution_memory = Table(
    "execution_memory",
    METADATA,
    Column("execution_id", String(40), ForeignKey("executions.execution_id"), primary_key=True),
    Column("peak_rss_bytes", BigInteger),
    Column("cap_bytes", BigInteger),
)

artifacts = Table(
    "artifacts",
    METADATA,
    Column("digest", String(64), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("name", String(200), nullable=False),
    Column("size", Integer, nullable=False),
    Column("relpath", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("producer", String(40), index=True),  # execution_id
    Column("meta", JSON),
)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for the metadata URL, with SQLite tuned for one writer and many readers."""
    engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    METADATA.create_all(engine)
    executions_stage_time.create(engine, checkfirst=True)  # workspaces made before the index existed
    return engine
