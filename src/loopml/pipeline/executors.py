"""Executors run stage jobs: in this process, or in a local process pool.

A job is a plain, picklable description (project folder, stage name, execution id,
inputs); the worker reopens the workspace itself. That is what lets a Ray executor
plug in later without touching any stage.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from dataclasses import dataclass
from typing import Any, Protocol

from loopml.pipeline.stage import STAGES, StageContext, StageResult, load_plugins


@dataclass(frozen=True)
class StageJob:
    """A picklable stage invocation."""

    project_dir: str
    spec_json: dict[str, Any]
    stage: str
    execution_id: str
    inputs: dict[str, dict[str, str]]
    upstream_summaries: dict[str, dict[str, Any]]
    show_progress: bool = True


def run_job(job: StageJob) -> StageResult:
    """Run one stage job (in whatever process the executor chose)."""
    from loopml.spec import Spec
    from loopml.workspace import Workspace

    load_plugins()
    spec = Spec.model_validate(job.spec_json)
    ws = Workspace.open(job.project_dir, spec)
    stage = STAGES[job.stage](spec)
    ctx = StageContext(ws, job.execution_id, job.inputs, job.upstream_summaries, job.show_progress)
    return stage.run(ctx)


class Executor(Protocol):
    """Runs a stage job and returns its result (one required method)."""

    name: str

    def submit(self, job: StageJob) -> cf.Future[StageResult]:
        """Start the job; the future holds its result."""
        ...

    def shutdown(self) -> None:
        """Release workers (a pool's processes); called once the run ends."""
        ...


class InProcessExecutor:
    """Runs jobs in the calling process (the default: fastest start, easiest debugging)."""

    name = "inprocess"

    def submit(self, job: StageJob) -> cf.Future[StageResult]:
        fut: cf.Future[StageResult] = cf.Future()
        try:
            fut.set_result(run_job(job))
        except BaseException as exc:  # KeyboardInterrupt too: the runner records it
            fut.set_exception(exc)
        return fut

    def shutdown(self) -> None:
        """Nothing to release."""


class ProcessExecutor:
    """Runs jobs in a local process pool (isolation from native crashes, parallel trials)."""

    name = "process"

    def __init__(self, max_workers: int = 2) -> None:
        self._pool = cf.ProcessPoolExecutor(max_workers=max_workers, mp_context=mp.get_context("fork"))

    def submit(self, job: StageJob) -> cf.Future[StageResult]:
        return self._pool.submit(run_job, job)

    def shutdown(self) -> None:
        """Stop the pool."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Runs jobs as Ray tasks (a local Ray started on first use, or the cluster ``RAY_ADDRESS`` names).

    Workers reopen the workspace from the job's project folder, so on a cluster the project
    folder must be on a filesystem every node sees.
    """

    name = "ray"

    def __init__(self) -> None:
        try:
            import ray
        except ImportError:
            from loopml.errors import SpecError

            raise SpecError(
                "executor `ray` needs Ray, which is not installed", hint="pip install 'loopml[scale]'"
            ) from None
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        self._remote = ray.remote(run_job)

    def submit(self, job: StageJob) -> cf.Future[StageResult]:
        fut: cf.Future[StageResult] = self._remote.remote(job).future()  # typed with or without Ray installed
        return fut

    def shutdown(self) -> None:
        """Leave Ray running for the rest of the process (it stops at exit)."""


EXECUTORS: dict[str, type] = {"inprocess": InProcessExecutor, "process": ProcessExecutor, "ray": RayExecutor}


def make_executor(name: str) -> Executor:
    """An executor by registered name."""
    from loopml.errors import SpecError

    if name not in EXECUTORS:
        raise SpecError(f"unknown executor `{name}` (registered: {', '.join(sorted(EXECUTORS))})")
    return EXECUTORS[name]()  # type: ignore[no-any-return]
