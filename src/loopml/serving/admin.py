"""Bodies of the admin endpoints: strict pydantic models (no coercion, no unknown keys).

``{"force": "false"}`` is a 422 naming ``force``, not a forced promotion; an ``actor`` key is
refused too: who acts is the name configured for the admin token that authenticated the request
(``deployment.admin_tokens``), never what the body says.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loopml.serving.schema import RequestInvalid

_ACTOR_MSG = ("who acts is the name configured for the admin token (deployment.token_actor / deployment.admin_tokens); "
              "it cannot be sent in the body")


class AdminBody(BaseModel):
    """Base of the admin request bodies: strict types, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class PromoteBody(AdminBody):
    """``POST /admin/promote``."""

    version: str = Field(min_length=1, max_length=64, description="The version to put in production, e.g. `v3`.")
    reason: str = Field(default="promoted through the admin API", min_length=1, max_length=2000,
                        description="Why (recorded in the registry history).")
    force: bool = Field(default=False, description="Override failed evaluation gates (recorded as forced). "
                        "A JSON boolean: the string \"false\" is refused.")


class RollbackBody(AdminBody):
    """``POST /admin/rollback``."""

    reason: str = Field(default="rolled back through the admin API", min_length=1, max_length=2000,
                        description="Why (recorded in the registry history).")


class ReloadBody(AdminBody):
    """``POST /admin/reload`` (no fields)."""


B = TypeVar("B", bound=AdminBody)


def problems_of(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic errors as the service's 422 ``detail`` entries (field, value, expected, msg)."""
    out = []
    for e in exc.errors(include_url=False):
        loc = [str(x) for x in e["loc"]]
        field = ".".join(loc) or None
        msg = e["msg"]
        if e["type"] == "extra_forbidden" and loc[-1:] == ["actor"]:
            msg = _ACTOR_MSG
        value = e.get("input")
        if not isinstance(value, str | int | float | bool | type(None)):
            value = str(value)[:80]
        elif isinstance(value, str) and len(value) > 80:
            value = value[:80] + "…"
        out.append({"loc": ["body", *loc], "field": field, "value": value, "expected": msg, "msg": msg})
    return out


def parse_body(model: type[B], body: bytes) -> B:
    """Parse ``body`` (JSON; empty means ``{}``) into ``model``; :class:`RequestInvalid` names every bad field."""
    try:
        data = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise RequestInvalid(f"request body is not valid JSON: {exc}",
                             [{"loc": ["body"], "field": None, "value": None, "expected": "a JSON object",
                               "msg": str(exc)}]) from None
    if not isinstance(data, dict):
        raise RequestInvalid("admin body must be a JSON object",
                             [{"loc": ["body"], "field": None, "value": str(data)[:80], "expected": "object",
                               "msg": "expected a JSON object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = problems_of(exc)
        names = ", ".join(str(p["field"]) for p in problems)
        raise RequestInvalid(f"invalid {model.__doc__.split('`')[1] if model.__doc__ else 'admin'} body: {names}",
                             problems) from None
