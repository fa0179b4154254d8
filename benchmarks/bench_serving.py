"""Online serving and batch scoring: loopml against MLflow, BentoML and a hand-written FastAPI app.

One command, every system in the same run::

    .venv/bin/python -m benchmarks serving                 # 5 s warm-up, 20 s per load level
    .venv/bin/python -m benchmarks serving --duration=5 --warmup=2 --peers=loopml,fastapi
    .venv/bin/python -m benchmarks serving --peers=route-production,route-shadow,route-ab --batch-rows=0
    .venv/bin/python -m benchmarks serving --render      # serving.md again from serving.json, nothing measured

The same LightGBM model for every server: 200 trees, 31 leaves, binary, 25 input columns (20
numeric, 5 categorical codes with 10-1,000 levels) trained on ``make_classification`` (200k rows,
seed 0). Each server runs pinned to core 0 (``taskset -c 0``), wrk runs pinned to core 1 with a
Lua script cycling 10,000 distinct single-row JSON bodies (and 100 bodies of 100 rows), over
loopback only. Before measuring, every server must return the reference prediction. Server CPU
seconds per request come from /proc (the server's whole process tree). Each peer lives in its own
virtual environment under ``benchmarks/envs`` (created on first use).

Rows measured:

* ``loopml``: ``loopml serve --model-file`` with the prediction log on (the product default).
* ``loopml-lag0``: the same server with ``--log-max-lag 0``: the log writer process turns the
  journal into Parquet while the load runs, on the same pinned core (the worst case of the log).
* ``loopml-nolog``: the same server with the prediction log off (what the durable log costs).
* ``loopml-durable``: the same server with ``--log-durability before_answer``: a response leaves only once
  its journal line is fdatasynced (group commit; a crash loses no answered prediction).
* ``loopml-uvicorn``: the same app (``ServingApp``, log on) behind a well-kept server instead of
  loopml's own HTTP layer: uvicorn (httptools + uvloop) running a plain ASGI callable, no
  framework. This row decides whether the hand-written layer stays (ARCHITECTURE.md).
* ``loopml-bundle``: ``loopml serve --project``: the same trees registered as a bundle (fitted
  FeaturePipeline + model + manifest), so every request also runs schema validation and the
  compiled row transform; the product path after ``loopml run``.
* ``route-production``, ``route-shadow``, ``route-ab``: ``loopml serve --project`` over a registry
  holding two bundles of the same trees, v1 in production and v2 in state shadow (``shadow``) or
  canary (``ab``, 50/50 by the request's ``uid``), with ``deployment.routing.type`` set accordingly;
  every body carries a ``uid``. Measured at c=8 only: the per-request CPU of the routing policies side
  by side (the shadow scores its copy after the response, on the same core, and logs it).
* ``loopml+store``: the same server fetching the 5 categorical features from the SQLite online
  store by an entity key, the request carrying only the 20 numeric features and the key.
* ``fastapi``: FastAPI + uvicorn (uvloop, httptools), async endpoint, orjson, LightGBM on a numpy row.
* ``mlflow``: ``mlflow models serve --env-manager local`` (uvicorn, 1 worker).
* ``bentoml``: a ``@bentoml.service`` with a numpy input, 1 worker.

Batch: 1,000,000 rows scored by ``loopml.serving.predict_batch`` from a Parquet file (read in
chunks, transform, predict, write Parquet) against raw in-process ``Booster.predict`` on the
same matrix already in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from benchmarks._common import ENVS, machine, peer_env, write_results  # noqa: E402

N_TRAIN = 200_000
LEVELS = [10, 50, 100, 500, 1000]
NUMERIC = [f"f{i}" for i in range(20)]
CATEGORICAL = [f"c{i}" for i in range(5)]
NAMES = NUMERIC + CATEGORICAL
CACHE = ENVS / "serving-cache"
WRK = "/usr/bin/wrk"

PEER_PACKAGES = {
    "fastapi": ["fastapi", "uvicorn[standard]", "orjson", "lightgbm", "numpy"],
    "mlflow": ["mlflow", "lightgbm", "uvicorn", "pandas", "scikit-learn"],
    "bentoml": ["bentoml", "lightgbm", "numpy"],
}


# -- the model and the request bodies ------------------------------------------------------------
def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_classification`` rows with the last 5 columns turned into integer category codes."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n, n_features=25, n_informative=12, n_redundant=4, random_state=seed)
    for j, levels in enumerate(LEVELS):
        col = X[:, 20 + j]
        ranks = np.argsort(np.argsort(col)) / len(col)
        X[:, 20 + j] = np.floor(ranks * levels).clip(0, levels - 1)
    return X, y


def train_model() -> Path:
    """The shared model (cached under benchmarks/envs/serving-cache)."""
    import lightgbm as lgb

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "model-200x31.txt"
    if path.exists():
        return path
    X, y = make_data(N_TRAIN, 0)
    params = {"objective": "binary", "num_leaves": 31, "learning_rate": 0.1, "verbose": -1, "seed": 0}
    ds = lgb.Dataset(X, y, feature_name=NAMES, categorical_feature=CATEGORICAL)
    booster = lgb.train(params, ds, num_boost_round=200)
    tmp = path.with_suffix(".tmp")
    booster.save_model(str(tmp))
    os.replace(tmp, path)
    return path


def request_rows(n: int) -> np.ndarray:
    """Held-out rows (a different seed than training)."""
    X, _ = make_data(max(n, 1000), 1)
    return X[:n]


def row_dict(x: np.ndarray, names: list[str] = NAMES) -> dict[str, Any]:
    """One row as the JSON object loopml and the FastAPI app take (codes as integers)."""
    return {n: (int(v) if n in CATEGORICAL else float(v)) for n, v in zip(names, x) if n in names}


def bodies_for(system: str, X: np.ndarray, batch: int) -> list[str]:
    """Request bodies in each system's own format (single rows when ``batch`` is 1)."""
    out = []
    for i in range(0, len(X) - batch + 1, batch):
        chunk = X[i : i + batch]
        if system in ("loopml", "loopml-lag0", "loopml-nolog", "loopml-durable", "loopml-bundle", "loopml-uvicorn", "fastapi"):
            rows = [row_dict(x) for x in chunk]
            out.append(json.dumps(rows[0] if batch == 1 else rows))
        elif system in ROUTES:  # a unit key (the ab policy's) in every body, for every policy alike
            rows = [{**row_dict(x), "uid": int(i + k)} for k, x in enumerate(chunk)]
            out.append(json.dumps(rows[0] if batch == 1 else rows))
        elif system == "loopml+store":
            rows = [{**row_dict(x, NUMERIC), "eid": int(i + k)} for k, x in enumerate(chunk)]
            out.append(json.dumps(rows[0] if batch == 1 else rows))
        elif system == "mlflow":
            data = [[(int(v) if j >= 20 else float(v)) for j, v in enumerate(x)] for x in chunk]
            out.append(json.dumps({"dataframe_split": {"columns": NAMES, "data": data}}))
        elif system == "bentoml":
            out.append(json.dumps({"x": [[float(v) for v in x] for x in chunk]}))
        else:
            raise ValueError(system)
    return out


