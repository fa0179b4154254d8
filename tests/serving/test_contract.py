"""The OpenAPI document matches the handlers: schemathesis, every check, against a real `loopml serve`.

Bounded: at most 25 generated cases per operation and phase, one worker, a fixed seed, and a
subprocess timeout. The admin token is sent so the admin operations are exercised too (their
unauthenticated answers are checked by schemathesis' ``ignored_auth``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import TOKEN, Server, make_project, start_server

pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency: pip install -e '.[dev]'")
pytestmark = pytest.mark.timeout(600)

#: Declared exceptions to schemathesis' ``positive_data_acceptance`` (a schema-valid body must get
#: 2xx/3xx/401/403/404/409/429/5xx), each with its reason. Everything else runs with the defaults.
CONFIG = """\
# /v1/feedback: request ids are signed by the service (loopml.serving.request_ids); a string of the
# documented form is accepted only if this service issued it, else 422 naming `request_id`.
[[operations]]
include-path = "/v1/feedback"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429", "5xx"]

# admin: a well-formed version id or transition may still be refused by the registry's state machine
# (412: the version cannot serve, e.g. nothing to roll back to).
[[operations]]
include-path-regex = "^/admin/"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "412", "429", "5xx"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, click: pa.Table) -> Iterator[Server]:
    root = make_project(tmp_path_factory.mktemp("contract") / "proj", click)
    s = start_server(["--project", str(root)], tmp_path_factory.mktemp("srv"))
    yield s
    s.stop()


def test_schemathesis_finds_no_failures(server: Server, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
        f"http://{server.host}:{server.port}/openapi.json",
        "--checks", "all", "--max-examples", "25", "--seed", "1", "--workers", "1",
        "--phases", "examples,coverage,fuzzing", "--generation-database", "none",
        "--request-timeout", "10", "--no-color", "-H", f"Authorization: Bearer {TOKEN}",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=500, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert "Tested: 9" in out, out[-3000:]  # every documented operation, /v1/models included
