"""The project spec (``loopml.yaml``): a pydantic tree of the seven steps of an ML system design."""

from loopml.spec.loader import SPEC_FILENAME, load_spec, parse_spec_text, render_spec, spec_json_schema
from loopml.spec.root import SPEC_VERSION, Project, Spec, WorkspaceSettings

__all__ = [
    "SPEC_FILENAME",
    "SPEC_VERSION",
    "Project",
    "Spec",
    "WorkspaceSettings",
    "load_spec",
    "parse_spec_text",
    "render_spec",
    "spec_json_schema",
]
