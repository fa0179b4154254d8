"""Data verification: profiles, schema inference, checks, quarantine and reports.

Public API
----------
- :func:`profile_table` / :class:`Profile` — column statistics in two vectorised queries.
- :func:`infer_schema`, :func:`load_schema`, :func:`save_schema` — the editable schema file.
- :func:`validate_table` → :class:`ValidationOutcome` (report, kept rows, quarantine entries).
- :data:`CHECKS` — registered checks; :func:`register_check` adds one.
- :class:`ValidateStage` (in ``loopml.validation.stages``) — the ``validate`` pipeline stage.
"""

from loopml.validation.checks import CHECKS, CheckResult, register_check
from loopml.validation.profile import ColumnProfile, Profile, profile_table, psi
from loopml.validation.schema import DataSchema, infer_schema, load_reference, load_schema, save_schema
from loopml.validation.validator import ValidationOutcome, ValidationReport, validate_table

__all__ = [
    "CHECKS",
    "CheckResult",
    "ColumnProfile",
    "DataSchema",
    "Profile",
    "ValidationOutcome",
    "ValidationReport",
    "infer_schema",
    "load_reference",
    "load_schema",
    "profile_table",
    "psi",
    "register_check",
    "save_schema",
    "validate_table",
]
