"""The stage protocol, the stage registry and the context a stage runs with.

A stage declares the stages it needs (``requires``), the part of the spec it depends
on (``config``) and optional external fingerprints (source files). The runner hashes
those with the upstream output digests and the stage's code into a cache key.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from loopml.errors import NotFound
from loopml.pipeline.resources import MemoryFloor, table_floor
from loopml.spec import Spec
from loopml.workspace import Workspace

T = TypeVar("T")


@dataclass
class StageResult:
    """What a stage produced: named artifact digests and a small JSON summary."""

    outputs: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    #: the RSS high-water mark of the process while the stage ran (set by ``run_job``)
    peak_rss_bytes: int | None = None


@dataclass
class StageContext:
    """Everything a stage may touch while it runs."""

    workspace: Workspace
    execution_id: str
    inputs: dict[str, dict[str, str]]  # upstream stage -> {output name -> digest}
    upstream_summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    show_progress: bool = True

    @property
    def spec(self) -> Spec:
        """The project spec."""
        return self.workspace.spec

    def input(self, stage: str, name: str) -> str:
        """Digest of an upstream output; a clear error if it is missing."""
        try:
            return self.inputs[stage][name]
        except KeyError:
            raise NotFound(
                f"stage input `{stage}.{name}` is missing (available: "
                f"{', '.join(f'{s}.{n}' for s, o in self.inputs.items() for n in o) or 'none'})"
            ) from None

    def input_table_floor(self, stage: str, name: str) -> MemoryFloor:
        """The memory an upstream Parquet table takes once loaded whole (from its footer; nothing is read)."""
        return table_floor(self.workspace.artifacts.path_of(self.input(stage, name)), f"{stage}.{name}")

    def put_bytes(self, data: bytes, *, kind: str, name: str, meta: dict[str, Any] | None = None) -> str:
        """Store bytes as an output artifact of this execution."""
        return self.workspace.put_artifact_bytes(data, kind=kind, name=name, producer=self.execution_id, meta=meta)

    def put_file(
        self, path: str | Path, *, kind: str, name: str, meta: dict[str, Any] | None = None, move: bool = False
    ) -> str:
        """Store a file as an output artifact of this execution."""
        return self.workspace.put_artifact_file(
            path, kind=kind, name=name, producer=self.execution_id, meta=meta, move=move
        )

    def temp_path(self, suffix: str = "") -> Path:
        """A temporary path on the artifact store's filesystem (removed after a crash)."""
        return self.workspace.artifacts.new_temp_path(suffix)

    def progress(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        """Iterate with a progress bar when showing progress."""
        if not self.show_progress:
            yield from items
            return
        from rich.progress import track

        yield from track(items, total=total, description=description or "working", transient=True)


@runtime_checkable
class Stage(Protocol):
    """One box of the loop. Required: ``name``, ``requires``, ``config`` and ``run``."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]

    def config(self, spec: Spec) -> Any:
        """The part of the spec this stage depends on (JSON-serialisable)."""
        ...

    def run(self, ctx: StageContext) -> StageResult:
        """Do the work; return the digests of the outputs."""
        ...


class BaseStage:
    """Convenience base: no requirements, whole-spec config, no external fingerprint."""

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 100
    description: ClassVar[str] = ""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    @classmethod
    def enabled(cls, spec: Spec) -> bool:
        """Whether this stage is part of the pipeline for ``spec``."""
        return True

    def config(self, spec: Spec) -> Any:
        return spec.model_dump(mode="json")

    def memory_floor(self, ctx: StageContext) -> MemoryFloor | None:
        """A lower bound of the memory the stage holds at once (from its inputs' sizes), checked against the
        spec's memory cap before it runs; ``None``: no estimate (the cap is then enforced while it runs)."""
        return None

    def fingerprint(self, ws: Workspace) -> Any:
        """External inputs (e.g. source file sizes and mtimes); part of the cache key."""
        return None

    def run(self, ctx: StageContext) -> StageResult:
        raise NotImplementedError


StageFactory = Callable[[Spec], BaseStage]
STAGES: dict[str, type[BaseStage]] = {}


def register_stage(cls: type[BaseStage]) -> type[BaseStage]:
    """Class decorator: make a stage available to pipelines by its ``name``."""
    if not cls.name:
        raise ValueError(f"stage class {cls.__qualname__} has no name")
    STAGES[cls.name] = cls
    return cls


def load_plugins() -> None:
    """Import the built-in stages and plugin modules named in ``LOOPML_PLUGINS`` (comma-separated)."""
    importlib.import_module("loopml.pipeline.builtin")
    for mod in filter(None, (m.strip() for m in os.environ.get("LOOPML_PLUGINS", "").split(","))):
        importlib.import_module(mod)


def pipeline_for(spec: Spec) -> list[BaseStage]:
    """The ordered stages of the pipeline for ``spec``."""
    load_plugins()
    classes = sorted((c for c in STAGES.values() if c.enabled(spec)), key=lambda c: (c.order, c.name))
    # a stage whose requirement is not in the pipeline cannot run: drop it (and, in turn, its dependents)
    kept: list[type[BaseStage]] = []
    names: set[str] = set()
    for c in classes:
        if all(r in names for r in c.requires):
            kept.append(c)
            names.add(c.name)
    return [c(spec) for c in kept]


_CODE_CACHE: dict[type, str] = {}


def code_version(stage: object) -> str:
    """Hash of the stage's module source and the loopml version: code changes invalidate the cache."""
    cls = type(stage)
    if cls not in _CODE_CACHE:
        import loopml

        h = hashlib.sha256(loopml.__version__.encode())
        mod = sys.modules.get(cls.__module__)
        try:
            h.update(inspect.getsource(mod or cls).encode())
        except (OSError, TypeError):
            h.update(cls.__qualname__.encode())
        _CODE_CACHE[cls] = h.hexdigest()[:16]
    return _CODE_CACHE[cls]


def stable_hash(obj: Any) -> str:
    """sha256 of a canonical JSON rendering."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
