"""loopml: the whole production ML loop, driven by one spec.

The public surface is small on purpose; stages live in their own packages
(``loopml.data``, ``loopml.features``, ``loopml.training``, ...). From Python, ``loopml.Project(path)``
runs a project and loads its models (``loopml.project``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from loopml.errors import LoopMLError
from loopml.spec import Spec, load_spec

if TYPE_CHECKING:
    from loopml.project import Model, Project, Service

__all__ = ["LoopMLError", "Model", "Project", "Service", "Spec", "__version__", "load_spec"]


def __getattr__(name: str) -> Any:
    # the Python API (loopml.project) is imported on first use: the CLI's start-up does not pay for it
    if name in ("Model", "Project", "Service"):
        from loopml import project

        return getattr(project, name)
    raise AttributeError(f"module 'loopml' has no attribute {name!r}")
