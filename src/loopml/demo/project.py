"""The demo's project folder: the ``ad_clicks`` template, a hashing key kept outside the spec, a port."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
from importlib import resources
from pathlib import Path

from loopml.errors import WorkspaceError

MARKER = ".loopml-demo"
KEY_FILE = ".hash_key"


def template_text() -> str:
    """The ``ad_clicks`` spec template shipped with loopml (the reference system's spec)."""
    return (resources.files("loopml") / "examples" / "ad_clicks.yaml").read_text(encoding="utf-8")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP port can be bound on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def prepare_project(folder: Path, *, fresh: bool, port: int) -> Path:
    """Create the demo project from the ``ad_clicks`` template with the service on ``port``.

    A folder is only ever emptied when it carries the marker a previous demo left; any other
    non-empty folder is refused, so the demo never deletes a user's files.
    """
    folder = folder.resolve()
    if folder.exists() and any(folder.iterdir()):
        if not (folder / MARKER).exists():
            raise WorkspaceError(
                f"{folder} exists and is not a loopml demo project; refusing to write into it",
                hint="pass --project with a new folder",
            )
        if fresh:
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("created by `loopml demo`; the demo may replace this folder\n")
    text = re.sub(r"(?m)^(  port:) \d+", rf"\1 {port}", template_text())
    (folder / "loopml.yaml").write_text(text, encoding="utf-8")
    # a scratch project: git ignores all of it (the demo may even run inside the loopml repository)
    (folder / ".gitignore").write_text("# created by `loopml demo`: a scratch project\n*\n", encoding="utf-8")
    return folder


def ensure_hash_key(folder: Path, env: str) -> str:
    """Make the privacy hashing key available in ``env``: the caller's, or one kept in the project (mode 600)."""
    if os.environ.get(env):
        return "from the environment"
    path = folder / KEY_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(16))
    os.environ[env] = path.read_text().strip()
    return f"generated, kept in {path} (not in the spec)"


