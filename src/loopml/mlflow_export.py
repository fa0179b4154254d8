"""loopml runs in an MLflow tracking store (``loopml export --to mlflow``), so a team can keep its MLflow UI.

Each loopml run becomes one MLflow run in the experiment named after the project
(``spec.project.name``, or ``experiment``), written with MLflow's own client
(:class:`mlflow.tracking.MlflowClient`, any tracking URI it accepts: a local folder or ``file:`` URI,
the default ``mlruns/`` in the project, a file store that MLflow 3 accepts behind
``MLFLOW_ALLOW_FILE_STORE``, set here for that case; ``http:`` for a tracking server; database URIs
need the full ``mlflow`` package):

- **params**: the task, target, split, seed, the candidates, the winner and the winner's parameters
  (``model.<name>``);
- **metrics**: every test metric of the run's evaluation with its interval (``roc_auc``,
  ``roc_auc.lower``, ``roc_auc.upper``), the baseline's (``baseline.<metric>``), and each candidate's
  validation score with its interval (``valid.<candidate>.<metric>``). Names MLflow refuses
  (``ndcg@10``) have the character replaced (``ndcg_at_10``);
- **tags**: ``loopml.run_id``, ``loopml.status``, ``loopml.verdict``, ``loopml.approved``,
  ``loopml.version``, ``loopml.state``, ``loopml.winner`` and the lineage digests of every stage output
  (``loopml.digest.<stage>.<output>``), with the stage's config hash and code version;
- **artifacts**: the run's reports as loopml stored them (``leaderboard.json``/``.html``,
  ``evaluation.json``/``.html``, ``validation.json``/``.html``, ``version.json``) under ``loopml/``.

A run already exported (same ``loopml.run_id`` tag in the experiment) is skipped, so exporting
again only adds the new runs.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from loopml.errors import LoopMLError

_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")
#: (stage, output) → artifact file name under loopml/
_REPORTS = {("train", "leaderboard"): "leaderboard.json", ("train", "leaderboard_html"): "leaderboard.html",
            ("evaluate", "report"): "evaluation.json", ("evaluate", "html"): "evaluation.html",
            ("validate", "report"): "validation.json", ("validate", "html"): "validation.html",
            ("register", "version"): "version.json"}


@dataclass
class ExportResult:
    """What an export wrote: MLflow run ids by loopml run id, and the runs skipped (already there)."""

    tracking_uri: str
    experiment: str
    experiment_id: str
    exported: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def key(name: str) -> str:
    """A metric/param/tag name MLflow accepts (``ndcg@10`` → ``ndcg_at_10``).

    >>> key("ndcg@10"), key("fairness.demographic_parity_difference")
    ('ndcg_at_10', 'fairness.demographic_parity_difference')
    """
    return _BAD.sub("_", name.replace("@", "_at_"))


def _finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def _client(tracking_uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise LoopMLError("MLflow export needs the `mlflow` extra (mlflow-skinny is not installed)",
                          hint="pip install 'loopml[mlflow]' (make setup installs it)") from None
    if "://" not in tracking_uri or tracking_uri.startswith("file:"):
        # a local file store: MLflow 3 keeps it in maintenance mode behind this opt-in; asking for one
        # (the default, or a folder/file: URI) is that opt-in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=tracking_uri)


def default_tracking_uri(project_dir: Path) -> str:
    """``mlruns/`` in the project folder, as MLflow's own default (a local file store)."""
    return (Path(project_dir).resolve() / "mlruns").as_uri()


