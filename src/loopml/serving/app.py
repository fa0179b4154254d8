"""The prediction service: request handlers over an atomically swapped set of loaded versions.

The HTTP layer (:mod:`loopml.serving.http`) hands each complete request to
:meth:`ServingApp.handle`, which returns ``(status, body, content type)``. Predictions run
synchronously on the event loop thread: a single-row prediction costs microseconds, far less
than a hop to a thread pool. Anything slow (loading a model, writing the registry) runs in a
worker thread, and its result is swapped in with one reference assignment, so a request in
flight always finishes on the model set it started with.
"""

from __future__ import annotations

import asyncio
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from loopml.errors import LoopMLError, NotFound, Unauthorized
from loopml.serving.admin import AdminBody, PromoteBody, ReloadBody, RollbackBody, parse_body
from loopml.serving.auth import AdminAuth
from loopml.serving.journal import GroupCommit
from loopml.serving.logs import Log, now_us
from loopml.serving.lookup import FeatureLookup, PrecomputedLookup
from loopml.serving.metrics import Metrics
from loopml.serving.request_ids import MAX_CLIENT_ID, MAX_ID, RequestIds, client_id
from loopml.serving.routing import RoutingPolicy, make_policy
from loopml.serving.schema import RequestInvalid, openapi_document
from loopml.serving.servable import Servable
from loopml.serving.sources import ModelSource, describe_error

JSON = b"application/json"
TEXT = b"text/plain; version=0.0.4; charset=utf-8"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY

Response = tuple[int, bytes, bytes]


@dataclass(frozen=True)
class ServingState:
    """What serves right now: the loaded versions, their states and the routing policy."""

    models: dict[str, Servable]
    states: dict[str, str]
    policy: RoutingPolicy | None
    error: str | None = None
    loaded_at: float = field(default_factory=time.time)


#: an absolute file path of three or more parts (not an endpoint such as /v1/predict)
_ABS_PATH = re.compile(r"(?<![\w.:/~-])(?:/[^\s/'\"`,;()\[\]]+){3,}")
MAX_FEEDBACK_ITEMS = 10_000


def public(message: str) -> str:
    """``message`` without absolute file paths (each becomes ``…/<last part>``): bodies never show server paths."""
    return _ABS_PATH.sub(lambda m: "…/" + m.group(0).rsplit("/", 1)[-1], message)


def _err(status: int, message: str, **extra: Any) -> Response:
    return status, orjson.dumps({"error": public(message), **extra}), JSON


def _is_json(headers: dict[bytes, bytes]) -> bool:
    ctype = headers.get(b"content-type")
    return ctype is not None and ctype.split(b";", 1)[0].strip().lower() == b"application/json"


def _wrong_type(headers: dict[bytes, bytes]) -> Response:
    got = headers.get(b"content-type", b"").decode("latin-1")[:80] or None
    return 415, orjson.dumps({
        "error": "the body must be JSON: send `Content-Type: application/json`",
        "detail": [{"loc": ["header", "content-type"], "field": "content-type", "value": got,
                    "expected": "application/json", "msg": "unsupported media type"}],
    }), JSON


def _bad_client_id(raw: bytes) -> Response:
    return 422, orjson.dumps({
        "error": f"invalid X-Request-Id header: expected 1 to {MAX_CLIENT_ID} printable ASCII characters "
                 "without spaces (the service issues its own request_id; yours is logged as client_request_id)",
        "detail": [{"loc": ["header", "x-request-id"], "field": "x-request-id",
                    "value": raw[:80].decode("ascii", "backslashreplace"),
                    "expected": f"1-{MAX_CLIENT_ID} printable ASCII characters", "msg": "invalid header value"}],
    }), JSON


