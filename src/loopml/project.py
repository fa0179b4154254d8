"""The Python API: a project, its runs, its leaderboard and evaluations, and its models, from a notebook.

A thin facade over the same parts the CLI drives (``Runner``/``pipeline_for``, the registry,
``load_version``/``load_bundle``, ``loopml serve``): nothing here is a second implementation.

>>> import tempfile, pathlib
>>> from sklearn.datasets import load_breast_cancer
>>> from loopml.spec.scaffold import scaffold_from_data
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> frame = load_breast_cancer(as_frame=True).frame
>>> frame.to_csv(folder / "cancer.csv", index=False)
>>> proj_dir = folder / "cancer"
>>> proj_dir.mkdir()
>>> _ = (proj_dir / "loopml.yaml").write_text(
...     scaffold_from_data(folder / "cancer.csv", "target", project_dir=proj_dir).text)
>>> project = Project(proj_dir)
>>> result = project.run()
>>> result["approved"], result["version"], result["state"]
(True, 'v1', 'production')
>>> project.leaderboard()["winner"] in ("logistic", "lightgbm")
True
>>> project.evaluation("v1")["primary_metric"]
'roc_auc'
>>> model = project.model()               # the production version
>>> scores = model.score(frame.drop(columns="target").head(3))
>>> bool(((scores >= 0) & (scores <= 1)).all())
True
>>> rows = frame.drop(columns="target").head(3)
>>> model.predict(rows.to_dict("records")).tolist()   # dicts, a DataFrame or an Arrow table
[0.0, 0.0, 0.0]
>>> frame["target"].head(3).tolist()                   # the first three tumours are malignant (0)
[0, 0, 0]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from loopml.errors import LoopMLError, NotFound

__all__ = ["Model", "Project", "Service"]


def _as_table(rows: Any) -> pa.Table:
    """A pandas DataFrame, an Arrow table or record batch, one dict or a list of dicts as an Arrow table."""
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if isinstance(rows, dict):
        return pa.Table.from_pylist([rows])
    if isinstance(rows, list | tuple):
        if not all(isinstance(r, dict) for r in rows):
            raise LoopMLError("rows given as a list must be dicts (one per row, column name → value)")
        return pa.Table.from_pylist(list(rows))
    if type(rows).__module__.startswith("pandas"):
        return pa.Table.from_pandas(rows, preserve_index=False)
    raise LoopMLError(f"cannot predict on a {type(rows).__name__}: give a pandas DataFrame, an Arrow table, "
                      "a dict or a list of dicts")


class Model:
    """A registered model version, loaded (checksums verified) and ready to score rows in this process.

    ``predict`` gives what the service answers as ``prediction`` (the class, or the value), ``score``
    what it answers as ``score`` (the positive-class probability, the value, the ranking score); both
    use the batch path of the same :class:`~loopml.serving.servable.Servable` the service and
    ``loopml predict --batch`` use.
    """

    def __init__(self, version_id: str, servable: Any) -> None:
        self.version_id = version_id
        self.servable = servable

    def __repr__(self) -> str:
        return f"Model({self.version_id!r})"

    def score(self, rows: Any) -> np.ndarray:
        """Scores of ``rows`` (DataFrame, Arrow table, dict or list of dicts), one per row."""
        scores, _ = self.servable.predict_table_full(_as_table(rows))
        return np.asarray(scores)

    def predict(self, rows: Any) -> np.ndarray:
        """Predictions of ``rows`` (DataFrame, Arrow table, dict or list of dicts), one per row."""
        _, preds = self.servable.predict_table_full(_as_table(rows))
        return np.asarray(preds)


class Service:
    """A running ``loopml serve`` of a project (a child process); stop it with :meth:`stop` or ``with``."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int, log: Path | None = None) -> None:
        self.log = log
        self.process = process
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:43121`` (POST ``/v1/predict``)."""
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the service (SIGTERM: it drains and flushes its logs), then wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Project:
    """A loopml project folder (holding ``loopml.yaml``): run it, read its results, load and serve its models."""

    def __init__(self, path: str | Path = ".") -> None:
        from loopml.spec import SPEC_FILENAME

        self.path = Path(path)
        if not (self.path / SPEC_FILENAME).is_file():
            raise NotFound(f"{self.path} holds no {SPEC_FILENAME}",
                           hint="create one with `loopml init DIR --from data.csv --target COLUMN`")
        self._ws: Any = None

    def __repr__(self) -> str:
        return f"Project({str(self.path)!r})"

    @property
    def workspace(self) -> Any:
        """The project's :class:`~loopml.workspace.Workspace` (opened on first use)."""
        if self._ws is None:
            from loopml.workspace import Workspace

            self._ws = Workspace.open(self.path)
        return self._ws

    def run(self, *, until: str | None = None, start_from: str | None = None, force: bool = False,
            executor: str = "inprocess", wait_s: float = 0.0) -> dict[str, Any]:
        """Run the pipeline as ``loopml run`` does; returns the ``loopml run --json`` object.

        A failed stage raises its :class:`~loopml.errors.StageError`.
        """
        from loopml.cli.run_result import run_result
        from loopml.pipeline import Runner, make_executor, pipeline_for
        from loopml.pipeline.preflight import check_against_data
        from loopml.spec import SPEC_FILENAME

        ws = self.workspace
        stages = pipeline_for(ws.spec)
        if not stages:
            raise LoopMLError("nothing to run: the spec gives the pipeline no stages", hint="declare data.sources")
        names = [s.name for s in stages]
        upto = names[: names.index(until) + 1] if until in names else names
        check_against_data(ws.spec, ws.project_dir, model=any(n in upto for n in ("features", "train"))
                           ).raise_for_problems(str(ws.project_dir / SPEC_FILENAME))
        ex = make_executor(executor)
        try:
            with ws.lock(wait_s=wait_s):
                report = Runner(ws, stages, ex, show_progress=False).run(
                    until=until, start_from=start_from, force=force, command="loopml.Project.run")
        finally:
            ex.shutdown()
        report.raise_for_failure()
        return run_result(ws, report)

    def leaderboard(self) -> dict[str, Any]:
        """The leaderboard of the latest training (winner, metric, candidates with intervals, why)."""
        from loopml.lineage import list_executions

        for e in list_executions(self.workspace, None, 1000):
            digest = (e["outputs"] or {}).get("leaderboard")
            if e["stage"] == "train" and e["status"] in ("success", "cached") and digest:
                data: dict[str, Any] = json.loads(self.workspace.artifacts.get_bytes(digest))
                return data
        raise NotFound(f"{self.path}: no training yet", hint="run the project first (Project.run())")

    def _version(self, version: str) -> Any:
        from loopml.registry import Registry

        reg = Registry(self.workspace)
        if version == "production":
            v = reg.production()
            if v is None:
                raise NotFound(f"{self.path}: no version is in production",
                               hint="run the project, or promote one with `loopml models promote`")
            return v
        return reg.get(version)

    def evaluation(self, version: str = "production") -> dict[str, Any]:
        """The latest evaluation report of a registered version (metrics with intervals, slices, gates)."""
        from loopml.registry import Registry
        from loopml.registry.evidence import latest_evaluation

        v = self._version(version)
        rec = latest_evaluation(Registry(self.workspace), v.version_id)
        digest = (rec.report if rec is not None else None) or v.lineage.get("evaluation_report")
        if not digest:
            raise NotFound(f"version {v.version_id} has no evaluation report")
        data: dict[str, Any] = json.loads(self.workspace.artifacts.get_bytes(digest))
        return data

    def model(self, version: str = "production") -> Model:
        """A registered version (default: the one in production), loaded to score rows here."""
        from loopml.serving.sources import load_version

        v = self._version(version)
        return Model(v.version_id, load_version(self.workspace, v.version_id, v.bundle_digest))

    def serve(self, *, port: int = 0, host: str = "127.0.0.1", timeout: float = 120.0) -> Service:
        """Start ``loopml serve`` for this project (port 0: a free one) and return once it accepts requests."""
        folder = Path(tempfile.mkdtemp(prefix="loopml-serve-"))
        ready, log = folder / "ready", folder / "serve.log"
        with open(log, "wb") as err_file:  # a file, not a pipe: a chatty server never blocks on a full pipe
            proc = subprocess.Popen(
                [sys.executable, "-m", "loopml.cli.main", "serve", "-p", str(self.path), "--host", host,
                 "--port", str(port), "--ready-file", str(ready)],
                stdout=subprocess.DEVNULL, stderr=err_file, env=dict(os.environ))
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None:
                err = log.read_text(errors="replace").strip()
                raise LoopMLError(f"loopml serve exited ({proc.returncode}): {err}")
            if time.monotonic() > deadline:
                proc.kill()
                raise LoopMLError(f"loopml serve did not accept requests within {timeout:.0f} s")
            time.sleep(0.05)
        bound_host, bound_port = ready.read_text().split()
        return Service(proc, bound_host, int(bound_port), log)
