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
import contextlib
import gc
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
from loopml.serving.routing import Route, RoutingPolicy, make_policy
from loopml.serving.schema import RequestInvalid, _finite, openapi_document
from loopml.serving.servable import Servable
from loopml.serving.sources import ModelSource, describe_error

JSON = b"application/json"
TEXT = b"text/plain; version=0.0.4; charset=utf-8"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY

Response = tuple[int, bytes, bytes]
#: a response with extra header lines (each ending in CRLF), e.g. ``Retry-After``
ResponseWithHeaders = tuple[int, bytes, bytes, bytes]
_ROWS_PREFIX = re.compile(rb'^\s*\{\s*"rows"\s*:\s*\[')
#: bytes of JSON parsed per C call when a worker thread reads a large body (see parse_large_body)
PARSE_SLICE = 256 * 1024


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


def parse_large_body(body: bytes) -> Any:
    """``orjson.loads`` of a large request body, in slices when it is an array of rows.

    One ``orjson.loads`` of tens of MB holds the GIL for tens of ms, which the event loop would
    wait for. An array of objects (``[{...}, ...]`` or ``{"rows": [...]}``) is cut after a ``}``
    followed by ``,`` and parsed ``PARSE_SLICE`` bytes at a time, with the GIL free to switch
    between slices. A cut that falls inside a string makes its slice invalid: the whole body is
    then parsed at once (same result, same errors).

    >>> parse_large_body(b'[{"a": 1}, {"a": "},{"}, {"a": 3}]')
    [{'a': 1}, {'a': '},{'}, {'a': 3}]
    >>> parse_large_body(b'{"rows": [{"a": 1}]}')
    {'rows': [{'a': 1}]}
    """
    start = body.find(b"[")
    wrapped = False
    if start < 0:
        return orjson.loads(body)
    if body[:start].strip():
        if _ROWS_PREFIX.match(body) is None:
            return orjson.loads(body)
        wrapped = True
        end = body.rfind(b"]")
        if end < 0 or body[end + 1 :].strip() != b"}":
            return orjson.loads(body)
    else:
        end = body.rfind(b"]")
        if end < 0 or body[end + 1 :].strip():
            return orjson.loads(body)
    rows: list[Any] = []
    pos = start + 1
    try:
        while pos < end:
            cut = body.find(b"}", pos + PARSE_SLICE, end)
            while cut >= 0 and body[cut + 1 : cut + 2] not in (b",", b" ", b"\n", b"\r", b"\t"):
                cut = body.find(b"}", cut + 1, end)
            if cut >= 0:
                comma = body.find(b",", cut + 1, end)
                if comma < 0 or body[cut + 1 : comma].strip():
                    cut = -1
            stop = end if cut < 0 else cut + 1
            rows.extend(orjson.loads(b"[" + body[pos:stop] + b"]"))
            pos = end if cut < 0 else comma + 1
    except orjson.JSONDecodeError:
        return orjson.loads(body)
    return {"rows": rows} if wrapped else rows


