"""The prediction service as a child process (``loopml serve``), and a small keep-alive HTTP client."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loopml.errors import LoopMLError


class ServiceProcess:
    """``loopml serve -p PROJECT`` started as a child process; stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, project: Path, port: int, host: str = "127.0.0.1", log_path: Path | None = None) -> None:
        self.project = project
        self.host = host
        self.port = port
        self.log_path = log_path or project / ".loopml" / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the service."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 120.0) -> ServiceProcess:
        """Start the server and wait until it answers ``/ready`` with 200 (port 0: any free port, read back)."""
        ready = self.project / ".loopml" / "serve.ready"
        ready.unlink(missing_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        cmd = [sys.executable, "-m", "loopml.cli.main", "serve", "-p", str(self.project), "--host", self.host,
               "--port", str(self.port), "--ready-file", str(ready)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ},
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LoopMLError(f"the prediction service exited with code {self.proc.returncode}; see {self.log_path}")
            if ready.exists():
                if self.port == 0:  # any free port: the server wrote the one it bound ("HOST PORT")
                    self.port = int(ready.read_text().split()[1])
                try:
                    status, _ = Client(self.host, self.port).get("/ready")
                except OSError:
                    status = 0
                if status == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise LoopMLError(f"the prediction service did not become ready within {timeout_s:.0f} s; see {self.log_path}")

    def lost(self, exc: BaseException) -> LoopMLError:
        """The error for a request the service dropped at the connection (``exc``): whether it died, how, and
        where its log is."""
        code = self.proc.poll() if self.proc is not None else None
        if code is None and self.proc is not None:
            try:  # a process that just died is reaped in a moment
                code = self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                code = None
        if code is None:
            what = f"is running but dropped the connection ({type(exc).__name__}: {exc})"
        elif code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            what = f"died of {name} while answering (the client saw {type(exc).__name__})"
        else:
            what = f"exited with code {code} while answering (the client saw {type(exc).__name__})"
        return LoopMLError(f"the prediction service at {self.url} {what}; its log: {self.log_path}")

    def wait(self) -> int:
        """Block until the server exits; returns its exit code."""
        return self.proc.wait() if self.proc else 0

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout_s``)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Client:
    """A keep-alive JSON client over one HTTP/1.1 connection (stdlib only)."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0, max_retries: int = 8,
                 max_retry_wait_s: float = 2.0) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        self.max_retries = max_retries
        self.max_retry_wait_s = max_retry_wait_s
        self.retries = 0  # requests the service shed (503 + Retry-After) and this client sent again

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send a request; returns (status, parsed JSON or text).

        A 503 with ``Retry-After`` is the service shedding load: the request was not served (nor
        logged), so it is sent again after the advised wait (capped at ``max_retry_wait_s``), at
        most ``max_retries`` times, as a well-behaved client does.
        """
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in range(self.max_retries + 1):
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
            raw = resp.read()
            retry_after = resp.getheader("Retry-After")
            if resp.status != 503 or retry_after is None or attempt == self.max_retries:
                break
            self.retries += 1
            try:
                wait = float(retry_after)
            except ValueError:
                wait = 1.0
            time.sleep(min(max(wait, 0.05), self.max_retry_wait_s))
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode("utf-8", "replace")

    def get(self, path: str) -> tuple[int, Any]:
        """GET ``path``."""
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        """POST a JSON body."""
        return self.request("POST", path, body)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