def _json(ws: Any, digest: str | None) -> dict[str, Any]:
    if not digest:
        return {}
    try:
        data = json.loads(ws.artifacts.get_bytes(digest))
    except (LoopMLError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _ms(ts: Any) -> int | None:
    return int(ts.timestamp() * 1000) if hasattr(ts, "timestamp") else None


def run_record(ws: Any, run: dict[str, Any]) -> dict[str, Any]:
    """Params, metrics, tags and report artifacts (name → digest) of one loopml run."""
    from loopml.lineage import list_executions

    execs = list_executions(ws, run["run_id"], 1000)
    by_stage = {e["stage"]: e for e in execs}
    spec = ws.spec
    params: dict[str, Any] = {"task": spec.task.type, "target": spec.task.target,
                              "split": spec.training.split.type, "seed": spec.training.seed,
                              "candidates": ", ".join(c.name or c.type for c in spec.training.candidates)}
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {"loopml.run_id": run["run_id"], "loopml.status": str(run["status"]),
                            "loopml.command": str(run.get("command") or ""), "mlflow.runName": f"loopml {run['run_id']}"}
    for e in execs:
        for out, digest in (e["outputs"] or {}).items():
            tags[key(f"loopml.digest.{e['stage']}.{out}")] = str(digest)
        tags[key(f"loopml.config.{e['stage']}")] = str(e["config_hash"] or "")
        tags[key(f"loopml.code.{e['stage']}")] = str(e["code_version"] or "")
    board = _json(ws, (by_stage.get("train", {}).get("outputs") or {}).get("leaderboard"))
    if board:
        params["winner"] = board.get("winner")
        tags["loopml.winner"] = str(board.get("winner"))
        metric = str(board.get("metric") or "score")
        for c in board.get("candidates") or []:
            for suffix, v in (("", c.get("value")), (".lower", c.get("ci_low")), (".upper", c.get("ci_high"))):
                if _finite(v):
                    metrics[key(f"valid.{c['name']}.{metric}{suffix}")] = float(v)
            if c.get("name") == board.get("winner"):
                params["model"] = c.get("model_type")
                for k, v in (c.get("params") or {}).items():
                    params[key(f"model.{k}")] = v
    report = _json(ws, (by_stage.get("evaluate", {}).get("outputs") or {}).get("report"))
    if report:
        for name, m in (report.get("metrics") or {}).items():
            if not isinstance(m, dict):
                continue
            for suffix, v in (("", m.get("value")), (".lower", m.get("lower")), (".upper", m.get("upper"))):
                if _finite(v):
                    metrics[key(f"{name}{suffix}")] = float(v)
        base = report.get("baseline") or {}
        if base.get("name") and _finite(base.get("value")):
            metrics[key(f"baseline.{report.get('primary_metric')}")] = float(base["value"])
            params["baseline"] = base["name"]
        params["primary_metric"] = report.get("primary_metric")
        tags["loopml.verdict"] = str(report.get("verdict"))
        tags["loopml.approved"] = str(bool(report.get("approved"))).lower()
    version = _json(ws, (by_stage.get("register", {}).get("outputs") or {}).get("version"))
    if version.get("version_id"):
        tags["loopml.version"] = str(version["version_id"])
        tags["loopml.state"] = str(version.get("state"))
        if "approved" in version:
            tags["loopml.approved"] = str(bool(version["approved"])).lower()
    reports = {name: (ex["outputs"] or {}).get(out) for (stage, out), name in _REPORTS.items()
               if (ex := by_stage.get(stage)) is not None and (ex["outputs"] or {}).get(out)}
    return {"params": {k: v for k, v in params.items() if v is not None}, "metrics": metrics, "tags": tags,
            "reports": reports}


def export_runs(ws: Any, tracking_uri: str | None = None, *, experiment: str | None = None,
                limit: int = 1000) -> ExportResult:
    """Write the workspace's runs (newest ``limit``) into an MLflow tracking store; see the module docstring."""
    from mlflow.entities import Metric, Param

    from loopml.lineage import list_runs

    uri = tracking_uri or default_tracking_uri(ws.project_dir)
    client = _client(uri)
    name = experiment or ws.spec.project.name
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(name, tags={"loopml.project": name})
    result = ExportResult(uri, name, str(exp_id))
    for run in reversed(list_runs(ws, limit)):  # oldest first: MLflow lists them in the order they happened
        if run["status"] == "running":
            continue
        found = client.search_runs([exp_id], filter_string=f"tags.`loopml.run_id` = '{run['run_id']}'", max_results=1)
        if found:
            result.skipped.append(run["run_id"])
            continue
        rec = run_record(ws, run)
        started = _ms(run.get("started_at"))
        mrun = client.create_run(exp_id, start_time=started, tags=rec["tags"], run_name=f"loopml {run['run_id']}")
        rid = mrun.info.run_id
        step_time = _ms(run.get("ended_at")) or started or 0
        client.log_batch(
            rid,
            metrics=[Metric(k, v, step_time, 0) for k, v in sorted(rec["metrics"].items())],
            params=[Param(k, str(v)[:6000]) for k, v in sorted(rec["params"].items())],
        )
        with tempfile.TemporaryDirectory(prefix="loopml-mlflow-") as tmp:
            folder = Path(tmp) / "loopml"
            folder.mkdir()
            for file_name, digest in rec["reports"].items():
                (folder / file_name).write_bytes(ws.artifacts.get_bytes(digest))
            if rec["reports"]:
                client.log_artifacts(rid, str(folder), artifact_path="loopml")
        client.set_terminated(rid, status="FINISHED" if run["status"] == "success" else "FAILED",
                              end_time=_ms(run.get("ended_at")))
        result.exported[run["run_id"]] = rid
    return result
