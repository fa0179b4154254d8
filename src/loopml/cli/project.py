"""Opening the project a command names, without creating anything for a folder that is not one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loopml.errors import NotFound


def open_project(project: Path, *, need_spec: bool = True) -> Any:
    """The :class:`~loopml.workspace.Workspace` of ``project``.

    A missing folder (or, with ``need_spec``, a folder without ``loopml.yaml``) is a clear error,
    and no ``.loopml`` is created there.
    """
    from loopml.spec import SPEC_FILENAME
    from loopml.workspace import Workspace

    if not project.is_dir():
        raise NotFound(f"project folder {project} does not exist",
                       hint=f"create it with `loopml init {project}` or pass -p/--project FOLDER")
    if need_spec and not (project / SPEC_FILENAME).is_file():
        raise NotFound(f"{project} holds no {SPEC_FILENAME}",
                       hint=f"create one with `loopml init {project}` (or --from DATA --target COLUMN)")
    return Workspace.open(project)
