"""Real services started by the tests themselves: PostgreSQL (and helpers for free ports)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"PostgreSQL's `{name}` not found; install the Debian package `postgresql` (make setup does)")
    return exe


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: drop to the `postgres` system user
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway PostgreSQL on 127.0.0.1 and yield a SQLAlchemy URL (psycopg 3 driver).

    Its folder is a fresh directory under the system temp dir (pytest's tmp_path is private to
    root, and the server runs as the `postgres` user when the tests run as root).
    """
    base = Path(tempfile.mkdtemp(prefix="loopml-pg-"))
    os.chmod(base, 0o755)
    data = base / "pgdata"
    sock = base / "pgsock"
    data.mkdir()
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(data, "postgres")
        shutil.chown(sock, "postgres")
    subprocess.run(
        _as_postgres([_pg_bin("initdb"), "-D", str(data), "-U", "loopml", "--auth=trust", "-E", "UTF8"]),
        check=True, capture_output=True,
    )
    port = free_port()
    log = base / "pg.log"
    if os.geteuid() == 0:
        log.touch()
        shutil.chown(log, "postgres")
    subprocess.run(
        _as_postgres([
            _pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start",
            "-o", f"-h 127.0.0.1 -p {port} -k {sock} -F",
        ]),
        check=True, capture_output=True,
    )
    try:
        deadline = time.time() + 30
        while True:
            r = subprocess.run(
                _as_postgres([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "loopml", "loopml"]),
                capture_output=True, text=True,
            )
            if r.returncode == 0 or "already exists" in r.stderr:
                break
            if time.time() > deadline:
                raise RuntimeError(f"PostgreSQL did not accept connections: {r.stderr}")
            time.sleep(0.2)
        yield f"postgresql+psycopg://loopml@127.0.0.1:{port}/loopml"
    finally:
        subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
