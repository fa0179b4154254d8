"""Fixtures: a project with two registered real models, and `loopml serve` as a real subprocess."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import click_table, train_bundle

from loopml.registry import Registry
from loopml.workspace import Workspace

TOKEN = "test-admin-token-123"
SPEC = """\
project: {name: clicks}
task: {type: binary, target: click}
deployment:
  log_flush_rows: 500
  log_flush_seconds: 0.3
  registry_poll_seconds: 0.3
"""
PASSED = {"approved": True, "gates": [{"gate": "roc_auc >= 0.5", "passed": True, "evidence": {}}]}


@pytest.fixture(scope="session")
def click(datasets: Path) -> pa.Table:
    """6,000 rows of the real KDD 2012 click log."""
    return click_table(datasets)


def make_project(root: Path, table: pa.Table) -> Path:
    """A project with v1 (production) and v2 (approved candidate), both real LightGBM bundles."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "loopml.yaml").write_text(SPEC)
    ws = Workspace.open(root)
    reg = Registry(ws)
    d1 = train_bundle(ws, table, n_estimators=20, seed=0)
    d2 = train_bundle(ws, table, n_estimators=40, seed=1)
    reg.register(d1, verdict=PASSED, lineage={"note": "v1"})
    reg.register(d2, verdict=PASSED, lineage={"note": "v2"})
    reg.promote("v1", reason="first", actor="test")
    return root


@pytest.fixture(scope="module")
def served_project(tmp_path_factory: pytest.TempPathFactory, click: pa.Table) -> Path:
    """A fresh two-version project per test module."""
    return make_project(tmp_path_factory.mktemp("served") / "proj", click)


@dataclass
class Server:
    """A `loopml serve` subprocess."""

    proc: subprocess.Popen[str]
    host: str
    port: int

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=10)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> tuple[int, Any, dict[str, str]]:
        c = self.conn()
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            c.request(method, path, body=data, headers={"content-type": "application/json", **(headers or {})})
            r = c.getresponse()
            payload = r.read()
            ctype = r.getheader("content-type") or ""
            parsed = json.loads(payload) if ctype.startswith("application/json") else payload.decode()
            return r.status, parsed, {k.lower(): v for k, v in r.getheaders()}
        finally:
            c.close()

    def stop(self, sig: int = signal.SIGTERM) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def start_server(args: list[str], tmp: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Server:
    """Start `loopml serve ARGS --port 0` and wait until it accepts requests."""
    ready = tmp / f"ready-{time.monotonic_ns()}"
    full_env = {**os.environ, "LOOPML_ADMIN_TOKEN": TOKEN, **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopml.cli.main", "serve", *args, "--port", "0", "--ready-file", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=cwd,
    )
    deadline = time.monotonic() + 60
    while not ready.exists() or not ready.read_text().strip():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"server exited {proc.returncode}\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("server did not start within 60 s")
        time.sleep(0.05)
    host, port = ready.read_text().split()
    return Server(proc, host, int(port))


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Factory starting servers that are stopped after the test."""
    started: list[Server] = []

    def factory(*args: str, env: dict[str, str] | None = None) -> Server:
        s = start_server(list(args), tmp_path, env)
        started.append(s)
        return s

    yield factory
    for s in started:
        s.stop()
