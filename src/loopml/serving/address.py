"""Where a running ``loopml serve`` of a project listens: ``.loopml/serving/address.json``.

``loopml serve`` records the address it actually bound (with ``--port 0`` or ``deployment.port: 0``
the system picks the port), with its process id; ``loopml monitor`` reads it to find ``/metrics``.
A record whose process is gone is ignored.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> record_address(root, "127.0.0.1", 43210)
>>> bound_address(root)["port"]
43210
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ADDRESS_FILE = Path("serving") / "address.json"


def record_address(workspace_root: Path, host: str, port: int) -> None:
    """Write the bound ``host``/``port`` and this process id (temp file + rename: readers never see half)."""
    path = Path(workspace_root) / ADDRESS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"host": host, "port": int(port), "pid": os.getpid(), "started_at": time.time(),
                               "url": f"http://{host}:{port}"}), encoding="utf-8")
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def bound_address(workspace_root: Path) -> dict[str, Any] | None:
    """The recorded address of a live ``loopml serve`` of this workspace, or None."""
    path = Path(workspace_root) / ADDRESS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("port"), int) or not _alive(int(data.get("pid", -1))):
        return None
    return data