class ServingApp:
    """Handlers of the service.

    Parameters
    ----------
    source
        Where versions come from (the registry, or a model file).
    prediction_log, feedback_log
        Durable logs (``None`` disables logging, e.g. in micro-benchmarks of the handler).
    auth
        Admin token check.
    routing, routing_options
        Name and options of the routing policy.
    lookup
        Online-store feature lookup by entity keys (optional).
    precomputed
        Answers from batch predictions by entity key (optional).
    mode
        ``online`` (compute), ``batch`` (precomputed only) or ``both`` (precomputed when the
        request carries only entity keys).
    """

    def __init__(
        self,
        source: ModelSource,
        *,
        prediction_log: Log | None,
        feedback_log: Log | None,
        auth: AdminAuth,
        routing: str = "production",
        routing_options: dict[str, Any] | None = None,
        lookup: FeatureLookup | None = None,
        precomputed: PrecomputedLookup | None = None,
        mode: str = "online",
        title: str = "loopml prediction service",
        registry: Any = None,
        request_ids: RequestIds | None = None,
        feedback_auth: AdminAuth | None = None,
    ) -> None:
        self.source = source
        self.prediction_log = prediction_log
        self.feedback_log = feedback_log
        self.auth = auth
        self.routing = routing
        self.routing_options = routing_options or {}
        self.lookup = lookup
        self.precomputed = precomputed
        self.mode = mode
        self.title = title
        self.registry = registry
        self.metrics = Metrics()
        self.commit: GroupCommit | None = None  # set: answers wait until their log rows are on disk
        self.closing = False  # set by the drain once every begun request was answered: the logs close next
        self.drain_seconds = 10.0
        self.state = ServingState({}, {}, None, error="not loaded yet")
        self.ids = request_ids or RequestIds()
        self.feedback_auth = feedback_auth
        self._openapi: bytes | None = None
        self._admin_lock = asyncio.Lock()
        self.routes: dict[tuple[bytes, bytes], Callable[..., Any]] = {
            (b"POST", b"/v1/predict"): self.predict,
            (b"POST", b"/v1/feedback"): self.feedback,
            (b"GET", b"/health"): self.health,
            (b"GET", b"/ready"): self.ready,
            (b"GET", b"/metrics"): self.metrics_text,
            (b"GET", b"/openapi.json"): self.openapi,
            (b"GET", b"/v1/models"): self.models,
        }
        self.admin_routes: dict[bytes, tuple[type[AdminBody], Callable[..., Any]]] = {
            b"/admin/promote": (PromoteBody, self.admin_promote),
            b"/admin/rollback": (RollbackBody, self.admin_rollback),
            b"/admin/reload": (ReloadBody, self.admin_reload),
        }

    # -- loading -----------------------------------------------------------------------------
    def build_state(self, previous: ServingState | None = None,
                    preloaded: dict[str, Servable] | None = None) -> ServingState:
        """Load what the source says should serve (reusing loaded versions and ``preloaded``). Thread-safe."""
        wanted = self.source.snapshot()
        prev = {**(previous.models if previous else {}), **(preloaded or {})}
        models: dict[str, Servable] = {}
        for vid in wanted:
            models[vid] = prev[vid] if vid in prev else self.source.load(vid)
        policy = make_policy(self.routing, models, wanted, self.routing_options)
        return ServingState(models, dict(wanted), policy)

    def swap(self, state: ServingState) -> None:
        """Make ``state`` the serving state (one reference assignment: atomic for the event loop)."""
        self.state = state
        self._openapi = None
        self.metrics.model_swaps += 1

    def load_initial(self) -> None:
        """Load before accepting traffic; a failure leaves the service up but not ready."""
        try:
            self.swap(self.build_state())
        except LoopMLError as exc:
            self.state = ServingState({}, {}, None, error=str(exc))
            sys.stderr.write(f"loopml serve: not ready: {exc}\n")

    async def refresh(self) -> bool:
        """Reload if the source's snapshot changed; returns whether the served set changed."""
        loop = asyncio.get_running_loop()
        current = self.state
        wanted = await loop.run_in_executor(None, self.source.snapshot)
        if wanted == current.states and current.policy is not None:
            return False
        new = await loop.run_in_executor(None, self.build_state, current)
        self.swap(new)
        return True

    async def poll_forever(self, every_s: float) -> None:
        """Follow the registry: promotions made with the CLI reach a running server within ``every_s``."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.refresh()
            except LoopMLError as exc:
                sys.stderr.write(f"loopml serve: reload failed, still serving the previous set: {exc}\n")
            except Exception as exc:
                sys.stderr.write(f"loopml serve: reload crashed: {describe_error(exc)}\n")

    # -- dispatch ----------------------------------------------------------------------------
    def next_request_id(self, rows: int = 0) -> str:
        """A unique, signed request id (see :mod:`loopml.serving.request_ids`)."""
        return self.ids.issue(rows)

    def handle(self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes) -> Response | None:
        """Synchronous handlers; ``None`` means "admin route: call :meth:`handle_admin`"."""
        if self.closing:
            return _err(503, "the service is shutting down; retry on another instance")
        q = path.find(b"?")
        if q >= 0:
            path = path[:q]
        fn = self.routes.get((method, path))
        if fn is not None:
            result: Response = fn(headers, body)
            return result
        if path in self.admin_routes and method == b"POST":
            return None
        known = sorted({p.decode() for (_, p) in self.routes} | {p.decode() for p in self.admin_routes})
        if any(p == path for (_, p) in self.routes):
            return _err(405, f"method {method.decode()} not allowed on {path.decode()}")
        return _err(404, f"no endpoint {path[:200].decode(errors='replace')} (endpoints: {', '.join(known)})")

    async def handle_admin(self, path: bytes, headers: dict[bytes, bytes], body: bytes) -> Response:
        """Admin routes: the token first (it names the actor), then a strict body."""
        try:
            actor = self.auth.check(headers.get(b"authorization"))
            if body.strip() and not _is_json(headers):
                return _wrong_type(headers)
            model, action = self.admin_routes[path]
            data = parse_body(model, body)
            async with self._admin_lock:
                result: dict[str, Any] = await action(data, actor)
            return 200, orjson.dumps(result), JSON
        except RequestInvalid as exc:
            self.metrics.error(path.decode(), "validation")
            return 422, orjson.dumps(exc.body()), JSON
        except LoopMLError as exc:
            self.metrics.error(path.decode(), type(exc).__name__)
            return _err(exc.status, str(exc))

    # -- prediction --------------------------------------------------------------------------
    def predict(self, headers: dict[bytes, bytes], body: bytes) -> Response:
        """``POST /v1/predict``: one row (object) or many (array or ``{"rows": [...]}``)."""
        t0 = time.perf_counter()
        state = self.state  # one read: a swap mid-request cannot mix versions
        policy = state.policy
        if policy is None:
            self.metrics.error("/v1/predict", "not_ready")
            return _err(503, f"no model is loaded: {state.error}")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self.metrics.error("/v1/predict", "invalid_json")
            return _err(422, f"request body is not valid JSON: {exc}", detail=[{"loc": ["body"], "msg": str(exc)}])
        cid = None
        raw_cid = headers.get(b"x-request-id")
        if raw_cid is not None:
            cid = client_id(raw_cid)
            if cid is None:
                self.metrics.error("/v1/predict", "validation")
                return _bad_client_id(raw_cid)
        rows: Any
        if data.__class__ is dict:
            rows = data.get("rows")
            single = rows is None or len(data) != 1
        else:
            rows, single = data, False
        many = 0 if single or rows.__class__ is not list else max(1, len(rows))
        rid = self.ids.issue(many)
        route = policy.route(rid, data)
        model = route.model
        try:
            if data.__class__ is dict:
                if single:
                    resp = self._predict_one(rid, route.name, model, data, cid)
                    if route.shadows:
                        self._later(self._shadow, rid, [data], False, route.shadows, cid)
                    self.metrics.observe("/v1/predict", model.version_id, route.name, 200, time.perf_counter() - t0, 1)
                    return resp
                if rows.__class__ is not list:
                    raise RequestInvalid("`rows` must be a list of objects", [{"loc": ["body", "rows"], "field": "rows", "value": str(type(rows).__name__), "expected": "array of objects", "msg": "`rows` must be an array"}])
            elif data.__class__ is not list:
                raise RequestInvalid(
                    "request body must be a JSON object (one row) or an array of objects (many rows)",
                    [{"loc": ["body"], "field": None, "value": str(data)[:80], "expected": "object or array", "msg": "wrong body type"}],
                )
            resp = self._predict_many(rid, route.name, model, rows, cid)
            if route.shadows:
                self._later(self._shadow, rid, rows, True, route.shadows, cid)
            self.metrics.observe("/v1/predict", model.version_id, route.name, 200, time.perf_counter() - t0, len(rows))
            return resp
        except RequestInvalid as exc:
            self.metrics.error("/v1/predict", "validation")
            self.metrics.observe("/v1/predict", model.version_id, route.name, 422, time.perf_counter() - t0, 0)
            return 422, orjson.dumps(exc.body()), JSON
        except LoopMLError as exc:
            self.metrics.error("/v1/predict", type(exc).__name__)
            self.metrics.observe("/v1/predict", model.version_id, route.name, exc.status, time.perf_counter() - t0, 0)
            return _err(exc.status, str(exc))

    def _predict_one(self, rid: str, route_name: str, model: Servable, row: dict[str, Any],
                     cid: str | None = None) -> Response:
        if self.precomputed is not None and (self.mode == "batch" or self.precomputed.only_keys(row)):
            return self._precomputed(rid, route_name, model, [row], many=False)
        if self.lookup is not None:
            self.lookup.fill(row)
        score, pred = model.predict_one(row)
        vid = model.version_id
        log = self.prediction_log
        if log is not None:
            log.append((rid, now_us(), vid, route_name, score, pred,
                        model.raw_copy() if model.raw_numeric else row, model.schema, cid))
        return 200, orjson.dumps(
            {"request_id": rid, "model_version": vid, "route": route_name, "score": score, "prediction": pred}
        ), JSON

    def _predict_many(self, rid: str, route_name: str, model: Servable, rows: list[Any],
                      cid: str | None = None) -> Response:
        if self.precomputed is not None and rows and (
            self.mode == "batch" or all(isinstance(r, dict) and self.precomputed.only_keys(r) for r in rows)
        ):
            return self._precomputed(rid, route_name, model, rows, many=True)
        if self.lookup is not None:
            self.lookup.fill_many(rows)
        scores, preds = model.predict_many(rows)
        ids = [f"{rid}-{i}" for i in range(len(rows))]
        log = self.prediction_log
        if log is not None:
            ts = now_us()
            vid = model.version_id
            schema = model.schema
            raw = model.last_matrix if model.last_matrix is not None else model.last_table
            if raw is not None:  # one block record: the log takes the columns of the matrix / table
                log.append((ids, ts, vid, route_name, scores, preds, raw, schema, cid))
            else:
                for i, row in enumerate(rows):
                    log.append((ids[i], ts, vid, route_name, float(scores[i]), float(preds[i]), row, schema, cid))
        return 200, orjson.dumps(
            {
                "request_id": rid,
                "request_ids": ids,
                "model_version": model.version_id,
                "route": route_name,
                "scores": scores,
                "predictions": preds,
            },
            option=_NUMPY,
        ), JSON

    def _precomputed(self, rid: str, route_name: str, model: Servable, rows: list[Any], many: bool) -> Response:
        pre = self.precomputed
        if pre is None:
            raise NotFound("this server has no precomputed predictions")
        found = pre.get_many(rows)
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            raise NotFound(
                f"no precomputed prediction for {len(missing)} of {len(rows)} rows "
                f"(first: {pre.key_of(rows[missing[0]])}); run `loopml predict --batch` or send the features"
            )
        scores = [float(f["score"]) for f in found if f is not None]
        preds = [float(f["prediction"]) for f in found if f is not None]
        versions = {str(f.get("model_version")) for f in found if f is not None}
        version = versions.pop() if len(versions) == 1 else ",".join(sorted(versions))
        if not many:
            return 200, orjson.dumps(
                {"request_id": rid, "model_version": version, "route": "precomputed", "score": scores[0],
                 "prediction": preds[0]}
            ), JSON
        return 200, orjson.dumps(
            {"request_id": rid, "request_ids": [f"{rid}-{i}" for i in range(len(rows))], "model_version": version,
             "route": "precomputed", "scores": scores, "predictions": preds}
        ), JSON

    # -- shadows -----------------------------------------------------------------------------
    @staticmethod
    def _later(fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` after the current response is written (next loop iteration), inline without a loop."""
        try:
            asyncio.get_running_loop().call_soon(fn, *args)
        except RuntimeError:
            fn(*args)

    def _shadow(self, rid: str, rows: list[Any], many: bool, shadows: tuple[Servable, ...],
                cid: str | None = None) -> None:
        """Score shadow arms off the request path and log them with route ``shadow``."""
        log = self.prediction_log
        for m in shadows:
            t0 = time.perf_counter()
            try:
                if many:
                    scores, preds = m.predict_many(rows)
                else:
                    s1, p1 = m.predict_one(rows[0])
            except LoopMLError as exc:
                self.metrics.error("shadow", type(exc).__name__)
                continue
            self.metrics.observe("shadow", m.version_id, "shadow", 200, time.perf_counter() - t0, len(rows))
            if log is None:
                continue
            ts = now_us()
            if not many:
                log.append((rid, ts, m.version_id, "shadow", s1, p1, m.raw_copy() if m.raw_numeric else rows[0], m.schema,
                            cid))
            elif m.last_matrix is not None or m.last_table is not None:
                log.append(([f"{rid}-{i}" for i in range(len(rows))], ts, m.version_id, "shadow", scores, preds,
                            m.last_matrix if m.last_matrix is not None else m.last_table, m.schema, cid))
            else:
                for i, row in enumerate(rows):
                    log.append((f"{rid}-{i}", ts, m.version_id, "shadow", float(scores[i]), float(preds[i]), row, m.schema,
                                cid))

    # -- feedback ----------------------------------------------------------------------------
    def feedback(self, headers: dict[bytes, bytes], body: bytes) -> Response:
        """``POST /v1/feedback``: ``{"request_id": str, "label": number}`` or a list of them.

        Checked before anything is recorded (one problem → the whole request is refused with 422
        naming each bad item): ``Content-Type: application/json``; at most 10,000 items; exactly
        the keys ``request_id`` and ``label``; a request id this service issued (a single-row id
        or a row id ``<id>-<i>`` of a many-row request, at most 128 characters); a label valid
        for the task (binary: 0 or 1; multiclass: a class code 0…k-1; regression: a finite
        number). Feedback sent again for the same request id is recorded again: the log keeps
        every label and monitoring uses the latest (:func:`loopml.monitoring.logs.read_labelled`).
        """
        t0 = time.perf_counter()
        if self.feedback_auth is not None:
            try:
                self.feedback_auth.check(headers.get(b"authorization"))
            except Unauthorized as exc:
                self.metrics.error("/v1/feedback", "unauthorized")
                return _err(401, str(exc))
        if not _is_json(headers):
            self.metrics.error("/v1/feedback", "content_type")
            return _wrong_type(headers)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self.metrics.error("/v1/feedback", "invalid_json")
            return _err(422, f"request body is not valid JSON: {exc}",
                        detail=[{"loc": ["body"], "field": None, "value": None, "expected": "JSON", "msg": str(exc)}])
        items = data if isinstance(data, list) else [data]
        if len(items) > MAX_FEEDBACK_ITEMS:
            self.metrics.error("/v1/feedback", "validation")
            return _err(422, f"too many feedback items: {len(items)} (at most {MAX_FEEDBACK_ITEMS} per request)",
                        detail=[{"loc": ["body"], "field": None, "value": len(items),
                                 "expected": f"at most {MAX_FEEDBACK_ITEMS} items", "msg": "too many items"}])
        check_label = self._label_check()
        problems: list[dict[str, Any]] = []
        records: list[tuple[str, int, float]] = []
        ts = now_us()
        for i, item in enumerate(items):
            loc: list[Any] = ["body", i] if isinstance(data, list) else ["body"]
            if not isinstance(item, dict):
                problems.append({"loc": loc, "field": None, "value": str(item)[:80], "expected": "object", "msg": "expected an object"})
                continue
            extra = sorted(k for k in item if k not in ("request_id", "label"))
            for k in extra[:5]:
                problems.append({"loc": [*loc, k[:80]], "field": k[:80], "value": str(item[k])[:80],
                                 "expected": "only request_id and label", "msg": "unknown field"})
            rid, label = item.get("request_id"), item.get("label")
            rid_ok = False
            if not isinstance(rid, str) or not rid:
                problems.append({"loc": [*loc, "request_id"], "field": "request_id", "value": str(rid)[:80] if rid is not None else None,
                                 "expected": "non-empty string", "msg": "request_id must be the id returned by /v1/predict"})
            elif len(rid) > MAX_ID:
                problems.append({"loc": [*loc, "request_id"], "field": "request_id", "value": rid[:40] + "…",
                                 "expected": f"at most {MAX_ID} characters", "msg": f"request_id is {len(rid)} characters long"})
            elif not self.ids.issued(rid):
                problems.append({"loc": [*loc, "request_id"], "field": "request_id", "value": rid,
                                 "expected": "an id issued by this service (request_id, or one of request_ids, of /v1/predict)",
                                 "msg": "unknown request_id: this service never issued it"})
            else:
                rid_ok = True
            value, why = check_label(label)
            if why is not None:
                shown = label if isinstance(label, int | float | bool | type(None)) else str(label)[:80]
                problems.append({"loc": [*loc, "label"], "field": "label", "value": shown, "expected": why,
                                 "msg": "label is not valid for this task"})
            elif rid_ok and not extra:
                records.append((rid, ts, value))  # type: ignore[arg-type]
        if problems:
            self.metrics.error("/v1/feedback", "validation")
            fields = sorted({str(p["field"]) for p in problems})
            return 422, orjson.dumps({"error": f"invalid feedback: {len(problems)} problem(s) ({', '.join(fields)})",
                                      "detail": problems[:100]}), JSON
        if self.feedback_log is not None:
            for r in records:
                self.feedback_log.append(r)
        self.metrics.observe("/v1/feedback", "-", "-", 200, time.perf_counter() - t0, 0)
        return 200, orjson.dumps({"recorded": len(records)}), JSON

    def _label_check(self) -> Callable[[Any], tuple[float | None, str | None]]:
        """``check(label) -> (value, None)`` or ``(None, what was expected)``, for the served task."""
        models = list(self.state.models.values())
        task = models[0].task if models else None
        n_classes = len(getattr(models[0], "classes", None) or []) if models else 0

        def check(label: Any) -> tuple[float | None, str | None]:
            if isinstance(label, bool):
                label = int(label)
            if not isinstance(label, int | float) or not math.isfinite(label):
                return None, "a finite number (the observed outcome)"
            if task == "binary" and label not in (0, 1):
                return None, "0 or 1 (binary task)"
            if task == "multiclass" and (label != int(label) or label < 0 or (n_classes and label >= n_classes)):
                return None, "a class code 0…k-1 (multiclass task)" + (f", k = {n_classes}" if n_classes else "")
            return float(label), None

        return check

    # -- operational endpoints -------------------------------------------------------------------
    def health(self, headers: dict[bytes, bytes], body: bytes) -> Response:
        """``GET /health``: the process answers."""
        return 200, b'{"status":"ok"}', JSON

    def ready(self, headers: dict[bytes, bytes], body: bytes) -> Response:
        """``GET /ready``: a model is loaded and the logs are writable."""
        state = self.state
        if state.policy is None:
            return _err(503, f"not ready: {state.error}", ready=False)
        for log in (self.prediction_log, self.feedback_log):
            if log is not None and log.last_error:
                return _err(503, f"not ready: log {log.directory.name} cannot be written: {log.last_error}", ready=False)
        return 200, orjson.dumps({"ready": True, "versions": state.states}), JSON

    def metrics_text(self, headers: dict[bytes, bytes], body: bytes) -> Response:
        """``GET /metrics``: Prometheus text format."""
        if self.prediction_log is not None:
            self.metrics.log_rows_written = self.prediction_log.written
            self.metrics.log_rows_dropped = self.prediction_log.dropped
        return 200, self.metrics.render(self.state.states).encode(), TEXT

    def models(self, headers: dict[bytes, bytes], body: bytes) -> Response:
        """``GET /v1/models``: loaded versions and their states."""
        state = self.state
        return 200, orjson.dumps(
            {"versions": [{"version": v, "state": state.states.get(v), "inputs": m.schema.to_mapping(), "task": m.task}
                          for v, m in state.models.items()]}
        ), JSON

    def openapi(self, headers: dict[bytes, bytes], body: bytes) -> Response:
        """``GET /openapi.json``: the document, describing the inputs of the serving version."""
        if self._openapi is None:
            state = self.state
            if state.policy is None:
                return _err(503, f"no model loaded yet: {state.error}")
            model = state.policy.route("openapi", {}).model
            doc = openapi_document(
                model.schema, title=self.title, version=model.version_id,
                entity_keys=self.lookup.entity_keys if self.lookup else [],
                store_fields=sorted(self.lookup.available) if self.lookup else [],
            )
            self._openapi = orjson.dumps(doc)
        return 200, self._openapi, JSON

    # -- admin -------------------------------------------------------------------------------
    def _need_registry(self) -> Any:
        if self.registry is None:
            raise NotFound("this server is not backed by a registry (started with --model-file)")
        return self.registry

    async def admin_promote(self, data: PromoteBody, actor: str) -> dict[str, Any]:
        """Promote ``data.version`` to production in two phases, then serve it before answering.

        Phase one loads the version (checksums verified) and makes a smoke prediction
        (:func:`loopml.serving.promotion.verify_servable`); only then does the registry record the
        transition, with the token's actor. A version that cannot serve leaves the registry as it was.
        """
        from loopml.serving.promotion import verify_servable

        reg = self._need_registry()
        before = self._production_id()
        loop = asyncio.get_running_loop()
        servable = await loop.run_in_executor(None, verify_servable, reg.ws, data.version)
        v = await loop.run_in_executor(
            None, lambda: reg.promote(data.version, actor=actor, reason=data.reason, force=data.force)
        )
        new = await loop.run_in_executor(None, self.build_state, self.state, {v.version_id: servable})
        self.swap(new)
        return {"ok": True, "serving": v.version_id, "previous": before, "actor": actor}

    async def admin_rollback(self, data: RollbackBody, actor: str) -> dict[str, Any]:
        """Roll back to the previously serving version."""
        reg = self._need_registry()
        before = self._production_id()
        loop = asyncio.get_running_loop()
        v = await loop.run_in_executor(None, lambda: reg.rollback(actor=actor, reason=data.reason))
        await self.refresh()
        return {"ok": True, "serving": v.version_id, "previous": before, "actor": actor}

    async def admin_reload(self, data: ReloadBody, actor: str) -> dict[str, Any]:
        """Reload from the source now."""
        changed = await self.refresh()
        return {"ok": True, "changed": changed, "versions": self.state.states}

    def _production_id(self) -> str | None:
        return next((v for v, s in self.state.states.items() if s == "production"), None)

    def close(self) -> None:
        """Flush, sync and close the logs (their writer processes drain them into segments)."""
        self.closing = True
        for log in (self.prediction_log, self.feedback_log):
            if log is not None:
                log.close()
        if self.commit is not None:
            self.commit.close()
