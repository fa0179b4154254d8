"""Assembling and running the service: from a workspace (registry) or from one model file."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path
from typing import Any

from loopml.serving.app import ServingApp
from loopml.serving.auth import AdminAuth
from loopml.serving.http import HttpLimits, install_uvloop, return_freed_memory, serve_app
from loopml.serving.journal import FEEDBACK, PREDICTIONS, GroupCommit, Journal
from loopml.serving.logs import SegmentStore, feedback_log_dir, prediction_log_dir
from loopml.serving.lookup import FeatureLookup, PrecomputedLookup
from loopml.serving.request_ids import RequestIds, load_key
from loopml.serving.sources import FileSource, RegistrySource
from loopml.spec.deployment import Deployment


def make_logs(root: Path, deployment: Deployment) -> tuple[Journal, Journal]:
    """The prediction and feedback logs under ``root/logs``, each with its writer process.

    Temp files of a crashed writer are removed first; journals a crash left behind are resumed
    by the new writers.
    """
    pdir, fdir = prediction_log_dir(root), feedback_log_dir(root)
    for d in (pdir, fdir):
        SegmentStore.clean_partial(d)
    opts = dict(flush_rows=deployment.log_flush_rows, flush_seconds=deployment.log_flush_seconds,
                compact_seconds=deployment.log_compact_seconds, max_lag_seconds=deployment.log_max_lag_seconds)
    plog = Journal(pdir, PREDICTIONS, **opts)  # type: ignore[arg-type]
    flog = Journal(fdir, FEEDBACK, **opts)  # type: ignore[arg-type]
    return plog, flog


def app_for_workspace(ws: Any, *, logs: bool = True, deployment: Deployment | None = None,
                      backend: str = "python") -> ServingApp:
    """The service of a project: versions from the registry, logs in the workspace, online store lookups.

    ``deployment`` overrides the spec's deployment section (e.g. options given on the command line).
    """
    from loopml.registry import Registry

    dep: Deployment = deployment or ws.spec.deployment
    plog, flog = make_logs(ws.root, dep) if logs else (None, None)
    lookup, precomputed = online_lookups(ws)
    app = ServingApp(
        RegistrySource(ws, backend=backend),
        prediction_log=plog,
        feedback_log=flog,
        auth=admin_auth(dep),
        feedback_auth=feedback_auth(dep),
        request_ids=RequestIds(load_key(ws.root / "serving" / "request_id.key")),
        routing=dep.routing.type,
        routing_options=dep.routing.options(),
        lookup=lookup,
        precomputed=precomputed,
        mode=dep.mode,
        title=f"{ws.spec.project.name} prediction service",
        registry=Registry(ws),
        limits=dep.limits,
    )
    return configure(app, dep)


def admin_auth(dep: Deployment) -> AdminAuth:
    """The admin tokens of a deployment, each naming its actor."""
    return AdminAuth(dep.token_env, actor=dep.token_actor, more=dep.admin_tokens)


def feedback_auth(dep: Deployment) -> AdminAuth | None:
    """The feedback token check (``None``: feedback needs no token)."""
    if dep.feedback_token_env is None:
        return None
    return AdminAuth(dep.feedback_token_env, actor="feedback", purpose="feedback requests")


def configure(app: ServingApp, dep: Deployment) -> ServingApp:
    """Apply the deployment's shutdown and durability settings to ``app``."""
    app.drain_seconds = dep.drain_seconds
    app.compile_after_rows = dep.compile_after_rows if dep.compile_trees == "auto" else None
    if dep.log_durability == "before_answer" and (app.prediction_log is not None or app.feedback_log is not None):
        app.commit = GroupCommit([app.prediction_log, app.feedback_log])  # type: ignore[list-item]
    return app


def online_lookups(ws: Any) -> tuple[FeatureLookup | None, PrecomputedLookup | None]:
    """Online-store readers for entity features and precomputed predictions (when the store exists)."""
    from loopml.serving.store import entity_tables, open_online_store

    tables = entity_tables(ws.spec)
    keys = list(ws.spec.task.entity_keys)
    wants_precomputed = bool(keys) and ws.spec.deployment.mode in ("batch", "both")
    if not tables and not wants_precomputed:
        return None, None  # nothing to read: do not open (or create) the store
    store = open_online_store(ws)
    lookup = FeatureLookup(store, tables) if tables else None
    precomputed = PrecomputedLookup(store, keys) if wants_precomputed else None
    return lookup, precomputed


def app_for_model_file(path: str | Path, *, log_root: Path | None, deployment: Deployment | None = None,
                       task: str = "binary") -> ServingApp:
    """A service for one LightGBM text model (inputs: its numeric feature names)."""
    dep = deployment or Deployment()
    plog, flog = make_logs(log_root, dep) if log_root is not None else (None, None)
    ids = RequestIds(load_key(log_root / ".request_id.key")) if log_root is not None else RequestIds()
    return configure(
        ServingApp(FileSource(path, task), prediction_log=plog, feedback_log=flog, auth=admin_auth(dep),
                   feedback_auth=feedback_auth(dep), request_ids=ids, limits=dep.limits), dep
    )


def http_limits(deployment: Deployment, latency_p99_ms: float | None = None) -> HttpLimits:
    """The server's limits from ``deployment.limits`` (shedding defaults to the requirements' p99 budget)."""
    return HttpLimits.from_spec(deployment.limits, latency_p99_ms)


def run_server(app: ServingApp, host: str, port: int, *, poll_seconds: float = 2.0, ready_file: str | None = None,
               on_ready: Any = None, limits: HttpLimits | None = None) -> None:
    """Load the versions, then serve on uvloop until SIGTERM/SIGINT."""
    install_uvloop()
    return_freed_memory()
    # the journal's flusher thread shares the interpreter: hand the GIL back to the request loop
    # every 0.5 ms instead of every 5 ms, so a flush never holds a request for a whole interval
    sys.setswitchinterval(0.0005)
    app.load_initial()
    gc.collect()
    gc.freeze()  # the loaded models are long-lived: keep the collector off them
    asyncio.run(serve_app(app, host, port, poll_seconds=poll_seconds, ready_file=ready_file, on_ready=on_ready,
                          limits=limits))
