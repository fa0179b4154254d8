"""Shared by the usability tests: a CSV no example uses, and `loopml serve` started on port 0."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def breast_cancer_csv(folder: Path) -> Path:
    """scikit-learn's breast-cancer data (shipped with it, offline) as a CSV with a header line."""
    from sklearn.datasets import load_breast_cancer

    path = folder / "breast_cancer.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(path, index=False)
    return path


def wine_csv(folder: Path) -> Path:
    """scikit-learn's wine data (three cultivars) as a CSV."""
    from sklearn.datasets import load_wine

    path = folder / "wine.csv"
    load_wine(as_frame=True).frame.to_csv(path, index=False)
    return path


@contextlib.contextmanager
def served(project: Path, *extra: str) -> Iterator[tuple[str, int]]:
    """``loopml serve -p PROJECT --port 0`` until it is ready; yields the (host, port) it recorded."""
    ready = project / "ready.txt"
    proc = subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "serve", "-p", str(project), "--port", "0",
                             "--ready-file", str(ready), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ready.exists():
            if proc.poll() is not None:
                raise AssertionError(f"serve exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
            if time.time() > deadline:
                raise AssertionError("serve did not become ready in 120 s")
            time.sleep(0.1)
        recorded = json.loads((project / ".loopml" / "serving" / "address.json").read_text())
        host, port = ready.read_text().split()
        assert (recorded["host"], recorded["port"]) == (host, int(port)) and recorded["port"] != 0
        yield recorded["host"], recorded["port"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def post_json(host: str, port: int, path: str, body: Any) -> tuple[int, Any]:
    """POST a JSON body; returns (status, parsed JSON answer)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()
