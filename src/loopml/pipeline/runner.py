"""The pipeline runner: ordered stages, caching, resume after a crash, one writer at a time."""

from __future__ import annotations

import os
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import desc, insert, select, update

from loopml.errors import LoopMLError, SpecError, StageError
from loopml.pipeline.executors import Executor, InProcessExecutor, StageJob, run_job
from loopml.pipeline.resources import stage_cap
from loopml.pipeline.stage import BaseStage, code_version, stable_hash
from loopml.workspace import Workspace, utcnow
from loopml.workspace.metadata import execution_memory, executions, runs


@dataclass
class StageOutcome:
    """How one stage ended in this run."""

    stage: str
    status: str  # success, cached, failed, skipped
    execution_id: str | None
    duration_s: float
    outputs: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    #: the original traceback of a failed stage (``loopml --debug`` prints it)
    traceback: str | None = None
    #: RSS high-water mark of the process while the stage ran (``None`` for a cache hit)
    peak_rss_bytes: int | None = None


@dataclass
class RunReport:
    """What ``loopml run`` did."""

    run_id: str
    status: str
    outcomes: list[StageOutcome]

    def failure(self) -> StageError | None:
        """The first failed stage as a :class:`StageError` naming the stage (``None`` when none failed).

        The error carries the stage's original traceback (``original_traceback``) for ``--debug``.
        """
        failed = next((o for o in self.outcomes if o.status == "failed"), None)
        if failed is None:
            return None
        err = StageError(failed.error or f"stage `{failed.stage}` failed")
        err.stage = failed.stage
        err.original_traceback = failed.traceback
        return err

    def raise_for_failure(self) -> None:
        """Raise :meth:`failure` when a stage failed."""
        err = self.failure()
        if err is not None:
            raise err


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


def recover_interrupted(ws: Workspace) -> int:
    """Mark runs and executions left 'running' by a dead process as interrupted; remove partial files.

    Must be called while holding the run lock: then no live process owns them.
    """
    ws.artifacts.clean_partial()
    now = utcnow()
    with ws.engine.begin() as conn:
        n = conn.execute(
            update(executions)
            .where(executions.c.status == "running")
            .values(status="interrupted", ended_at=now, error="process ended before the stage finished")
        ).rowcount
        conn.execute(update(runs).where(runs.c.status == "running").values(status="interrupted", ended_at=now))
    return int(n or 0)