class _GcPause:
    """The cyclic garbage collector off while a worker thread builds a large request's objects.

    Parsing 100,000 rows allocates 100,000 dicts, which triggers full collections; each runs in
    the allocating thread holding the GIL for hundreds of ms (the event loop waits). The rows are
    freed by reference counting when the request ends; collection resumes then.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0

    @contextlib.contextmanager
    def __call__(self) -> Any:
        with self._lock:
            self._active += 1
            if self._active == 1:
                gc.disable()
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    gc.enable()


gc_paused = _GcPause()


class _DeferredMetrics:
    """Metrics calls made in a worker thread, replayed on the event loop (the counters are not locked)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.seconds: float | None = None  # the worker's own time on the request (queueing excluded)

    def observe(self, *args: Any) -> None:
        self.calls.append(("observe", args))

    def error(self, *args: Any) -> None:
        self.calls.append(("error", args))

    def replay(self, metrics: Metrics) -> None:
        for name, args in self.calls:
            getattr(metrics, name)(*args)


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
    limits
        ``deployment.limits`` (rows per request, which bodies are scored in worker threads).
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
        limits: Any = None,
        request_ids: RequestIds | None = None,
        feedback_auth: AdminAuth | None = None,
    ) -> None:
        self.source = source
        self.prediction_log = prediction_log
        #: the journal's single-row path (:meth:`loopml.serving.journal.Journal.append_row`), if the log has one
        self._append_row: Callable[..., None] | None = getattr(prediction_log, "append_row", None)
        self.feedback_log = feedback_log
        self.auth = auth
        self.routing = routing
        self.routing_options = routing_options or {}
        self.lookup = lookup
        self.precomputed = precomputed
        self.mode = mode
        self.title = title
        self.registry = registry
        self.max_rows = limits.max_rows_per_request if limits is not None else 100_000
        self.offload_min_bytes = limits.offload_min_bytes if limits is not None else 64 * 1024
        self.offload_threads = limits.offload_threads if limits is not None else 1
        self._pool: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queued_seconds = 0.0  # estimated work waiting in (or running on) the worker threads
        self._seconds_per_byte = 1e-7  # learned from the requests scored there
        #: the HTTP server's shared state (limits, load estimate), set by :func:`loopml.serving.http.serve_app`
        self.server_state: Any = None
        self.metrics = Metrics()
        self.commit: GroupCommit | None = None  # set: answers wait until their log rows are on disk
        self.closing = False  # set by the drain once every begun request was answered: the logs close next
        self.drain_seconds = 10.0
        #: rows a LightGBM version answers before the server compiles its trees (``None``: never)
        self.compile_after_rows: int | None = None
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

    def handle(self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes) -> Any:
        """Synchronous handlers: a response tuple ``(status, body, content type[, extra header lines])``,
        a future of one (scored in a worker thread), or ``None``: "admin route: call :meth:`handle_admin`"."""
        if self.closing:
            return _err(503, "the service is shutting down; retry on another instance")
        q = path.find(b"?")
        if q >= 0:
            path = path[:q]
        fn = self.routes.get((method, path))
        if fn is not None:
            return fn(headers, body)
        if path in self.admin_routes and method == b"POST":
            return None
        known = sorted({p.decode() for (_, p) in self.routes} | {p.decode() for p in self.admin_routes})
        allowed = [m.decode() for (m, p) in self.routes if p == path] or (["POST"] if path in self.admin_routes else [])
        if allowed:
            code, payload, ctype = _err(405, f"method {method.decode(errors='replace')} not allowed on {path.decode()}")
            return code, payload, ctype, b"allow: %s\r\n" % ", ".join(allowed).encode()
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
    def predict(self, headers: dict[bytes, bytes], body: bytes) -> Response | asyncio.Future[Any]:
        """``POST /v1/predict``: one row (object) or many (array or ``{"rows": [...]}``).

        A body of at least ``limits.offload_min_bytes`` is parsed and scored in a worker thread
        (the answer is a future), so the event loop keeps answering meanwhile.
        """
        if len(body) >= self.offload_min_bytes:
            pending = self._offload(headers, body)
            if pending is not None:
                return pending
        return self._predict(headers, body, None, self.metrics, False)

    def _offload(self, headers: dict[bytes, bytes], body: bytes) -> Response | asyncio.Future[Any] | None:
        """Score a large body in a worker thread; 503 when the work queued there already exceeds the budget.

        A request may wait behind queued work up to the latency budget, or up to its own estimated
        scoring time when that is longer (so large requests still get at least half the worker).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the server (tests, embedding): score inline
            return None
        estimate = len(body) * self._seconds_per_byte
        server = self.server_state
        budget = server.limits.queue_delay_seconds if server is not None else 0.0
        if budget > 0 and self._queued_seconds > max(budget, estimate):
            self.metrics.error("/v1/predict", "overloaded")
            if server is not None:
                server.shed += 1
            return (503, orjson.dumps({"error": f"overloaded: {self._queued_seconds:.2f} s of large requests are "
                                                "queued, more than the latency budget; retry later"}),
                    JSON, b"retry-after: 1\r\n")  # type: ignore[return-value]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.offload_threads, thread_name_prefix="loopml-score")
            self._loop = loop
        rid = self.ids.reserve()  # the counter on the loop; signed in the worker once the row count is known
        metrics = _DeferredMetrics()
        self._queued_seconds += estimate
        t0 = time.perf_counter()

        def done(_: Any) -> None:  # on the event loop
            self._queued_seconds = max(0.0, self._queued_seconds - estimate)
            # the work's own time: with the wait in the queue counted too, the estimate would grow
            # with the queue and refuse requests the worker had time for
            took = metrics.seconds if metrics.seconds is not None else time.perf_counter() - t0
            if body:
                self._seconds_per_byte = 0.7 * self._seconds_per_byte + 0.3 * took / len(body) / max(1, self.offload_threads)
            metrics.replay(self.metrics)

        future = loop.run_in_executor(self._pool, self._predict_offloaded, headers, body, rid, metrics)
        future.add_done_callback(done)
        return future

    def _predict_offloaded(self, headers: dict[bytes, bytes], body: bytes, rid: int,
                           metrics: _DeferredMetrics) -> Response:
        t0 = time.perf_counter()
        try:
            with gc_paused():
                return self._predict(headers, body, rid, metrics, True)
        finally:
            metrics.seconds = time.perf_counter() - t0

    def _predict(self, headers: dict[bytes, bytes], body: bytes, counter: int | None, metrics: Any,
                 threaded: bool) -> Response:
        """The one core of ``/v1/predict``: on the event loop, or in a worker thread (``threaded``:
        sliced parsing, the shared-state-free block path, metrics deferred to the loop)."""
        t0 = time.perf_counter()
        state = self.state  # one read: a swap mid-request cannot mix versions
        policy = state.policy
        if policy is None:
            metrics.error("/v1/predict", "not_ready")
            return _err(503, f"no model is loaded: {state.error}")
        try:
            data = parse_large_body(body) if threaded else orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            metrics.error("/v1/predict", "invalid_json")
            return _err(422, f"request body is not valid JSON: {exc}", detail=[{"loc": ["body"], "msg": str(exc)}])
        cid = None
        raw_cid = headers.get(b"x-request-id")
        if raw_cid is not None:
            cid = client_id(raw_cid)
            if cid is None:
                metrics.error("/v1/predict", "validation")
                return _bad_client_id(raw_cid)
        rows: Any
        if data.__class__ is dict:
            rows = data.get("rows")
            single = rows is None or len(data) != 1
        else:
            rows, single = data, False
        many = 0 if single or rows.__class__ is not list else max(1, len(rows))
        rid = self.ids.sign(self.ids.reserve() if counter is None else counter, many)
        route = policy.route(rid, data)
        model = route.model
        try:
            if data.__class__ is dict:
                if single:
                    if threaded:  # the single-row path shares the model's row buffer with the loop
                        resp = self._predict_many(rid, route, model, [data], True, one=True, cid=cid)
                    else:
                        resp = self._predict_one(rid, route, model, data, cid)
                    if route.shadows:
                        self._later(self._shadow, rid, [data], False, route.shadows, cid, route.experiment)
                    metrics.observe("/v1/predict", model.version_id, route.name, 200, time.perf_counter() - t0, 1)
                    return resp
                if rows.__class__ is not list:
                    raise RequestInvalid("`rows` must be a list of objects", [{"loc": ["body", "rows"], "field": "rows", "value": str(type(rows).__name__), "expected": "array of objects", "msg": "`rows` must be an array"}])
            elif data.__class__ is not list:
                raise RequestInvalid(
                    "request body must be a JSON object (one row) or an array of objects (many rows)",
                    [{"loc": ["body"], "field": None, "value": str(data)[:80], "expected": "object or array", "msg": "wrong body type"}],
                )
            if len(rows) > self.max_rows:
                metrics.error("/v1/predict", "too_many_rows")
                metrics.observe("/v1/predict", model.version_id, route.name, 413, time.perf_counter() - t0, 0)
                return _err(413, f"{len(rows)} rows in one request; the limit is {self.max_rows} "
                                 "(deployment.limits.max_rows_per_request): send them in several requests "
                                 "or use `loopml predict --batch`")
            resp = self._predict_many(rid, route, model, rows, threaded, cid=cid)
            if route.shadows:
                self._later(self._shadow, rid, rows, True, route.shadows, cid, route.experiment)
            metrics.observe("/v1/predict", model.version_id, route.name, 200, time.perf_counter() - t0, len(rows))
            return resp
        except RequestInvalid as exc:
            metrics.error("/v1/predict", "validation")
            metrics.observe("/v1/predict", model.version_id, route.name, 422, time.perf_counter() - t0, 0)
            return 422, orjson.dumps(exc.body()), JSON
        except LoopMLError as exc:
            metrics.error("/v1/predict", type(exc).__name__)
            metrics.observe("/v1/predict", model.version_id, route.name, exc.status, time.perf_counter() - t0, 0)
            return _err(exc.status, str(exc))

    def _predict_one(self, rid: str, route: Route, model: Servable, row: dict[str, Any],
                     cid: str | None = None) -> Response:
        route_name = route.name
        if self.precomputed is not None and (self.mode == "batch" or self.precomputed.only_keys(row)):
            return self._precomputed(rid, route_name, model, [row], many=False)
        if self.lookup is not None:
            self.lookup.fill(row)
        score, pred = model.predict_one(row)
        vid = model.version_id
        log = self.prediction_log
        if log is not None:
            if model.raw_numeric and self._append_row is not None:  # the raw row buffer, copied into the log's columns
                self._append_row(route, rid, score, pred, model.row_buffer, cid)
            else:
                log.append((rid, now_us(), vid, route_name, score, pred,
                            model.raw_copy() if model.raw_numeric else row, model.schema, cid, route.experiment,
                            route.propensity))
        return 200, orjson.dumps(
            {"request_id": rid, "model_version": vid, "route": route_name, "score": score, "prediction": pred}
        ), JSON

    def _predict_many(self, rid: str, route: Route, model: Servable, rows: list[Any], threaded: bool = False,
                      one: bool = False, cid: str | None = None) -> Response:
        route_name, exp, prop = route.name, route.experiment, route.propensity
        if self.precomputed is not None and rows and (
            self.mode == "batch" or all(isinstance(r, dict) and self.precomputed.only_keys(r) for r in rows)
        ):
            return self._precomputed(rid, route_name, model, rows, many=not one)
        if self.lookup is not None:
            self.lookup.fill_many(rows)
        raw: Any
        if threaded:
            scores, preds, raw = model.predict_block(rows)
        else:
            scores, preds = model.predict_many(rows)
            raw = model.last_matrix if model.last_matrix is not None else model.last_table
        if one:  # a single row scored off the loop: answered and logged like one
            score, pred = float(scores[0]), float(preds[0])
            if self.prediction_log is not None:
                self.prediction_log.append((rid, now_us(), model.version_id, route_name, score, pred, rows[0], model.schema,
                                            cid, exp, prop))
            return 200, orjson.dumps({"request_id": rid, "model_version": model.version_id, "route": route_name,
                                      "score": score, "prediction": pred}), JSON
        ids = [f"{rid}-{i}" for i in range(len(rows))]
        log = self.prediction_log
        if log is not None:
            ts = now_us()
            vid = model.version_id
            schema = model.schema
            if raw is not None:  # one block record: the log takes the columns of the matrix / table
                log.append((ids, ts, vid, route_name, scores, preds, raw, schema, cid, exp, prop))
            else:
                for i, row in enumerate(rows):
                    log.append((ids[i], ts, vid, route_name, float(scores[i]), float(preds[i]), row, schema, cid, exp,
                                prop))
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
    def _later(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` on the event loop after the current response is written (next loop iteration;
        from a worker thread: handed to the loop), inline without a loop."""
        try:
            asyncio.get_running_loop().call_soon(fn, *args)
        except RuntimeError:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(fn, *args)
            else:
                fn(*args)

    def _shadow(self, rid: str, rows: list[Any], many: bool, shadows: tuple[Servable, ...],
                cid: str | None = None, exp: str | None = None) -> None:
        """Score shadow arms off the request path and log them with route ``shadow`` (propensity 1: every request)."""
        prop = 1.0 if exp is not None else None
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
                            cid, exp, prop))
            elif m.last_matrix is not None or m.last_table is not None:
                log.append(([f"{rid}-{i}" for i in range(len(rows))], ts, m.version_id, "shadow", scores, preds,
                            m.last_matrix if m.last_matrix is not None else m.last_table, m.schema, cid, exp, prop))
            else:
                for i, row in enumerate(rows):
                    log.append((f"{rid}-{i}", ts, m.version_id, "shadow", float(scores[i]), float(preds[i]), row, m.schema,
                                cid, exp, prop))

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
            if not isinstance(label, int | float) or not _finite(label):
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
        """``GET /v1/models``: loaded versions, their states and what scores them."""
        state = self.state
        return 200, orjson.dumps(
            {"versions": [{"version": v, "state": state.states.get(v), "inputs": m.schema.to_mapping(), "task": m.task,
                           "scorer": m.scorer} for v, m in state.models.items()]}
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
                task=model.task,
                admin_bodies={p.decode().rsplit("/", 1)[-1]: body.model_json_schema()
                              for p, (body, _) in self.admin_routes.items()},
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
        if self._pool is not None:  # (the drain waited for the requests scored there)
            self._pool.shutdown(wait=True)
        for log in (self.prediction_log, self.feedback_log):
            if log is not None:
                log.close()
        if self.commit is not None:
            self.commit.close()
