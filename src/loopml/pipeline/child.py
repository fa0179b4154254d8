"""Run the pipeline in a fresh child process, so that its memory is the child's and goes back to the system.

A long-lived caller (the monitor's retraining, the demo that retrains after serving a day) already holds
its own tables, models and imports; a pipeline run in the same process starts on top of them and peaks
higher than the same run alone (issue 20: the demo's retraining at 1.2M rows peaked 2.4 GB, 0.6 GB above
the same stages in a fresh process). :func:`run_pipeline_in_child` starts
``python -m loopml.pipeline.child RESULT`` with the job as JSON on its standard input (no pickle, no
re-import of the caller's ``__main__``): the child reopens the workspace with the given spec, runs
:class:`~loopml.pipeline.Runner` over ``pipeline_for(spec)`` and writes the run report and its own peak
RSS as JSON to ``RESULT``. Each stage still records its peak in the run record (in the child's process).

The caller must hold the workspace lock (as for :meth:`Runner.run`); its file descriptor is handed to
the child, so the lock stays held until the child ends even if the caller is killed first. A stage
error comes back as the same :class:`~loopml.errors.LoopMLError` class, with its message and hint; a
child that dies (killed, out of memory) is a :class:`~loopml.errors.StageError` naming its exit status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopml import errors
from loopml.errors import LoopMLError, SpecError, StageError

if TYPE_CHECKING:
    from loopml.pipeline.runner import RunReport
    from loopml.workspace import Workspace


@dataclass(frozen=True)
class ChildProcess:
    """The child process a pipeline run happened in: its pid and its RSS high-water mark."""

    pid: int
    peak_rss_bytes: int
    exit_code: int

    def to_json(self) -> dict[str, Any]:
        """Plain data (``peak_rss_mb`` rounded to 0.1 MB), e.g. for a retraining decision's evidence."""
        return {"pid": self.pid, "peak_rss_mb": round(self.peak_rss_bytes / 2**20, 1), "exit_code": self.exit_code}


def run_pipeline_in_child(
    ws: Workspace,
    *,
    start_from: str | None = None,
    until: str | None = None,
    command: str = "loopml run",
    show_progress: bool = False,
    lock_fd: int | None = None,
) -> tuple[RunReport, ChildProcess]:
    """Run ``pipeline_for(ws.spec)`` in a fresh child process; its report and the child's pid and peak RSS.

    ``lock_fd``: the file descriptor of the workspace lock the caller holds, inherited by the child.
    """
    job = {
        "project_dir": str(ws.project_dir),
        "spec": ws.spec.model_dump(mode="json"),
        "start_from": start_from,
        "until": until,
        "command": command,
        "show_progress": show_progress,
    }
    from loopml.pipeline.resources import release_freed_memory

    release_freed_memory()  # while the child runs, this process holds only what it still uses
    with tempfile.TemporaryDirectory(prefix="loopml-child-") as tmp:
        result_path = Path(tmp) / "result.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "loopml.pipeline.child", str(result_path)],
            stdin=subprocess.PIPE, pass_fds=(lock_fd,) if lock_fd is not None else (),
        )
        try:
            proc.communicate(json.dumps(job).encode())
            code = proc.returncode
        except BaseException:  # Ctrl-C (or an error) here: let the child end its run cleanly, then go
            _stop(proc)
            raise
        result = json.loads(result_path.read_text()) if result_path.exists() else None
    if result is None or ("report" not in result and "error" not in result):
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        oom = " (SIGKILL: often the system running out of memory)" if code == -signal.SIGKILL else ""
        raise StageError(f"the pipeline's child process {proc.pid} ended without a result: {how}{oom}",
                         hint="`loopml runs` shows the stage it was running")
    child = ChildProcess(pid=proc.pid, peak_rss_bytes=int(result.get("peak_rss_bytes") or 0), exit_code=code)
    if "error" in result:
        exc = _error(result["error"])
        exc.child = child  # type: ignore[attr-defined]
        raise exc
    return _report(result["report"]), child


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # the runner marks the run interrupted
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _report(data: dict[str, Any]) -> RunReport:
    from loopml.pipeline.runner import RunReport, StageOutcome

    return RunReport(data["run_id"], data["status"], [StageOutcome(**o) for o in data["outcomes"]])


def _error(data: dict[str, Any]) -> BaseException:
    if data["type"] == "KeyboardInterrupt":
        return KeyboardInterrupt()
    cls = getattr(errors, data["type"], None)
    if isinstance(cls, type) and issubclass(cls, LoopMLError):
        exc = cls(data["message"], hint=data.get("hint"))
        if isinstance(exc, SpecError):
            exc.problems = list(data.get("problems") or [])
        exc.original_traceback = data.get("traceback")  # type: ignore[attr-defined]
        return exc
    exc = StageError(f"the pipeline's child process crashed: {data['type']}: {data['message']}"
                     " (a bug in loopml: rerun with --debug for the traceback and report it)")
    exc.original_traceback = data.get("traceback")
    return exc


def _run(job: dict[str, Any]) -> dict[str, Any]:
    from loopml.pipeline import Runner, pipeline_for
    from loopml.pipeline.stage import load_plugins
    from loopml.spec import Spec
    from loopml.workspace import Workspace

    load_plugins()
    spec = Spec.model_validate(job["spec"])
    ws = Workspace.open(job["project_dir"], spec)
    report = Runner(ws, pipeline_for(spec), show_progress=bool(job["show_progress"])).run(
        start_from=job["start_from"], until=job["until"], command=job["command"]
    )
    return {"run_id": report.run_id, "status": report.status, "outcomes": [asdict(o) for o in report.outcomes]}


def main(argv: list[str]) -> int:
    """The child: read the job from stdin, run it, write the result as JSON to ``argv[0]``."""
    from loopml.pipeline.resources import peak_rss

    out = Path(argv[0])
    result: dict[str, Any]
    code = 0
    try:
        result = {"report": _run(json.loads(sys.stdin.read()))}
    except KeyboardInterrupt:
        result, code = {"error": {"type": "KeyboardInterrupt", "message": "interrupted"}}, 130
    except BaseException as exc:
        result = {"error": {
            "type": type(exc).__name__, "message": getattr(exc, "message", str(exc)),
            "hint": getattr(exc, "hint", None), "problems": getattr(exc, "problems", None),
            "traceback": getattr(exc, "original_traceback", None) or traceback.format_exc(),
        }}
        code = 1
    # the kernel's high-water mark (VmHWM) can miss a peak: pages an allocator hands back with
    # madvise(MADV_DONTNEED) lower the RSS without updating it; the stages' own samples saw them
    outcomes = result.get("report", {}).get("outcomes", [])
    result["peak_rss_bytes"] = max([peak_rss(), *(o.get("peak_rss_bytes") or 0 for o in outcomes)])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, out)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