def lua_script(path: Path, bodies: list[str], url_path: str) -> Path:
    """A wrk script cycling ``bodies``."""
    lines = ["bodies = {"]
    lines += [json.dumps(b) + "," for b in bodies]
    lines += [
        "}",
        "counter = 0",
        "request = function()",
        "  counter = counter + 1",
        "  local b = bodies[(counter % #bodies) + 1]",
        f'  return wrk.format("POST", "{url_path}", {{["Content-Type"]="application/json"}}, b)',
        "end",
    ]
    path.write_text("\n".join(lines))
    return path


# -- process helpers ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def signal_tree(root: int, sig: int) -> None:
    """Send ``sig`` to ``root`` and all its descendants (SIGSTOP / SIGCONT: see :func:`bench_online`)."""
    for p in tree_pids(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)


def drain_logs(work: Path, timeout: float = 300.0) -> float:
    """Wait until every loopml log journal under ``work`` is in Parquet segments; returns the seconds waited."""
    from loopml.serving.journal import wait_written

    t0 = time.perf_counter()
    time.sleep(1.2)  # the services append their last rows to the journals (log_flush_seconds = 1)
    wait_written([p.parent for p in work.rglob(".journal")], timeout=timeout)
    return time.perf_counter() - t0


def cpu_seconds(root: int) -> float:
    """utime + stime of a process tree, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree_pids(root):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def post(url: str, body: str, timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url, data=body.encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def first_score(system: str, resp: Any) -> float:
    """The first score in a system's response."""
    if system.startswith("loopml") or system in ROUTES:
        return float(resp["score"] if "score" in resp else resp["scores"][0])
    if system == "fastapi":
        return float(resp["predictions"][0])
    if system == "mlflow":
        p = resp["predictions"][0]
        return float(p[0] if isinstance(p, list) else p)
    if system == "bentoml":
        p = resp[0]
        return float(p[0] if isinstance(p, list) else p)
    raise ValueError(system)


def wait_ready(proc: subprocess.Popen[bytes], url: str, body: str, system: str, timeout: float = 180) -> float:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} before answering: {last}")
        try:
            return first_score(system, post(url, body))
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.3)
    raise RuntimeError(f"no answer within {timeout:.0f} s: {last}")


def wait_compiled(url: str, warm: Any = None, timeout: float = 300.0) -> str:
    """Wait until every version a loopml server loaded scores with compiled trees (it compiles a
    version once it has answered ``deployment.compile_after_rows`` rows: the warm-up's; ``warm()``
    sends more requests every 20 s while a version has not got there); returns the scorers it
    reports (``compiled`` when it got there)."""
    models = url.rsplit("/v1/", 1)[0] + "/v1/models"
    deadline = time.monotonic() + timeout
    rewarm = time.monotonic() + 20
    scorers = ""
    while time.monotonic() < deadline:
        with urllib.request.urlopen(models, timeout=5) as r:
            scorers = ",".join(sorted({v["scorer"] for v in json.loads(r.read())["versions"]}))
        if scorers == "compiled":
            break
        if warm is not None and time.monotonic() > rewarm:
            warm()
            rewarm = time.monotonic() + 20
        time.sleep(0.5)
    return scorers


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- wrk -------------------------------------------------------------------------------------------
def _ms(v: str, unit: str) -> float:
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    """req/s, p50/p99 latency (ms), requests, errors (non-2xx + socket errors)."""
    out: dict[str, Any] = {"raw_tail": text.strip().splitlines()[-3:]}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else 0
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s|m)\b", text)
        out[f"p{pct}_ms"] = _ms(m.group(1), m.group(2)) if m else None
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(g) for g in m.groups())
    out["errors"] = errors
    return out


