"""Load ``loopml.yaml`` with line numbers, and report every problem at once.

Every problem names the file, the line, the key path, what was found and what is
allowed; an unknown key comes with the closest valid one.
"""

from __future__ import annotations

import contextlib
import difflib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from loopml.errors import SpecError
from loopml.spec.root import Spec

SPEC_FILENAME = "loopml.yaml"


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = False
    return y


def _plain(node: Any) -> Any:
    """Turn ruamel's commented containers into plain dicts and lists."""
    if isinstance(node, CommentedMap | dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq | list):
        return [_plain(v) for v in node]
    return node


def _line_of(root: Any, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest node on ``loc`` that exists in the YAML document."""
    node = root
    line: int | None = None
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            with contextlib.suppress(KeyError, TypeError, AttributeError):
                line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            with contextlib.suppress(KeyError, TypeError, AttributeError):
                line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            # pydantic adds union tags (e.g. 'csv') into loc; skip parts not in the document
            continue
    return line


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _strip_optional(typing.get_args(tp)[0])
    return tp


def _union_members(tp: Any) -> list[Any]:
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for a in typing.get_args(tp):
            if a is not type(None):
                out.extend(_union_members(a))
        return out
    return [tp]


def _model_tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return str(args[0]) if args else None


def valid_keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the mapping that ``loc`` points into (``loc`` excludes the bad key)."""
    current: list[Any] = [Spec]
    for part in loc:
        nxt: list[Any] = []
        for tp in current:
            for member in _union_members(tp):
                origin = typing.get_origin(member)
                if isinstance(member, type) and issubclass(member, BaseModel):
                    if isinstance(part, str) and part in member.model_fields:
                        nxt.append(member.model_fields[part].annotation)
                    elif isinstance(part, str) and _model_tag(member) == part:
                        nxt.append(member)
                elif origin in (list, tuple) and isinstance(part, int):
                    nxt.extend(typing.get_args(member)[:1])
                elif origin is dict and isinstance(part, str):
                    nxt.append(typing.get_args(member)[1])
        # a union tag in loc selects one member and does not move deeper in the document
        current = nxt or current
    keys: list[str] = []
    for tp in current:
        for member in _union_members(tp):
            if isinstance(member, type) and issubclass(member, BaseModel):
                keys.extend(k for k in member.model_fields if k not in keys)
    return keys


def _doc_loc(root: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` without the union tags pydantic inserts (parts not present in the document)."""
    node, out = root, []
    for part in loc:
        if isinstance(node, CommentedMap | dict) and part in node:
            node = node[part]
            out.append(part)
        elif isinstance(node, CommentedSeq | list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            out.append(part)
        elif not isinstance(node, CommentedMap | dict | CommentedSeq | list):
            out.append(part)
    return tuple(out)


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _problems(err: ValidationError, doc: Any, file: str) -> list[str]:
    problems: list[tuple[int, str]] = []
    for e in err.errors():
        loc = tuple(e["loc"])
        line = _line_of(doc, loc)
        where = f"{file}:{line}" if line else file
        if e["type"] == "extra_forbidden":
            key = str(loc[-1])
            parent = loc[:-1]
            allowed = valid_keys_at(parent)
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            problems.append(
                (
                    line or 0,
                    f"{where}: unknown key `{key}` at line {line} under `{_fmt_loc(_doc_loc(doc, parent))}`{hint} "
                    f"(allowed: {', '.join(allowed)})",
                )
            )
            continue
        found = e.get("input")
        found_s = repr(found) if not isinstance(found, dict | list) else type(found).__name__
        ctx = e.get("ctx") or {}
        expected = e["msg"]
        if "expected" in ctx and str(ctx["expected"]) not in expected:
            expected = f"{e['msg']} (allowed: {ctx['expected']})"
        shown = _doc_loc(doc, loc)
        if e["type"] == "missing":
            found_s = "nothing"
            shown = (*_doc_loc(doc, loc[:-1]), loc[-1])
        problems.append((line or 0, f"{where}: `{_fmt_loc(shown)}` = {found_s}: {expected}"))
    return [p for _, p in sorted(problems, key=lambda t: t[0])]


def parse_spec_text(text: str, file: str = SPEC_FILENAME) -> Spec:
    """Parse and validate a spec from YAML text; raises :class:`SpecError` listing every problem."""
    try:
        doc = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else "?"
        col = mark.column + 1 if mark is not None else "?"
        raise SpecError(f"{file}:{line}:{col}: not valid YAML: {exc.problem}") from None
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise SpecError(
            f"{file}: the spec must be a mapping of sections, found {type(doc).__name__}",
            [f"{file}:1: expected a mapping with keys like `task`, `data`, `training`"],
        )
    try:
        return Spec.model_validate(_plain(doc))
    except ValidationError as err:
        problems = _problems(err, doc, file)
        raise SpecError(f"{file}: {len(problems)} problem(s) in the spec", problems) from None


def load_spec(path: str | Path) -> Spec:
    """Load ``loopml.yaml`` (or the spec in a project folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / SPEC_FILENAME
    if not p.exists():
        raise SpecError(f"{p}: spec file not found", hint="create one with `loopml init DIR`")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{p}: not UTF-8 text at byte {exc.start}") from None
    return parse_spec_text(text, str(p))


def render_spec(spec: Spec) -> str:
    """The full spec with every default filled in, as YAML."""
    import io

    y = YAML(typ="safe", pure=True)
    y.default_flow_style = False
    setattr(y, "sort_base_mapping_type_on_output", False)  # keep the spec's section order  # noqa: B010
    buf = io.StringIO()
    y.dump(spec.model_dump(mode="json"), buf)
    return buf.getvalue()


def spec_json_schema() -> dict[str, Any]:
    """JSON Schema of the spec."""
    return Spec.model_json_schema()
