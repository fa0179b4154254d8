"""Base class shared by every spec model: unknown keys fail, every field is described."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A spec node: ``extra="forbid"`` so that a typo is an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=False, use_enum_values=False)
