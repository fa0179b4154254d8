"""The one exception tree of loopml.

Every error a user can see derives from :class:`LoopMLError`. The tree is
shallow on purpose; each class carries the HTTP status the server maps it to::

    LoopMLError (500)
    ├── SpecError (422)            the spec file is invalid (file, line, key path)
    ├── DataError (422)            input data is malformed (file, line, column, value)
    │   └── ValidationFailed (422) a snapshot failed error-level checks
    ├── WorkspaceError (500)       the project folder / metadata store is unusable
    │   └── WorkspaceLocked (409)  another ``loopml run`` holds the workspace
    ├── StageError (500)           a pipeline stage failed
    ├── ModelError (422)           a model cannot fit / predict / load
    │   └── IntegrityError (500)   an artifact's checksum does not match
    ├── NotFound (404)             a named thing (artifact, model, snapshot) is missing
    ├── Unauthorized (401)         an admin action without a valid token
    └── GateFailed (412)           an evaluation gate did not pass
"""

from __future__ import annotations


class LoopMLError(Exception):
    """Root of every loopml error. ``status`` is the HTTP status the server returns."""

    status: int = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class SpecError(LoopMLError):
    """The spec is invalid. ``problems`` holds every problem found, not only the first."""

    status = 422

    def __init__(self, message: str, problems: list[str] | None = None, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems or []

    def __str__(self) -> str:
        if not self.problems:
            return super().__str__()
        lines = [self.message, *(f"  - {p}" for p in self.problems)]
        return "\n".join(lines)


class DataError(LoopMLError):
    """Input data is malformed. The message names file, line, column, value and what was expected."""

    status = 422


class ValidationFailed(DataError):
    """A data snapshot failed error-level validation checks."""

    status = 422


class WorkspaceError(LoopMLError):
    """The project workspace cannot be used."""

    status = 500


class WorkspaceLocked(WorkspaceError):
    """Another process holds the workspace's run lock."""

    status = 409


class StageError(LoopMLError):
    """A pipeline stage failed. ``stage`` names it; ``original_traceback`` is what ``--debug`` prints."""

    status = 500
    stage: str | None = None
    original_traceback: str | None = None


class ModelError(LoopMLError):
    """A model cannot be fitted, loaded or asked to predict on this input."""

    status = 422


class IntegrityError(ModelError):
    """An artifact's sha256 does not match what was recorded when it was written."""

    status = 500


class NotFound(LoopMLError):
    """A named thing (artifact, model version, snapshot, run) does not exist."""

    status = 404


class Unauthorized(LoopMLError):
    """An admin action was attempted without a valid token."""

    status = 401


class GateFailed(LoopMLError):
    """An evaluation gate did not pass."""

    status = 412


__all__ = [
    "DataError",
    "GateFailed",
    "IntegrityError",
    "LoopMLError",
    "ModelError",
    "NotFound",
    "SpecError",
    "StageError",
    "Unauthorized",
    "ValidationFailed",
    "WorkspaceError",
    "WorkspaceLocked",
]