def run_wrk(url: str, script: Path, conns: int, seconds: float) -> dict[str, Any]:
    cmd = ["taskset", "-c", "1", WRK, "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
           "--latency", "-s", str(script), url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    return parse_wrk(res.stdout + res.stderr)


# -- servers -------------------------------------------------------------------------------------
FASTAPI_APP = '''
import lightgbm as lgb, numpy as np, orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

booster = lgb.Booster(model_file={model!r})
names = booster.feature_name()
app = FastAPI()


@app.post("/predict")
async def predict(request: Request):
    data = orjson.loads(await request.body())
    rows = data if isinstance(data, list) else [data]
    x = np.array([[r[n] for n in names] for r in rows], dtype=np.float64)
    p = booster.predict(x, num_threads=1)
    return Response(orjson.dumps({{"predictions": p.tolist()}}), media_type="application/json")
'''

BENTO_SERVICE = '''
import bentoml, numpy as np, lightgbm as lgb


@bentoml.service(workers=1)
class Classifier:
    def __init__(self) -> None:
        self.booster = lgb.Booster(model_file={model!r})

    @bentoml.api
    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.booster.predict(x, num_threads=1)
'''

MLFLOW_SAVE = '''
import sys, lightgbm as lgb, mlflow.lightgbm
booster = lgb.Booster(model_file=sys.argv[1])
mlflow.lightgbm.save_model(booster, sys.argv[2])
'''


def start_server(system: str, model: Path, work: Path, port: int, store_dir: Path | None) -> tuple[subprocess.Popen[bytes], str]:
    """Start one server pinned to core 0; returns the process and the predict URL."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    log = open(work / f"{system}.log", "wb")  # noqa: SIM115 - lives as long as the process
    pin = ["taskset", "-c", "0"]
    if system == "loopml":
        cmd = [*pin, sys.executable, "-m", "loopml.cli.main", "serve", "--model-file", str(model), "--log-dir",
               str(work / "loopml-logs"), "--port", str(port)]
        path = "/v1/predict"
    elif system == "loopml-lag0":
        cmd = [*pin, sys.executable, "-m", "loopml.cli.main", "serve", "--model-file", str(model), "--log-dir",
               str(work / "loopml-lag0-logs"), "--log-max-lag", "0", "--port", str(port)]
        path = "/v1/predict"
    elif system == "loopml-durable":
        cmd = [*pin, sys.executable, "-m", "loopml.cli.main", "serve", "--model-file", str(model), "--log-dir",
               str(work / "loopml-durable-logs"), "--log-durability", "before_answer", "--port", str(port)]
        path = "/v1/predict"
    elif system == "loopml-nolog":
        cmd = [*pin, sys.executable, "-m", "loopml.cli.main", "serve", "--model-file", str(model), "--port", str(port)]
        path = "/v1/predict"
    elif system == "loopml-uvicorn":
        cmd = [*pin, sys.executable, str(Path(__file__)), "--asgi-server", str(model), str(port),
               str(work / "loopml-uvicorn-logs")]
        path = "/v1/predict"
    elif system == "loopml-bundle" or system in ROUTES:
        project = make_bundle_project(work, model, system)
        cmd = [*pin, sys.executable, "-m", "loopml.cli.main", "serve", "--project", str(project), "--port", str(port)]
        path = "/v1/predict"
    elif system == "loopml+store":
        assert store_dir is not None
        cmd = [*pin, sys.executable, str(Path(__file__)), "--store-server", str(model), str(store_dir), str(port),
               str(work / "loopml-store-logs")]
        path = "/v1/predict"
    elif system == "fastapi":
        py = peer_env("fastapi", PEER_PACKAGES["fastapi"])
        (work / "fastapi_app.py").write_text(FASTAPI_APP.format(model=str(model)))
        cmd = [*pin, str(py), "-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning", "--no-access-log"]
        path = "/predict"
    elif system == "mlflow":
        py = peer_env("mlflow", PEER_PACKAGES["mlflow"])
        mdir = work / "mlflow-model"
        if not mdir.exists():
            subprocess.run([str(py), "-c", MLFLOW_SAVE, str(model), str(mdir)], check=True, capture_output=True)
        env["PATH"] = f"{py.parent}:{env['PATH']}"
        env["MLFLOW_TRACKING_URI"] = f"file://{work / 'mlruns'}"
        cmd = [*pin, str(py.parent / "mlflow"), "models", "serve", "-m", str(mdir), "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
        path = "/invocations"
    elif system == "bentoml":
        py = peer_env("bentoml", PEER_PACKAGES["bentoml"])
        bdir = work / "bento"
        bdir.mkdir(exist_ok=True)
        (bdir / "service.py").write_text(BENTO_SERVICE.format(model=str(model)))
        env["PATH"] = f"{py.parent}:{env['PATH']}"
        env["BENTOML_HOME"] = str(work / "bentoml-home")
        env["BENTOML_DO_NOT_TRACK"] = "true"
        cmd = [*pin, str(py.parent / "bentoml"), "serve", "service:Classifier", "--host", "127.0.0.1",
               "--port", str(port)]
        path = "/predict"
    else:
        raise ValueError(system)
    cwd = work / "bento" if system == "bentoml" else work
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}{path}"


ROUTES = {"route-production": None, "route-shadow": "shadow", "route-ab": "canary"}
ROUTING_YAML = {
    "route-production": "",
    "route-shadow": "deployment:\n  routing: {type: shadow}\n",
    "route-ab": "deployment:\n  routing: {type: ab, unit_key: uid, fraction: 0.5, salt: bench}\n",
}


def make_bundle_project(work: Path, model: Path, system: str = "loopml-bundle") -> Path:
    """A loopml project whose production version is a registered bundle of the same trees.

    The bundle is what the pipeline produces: a fitted FeaturePipeline (25 numeric inputs,
    passed through as float32) + the LightGBM model + a manifest, stored as sha256-verified
    artifacts; the server then runs schema validation and the compiled row transform per request.
    """
    import pyarrow as pa

    from loopml.features import FeaturePipeline
    from loopml.registry import Registry
    from loopml.training.bundle import Bundle, make_manifest, save_bundle
    from loopml.training.models.base import BaseModel
    from loopml.workspace import Workspace

    project = work / f"{system}-project"
    project.mkdir()
    inputs = "\n".join(f"    - {{column: {n}, kind: numeric}}" for n in NAMES)
    (project / "loopml.yaml").write_text(f"project: {{name: bench}}\ntask: {{type: binary, target: y}}\n"
                                         f"features:\n  inputs:\n{inputs}\n" + ROUTING_YAML.get(system, ""))
    ws = Workspace.open(project)
    X, y = make_data(2000, 0)
    table = pa.table({n: (X[:, i].astype(np.int64) if n in CATEGORICAL else X[:, i]) for i, n in enumerate(NAMES)})
    pipe = FeaturePipeline.from_spec(ws.spec.features, task=ws.spec.task).fit(table, y)
    mdir = work / f"{system}-model"
    mdir.mkdir()
    shutil.copyfile(model, mdir / "model.txt")
    (mdir / "model.json").write_text(json.dumps({
        "format": "loopml-model/1", "type": "lightgbm", "task": "binary", "seed": 0,
        "config": {"n_estimators": 200, "num_leaves": 31}, "n_features_in": 25, "n_classes": 2,
        "categorical": list(range(20, 25)), "state": {"objective": "binary", "init_score": 0.0, "rounds": 200},
    }))
    lgbm = BaseModel.load(mdir)
    bundle = Bundle(transform=pipe, model=lgbm, manifest=make_manifest(pipe, lgbm, schema=table.schema))
    digest = save_bundle(ws, bundle, producer=None)
    reg = Registry(ws)
    v = reg.register(digest, verdict={"approved": True, "gates": []}, lineage={"note": "benchmark"})
    reg.promote(v.version_id, reason="benchmark", actor="bench")
    if system in ROUTES:  # a second version (the same trees, another bundle) in the challenger's state
        extra = {"benchmark_arm": "challenger"}
        other = Bundle(transform=pipe, model=lgbm, manifest=make_manifest(pipe, lgbm, schema=table.schema, extra=extra))
        v2 = reg.register(save_bundle(ws, other, producer=None), verdict={"approved": True, "gates": []},
                          lineage={"note": "benchmark challenger"})
        if ROUTES[system] is not None:
            reg.transition(v2.version_id, str(ROUTES[system]), reason="benchmark", actor="bench")
    return project


def store_server(argv: list[str]) -> None:
    """``--store-server MODEL STORE_DIR PORT LOG_DIR``: loopml with the categorical codes from the online store."""
    from loopml.features.stores.sqlite_store import SqliteStore
    from loopml.serving.app import ServingApp
    from loopml.serving.auth import AdminAuth
    from loopml.serving.lookup import EntityTable, FeatureLookup
    from loopml.serving.service import configure, make_logs, run_server
    from loopml.serving.sources import FileSource
    from loopml.spec.deployment import Deployment

    model, store_dir, port, log_dir = argv
    store = SqliteStore(Path(store_dir) / "online.sqlite")
    plog, flog = make_logs(Path(log_dir), Deployment())
    app = configure(ServingApp(
        FileSource(model), prediction_log=plog, feedback_log=flog, auth=AdminAuth("LOOPML_ADMIN_TOKEN"),
        lookup=FeatureLookup(store, [EntityTable("entity_codes", ("eid",), tuple(CATEGORICAL))]),
    ), Deployment())
    run_server(app, "127.0.0.1", int(port), poll_seconds=0)


def asgi_app(app: Any) -> Any:
    """A plain ASGI callable over ``ServingApp.handle`` (what a well-kept server would run instead of
    loopml's own HTTP layer): read the body, call the same handlers, send the same bytes."""
    wanted = frozenset({b"authorization", b"x-request-id", b"expect", b"content-length", b"content-type"})

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # as `loopml serve`: hot versions get compiled trees
            from loopml.serving import compiled

            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if app.compile_after_rows is not None and compiled.available():
                        asgi.compiler = asyncio.ensure_future(  # type: ignore[attr-defined]
                            compiled.TreeCompiler(app, app.compile_after_rows).run_forever())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k: v for k, v in scope["headers"] if k in wanted}
        path = scope["raw_path"] or scope["path"].encode()
        result = app.handle(scope["method"].encode(), path, headers, body)
        if result is None:
            result = await app.handle_admin(path, headers, body)
        elif result.__class__ is not tuple:
            result = await result
        extra = [tuple(line.split(b": ", 1)) for line in result[3].split(b"\r\n") if line] if len(result) > 3 else []
        await send({"type": "http.response.start", "status": result[0],
                    "headers": [(b"content-type", result[2]), *extra]})
        await send({"type": "http.response.body", "body": result[1]})

    return asgi


def asgi_server(argv: list[str]) -> None:
    """``--asgi-server MODEL PORT LOG_DIR``: the loopml app (log on) behind uvicorn (httptools, uvloop)."""
    import uvicorn

    from loopml.serving.service import app_for_model_file
    from loopml.spec.deployment import Deployment

    model, port, log_dir = argv
    app = app_for_model_file(model, log_root=Path(log_dir), deployment=Deployment())
    app.load_initial()
    sys.setswitchinterval(0.0005)  # as `loopml serve` does (the journal's flusher thread)
    try:
        uvicorn.run(asgi_app(app), host="127.0.0.1", port=int(port), loop="uvloop", http="httptools",
                    lifespan="on", access_log=False, log_level="warning", backlog=1024)
    finally:
        app.close()


def fill_store(store_dir: Path, X: np.ndarray) -> None:
    """Entity ``eid`` = row index → its 5 categorical codes, in the SQLite online store."""
    from loopml.features.store import OnlineRecord
    from loopml.features.stores.sqlite_store import SqliteStore

    store = SqliteStore(store_dir / "online.sqlite")
    now = time.time()
    store.write("entity_codes", [OnlineRecord((i,), {c: int(x[20 + k]) for k, c in enumerate(CATEGORICAL)}, now, now)
                                 for i, x in enumerate(X)])
    store.close()


# -- the runs --------------------------------------------------------------------------------------
LEVELS_RUN = (("c1", "single", 1), ("c8", "single", 8), ("c64", "single", 64), ("batch100_c8", "batch", 8))


def measure_log_pairs(running: dict[str, Any], work: Path, pairs: int, seconds: float) -> dict[str, Any]:
    """The log's CPU per single row at c=8, as ``pairs`` back-to-back runs of ``loopml`` and ``loopml-nolog``
    (order alternating): the ratio of each pair's CPU per request, with the log written, and their median
    with a 95% interval (order statistics of the median, as a sign test would give).

    A few percent of CPU per request is below the run-to-run noise of this shared 2-core VM (±10% between
    runs minutes apart); adjacent runs of the two servers share the machine's state, so the pairs' ratios
    are far tighter than two separate levels."""
    ratios, runs = [], []
    for i in range(pairs):
        order = ["loopml", "loopml-nolog"] if i % 2 == 0 else ["loopml-nolog", "loopml"]
        got: dict[str, float] = {}
        for system in order:
            proc, url, scripts = running[system]
            signal_tree(proc.pid, signal.SIGCONT)
            time.sleep(0.2)
            c0 = cpu_seconds(proc.pid)
            r = run_wrk(url, scripts["single"], 8, seconds)
            drain_logs(work)
            cpu = cpu_seconds(proc.pid) - c0
            signal_tree(proc.pid, signal.SIGSTOP)
            if r["requests"]:
                got[system] = 1000 * cpu / r["requests"]
                runs.append({"system": system, "pair": i, "cpu_ms_per_request_with_log": got[system],
                             "rps": r["rps"], "errors": r["errors"]})
        if len(got) == 2:
            ratios.append(got["loopml"] / got["loopml-nolog"])
        print(f"    log pair {i + 1}/{pairs}: " + ", ".join(f"{k} {v * 1000:.1f} µs/req" for k, v in got.items()), flush=True)
    out: dict[str, Any] = {"pairs": len(ratios), "seconds": seconds, "runs": runs, "ratios": ratios}
    if ratios:
        from scipy import stats

        ci = stats.quantile_test(ratios, q=1.0, p=0.5).confidence_interval(0.95)  # the median's, from order statistics
        out.update(median=float(np.median(ratios)), low=float(ci.low), high=float(ci.high))
    return out


def bench_online(systems: list[str], model: Path, warmup: float, duration: float, n_bodies: int,
                 rounds: int, log_pairs: int = 0, log_pair_seconds: float = 3.0) -> dict[str, Any]:
    """Start every server, check its reference prediction, then measure level by level with the
    systems interleaved (and ``rounds`` times over), so that load from other jobs on this shared
    machine falls on all of them alike; the median round is reported."""
    import lightgbm as lgb

    booster = lgb.Booster(model_file=str(model))
    X = request_rows(n_bodies)
    Xb = request_rows(100 * 100)
    ref = float(booster.predict(X[:1])[0])
    ref32 = float(booster.predict(X[:1].astype(np.float32).astype(np.float64))[0])
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    store_dir = work / "store"
    store_dir.mkdir()
    results: dict[str, Any] = {s: {} for s in systems}
    running: dict[str, tuple[subprocess.Popen[bytes], str, dict[str, Path]]] = {}
    try:
        if "loopml+store" in systems:
            fill_store(store_dir, X)
        for system in systems:
            print(f"--- starting {system}", flush=True)
            try:
                proc, url = start_server(system, model, work, free_port(), store_dir)
            except Exception as exc:  # e.g. the peer's environment cannot be installed
                results[system] = {"error": f"could not start: {type(exc).__name__}: {exc}"}
                print(f"    {results[system]['error']}", flush=True)
                continue
            single = bodies_for(system, X, 1)
            try:
                got = wait_ready(proc, url, single[0], system)
                # the bundle's transform hands the model float32 features (as in training): its
                # reference is the same trees on the float32-rounded row
                want = ref32 if system == "loopml-bundle" or system in ROUTES else ref
                results[system]["reference"] = {"expected": want, "got": got, "float64_reference": ref}
                results[system]["reference_ok"] = abs(got - want) < 1e-9
                if not results[system]["reference_ok"]:
                    raise RuntimeError(f"wrong prediction: {got} != {ref}")
            except Exception as exc:
                results[system]["error"] = f"{type(exc).__name__}: {exc}"
                results[system]["log_tail"] = (work / f"{system}.log").read_bytes()[-1500:].decode(errors="replace")
                print(f"    failed: {results[system]['error']}\n{results[system]['log_tail']}", flush=True)
                stop(proc)
                continue
            path = "/" + url.split("/", 3)[3]
            scripts = {"single": lua_script(work / f"{system}-single.lua", single, path),
                       "batch": lua_script(work / f"{system}-batch.lua", bodies_for(system, Xb, 100), path)}
            running[system] = (proc, url, scripts)
        for _proc, url, scripts in running.values():
            run_wrk(url, scripts["single"], 8, warmup)
        for system, (_proc, url, scripts) in running.items():
            if system.startswith("loopml") or system in ROUTES:  # measured as they serve once warm
                t_wait = time.monotonic()
                results[system]["scorer"] = wait_compiled(
                    url, lambda url=url, scripts=scripts: run_wrk(url, scripts["single"], 8, 1.0))
                print(f"    {system}: scorer {results[system]['scorer']} after {time.monotonic() - t_wait:.0f} s more",
                      flush=True)
        drain_logs(work)  # the warm-up's log rows are written before anything is measured
        # only the server being measured runs: the others (their timers, log writers, registry pollers)
        # are stopped (SIGSTOP) and continued for their own runs, so no system is measured while the
        # idle ones wake up on its core (measured: 8 idle servers triple a busy one's involuntary switches)
        for proc, _, _ in running.values():
            signal_tree(proc.pid, signal.SIGSTOP)
        for label, kind, conns in LEVELS_RUN:
            for rnd in range(rounds):
                order = list(running) if rnd % 2 == 0 else list(reversed(running))
                for system in order:
                    if system in ROUTES and label != "c8":
                        continue  # the routing comparison is at c=8
                    proc, url, scripts = running[system]
                    if proc.poll() is not None:
                        results[system].setdefault("error", f"server exited with code {proc.returncode}")
                        continue
                    signal_tree(proc.pid, signal.SIGCONT)
                    time.sleep(0.2)  # its timers catch up before the load starts
                    c0 = cpu_seconds(proc.pid)
                    r = run_wrk(url, scripts[kind], conns, duration)
                    cpu = cpu_seconds(proc.pid) - c0
                    r["cpu_ms_per_request"] = 1000 * cpu / r["requests"] if r["requests"] else None
                    if system.startswith("loopml") or system in ROUTES:
                        # the log writer's deferred work runs now, before the next system is measured on
                        # this core; its CPU is charged to this system's requests
                        r["log_drain_s"] = drain_logs(work)
                        cpu_all = cpu_seconds(proc.pid) - c0
                        r["cpu_ms_per_request_with_log"] = 1000 * cpu_all / r["requests"] if r["requests"] else None
                    signal_tree(proc.pid, signal.SIGSTOP)
                    results[system].setdefault("rounds", {}).setdefault(label, []).append(r)
                    print(f"    {system:13s} {label:12s} round {rnd + 1}: {r['rps']:9.0f} req/s  p50 {r['p50_ms']} ms  "
                          f"p99 {r['p99_ms']} ms  errors {r['errors']}  cpu {r['cpu_ms_per_request']} ms/req", flush=True)
        if "loopml" in running and "loopml-nolog" in running and log_pairs > 0:
            results["loopml"]["log_pairs"] = measure_log_pairs(running, work, log_pairs, log_pair_seconds)
        for system in running:
            for label, runs in results[system].get("rounds", {}).items():
                ranked = sorted(runs, key=lambda r: r["rps"])
                median = dict(ranked[(len(ranked) - 1) // 2])  # lower median: conservative for 2 rounds
                median["errors"] = sum(int(r["errors"]) for r in runs)  # errors of every round count
                results[system][label] = median
    finally:
        for proc, _, _ in running.values():
            signal_tree(proc.pid, signal.SIGCONT)
            stop(proc)
        for system in systems:
            log = work / f"{system}.log"
            if log.exists() and "error" in results.get(system, {}):
                results[system].setdefault("log_tail", log.read_bytes()[-1500:].decode(errors="replace"))
        shutil.rmtree(work, ignore_errors=True)
    return results


def bench_batch(model: Path, rows: int) -> dict[str, Any]:
    """loopml batch scoring from Parquet (chunks, transform, predict, write) vs raw Booster.predict.

    Two loopml paths: the model file (raw numeric columns) and the registered bundle (the fitted
    FeaturePipeline's batch transform to float32, then the same trees).
    """
    import lightgbm as lgb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from loopml.registry import Registry
    from loopml.serving import predict_batch
    from loopml.serving.sources import FileSource, load_version
    from loopml.workspace import Workspace

    X = request_rows(rows)
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        table = pa.table({n: (X[:, i].astype(np.int64) if n in CATEGORICAL else X[:, i]) for i, n in enumerate(NAMES)})
        src = work / "rows.parquet"
        pq.write_table(table, src, row_group_size=100_000)
        del table
        booster = lgb.Booster(model_file=str(model))
        servable = FileSource(model).load("file")
        servable.set_batch_threads(0)  # all cores, like raw predict
        ws = Workspace.open(make_bundle_project(work, model))
        v = Registry(ws).production()
        assert v is not None
        bundled = load_version(ws, v.version_id, v.bundle_digest, batch_threads=0)
        raw_s, loop_s, bundle_s = [], [], []
        for _ in range(2):
            t0 = time.perf_counter()
            ref = booster.predict(X)
            raw_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            res = predict_batch(servable, src, work / "out.parquet", chunk_rows=200_000)
            loop_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            predict_batch(bundled, src, work / "out-bundle.parquet", chunk_rows=200_000)
            bundle_s.append(time.perf_counter() - t0)
        out = pq.read_table(work / "out.parquet").column("score").to_numpy()
        same = bool(np.array_equal(out, ref))
        out_b = pq.read_table(work / "out-bundle.parquet").column("score").to_numpy()
        same_b = bool(np.array_equal(out_b, booster.predict(X.astype(np.float32).astype(np.float64))))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raw, loop, bundle = min(raw_s), min(loop_s), min(bundle_s)
    return {
        "rows": rows,
        "raw_predict_s": raw,
        "loopml_batch_s": loop,
        "loopml_bundle_batch_s": bundle,
        "raw_rows_per_s": rows / raw,
        "loopml_rows_per_s": rows / loop,
        "loopml_bundle_rows_per_s": rows / bundle,
        "ratio": raw / loop,
        "bundle_ratio": raw / bundle,
        "identical_scores": same,
        "bundle_identical_to_float32_inputs": same_b,
        "loopml_rows": res.rows,
    }


def targets(results: dict[str, Any], batch: dict[str, Any] | None) -> list[str]:
    """The issues' targets (14: the service with its log on; 16: routing), checked against this run."""
    out = []
    fa = results.get("fastapi", {}).get("c8", {})
    lp = results.get("loopml", {})
    c8 = lp.get("c8", {})
    if c8 and fa.get("rps"):
        ratio = c8["rps"] / fa["rps"]
        eff = fa["cpu_ms_per_request"] / c8["cpu_ms_per_request"] if c8.get("cpu_ms_per_request") else 0.0
        out.append(f"- `loopml` (log on) req/s at c=8 ≥ 5× FastAPI + orjson: {ratio:.2f}× req/s ({eff:.2f}× less CPU per "
                   f"request) → {'met' if ratio >= 5 else 'NOT met'}")
    if c8:
        p99 = c8.get("p99_ms")
        out.append(f"- `loopml` (log on) p99 ≤ 2 ms at c=8: {p99 if p99 is None else round(p99, 3)} ms → {'met' if (p99 or 99) <= 2 else 'NOT met'}")
        errs = sum(int(lp.get(k, {}).get("errors", 0)) for k in ("c1", "c8", "c64", "batch100_c8"))
        out.append(f"- `loopml` zero errors at c=1, 8, 64 and 100-row bodies: {errs} errors → {'met' if errs == 0 else 'NOT met'}")
    b, fb = lp.get("batch100_c8", {}).get("rps"), results.get("fastapi", {}).get("batch100_c8", {}).get("rps")
    if b and fb:
        out.append(f"- `loopml` (log on) 100-row bodies ≥ 1× FastAPI + orjson: {b / fb:.2f}× → {'met' if b >= fb else 'NOT met'}")
    out += [line for line in log_cost(results) if line.startswith("- `loopml` log CPU")]
    uv = results.get("loopml-uvicorn", {}).get("c8", {})
    if uv.get("rps") and c8.get("rps"):
        out.append(f"- well-kept server beside the hand-written one: `loopml-uvicorn` {uv['rps'] / c8['rps']:.2f}× the req/s of "
                   f"`loopml` at c=8 (the hand-written layer stays only while uvicorn costs more than 15%: "
                   f"{'it does' if uv['rps'] < 0.85 * c8['rps'] else 'it does NOT'})")
    out += routing_targets(results)
    bu = results.get("loopml-bundle", {}).get("c8", {})
    if bu.get("rps") and fa.get("rps"):
        out.append(f"- reported: `loopml-bundle` (validation + compiled transform per request) {bu['rps'] / fa['rps']:.2f}× "
                   f"FastAPI req/s at c=8, p99 {bu.get('p99_ms')} ms")
    lp8, ls = c8, results.get("loopml+store", {}).get("c8", {})
    if lp8.get("cpu_ms_per_request") and ls.get("cpu_ms_per_request"):
        extra = ls["cpu_ms_per_request"] - lp8["cpu_ms_per_request"]
        out.append(f"- online-store features cost ≤ +0.3 ms per request: +{extra:.3f} ms CPU → {'met' if extra <= 0.3 else 'NOT met'}")
    if batch:
        worst = min(batch["ratio"], batch.get("bundle_ratio", batch["ratio"]))
        out.append(f"- batch ≥ 70% of raw LightGBM throughput, transforms included: {100 * batch['ratio']:.0f}% (model file)"
                   + (f", {100 * batch['bundle_ratio']:.0f}% (bundle)" if "bundle_ratio" in batch else "")
                   + f" → {'met' if worst >= 0.7 else 'NOT met'}")
    return out


def _route_cpu(e: dict[str, Any]) -> float | None:
    c8 = e.get("c8", {})
    return c8.get("cpu_ms_per_request_with_log") or c8.get("cpu_ms_per_request")


def routing_targets(results: dict[str, Any]) -> list[str]:
    """Issue 16: the per-request CPU of `ab` ≤ 5% over `production` (shadow reported)."""
    base = _route_cpu(results.get("route-production", {}))
    out = []
    for system, bound in (("route-ab", 0.05), ("route-shadow", None)):
        cpu = _route_cpu(results.get(system, {}))
        if base and cpu:
            extra = cpu / base - 1
            verdict = f"(target ≤ {100 * bound:.0f}%) → {'met' if extra <= bound else 'NOT met'}" if bound is not None \
                else "(reported: the shadow scores a copy of every request on the same core)"
            out.append(f"- `{system.split('-', 1)[1]}` routing CPU per request at c=8: {1000 * cpu:.0f} µs vs "
                       f"{1000 * base:.0f} µs for `production`: {100 * extra:+.1f}% {verdict}")
    p_base = results.get("route-production", {}).get("c8", {}).get("p99_ms")
    p_shadow = results.get("route-shadow", {}).get("c8", {}).get("p99_ms")
    if p_base and p_shadow:  # issue 16: the answering arm's p99 with a shadow beside it
        extra = p_shadow / p_base - 1
        out.append(f"- `shadow` routing: production's p99 at c=8 {p_shadow} ms vs {p_base} ms without a shadow: "
                   f"{100 * extra:+.1f}% (target ≤ 10%) → {'met' if extra <= 0.10 else 'NOT met'}")
    return out


def log_cost(results: dict[str, Any]) -> list[str]:
    """CPU the log adds per request (incl. writing it), single rows and 100-row bodies; the targets ≤ 10% / ≤ 20%."""
    out = []
    pairs = results.get("loopml", {}).get("log_pairs") or {}
    if pairs.get("median"):
        extra, lo, hi = pairs["median"] - 1, pairs["low"] - 1, pairs["high"] - 1
        # a target is met only when the whole interval is within it (a median inside is not evidence enough)
        verdict = "met" if hi <= 0.10 else "NOT met" if lo > 0.10 else "NOT met (not shown: the interval reaches above 10%)"
        again = (f" — measured again on its own at {pairs['remeasured']} (`--log-pairs-only`, code at "
                 f"{pairs.get('commit', '?')}; the other rows are from the run above)") if pairs.get("remeasured") else ""
        out.append(f"- `loopml` log CPU, single row, c=8, {pairs['pairs']} back-to-back pairs of {pairs['seconds']:g} s "
                   f"(log written): median {100 * extra:+.1f}% (95% interval {100 * lo:+.1f}% to {100 * hi:+.1f}%) "
                   f"(target ≤ 10%) → {verdict}{again}")
    for level, name, bound in (("c8", "single row, c=8", 0.10), ("batch100_c8", "100-row body, c=8", 0.20)):
        base = results.get("loopml-nolog", {}).get(level, {})
        off = base.get("cpu_ms_per_request_with_log") or base.get("cpu_ms_per_request")
        for system in ("loopml", "loopml-durable"):
            on = results.get(system, {}).get(level, {})
            cpu = on.get("cpu_ms_per_request_with_log") or on.get("cpu_ms_per_request")
            if not (off and cpu):
                continue
            extra = cpu / off - 1
            head = f"- `{system}` log CPU, {name}: {1000 * cpu:.0f} µs/req vs {1000 * off:.0f} µs/req without the log: {100 * extra:+.0f}%"
            if system == "loopml-durable":  # the zero-loss setting: its price, shown; the targets are the default window's
                out.append(f"{head} (`log_durability: before_answer`, answered only once on disk: its cost, no target)")
            elif level == "c8" and pairs.get("median"):  # the pairs above measure the same far more precisely
                out.append(f"{head} (the level runs, one per round; the pairs above decide the ≤ {100 * bound:.0f}% target)")
            else:
                out.append(f"{head} (target ≤ {100 * bound:.0f}%) → {'met' if extra <= bound else 'NOT met'}")
    fa = results.get("fastapi", {}).get("batch100_c8", {}).get("rps")
    for system in ("loopml", "loopml-durable"):
        b = results.get(system, {}).get("batch100_c8", {}).get("rps")
        if fa and b:
            out.append(f"- `{system}` 100-row bodies with the log on: {b / fa:.2f}× FastAPI + orjson (target ≥ 1×) → "
                       f"{'met' if b >= fa else 'NOT met'}")
    return ["", *out] if out else []


def markdown(results: dict[str, Any], batch: dict[str, Any] | None, args: argparse.Namespace,
             measured: str | None = None) -> str:
    def f(v: Any, fmt: str = "{:,.0f}") -> str:
        return "–" if v is None else fmt.format(v)

    lines = [
        "# Serving benchmark",
        "",
        f"Command: `.venv/bin/python -m benchmarks serving --duration={args.duration:g} --warmup={args.warmup:g} "
        f"--rounds={args.rounds} --log-pairs={getattr(args, 'log_pairs', 12)}`"
        + (f" `--peers={args.peers}`" if args.peers else ""),
        f"Measured {measured or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on a 2-core machine (1-minute load average "
        f"{getattr(args, 'loadavg', '?')}; anything else running shares core 0 with the server, which inflates "
        "absolute tail latencies). CPU ms per request (the server's own CPU time per answered request) barely depends "
        "on other load: it is the most robust comparison here.",
        "",
        "Model: LightGBM binary, 200 trees, 31 leaves, 25 inputs (20 numeric + 5 categorical codes, 10–1,000 levels), "
        "make_classification 200k rows seed 0. Server pinned to core 0, wrk pinned to core 1, loopback, "
        f"{args.bodies:,} distinct single-row bodies, 100 bodies of 100 rows; {args.warmup:g} s warm-up then "
        f"{args.duration:g} s per level and system; systems interleaved level by level ({args.rounds} round(s), median "
        "round reported, errors summed over rounds) so that load from other jobs falls on all alike; only the "
        "server being measured runs: every other server's process tree is stopped (SIGSTOP) until its own turn. "
        "CPU ms/request = server process tree CPU time (/proc) ÷ requests.",
        "",
        "| system | c=1 req/s | c=8 req/s | c=8 p50 / p99 ms | c=64 req/s | c=64 p99 ms | 100 rows c=8 req/s (rows/s) | errors (all runs) | CPU ms/req c=8 | req/s ×FastAPI (c=8) | CPU-efficiency ×FastAPI (c=8) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = results.get("fastapi", {}).get("c8", {}).get("rps")
    base_cpu = results.get("fastapi", {}).get("c8", {}).get("cpu_ms_per_request")
    for system, e in results.items():
        if system in ROUTES:
            continue  # (their own table below)
        if "error" in e and "c8" not in e:
            lines.append(f"| {system} | could not run: {e['error'][:200]} ||||||||||")
            continue
        c1, c8, c64, b = (e.get(k, {}) for k in ("c1", "c8", "c64", "batch100_c8"))
        errs = sum(int(x.get("errors", 0)) for x in (c1, c8, c64, b))
        ratio = f"{c8['rps'] / base:.2f}×" if base and c8.get("rps") else "–"
        eff = f"{base_cpu / c8['cpu_ms_per_request']:.2f}×" if base_cpu and c8.get("cpu_ms_per_request") else "–"
        lines.append(
            f"| {system} | {f(c1.get('rps'))} | {f(c8.get('rps'))} | {f(c8.get('p50_ms'), '{:.2f}')} / {f(c8.get('p99_ms'), '{:.2f}')} | "
            f"{f(c64.get('rps'))} | {f(c64.get('p99_ms'), '{:.2f}')} | {f(b.get('rps'))} ({f((b.get('rps') or 0) * 100)}) | {errs} | "
            f"{f(c8.get('cpu_ms_per_request'), '{:.3f}')} | {ratio} | {eff} |"
        )
    scorers = {s: e["scorer"] for s, e in results.items() if e.get("scorer")}
    if scorers:
        lines += ["", "Trees: every loopml row scores with its trees compiled (`deployment.compile_trees: auto`, "
                  "lleaves/LLVM; a version is compiled once it has answered 1,000 rows, and the benchmark waits for "
                  "it after the warm-up); the peers run LightGBM's own tree walker. Scorer once warm: "
                  + ", ".join(f"`{s}` {v}" for s, v in scorers.items()) + "."]
    lp, ls = results.get("loopml", {}).get("c8", {}), results.get("loopml+store", {}).get("c8", {})
    if lp.get("cpu_ms_per_request") and ls.get("cpu_ms_per_request"):
        lines += ["", f"Online-store lookup cost: +{ls['cpu_ms_per_request'] - lp['cpu_ms_per_request']:.3f} ms CPU per request, "
                  f"p50 {lp.get('p50_ms')} → {ls.get('p50_ms')} ms at c=8 (5 of 25 features fetched from SQLite by key)."]
    if results.get("loopml", {}).get("c8") and (results.get("loopml-lag0") or results.get("loopml-nolog")):
        lines += ["", "## What the durable prediction log costs", "",
                  "The request loop keeps each prediction's raw inputs column by column and appends them to a journal "
                  "as one binary block record per 1,000 rows (one `writev`; a 100-row request is one block), "
                  "`fdatasync`ed every second (`deployment.log_flush_seconds`); a separate writer process at idle priority turns journals into the Parquet segments "
                  "monitoring reads, column by column. It yields the core every 64 records, and while requests flow fast it waits (the rows "
                  "are already durable in the journal) for at most `deployment.log_max_lag_seconds`. This kernel "
                  "(PREEMPT_NONE, 250 Hz) lets any busy process on the pinned core delay the loop's wake-up by up to a "
                  "4 ms tick, which is what the `--log-max-lag 0` row shows. CPU counts the server's whole process tree "
                  "(the writer included); after each loopml level the benchmark waits until every journal is in Parquet "
                  "(1.2 s flush wait included in the last column) before the next system runs, so no system is measured "
                  "while another one's log is written.", "",
                  "| log | level | req/s | p50 / p99 ms | CPU ms/req during the load | CPU ms/req incl. writing the log | seconds to write the backlog after the load |",
                  "|---|---|---:|---|---:|---:|---:|"]
        for system, name in (("loopml", "journal, Parquet deferred (default)"), ("loopml-lag0", "journal, Parquet during the load"),
                             ("loopml-durable", "journal, answer after fdatasync (group commit)"), ("loopml-nolog", "off")):
            for level in ("c1", "c8", "batch100_c8"):
                e = results.get(system, {}).get(level)
                if e:
                    shown = "100 rows, c=8" if level == "batch100_c8" else level.replace("c", "c=")
                    lines.append(f"| {name} | {shown} | {f(e.get('rps'))} | {f(e.get('p50_ms'), '{:.2f}')} / "
                                 f"{f(e.get('p99_ms'), '{:.2f}')} | {f(e.get('cpu_ms_per_request'), '{:.3f}')} | "
                                 f"{f(e.get('cpu_ms_per_request_with_log'), '{:.3f}')} | {f(e.get('log_drain_s'), '{:.1f}')} |")
        lines += log_cost(results)
    if any(s in results for s in ROUTES):
        lines += ["", "## Routing policies side by side (c=8)", "",
                  "The bundle project's service with `deployment.routing.type` set: `production`; `shadow` (v2 in state "
                  "shadow scores a copy of each request after the response and logs it with route `shadow`); `ab` "
                  "(sticky 50/50 by the body's `uid` between v1 = control and v2 = treatment, both logged with the "
                  "experiment and propensity). Same trees in both versions, same bodies for all three.", "",
                  "| routing | req/s | p50 / p99 ms | CPU ms/req during the load | CPU ms/req incl. writing the log | errors |",
                  "|---|---:|---|---:|---:|---:|"]
        for system in ROUTES:
            e = results.get(system, {})
            c = e.get("c8")
            if not c:
                lines.append(f"| {system.split('-', 1)[1]} | could not run: {str(e.get('error', 'not measured'))[:200]} |||||")
                continue
            lines.append(f"| {system.split('-', 1)[1]} | {f(c.get('rps'))} | {f(c.get('p50_ms'), '{:.2f}')} / "
                         f"{f(c.get('p99_ms'), '{:.2f}')} | {f(c.get('cpu_ms_per_request'), '{:.3f}')} | "
                         f"{f(c.get('cpu_ms_per_request_with_log'), '{:.3f}')} | {c.get('errors', 0)} |")
        lines += ["", *routing_targets(results)]
    if batch:
        lines += [
            "",
            f"## Batch scoring, {batch['rows']:,} rows",
            "",
            "| path | seconds | rows/s |",
            "|---|---:|---:|",
            f"| raw in-process `Booster.predict` (matrix already in memory) | {batch['raw_predict_s']:.2f} | {batch['raw_rows_per_s']:,.0f} |",
            f"| `loopml predict --batch` core, model file (Parquet in chunks → columns → predict → Parquet out) | {batch['loopml_batch_s']:.2f} | {batch['loopml_rows_per_s']:,.0f} |",
        ]
        if batch.get("loopml_bundle_batch_s"):
            lines.append(
                f"| `loopml predict --batch` core, registered bundle (Parquet in chunks → FeaturePipeline.transform_batch → predict → Parquet out) | "
                f"{batch['loopml_bundle_batch_s']:.2f} | {batch['loopml_bundle_rows_per_s']:,.0f} |")
        lines += [
            "",
            f"loopml reaches **{100 * batch['ratio']:.0f}%** of raw predict throughput with the model file"
            + (f" and **{100 * batch['bundle_ratio']:.0f}%** with the registered bundle (transform included)"
               if batch.get("bundle_ratio") else "")
            + f" (target ≥ 70%); scores identical: {batch['identical_scores']}"
            + (f" (bundle: identical to the same trees on float32 inputs: {batch['bundle_identical_to_float32_inputs']})"
               if "bundle_identical_to_float32_inputs" in batch else "") + ".",
        ]
    lines += ["", "## Targets", ""]
    lines += targets(results, batch)
    lines += ["", "Errors and peers that could not run are listed with the reason in `serving.json`."]
    return "\n".join(lines) + "\n"


def log_pairs_only(model: Path, args: argparse.Namespace) -> int:
    """Measure the log's CPU pairs again and put them into the last full run's results (``--log-pairs-only``)."""
    path = HERE / "results" / "serving.json"
    if not path.exists():
        print(f"{path} not found: run the full benchmark first", file=sys.stderr)
        return 2
    data = json.loads(path.read_text())
    if args.log_pairs < 1:
        print("--log-pairs-only needs --log-pairs ≥ 1", file=sys.stderr)
        return 2
    online = bench_online(["loopml", "loopml-nolog"], model, args.warmup, args.duration, args.bodies, 0, args.log_pairs)
    pairs = online.get("loopml", {}).get("log_pairs")
    if not pairs:
        print(f"no pairs measured: {online}", file=sys.stderr)
        return 1
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True, text=True)
    pairs["remeasured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    pairs["commit"] = commit.stdout.strip() or "?"
    data["online"].setdefault("loopml", {})["log_pairs"] = pairs
    data["args"]["log_pairs"] = args.log_pairs
    shown = argparse.Namespace(**{**data["args"], "loadavg": data["args"].get("loadavg", "?")})
    when = (data.get("host") or data.get("machine") or {}).get("when", "?")
    md = markdown(data["online"], data.get("batch"), shown, measured=f"{when[:16]} UTC")
    path.write_text(json.dumps(data, indent=2, default=str))
    (HERE / "results" / "serving.md").write_text(md)
    print("\n".join(log_cost(data["online"])))
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--store-server":
        store_server(argv[1:])
        return 0
    if argv and argv[0] == "--asgi-server":
        asgi_server(argv[1:])
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks serving", description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=20.0, help="Seconds per load level.")
    ap.add_argument("--warmup", type=float, default=5.0, help="Warm-up seconds per server.")
    ap.add_argument("--bodies", type=int, default=10_000, help="Distinct single-row bodies.")
    ap.add_argument("--rounds", type=int, default=1, help="Interleaved rounds per level (median reported).")
    ap.add_argument("--peers", default="",
                    help="Comma-separated subset of loopml,loopml-lag0,loopml-nolog,loopml-durable,loopml-uvicorn,"
                    "loopml-bundle,route-production,route-shadow,route-ab,loopml+store,fastapi,mlflow,bentoml.")
    ap.add_argument("--log-pairs", type=int, default=12,
                    help="Back-to-back 3 s runs of loopml and loopml-nolog at c=8 for the log's CPU cost (0 skips them).")
    ap.add_argument("--batch-rows", type=int, default=1_000_000, help="Rows for the batch benchmark (0 skips it).")
    ap.add_argument("--batch-only", action="store_true", help="Only the batch benchmark (keeps the online results).")
    ap.add_argument("--log-pairs-only", action="store_true",
                    help="Only the log's CPU pairs (loopml and loopml-nolog, --log-pairs of them); keeps every other "
                    "result of the last full run and says in results/serving.md that the pairs were measured again.")
    ap.add_argument("--render", action="store_true",
                    help="Measure nothing: rewrite results/serving.md from results/serving.json (e.g. after the "
                    "targets changed).")
    args = ap.parse_args(argv)
    if args.render:
        data = json.loads((HERE / "results" / "serving.json").read_text())
        shown = argparse.Namespace(**{**data["args"], "loadavg": data["args"].get("loadavg", "?")})
        when = (data.get("host") or data.get("machine") or {}).get("when", "?")
        md = markdown(data["online"], data.get("batch"), shown, measured=f"{when[:16]} UTC")
        (HERE / "results" / "serving.md").write_text(md)
        print(md)
        return 0
    systems = [s for s in (args.peers.split(",") if args.peers
                           else ["loopml", "loopml-lag0", "loopml-nolog", "loopml-durable", "loopml-uvicorn", "loopml-bundle",
                                 "route-production", "route-shadow", "route-ab", "loopml+store",
                                 "fastapi", "mlflow", "bentoml"]) if s]
    if not Path(WRK).exists():
        print(f"wrk not found at {WRK} (apt-get install wrk)", file=sys.stderr)
        return 2
    model = train_model()
    if args.log_pairs_only:
        return log_pairs_only(model, args)
    load_before = os.getloadavg()
    if args.batch_only:  # rerun the batch part, keep the online part of the last full run
        previous = json.loads((HERE / "results" / "serving.json").read_text())
        online = previous["online"]
        for k in ("duration", "warmup", "rounds", "bodies", "peers"):
            setattr(args, k, previous["args"].get(k, getattr(args, k)))
    else:
        online = bench_online(systems, model, args.warmup, args.duration, args.bodies, args.rounds, args.log_pairs)
    batch = bench_batch(model, args.batch_rows) if args.batch_rows else None
    if batch:
        print(f"--- batch {batch['rows']:,} rows: raw {batch['raw_predict_s']:.2f}s, loopml {batch['loopml_batch_s']:.2f}s "
              f"({100 * batch['ratio']:.0f}% of raw), identical {batch['identical_scores']}", flush=True)
    load_after = os.getloadavg()
    args.loadavg = f"{load_before[0]:.1f} before, {load_after[0]:.1f} after"
    md = markdown(online, batch, args)
    path = write_results("serving", {"args": vars(args), "online": online, "batch": batch, "host": machine(),
                                     "loadavg_1min": [load_before[0], load_after[0]]}, md)
    print(md)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
