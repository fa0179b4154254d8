"""Lineage queries: which execution made an artifact, from which inputs, back to the sources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import desc, func, select

from loopml.workspace import Workspace
from loopml.workspace.metadata import artifacts, execution_memory, executions, runs


@dataclass
class LineageStep:
    """One link of a lineage chain: an artifact and the execution that produced it."""

    depth: int
    digest: str
    name: str
    kind: str
    stage: str | None
    execution_id: str | None
    status: str | None
    config_hash: str | None
    code_version: str | None
    ended_at: Any


def list_runs(ws: Workspace, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
    """Recent runs, newest first (``offset`` skips that many: pages of a long history)."""
    q = select(runs).order_by(desc(runs.c.started_at)).limit(limit).offset(offset)
    with ws.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings().all()]


def count_runs(ws: Workspace) -> int:
    """How many runs the workspace recorded."""
    with ws.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(runs)).scalar() or 0)


def stage_counts(ws: Workspace, run_ids: list[str]) -> dict[str, dict[str, int]]:
    """Per run: how many of its stage executions ended in each status (success, cached, failed, ...)."""
    if not run_ids:
        return {}
    q = (select(executions.c.run_id, executions.c.status, func.count())
         .where(executions.c.run_id.in_(run_ids)).group_by(executions.c.run_id, executions.c.status))
    out: dict[str, dict[str, int]] = {}
    with ws.engine.connect() as conn:
        for run_id, status, n in conn.execute(q).all():
            out.setdefault(str(run_id), {})[str(status)] = int(n)
    return out


def list_executions(ws: Workspace, run_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Stage executions (of one run, or recent ones), newest first.

    Each row also has ``peak_rss_mb`` (the RSS high-water mark of the process while the stage ran; ``None``
    for a cache hit) and ``memory_cap_mb`` (the spec's cap it ran under, ``None`` without one).
    """
    mem = execution_memory
    q = (
        select(executions, mem.c.peak_rss_bytes, mem.c.cap_bytes)
        .select_from(executions.outerjoin(mem, mem.c.execution_id == executions.c.execution_id))
        .order_by(desc(executions.c.started_at))
        .limit(limit)
    )
    if run_id:
        q = q.where(executions.c.run_id.like(f"{run_id}%"))
    with ws.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings().all()]
    for r in rows:
        peak, cap = r.pop("peak_rss_bytes"), r.pop("cap_bytes")
        r["peak_rss_mb"] = round(peak / 2**20, 1) if peak is not None else None
        r["memory_cap_mb"] = round(cap / 2**20, 3) if cap is not None else None
    return rows


def lineage(ws: Workspace, ref: str) -> list[LineageStep]:
    """The chain that produced artifact ``ref`` (digest or prefix), breadth-first back to the sources."""
    first = ws.artifact_info(ref)
    out: list[LineageStep] = []
    seen: set[str] = set()
    frontier: list[tuple[str, int]] = [(first["digest"], 0)]
    with ws.engine.connect() as conn:
        while frontier:
            digest, depth = frontier.pop(0)
            if digest in seen:
                continue
            seen.add(digest)
            art = conn.execute(select(artifacts).where(artifacts.c.digest == digest)).mappings().first()
            if art is None:
                continue
            ex = None
            if art["producer"]:
                ex = conn.execute(
                    select(executions).where(executions.c.execution_id == art["producer"])
                ).mappings().first()
            out.append(
                LineageStep(
                    depth,
                    digest,
                    art["name"],
                    art["kind"],
                    ex["stage"] if ex else None,
                    ex["execution_id"] if ex else None,
                    ex["status"] if ex else None,
                    ex["config_hash"] if ex else None,
                    ex["code_version"] if ex else None,
                    ex["ended_at"] if ex else None,
                )
            )
            if ex is not None:
                for outs in (ex["inputs"] or {}).values():
                    for d in outs.values():
                        frontier.append((d, depth + 1))
    return out