class Runner:
    """Runs stages in order with caching.

    >>> # doctest: +SKIP
    >>> Runner(ws, stages).run(until="train")
    """

    def __init__(
        self,
        ws: Workspace,
        stages: Sequence[BaseStage],
        executor: Executor | None = None,
        on_event: Callable[[str, StageOutcome | str], None] | None = None,
        show_progress: bool = True,
    ) -> None:
        self.ws = ws
        self.stages = list(stages)
        self.executor = executor or InProcessExecutor()
        self.on_event = on_event or (lambda kind, payload: None)
        self.show_progress = show_progress

    def _names(self) -> list[str]:
        return [s.name for s in self.stages]

    def _check_stage_name(self, name: str | None, flag: str) -> None:
        if name is not None and name not in self._names():
            raise StageError(
                f"{flag} `{name}`: no such stage in this pipeline (stages: {', '.join(self._names()) or 'none'})"
            )

    def cache_key(self, stage: BaseStage, inputs: dict[str, dict[str, str]]) -> tuple[str, str, str]:
        """(cache key, config hash, code version) of a stage given its upstream outputs."""
        config_hash = stable_hash(stage.config(self.ws.spec))
        code = code_version(stage)
        key = stable_hash(
            {
                "stage": stage.name,
                "config": config_hash,
                "code": code,
                "inputs": inputs,
                "fingerprint": stage.fingerprint(self.ws),
            }
        )
        return key, config_hash, code

    def _cached(self, key: str) -> dict[str, Any] | None:
        with self.ws.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(executions)
                    .where(executions.c.cache_key == key, executions.c.status == "success")
                    .order_by(desc(executions.c.ended_at))
                    .limit(5)
                )
                .mappings()
                .all()
            )
        for row in rows:
            outs = row["outputs"] or {}
            if all(self.ws.artifacts.exists(d) for d in outs.values()):
                return dict(row)
        return None

    def run(
        self,
        *,
        until: str | None = None,
        start_from: str | None = None,
        force: bool = False,
        command: str = "loopml run",
    ) -> RunReport:
        """Run the pipeline. The caller must hold the workspace lock (see :meth:`Workspace.lock`)."""
        self._check_stage_name(until, "--until")
        self._check_stage_name(start_from, "--from")
        unknown = sorted(set(self.ws.spec.requirements.scale.stage_memory_mb) - set(self._names()))
        if unknown:
            raise SpecError(
                f"requirements.scale.stage_memory_mb: no stage `{unknown[0]}` in this pipeline "
                f"(stages: {', '.join(self._names())})"
            )
        recover_interrupted(self.ws)
        run_id = _new_id()
        with self.ws.engine.begin() as conn:
            conn.execute(
                insert(runs).values(
                    run_id=run_id, command=command, status="running", started_at=utcnow(), pid=os.getpid()
                )
            )
        outcomes: list[StageOutcome] = []
        produced: dict[str, dict[str, str]] = {}
        summaries: dict[str, dict[str, Any]] = {}
        forcing = force and start_from is None
        status = "success"
        try:
            for stage in self.stages:
                if start_from is not None and stage.name == start_from:
                    forcing = True
                missing = [r for r in stage.requires if r not in produced]
                if missing:
                    raise StageError(
                        f"stage `{stage.name}` needs {', '.join(missing)}, which did not run before it"
                    )
                inputs = {r: produced[r] for r in stage.requires}
                outcome = self._run_stage(run_id, stage, inputs, summaries, forcing)
                outcomes.append(outcome)
                self.on_event("stage_end", outcome)
                if outcome.status == "failed":
                    status = "failed"
                    break
                produced[stage.name] = outcome.outputs
                summaries[stage.name] = outcome.summary
                if until is not None and stage.name == until:
                    break
        except KeyboardInterrupt:
            status = "interrupted"
            self._end_run(run_id, status, "interrupted by the user")
            raise
        except LoopMLError as exc:
            status = "failed"
            self._end_run(run_id, status, str(exc))
            raise
        self._end_run(run_id, status, next((o.error for o in outcomes if o.error), None))
        return RunReport(run_id, status, outcomes)

    def _end_run(self, run_id: str, status: str, error: str | None) -> None:
        with self.ws.engine.begin() as conn:
            conn.execute(
                update(runs).where(runs.c.run_id == run_id).values(status=status, ended_at=utcnow(), error=error)
            )

    def _run_stage(
        self,
        run_id: str,
        stage: BaseStage,
        inputs: dict[str, dict[str, str]],
        summaries: dict[str, dict[str, Any]],
        forcing: bool,
    ) -> StageOutcome:
        key, config_hash, code = self.cache_key(stage, inputs)
        exec_id = _new_id()
        t0 = time.perf_counter()
        hit = None if forcing else self._cached(key)
        now = utcnow()
        base = dict(
            execution_id=exec_id,
            run_id=run_id,
            stage=stage.name,
            cache_key=key,
            config_hash=config_hash,
            code_version=code,
            inputs=inputs,
            started_at=now,
        )
        if hit is not None:
            with self.ws.engine.begin() as conn:
                conn.execute(
                    insert(executions).values(
                        **base,
                        status="cached",
                        cached_from=hit["execution_id"],
                        outputs=hit["outputs"],
                        summary=hit["summary"],
                        ended_at=now,
                        duration_s=0.0,
                    )
                )
            return StageOutcome(stage.name, "cached", exec_id, 0.0, hit["outputs"] or {}, hit["summary"] or {})
        with self.ws.engine.begin() as conn:
            conn.execute(insert(executions).values(**base, status="running"))
        self.on_event("stage_start", stage.name)
        job = StageJob(
            project_dir=str(self.ws.project_dir),
            spec_json=self.ws.spec.model_dump(mode="json"),
            stage=stage.name,
            execution_id=exec_id,
            inputs=inputs,
            upstream_summaries={r: summaries.get(r, {}) for r in stage.requires},
            show_progress=self.show_progress,
        )
        try:
            result = self.executor.submit(run_job, job).result()
        except KeyboardInterrupt:
            self._end_execution(exec_id, "interrupted", t0, error="interrupted by the user")
            raise
        except LoopMLError as exc:
            # every stage error names its stage; the message already names the thing and the value
            message = str(exc) if str(exc).startswith(f"stage `{stage.name}`") else f"stage `{stage.name}`: {exc}"
            peak = getattr(exc, "peak_rss_bytes", None)
            self._end_execution(exec_id, "failed", t0, error=message, stage=stage.name, peak_rss_bytes=peak)
            return StageOutcome(stage.name, "failed", exec_id, time.perf_counter() - t0, error=message,
                                traceback=traceback.format_exc(), peak_rss_bytes=peak)
        except Exception as exc:
            # an unexpected exception is a bug, but the user still gets one line naming the stage
            # (the traceback is stored with the execution and printed by --debug)
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
            tb = traceback.format_exc()
            peak = getattr(exc, "peak_rss_bytes", None)
            self._end_execution(exec_id, "failed", t0, error=tb, stage=stage.name, peak_rss_bytes=peak)
            return StageOutcome(
                stage.name, "failed", exec_id, time.perf_counter() - t0,
                error=f"stage `{stage.name}` crashed: {detail[0] if detail else type(exc).__name__}"
                " (a bug in loopml: rerun with --debug for the traceback and report it)",
                traceback=tb, peak_rss_bytes=peak,
            )
        peak = result.peak_rss_bytes
        self._end_execution(exec_id, "success", t0, outputs=result.outputs, summary=result.summary,
                            stage=stage.name, peak_rss_bytes=peak)
        return StageOutcome(stage.name, "success", exec_id, time.perf_counter() - t0, result.outputs, result.summary,
                            peak_rss_bytes=peak)

    def _end_execution(
        self,
        exec_id: str,
        status: str,
        t0: float,
        *,
        outputs: dict[str, str] | None = None,
        summary: dict[str, Any] | None = None,
        error: str | None = None,
        stage: str | None = None,
        peak_rss_bytes: int | None = None,
    ) -> None:
        with self.ws.engine.begin() as conn:
            if stage is not None:
                cap, _ = stage_cap(self.ws.spec, stage)
                conn.execute(insert(execution_memory).values(
                    execution_id=exec_id, peak_rss_bytes=peak_rss_bytes, cap_bytes=cap))
            conn.execute(
                update(executions)
                .where(executions.c.execution_id == exec_id)
                .values(
                    status=status,
                    outputs=outputs,
                    summary=summary,
                    error=error,
                    ended_at=utcnow(),
                    duration_s=time.perf_counter() - t0,
                )
            )
