"""The system design document of a project as built: the seven steps, every number measured.

``loopml report`` writes it as Markdown and as one self-contained HTML page:

>>> import tempfile
>>> from loopml.reporting import write_design
>>> from loopml.workspace import Workspace
>>> md, page = write_design(Workspace.open(tempfile.mkdtemp()))
>>> "the `ingest` stage has not run" in md.read_text(), page.suffix
(True, '.html')

The document is filled from the spec (what was asked) and from the workspace (what happened):
the latest successful execution of each stage, its JSON outputs, the registry and the monitoring
records. A step whose stage has not run says so plainly.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from loopml.reporting.document import Bullets, DesignDocument, Figure, Note, Section, Table
from loopml.reporting.facts import Facts, collect
from loopml.reporting.sections import SECTIONS, fmt
from loopml.workspace import Workspace


def _glance(facts: Facts) -> list[tuple[str, str]]:
    spec = facts.ws.spec
    out = [("task", f"{spec.task.type} on `{spec.task.target}`")]
    if facts.ran("ingest"):
        out.append(("examples", fmt(facts.summary("ingest").get("rows"))))
    prod = next((v for v in facts.versions if v["state"] == "production"), None)
    latest = facts.summary("register").get("version_id") if facts.ran("register") else None
    # the latest training's facts belong to its candidate, which need not be the version in production: say whose
    of = f" of {latest}" if latest and prod and latest != prod["version_id"] else ""
    board = facts.output_json("train", "leaderboard")
    if board:
        out.append((f"winner{of}", f"{board.get('winner')} ({board.get('metric')} {fmt(facts.summary('train').get('value'))})"))
    rep = facts.output_json("evaluate", "report")
    if rep:
        prim = rep.get("primary_metric")
        m = (rep.get("metrics") or {}).get(prim) or {}
        out.append((f"test {prim}{of}", f"{fmt(m.get('value'))} [{fmt(m.get('lower'))}, {fmt(m.get('upper'))}]"))
        out.append((f"verdict{of}", "approved" if rep.get("approved") else "not approved"))
    if facts.versions:
        served = prod["version_id"] if prod else "none"
        if of:
            served += f" (not {latest}: the latest candidate above is not serving)"
        out.append(("in production", served))
    if facts.checks:
        out.append(("monitoring", str(facts.checks[0].get("status"))))
    return out


def build_design(ws: Workspace) -> DesignDocument:
    """The design document of the project in ``ws``, from its spec and its measured results."""
    facts = collect(ws)
    spec = ws.spec
    sections = [fn(spec, facts) for fn in SECTIONS]
    return DesignDocument(
        title=f"{spec.project.name}: system design",
        subtitle=(spec.project.description or spec.requirements.objective or "").strip(),
        generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        glance=_glance(facts),
        sections=sections,
    )


def write_design(ws: Workspace, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``design.md`` and ``design.html`` (default: the workspace's reports folder); returns both paths."""
    doc = build_design(ws)
    folder = Path(out_dir) if out_dir is not None else ws.reports
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / "design.md", folder / "design.html")
    for path, text in zip(paths, (doc.to_markdown(), doc.to_html()), strict=True):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return paths


__all__ = [
    "Bullets",
    "DesignDocument",
    "Facts",
    "Figure",
    "Note",
    "Section",
    "Table",
    "build_design",
    "collect",
    "write_design",
]
