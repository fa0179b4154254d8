"""The request schema of the service: validation of JSON rows and the OpenAPI document.

The input schema comes from the bundle (``{column: type}``). Validation is fused into the
row path: the common case (every value of the right type) costs one type test per field; only
a bad row takes the slow path that collects every problem for the 422 body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from loopml.errors import DataError

NUMERIC: Final = "number"
STRING: Final = "string"
CATEGORY: Final = "category"  # a string or an integer code
BOOLEAN: Final = "boolean"
ANY: Final = "any"

_NUMERIC_WORDS = ("int", "float", "double", "decimal", "numeric", "number", "real")

#: accepted JSON value types per kind
_ACCEPTS: dict[str, tuple[type, ...]] = {
    NUMERIC: (int, float),
    STRING: (str,),
    CATEGORY: (str, int, float, bool),
    BOOLEAN: (bool, int),
}


def kind_of(type_name: str) -> str:
    """The JSON kind of a column type as written in a bundle manifest (Arrow/DuckDB names or feature kinds)."""
    t = str(type_name).lower()
    if t in ("categorical", "category") or t.startswith("dictionary"):
        return CATEGORY
    if t in ("bool", "boolean"):
        return BOOLEAN
    if t in ("image", "any", "unknown") or t.startswith("list") or t.startswith("fixed_size_list"):
        return ANY
    if t == "timestamp" or t.startswith("timestamp") or t.startswith("date"):
        return STRING
    return NUMERIC if any(w in t for w in _NUMERIC_WORDS) else STRING


_MISSING = object()


class RequestInvalid(DataError):
    """A request body that does not match the model's inputs; ``problems`` feeds the 422 body."""

    status = 422

    def __init__(self, message: str, problems: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.problems = problems

    def __str__(self) -> str:
        lines = [self.message]
        for p in self.problems[:20]:
            where = ".".join(str(x) for x in p.get("loc", [])[1:]) or "body"
            lines.append(f"  - {where}: {p.get('msg')} (expected {p.get('expected')})")
        if len(self.problems) > 20:
            lines.append(f"  … and {len(self.problems) - 20} more")
        return "\n".join(lines)

    def body(self) -> dict[str, Any]:
        """The JSON body of the 422 response: one entry per problem, naming field, value and expectation."""
        return {"error": self.message, "detail": self.problems}


@dataclass(frozen=True)
class Field:
    """One input column of the model."""

    name: str
    kind: str  # NUMERIC or STRING
    type_name: str
    nullable: bool = True


def _finite(v: int | float) -> bool:
    """A JSON number that fits a float64 (an integer beyond ±1.8e308 does not; math.isfinite would raise)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _describe(value: Any) -> Any:
    # JSON-safe echo of what was sent (long strings cut, integers beyond 64 bits as text)
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        text = str(value)
        return text if len(text) <= 40 else f"{text[:20]}…({len(text)} digits)"
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "…"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict | list):
        return f"<{type(value).__name__}>"
    return value


class InputSchema:
    """The inputs a model version accepts, in the order the transform reads them.

    Examples
    --------
    >>> s = InputSchema.from_mapping({"age": "float64", "city": "string"})
    >>> s.check_row({"age": 31, "city": "Oslo"}, 0)
    []
    >>> s.check_row({"age": "old"}, 0)[0]["expected"]
    'number (float64) or null'
    >>> s.valid({"age": 31, "city": None}), s.valid({"age": True, "city": "Oslo"})
    (True, False)
    """

    def __init__(self, fields: list[Field]) -> None:
        self.fields = fields
        self.names = [f.name for f in fields]
        self.numeric_names = [f.name for f in fields if f.kind == NUMERIC]
        self.all_numeric = all(f.kind == NUMERIC for f in fields)
        self.by_name = {f.name: f for f in fields}
        # the fast check: per field, the exact JSON value classes it accepts (None when nullable)
        self._accepts = [
            (f.name, frozenset((*_ACCEPTS.get(f.kind, ()), *((type(None),) if f.nullable else ()))))
            for f in fields if f.kind != ANY
        ]

    def valid(self, row: Any) -> bool:
        """Fast yes/no for one row (no allocation); :meth:`check_row` explains a ``False``."""
        if row.__class__ is not dict:
            return False
        get = row.get
        for name, accepted in self._accepts:
            v = get(name, _MISSING)
            if v.__class__ not in accepted:
                return False
            if v.__class__ is float and not math.isfinite(v):
                return False
        return True

    @classmethod
    def from_mapping(cls, schema: dict[str, str]) -> InputSchema:
        """Build from ``{column: type name}``."""
        return cls([Field(name, kind_of(t), str(t)) for name, t in schema.items()])

    def to_mapping(self) -> dict[str, str]:
        """``{column: type name}``."""
        return {f.name: f.type_name for f in self.fields}

    def check_row(self, row: Any, index: int | None, available: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """Every problem of one row (empty when valid). ``available``: fields the online store fills."""
        loc_prefix: list[Any] = ["body"] if index is None else ["body", index]
        if not isinstance(row, dict):
            return [
                {
                    "loc": loc_prefix,
                    "field": None,
                    "value": _describe(row),
                    "expected": "a JSON object of feature values",
                    "msg": f"expected an object with the fields {', '.join(self.names)}",
                }
            ]
        problems: list[dict[str, Any]] = []
        for f in self.fields:
            if f.name not in row:
                if f.name in available:
                    continue
                problems.append(
                    {
                        "loc": [*loc_prefix, f.name],
                        "field": f.name,
                        "value": None,
                        "expected": f"{f.kind} ({f.type_name}), required",
                        "msg": f"field `{f.name}` is missing",
                    }
                )
                continue
            v = row[f.name]
            if v is None:
                if f.nullable:
                    continue
                ok = False
            elif f.kind == NUMERIC:
                ok = type(v) in (int, float) and _finite(v)
            elif f.kind == ANY:
                ok = True
            else:
                ok = type(v) in _ACCEPTS[f.kind]
            if not ok:
                problems.append(
                    {
                        "loc": [*loc_prefix, f.name],
                        "field": f.name,
                        "value": _describe(v),
                        "expected": f"{f.kind} ({f.type_name})" + (" or null" if f.nullable else ""),
                        "msg": f"field `{f.name}` got {type(v).__name__} {_describe(v)!r}, expected {f.kind}",
                    }
                )
        return problems

    def raise_for(self, rows: list[Any], available: frozenset[str] = frozenset(), many: bool = False) -> None:
        """Raise :class:`RequestInvalid` listing every problem of every row (no-op when all are valid)."""
        problems: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            problems.extend(self.check_row(row, i if many else None, available))
        if problems:
            n = len(problems)
            raise RequestInvalid(f"invalid request: {n} problem{'s' if n != 1 else ''} with the input fields", problems)

    # -- OpenAPI -----------------------------------------------------------------------------
    def json_schema(self) -> dict[str, Any]:
        """JSON Schema of one input row."""
        props: dict[str, Any] = {}
        for f in self.fields:
            kinds: dict[str, dict[str, Any]] = {
                NUMERIC: {"type": "number"},
                STRING: {"type": "string"},
                CATEGORY: {"type": ["string", "integer"]},
                BOOLEAN: {"type": "boolean"},
            }
            base = kinds.get(f.kind, {})
            props[f.name] = {
                "anyOf": [base, {"type": "null"}] if f.nullable else [base],
                "description": f"input column `{f.name}` ({f.type_name})",
            }
        return {"type": "object", "properties": props, "required": list(self.names), "additionalProperties": True}


#: responses any operation may get from the HTTP layer itself (see :mod:`loopml.serving.http`)
_COMMON = {"400": "BadRequest", "408": "Timeout", "414": "UriTooLong", "431": "HeadersTooLarge",
           "500": "Internal", "503": "Unavailable"}
#: and those an operation with a request body may get
_WITH_BODY = {"413": "TooLarge", "415": "UnsupportedType", "422": "Invalid"}


def openapi_document(
    schema: InputSchema, *, title: str, version: str, entity_keys: list[str], store_fields: list[str],
    task: str | None = None, admin_bodies: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service, describing the model's real inputs.

    Every status code and content type a handler (or the HTTP layer: limits, timeouts, load
    shedding) can answer is listed; ``tests/serving/test_contract.py`` runs schemathesis against
    a real server to keep it so. ``admin_bodies``: JSON Schema of each admin endpoint's body.
    """
    row = schema.json_schema()
    if store_fields:
        row = {**row, "required": [n for n in row["required"] if n not in set(store_fields)]}
        for k in entity_keys:
            row["properties"].setdefault(k, {"description": f"entity key `{k}`: features are fetched by it"})
    problem = {
        "type": "object",
        "properties": {
            "loc": {"type": "array", "items": {}},
            "field": {"type": ["string", "null"]},
            "value": {},
            "expected": {"type": "string"},
            "msg": {"type": "string"},
        },
    }
    one = {
        "type": "object",
        "properties": {
            "request_id": {"type": "string"},
            "model_version": {"type": "string"},
            "route": {"type": "string"},
            "score": {"type": "number", "description": "P(positive) for binary, the value for regression"},
            "prediction": {"type": "number", "description": "class or value"},
        },
        "required": ["request_id", "model_version", "route", "score", "prediction"],
    }
    many = {
        "type": "object",
        "properties": {
            "request_id": {"type": "string"},
            "request_ids": {"type": "array", "items": {"type": "string"}, "description": "one per row, for feedback"},
            "model_version": {"type": "string"},
            "route": {"type": "string"},
            "scores": {"type": "array", "items": {"type": "number"}},
            "predictions": {"type": "array", "items": {"type": "number"}},
        },
        "required": ["request_id", "request_ids", "model_version", "route", "scores", "predictions"],
    }
    error = {
        "type": "object",
        "properties": {"error": {"type": "string"}, "detail": {"type": "array", "items": problem}},
        "required": ["error"],
    }
    ref_error = {"$ref": "#/components/schemas/Error"}

    def json_ok(s: dict[str, Any], description: str = "OK") -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": s}}}

    def json_error(description: str, **extra: Any) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": ref_error}}, **extra}

    def responses(ok: dict[str, Any], *codes: str, body: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"200": ok}
        for code, name in {**_COMMON, **(_WITH_BODY if body else {})}.items():
            out[code] = {"$ref": f"#/components/responses/{name}"}
        for code in codes:
            out[code] = {"$ref": f"#/components/responses/{_NAMED[code]}"}
        return dict(sorted(out.items()))

    label: dict[str, Any] = {"type": "number", "description": "the observed outcome"}
    if task == "binary":
        label = {"enum": [0, 1], "description": "the observed outcome (binary task: 0 or 1)"}
    feedback_item = {
        "type": "object",
        "properties": {
            "request_id": {"type": "string", "minLength": 1, "maxLength": 128,
                           "description": "an id this service issued: request_id, or one of request_ids, of /v1/predict"},
            "label": label,
        },
        "required": ["request_id", "label"],
        "additionalProperties": False,
    }
    bodies = admin_bodies or {}
    bearer: list[dict[str, list[str]]] = [{"adminToken": []}]

    def admin(summary: str, name: str) -> dict[str, Any]:
        body = bodies.get(name, {"type": "object"})
        return {"post": {
            "summary": summary, "security": bearer,
            "requestBody": {"required": bool(body.get("required")), "content": {"application/json": {"schema": body}}},
            "responses": responses(json_ok({"type": "object"}), "401", "404", "409", "412", body=True),
        }}

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": {
            "/v1/predict": {
                "post": {
                    "summary": "Predict one row (a JSON object) or many (a JSON array, or {\"rows\": [...]})",
                    "parameters": [{"name": "X-Request-Id", "in": "header", "required": False,
                                    "description": "the client's own id, logged as client_request_id (1-128 printable ASCII)",
                                    "schema": {"type": "string", "pattern": "^[!-~]{1,128}$"}}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        row,
                                        {"type": "array", "items": row},
                                        {"type": "object", "properties": {"rows": {"type": "array", "items": row}},
                                         "required": ["rows"], "additionalProperties": False},
                                    ]
                                }
                            }
                        },
                    },
                    "responses": responses(json_ok({"oneOf": [one, many]}), "404", body=True),
                }
            },
            "/v1/feedback": {
                "post": {
                    "summary": "Record the outcome (label) of earlier predictions by their request ids",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"oneOf": [
                            feedback_item, {"type": "array", "items": feedback_item, "maxItems": 10_000},
                        ]}}},
                    },
                    "responses": responses(json_ok({"type": "object", "properties": {"recorded": {"type": "integer"}},
                                                    "required": ["recorded"]}), "401", body=True),
                }
            },
            "/health": {"get": {"summary": "The process is alive",
                                "responses": responses(json_ok({"type": "object", "properties": {"status": {"type": "string"}}}))}},
            "/ready": {"get": {"summary": "A model is loaded and serving, the logs are writable",
                               "responses": responses(json_ok({"type": "object"}))}},
            "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format 0.0.4)", "responses": responses(
                {"description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}})}},
            "/openapi.json": {"get": {"summary": "This document", "responses": responses(json_ok({"type": "object"}))}},
            "/v1/models": {"get": {"summary": "The loaded versions: state, inputs, task and scorer", "responses": responses(json_ok({
                "type": "object",
                "properties": {"versions": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"version": {"type": "string"}, "state": {"type": ["string", "null"]},
                                   "inputs": {"type": "object", "additionalProperties": {"type": "string"}},
                                   "task": {"type": "string"},
                                   "scorer": {"type": "string", "enum": ["lightgbm", "compiled", "model"],
                                              "description": "what scores: LightGBM's tree walker, the compiled "
                                              "trees (deployment.compile_trees) or the model's own scorer"}},
                    "required": ["version", "state", "inputs", "task", "scorer"],
                }}},
                "required": ["versions"],
            }))}},
            "/admin/promote": admin("Promote a version to production (loaded and checked first) and serve it", "promote"),
            "/admin/rollback": admin("Roll back to the previous production version", "rollback"),
            "/admin/reload": admin("Reload the versions the registry says should serve", "reload"),
        },
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Row": row, "Error": error},
            "responses": {
                "BadRequest": json_error("malformed HTTP request"),
                "Unauthorized": json_error("missing or wrong token"),
                "NotFound": json_error("no such version, or no precomputed prediction for the key"),
                "Timeout": json_error("the request's headers or body did not arrive within the timeout; the connection is closed"),
                "Conflict": json_error("the registry refuses the transition"),
                "PreconditionFailed": json_error("the version cannot serve (failed gates without force, or failed its checks)"),
                "TooLarge": json_error("body larger than deployment.limits.max_body_bytes, or more rows than max_rows_per_request"),
                "UriTooLong": json_error("request line longer than deployment.limits.max_request_line_bytes"),
                "UnsupportedType": json_error("the body is not `Content-Type: application/json`"),
                "Invalid": {"description": "invalid request: each problem names the field, the value and what was expected",
                            "content": {"application/json": {"schema": ref_error}}},
                "HeadersTooLarge": json_error("more headers, or larger, than deployment.limits allows"),
                "Internal": json_error("a bug: counted in /metrics and written to the server log"),
                "Unavailable": json_error(
                    "not ready (no model loaded), shutting down, too many connections, or overloaded (the queued work "
                    "exceeds the latency budget: retry after Retry-After seconds)",
                    headers={"Retry-After": {"description": "seconds to wait before retrying (load shedding)",
                                             "schema": {"type": "integer"}}},
                ),
            },
        },
    }


_NAMED = {"401": "Unauthorized", "404": "NotFound", "409": "Conflict", "412": "PreconditionFailed"}
