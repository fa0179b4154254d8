"""The web UI's ASGI application (Starlette routes, Jinja2 templates, uPlot charts served from the package).

Read-only unless the admin token is configured: the same tokens as ``loopml serve``
(``$<deployment.token_env>`` and ``deployment.admin_tokens``, checked by
:class:`loopml.serving.auth.AdminAuth`). A promotion or rollback shows the comparison first and
asks for the token in the form; the actor recorded in the registry is the token's name.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from loopml.errors import LoopMLError
from loopml.serving.auth import AdminAuth
from loopml.webui import views
from loopml.webui.export import STATIC, TEMPLATES, configure
from loopml.webui.serving import ServingView
from loopml.workspace import Workspace

NAV = [("runs", "Runs", "/runs"), ("data", "Data", "/data"), ("models", "Models", "/models"),
       ("serving", "Serving", "/serving"), ("monitoring", "Monitoring", "/monitoring"), ("design", "Design", "/design")]
_FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" '
            b'fill="#1f77b4"/></svg>')


class MonitoringCache:
    """The monitoring report's data per window width, computed off the request path and kept on disk.

    The report aggregates the whole prediction log (every window's drift, quality and volume), which takes
    seconds over millions of rows; a page must answer at once. Each computed report is saved in
    ``.loopml/ui/monitoring-<window>.json`` with the fingerprint of what it was computed from (the log's
    segments, by name and size, and the number of checks and alerts), so a restarted UI answers at once from
    it. A request whose logs changed gets the previous report at once (marked as refreshing) while a
    background thread has a child process compute the new one (so the computation's Python work never holds
    the interpreter the pages run in). With no report at all yet, a request waits at most ``wait_s``
    for the computation started when the UI started, then gets a progress page (``progress``) instead.
    """

    def __init__(self, ws: Workspace, wait_s: float = 0.1) -> None:
        self.ws = ws
        self.wait_s = wait_s
        self.folder = ws.root / "ui"
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, dict[str, Any], float]] = {}
        self._running: dict[str, tuple[threading.Thread, float]] = {}
        self._failed: dict[str, str] = {}

    def fingerprint(self) -> str:
        """What the report depends on: the log segments (names and sizes) and the number of checks and alerts."""
        from loopml.monitoring import logs
        from loopml.monitoring.records import ensure_tables, monitor_alerts, monitor_checks

        ensure_tables(self.ws)
        parts: list[Any] = []
        for folder in (logs.predictions_dir(self.ws), logs.feedback_dir(self.ws)):
            try:
                parts.append(sorted([e.name, e.stat().st_size] for e in os.scandir(folder)
                                    if e.name.endswith(".parquet")))
            except OSError:
                parts.append([])
        parts.append(views.count_rows(self.ws, monitor_checks))
        parts.append(views.count_rows(self.ws, monitor_alerts))
        # a report saved by older code is computed again
        parts.append([_code_version(f"loopml.monitoring.{m}") for m in ("report", "drift", "quality", "signals", "ops")])
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def _path(self, window: str) -> Path:
        return self.folder / f"monitoring-{hashlib.sha256(window.encode()).hexdigest()[:12]}.json"

    def _load(self, window: str) -> tuple[str, dict[str, Any], float] | None:
        """The report saved by an earlier run of the UI, if any (an unreadable file is recomputed)."""
        try:
            saved = json.loads(self._path(window).read_text(encoding="utf-8"))
            if saved.get("window") == window and isinstance(saved.get("data"), dict):
                return str(saved["key"]), saved["data"], float(saved["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def _compute(self, window: str, key: str) -> None:
        """Compute the report in a child process (its Python work holds no lock the pages need), keep it in
        memory and on disk."""
        import multiprocessing
        import tempfile

        fd, result = tempfile.mkstemp(prefix="loopml-ui-monitoring-", suffix=".json")
        os.close(fd)
        try:
            child = multiprocessing.get_context("spawn").Process(
                target=_report_child, args=(str(self.ws.project_dir), window, result), daemon=True,
                name=f"loopml-ui-monitoring-{window}")
            child.start()
            child.join()
            try:
                out = json.loads(Path(result).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                out = {"error": f"the monitoring report could not be computed (child process exit code "
                                f"{child.exitcode})"}
        finally:
            Path(result).unlink(missing_ok=True)
        if "error" in out:
            raise LoopMLError(str(out["error"]))
        data, seconds = out["data"], float(out["seconds"])
        with self._lock:
            self._entries[window] = (key, data, seconds)
            self._failed.pop(window, None)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self._path(window)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"window": window, "key": key, "seconds": seconds, "data": data}),
                           encoding="utf-8")
            tmp.replace(path)
        except OSError:
            pass  # a read-only workspace: the report is kept in memory only

    def _start(self, window: str, key: str) -> threading.Thread:
        with self._lock:
            running = self._running.get(window)
            if running is not None and running[0].is_alive():
                return running[0]

            def work() -> None:
                try:
                    self._compute(window, key)
                except LoopMLError as exc:
                    with self._lock:
                        self._failed[window] = exc.message
                finally:
                    with self._lock:
                        self._running.pop(window, None)

            thread = threading.Thread(target=work, name=f"loopml-ui-monitoring-{window}", daemon=True)
            self._running[window] = (thread, time.monotonic())
            thread.start()
            return thread

    def warm(self, window: str) -> threading.Thread | None:
        """Load the saved report of ``window`` and compute it in the background unless it is up to date."""
        key = self.fingerprint()
        saved = self._load(window)
        if saved is not None:
            with self._lock:
                self._entries.setdefault(window, saved)
            if saved[0] == key:
                return None
        return self._start(window, key)

    def progress(self, window: str) -> dict[str, Any]:
        """Where the computation of ``window`` stands: running for how long, the last one's duration, an error."""
        with self._lock:
            running = self._running.get(window)
            entry = self._entries.get(window)
            failed = self._failed.get(window)
        return {"window": window, "ready": entry is not None, "computing": running is not None,
                "elapsed_s": time.monotonic() - running[1] if running else None,
                "last_seconds": entry[2] if entry else None, "error": failed}

    def get(self, window: str) -> tuple[dict[str, Any], bool, float] | None:
        """(report data, whether a newer one is being computed, seconds the shown one took to compute), or None
        while the first report of ``window`` is still being computed (after waiting at most ``wait_s``)."""
        key = self.fingerprint()
        with self._lock:
            entry = self._entries.get(window)
        if entry is None:
            saved = self._load(window)
            if saved is not None:
                with self._lock:
                    entry = self._entries.setdefault(window, saved)
        if entry is None:
            with self._lock:
                failed = self._failed.pop(window, None)
            if failed is not None:
                raise LoopMLError(failed)
            self._start(window, key).join(self.wait_s)
            with self._lock:
                entry = self._entries.get(window)
                failed = self._failed.pop(window, None)
            if failed is not None:
                raise LoopMLError(failed)
            if entry is None:
                return None
        if entry[0] != key:
            self._start(window, key)
            return entry[1], True, entry[2]
        return entry[1], False, entry[2]


@functools.cache
def _code_version(module: str) -> str:
    """The sha256 of a module's source (part of what a saved result depends on)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    return hashlib.sha256(Path(origin).read_bytes()).hexdigest()[:16] if origin else ""


def _report_child(project: str, window: str, result: str) -> None:
    """In a child process: the monitoring report of ``project`` as JSON into ``result`` (or the error)."""
    try:
        from loopml.monitoring.report import build_report

        t0 = time.perf_counter()
        data = build_report(Workspace.open(project), window)
        text = json.dumps({"data": data, "seconds": time.perf_counter() - t0}, default=_plain)
    except LoopMLError as exc:
        text = json.dumps({"error": exc.message})
    Path(result).write_text(text, encoding="utf-8")


def _plain(o: Any) -> Any:
    """JSON for what the report holds besides plain types: numpy scalars, timestamps."""
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "isoformat"):
        return o.isoformat()
    return str(o)


def create_app(project: str | Path, *, auth: AdminAuth | None = None, warm: bool = True) -> Starlette:
    """The UI of the project in ``project``. ``auth`` defaults to the spec's admin tokens from the environment;
    ``warm`` starts computing the monitoring report in the background at once."""
    ws = Workspace.open(project)
    if auth is None:
        from loopml.serving.service import admin_auth

        auth = admin_auth(ws.spec.deployment)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    env = configure(templates.env)
    env.globals["nav"] = NAV
    env.globals["project"] = ws.spec.project.name
    env.globals["actions_enabled"] = auth.enabled
    env.globals["token_env"] = auth.token_env
    for template in sorted(TEMPLATES.glob("*.html")):  # compiled now rather than on the first request of each page
        env.get_template(template.name)
    monitoring_cache = MonitoringCache(ws)
    serving_view = ServingView(ws)
    if warm:
        monitoring_cache.warm(ws.spec.monitoring.drift.window)
        # the log's requests per version and arm, aggregated once now (DuckDB, off the loop's thread)
        threading.Thread(target=serving_view.log_traffic, name="loopml-ui-serving", daemon=True).start()

    def page(request: Request, name: str, section: str, status: int = 200, **ctx: Any) -> Response:
        return templates.TemplateResponse(request, name, {"section": section, **ctx}, status_code=status)

    def error_page(request: Request, exc: LoopMLError) -> Response:
        return page(request, "error.html", "", status=exc.status if 400 <= exc.status < 600 else 500,
                    message=exc.message, hint=exc.hint)

    def index(request: Request) -> Response:
        return RedirectResponse("/runs", status_code=302)

    def favicon(request: Request) -> Response:
        return Response(_FAVICON, media_type="image/svg+xml")

    def runs_list(request: Request) -> Response:
        page_no = _int(request.query_params.get("page"), 1)
        return page(request, "runs.html", "runs", **views.runs_page(ws, page_no))

    def run_detail(request: Request) -> Response:
        try:
            return page(request, "run.html", "runs", **views.run_detail(ws, request.path_params["run_id"]))
        except LoopMLError as exc:
            return error_page(request, exc)

    def run_report(request: Request) -> Response:
        try:
            path = views.report_file(ws, request.path_params["run_id"], request.path_params["name"])
        except LoopMLError as exc:
            return error_page(request, exc)
        media = {".html": "text/html; charset=utf-8", ".json": "application/json", ".md": "text/markdown"}
        return FileResponse(path, media_type=media.get(path.suffix, "application/octet-stream"))

    def artifact(request: Request) -> Response:
        try:
            return page(request, "artifact.html", "runs", **views.artifact_detail(ws, request.path_params["digest"]))
        except LoopMLError as exc:
            return error_page(request, exc)

    def data(request: Request) -> Response:
        return page(request, "data.html", "data", **views.data_page(ws))

    def snapshot(request: Request) -> Response:
        tab = request.query_params.get("tab", "validation")
        if tab not in ("validation", "profile", "quarantine"):
            tab = "validation"
        try:
            return page(request, "snapshot.html", "data", tab=tab, **views.snapshot_detail(ws, request.path_params["ref"]))
        except LoopMLError as exc:
            return error_page(request, exc)

    def models(request: Request) -> Response:
        return page(request, "models.html", "models", **views.models_page(ws))

    def version(request: Request) -> Response:
        try:
            return page(request, "version.html", "models", **views.version_detail(ws, request.path_params["version"]))
        except LoopMLError as exc:
            return error_page(request, exc)

    def compare(request: Request) -> Response:
        a, b = request.query_params.get("a"), request.query_params.get("b")
        try:
            if not a or not b:
                vs = views.models_page(ws)["versions"]
                if len(vs) < 2:
                    raise LoopMLError("comparing needs two registered versions")
                return RedirectResponse("/models/compare?" + urlencode({"a": vs[-2].version_id, "b": vs[-1].version_id}))
            cmp = views.compare(ws, a, b)
            return page(request, "compare.html", "models", cmp=cmp, **cmp)
        except LoopMLError as exc:
            return error_page(request, exc)

    async def promote(request: Request) -> Response:
        from loopml.registry import Registry

        version_id = request.path_params["version"]
        message = None
        status = 200
        try:
            reg = Registry(ws)
            if request.method == "POST":
                form = _form(await request.body())
                to = form.get("to", "production")
                try:
                    actor = auth.check(f"Bearer {form.get('token', '')}".encode())
                    reason = form.get("reason", "").strip()
                    if not reason:
                        raise LoopMLError("give a reason (recorded in the history)")
                    if to not in ("production", "canary", "shadow", "archived"):
                        raise LoopMLError(f"target state must be production, canary, shadow or archived, not {to!r}")
                    from loopml.serving.promotion import SERVING, verify_servable

                    if to in SERVING:
                        verify_servable(ws, version_id)
                    reg.transition(version_id, to, actor=actor, reason=reason, force=form.get("force") == "on")
                    return RedirectResponse(f"/models/{version_id}?done=promoted", status_code=303)
                except LoopMLError as exc:
                    message, status = exc.message, exc.status if 400 <= exc.status < 600 else 500
            v = reg.get(version_id)
            prod = reg.production()
            comparison = views.compare(ws, prod.version_id, v.version_id) if prod and prod.version_id != v.version_id \
                else None
            return page(request, "promote.html", "models", status=status, version=v, production=prod,
                        cmp=comparison, message=message, action="promote")
        except LoopMLError as exc:
            return error_page(request, exc)

    async def rollback(request: Request) -> Response:
        from loopml.registry import Registry

        reg = Registry(ws)
        message = None
        status = 200
        try:
            if request.method == "POST":
                form = _form(await request.body())
                try:
                    actor = auth.check(f"Bearer {form.get('token', '')}".encode())
                    reason = form.get("reason", "").strip()
                    if not reason:
                        raise LoopMLError("give a reason (recorded in the history)")
                    reg.rollback(actor=actor, reason=reason)
                    return RedirectResponse("/models?done=rolled-back", status_code=303)
                except LoopMLError as exc:
                    message, status = exc.message, exc.status if 400 <= exc.status < 600 else 500
            prod = reg.production()
            periods = reg.serving_periods()
            previous = next((p.version_id for p in reversed(periods)
                             if prod is None or p.version_id != prod.version_id), None)
            comparison = views.compare(ws, previous, prod.version_id) if prod and previous else None
            return page(request, "rollback.html", "models", status=status, production=prod, previous=previous,
                        cmp=comparison, message=message)
        except LoopMLError as exc:
            return error_page(request, exc)

    def monitoring(request: Request) -> Response:
        window = request.query_params.get("window") or ws.spec.monitoring.drift.window
        try:
            got = monitoring_cache.get(window)
        except LoopMLError as exc:
            return error_page(request, exc)
        if got is None:
            return page(request, "monitoring_pending.html", "monitoring", window=window,
                        progress=monitoring_cache.progress(window), log_rows=views.logged_rows(ws))
        data, refreshing, seconds = got
        feature = request.query_params.get("feature")
        dists = data.get("distributions") or {}
        if feature not in dists:
            worst = sorted(data.get("drift_latest") or [], key=lambda f: -(f.get("psi") or 0.0))
            feature = next((f["name"] for f in worst if f["name"] in dists), next(iter(dists), None))
        dist = dists.get(feature) if feature else None
        return page(request, "monitoring.html", "monitoring", data=data, feature=feature, window=window, dist=dist,
                    refreshing=refreshing, seconds=seconds,
                    charts=views.monitoring_charts(data, ws.spec.monitoring.drift.psi_threshold),
                    ops_charts=views.ops_charts(data),
                    dist_chart=views.distribution_chart(feature, dist) if feature and dist else None)

    def serving(request: Request) -> Response:
        try:
            return page(request, "serving.html", "serving", **serving_view.page())
        except LoopMLError as exc:
            return error_page(request, exc)

    def monitoring_status(request: Request) -> Response:
        window = request.query_params.get("window") or ws.spec.monitoring.drift.window
        return JSONResponse(monitoring_cache.progress(window))

    def design(request: Request) -> Response:
        from loopml.reporting import build_design

        doc = build_design(ws)
        return page(request, "design.html", "design", doc=doc, body=doc.body_html())

    routes = [
        Route("/", index),
        Route("/favicon.ico", favicon),
        Route("/runs", runs_list),
        Route("/runs/{run_id}", run_detail),
        Route("/runs/{run_id}/reports/{name}", run_report),
        Route("/artifacts/{digest}", artifact),
        Route("/data", data),
        Route("/data/{ref}", snapshot),
        Route("/models", models),
        Route("/models/compare", compare),
        Route("/models/rollback", rollback, methods=["GET", "POST"]),
        Route("/models/{version}", version),
        Route("/models/{version}/promote", promote, methods=["GET", "POST"]),
        Route("/serving", serving),
        Route("/monitoring", monitoring),
        Route("/monitoring/status", monitoring_status),
        Route("/design", design),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]

    def not_found(request: Request, exc: Exception) -> Response:
        return page(request, "error.html", "", status=404, message=f"no page at {request.url.path}", hint=None)

    app = Starlette(routes=routes, exception_handlers={404: not_found})
    app.state.workspace = ws
    app.state.auth_enabled = auth.enabled
    return app


def _int(v: str | None, default: int) -> int:
    try:
        return int(v) if v is not None else default
    except ValueError:
        return default


def _form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the UI's forms send nothing else)."""
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
