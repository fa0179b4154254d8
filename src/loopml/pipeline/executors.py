"""Executors run stage jobs: in this process, or in a local process pool.

A job is a plain, picklable description (project folder, stage name, execution id,
inputs); the worker reopens the workspace itself. That is what lets the same stages (and the
same tuning trials, see ``loopml.training.trials``) run in this process, a local pool or Ray.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from loopml.pipeline.resources import MemoryWatch, stage_cap
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
    cap, cap_field = stage_cap(spec, job.stage)
    with MemoryWatch(job.stage, cap, cap_field) as watch:
        if cap is not None:
            watch.check_floor(stage.memory_floor(ctx))
        result = stage.run(ctx)
    result.peak_rss_bytes = watch.peak_bytes
    return result


J = TypeVar("J")
R = TypeVar("R")


class Executor(Protocol):
    """Runs picklable jobs: pipeline stages (:func:`run_job`) and tuning trials alike.

    One required method, ``submit(fn, job)``; ``max_parallel`` says how many jobs it runs at once.
    """

    name: str
    max_parallel: int

    def submit(self, fn: Callable[[J], R], job: J) -> cf.Future[R]:
        """Start ``fn(job)``; the future holds its result."""
        ...

    def shutdown(self) -> None:
        """Release workers (a pool's processes); called once the work ends."""
        ...


class InProcessExecutor:
    """Runs jobs in the calling process, one at a time (fastest start, easiest debugging)."""

    name = "inprocess"
    max_parallel = 1

    def submit(self, fn: Callable[[J], R], job: J) -> cf.Future[R]:
        fut: cf.Future[R] = cf.Future()
        try:
            fut.set_result(fn(job))
        except BaseException as exc:  # KeyboardInterrupt too: the runner records it
            fut.set_exception(exc)
        return fut

    def shutdown(self) -> None:
        """Nothing to release."""


class ProcessExecutor:
    """Runs jobs in a local process pool (isolation from native crashes, parallel trials)."""

    name = "process"

    def __init__(self, max_workers: int = 2) -> None:
        self.max_parallel = max_workers
        self._pool = cf.ProcessPoolExecutor(max_workers=max_workers, mp_context=mp.get_context("fork"))

    def submit(self, fn: Callable[[J], R], job: J) -> cf.Future[R]:
        return self._pool.submit(fn, job)

    def shutdown(self) -> None:
        """Stop the pool."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def connect_ray() -> Any:
    """The ``ray`` module, connected: to the cluster ``RAY_ADDRESS`` names, else to a local Ray started here.

    A local Ray binds 127.0.0.1 only and has no dashboard. Training (``loopml.training.distributed``) and
    batch scoring (``loopml.serving.batch_ray``) on Ray connect through this too.
    """
    local = not os.environ.get("RAY_ADDRESS")
    if local:  # read by Ray at import and by its processes: every server binds 127.0.0.1, not all interfaces
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        from loopml.errors import SpecError

        raise SpecError("executor `ray`: Ray is not installed", hint="pip install 'loopml[scale]'") from None
    if not ray.is_initialized():
        if not local:
            ray.init(log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    return ray


class RayExecutor:
    """Runs jobs as Ray tasks (a local Ray started on first use, or the cluster ``RAY_ADDRESS`` names).

    Workers reopen the workspace (or the trial data file) from the job's paths, so on a cluster
    the project folder must be on a filesystem every node sees.
    """

    name = "ray"

    def __init__(self, max_parallel: int = 4) -> None:
        self._ray = connect_ray()
        self._remote: dict[Any, Any] = {}
        self.max_parallel = max_parallel

    def submit(self, fn: Callable[[J], R], job: J) -> cf.Future[R]:
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(fn)
        fut: cf.Future[R] = self._remote[fn].remote(job).future()  # typed with or without Ray installed
        return fut

    def shutdown(self) -> None:
        """Leave Ray running for the rest of the process (it stops at exit)."""


EXECUTORS: dict[str, type] = {"inprocess": InProcessExecutor, "process": ProcessExecutor, "ray": RayExecutor}


def make_executor(name: str, *, field: str = "--executor") -> Executor:
    """An executor by registered name; ``field`` names where the name came from in the error."""
    from loopml.errors import SpecError

    if name not in EXECUTORS:
        raise SpecError(f"{field}: unknown executor `{name}` (registered: {', '.join(sorted(EXECUTORS))})")
    return EXECUTORS[name]()  # type: ignore[no-any-return]
