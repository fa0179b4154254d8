"""Strict admin and feedback over real HTTP: garbage gets 422 (415 for a wrong content type) naming the
field, the actor comes from the token, a corrupted version is never promoted, no server paths in bodies."""

from __future__ import annotations

import http.client
import json
import re
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from helpers import rows_of

from conftest import SPEC, TOKEN, Server, make_project, start_server
from loopml.registry import Registry
from loopml.serving.journal import wait_written
from loopml.training.bundle import read_manifest
from loopml.workspace import Workspace

ALICE = "alice-token-456"
_ABS = re.compile(r"(/tmp/|/home/|/root/|/work/|/var/|/Users/)")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, click: pa.Table) -> Path:
    root = make_project(tmp_path_factory.mktemp("strict") / "proj", click)
    (root / "loopml.yaml").write_text(SPEC + "  admin_tokens: {ALICE_TOKEN: alice}\n")
    return root


@pytest.fixture(scope="module")
def server(project: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    s = start_server(["--project", str(project)], tmp_path_factory.mktemp("srv"), env={"ALICE_TOKEN": ALICE})
    yield s
    s.stop()


def _raw(server: Server, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    c = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        c.putrequest("POST", path)
        for k, v in headers.items():
            c.putheader(k, v.encode("latin-1") if isinstance(v, str) else v)
        c.putheader("content-length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def _fields(body: dict) -> set[str]:  # type: ignore[type-arg]
    return {d.get("field") for d in body["detail"]}


def _issued(server: Server, click: pa.Table, n: int = 1) -> list[str]:
    return [server.request("POST", "/v1/predict", r)[1]["request_id"] for r in rows_of(click, n)]


def test_feedback_garbage_is_refused_naming_the_field(server: Server, click: pa.Table) -> None:
    rid = _issued(server, click)[0]
    cases = [
        ({"request_id": rid, "label": 7}, "label"),
        ({"request_id": rid, "label": 1e308}, "label"),
        ({"request_id": rid, "label": "1"}, "label"),
        ({"request_id": "abc123", "label": 1}, "request_id"),
        ({"request_id": rid[:-1] + ("0" if rid[-1] != "0" else "1"), "label": 1}, "request_id"),  # forged tag
        ({"request_id": "x" * 1_000_000, "label": 1}, "request_id"),
        ({"request_id": rid, "label": 1, "weight": 3}, "weight"),
    ]
    for item, field in cases:
        status, body, _ = server.request("POST", "/v1/feedback", item)
        assert status == 422, (item if len(str(item)) < 200 else field, body)
        assert field in _fields(body), body
        assert len(json.dumps(body)) < 2000  # a 1 MB id is not echoed back
    status, body = _raw(server, "/v1/feedback", json.dumps({"request_id": rid, "label": 1}).encode(),
                        {"content-type": "text/plain"})
    assert status == 415 and _fields(body) == {"content-type"}, body
    status, body = _raw(server, "/v1/feedback", b"{}", {})
    assert status == 415


def test_huge_integers_are_answered_or_refused_never_a_500(server: Server, click: pa.Table) -> None:
    """JSON allows any integer: one beyond float64 is a 422 naming where it is; 64-bit edge values score."""
    row = rows_of(click, 1)[0]
    field = next(k for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool))
    for value in (10**400, -(10**400), 2**64 - 1, -(2**63), 2**63, 10**30):
        for n in (1, 5, 200):  # one row, a row-by-row body and a matrix body
            rows = rows_of(click, n)
            rows[-1] = {**rows[-1], field: value}
            status, body, _ = server.request("POST", "/v1/predict", rows[0] if n == 1 else {"rows": rows})
            if abs(value) > 10**308:
                assert status == 422, (value, n, body)
                where = json.dumps(body)
                assert field in _fields(body) or "column" in where, body
            else:
                assert status == 200, (value, n, body)
    assert server.request("POST", "/v1/predict", rows_of(click, 1)[0])[0] == 200


def test_valid_feedback_and_a_repeated_id_are_recorded_every_time(server: Server, project: Path, click: pa.Table) -> None:
    rids = _issued(server, click, 2)
    many = server.request("POST", "/v1/predict", {"rows": rows_of(click, 3)})[1]
    assert server.request("POST", "/v1/feedback", {"request_id": rids[0], "label": 1})[:2] == (200, {"recorded": 1})
    assert server.request("POST", "/v1/feedback", {"request_id": rids[0], "label": 0})[:2] == (200, {"recorded": 1})
    status, body, _ = server.request("POST", "/v1/feedback", [{"request_id": i, "label": True} for i in many["request_ids"]])
    assert (status, body) == (200, {"recorded": 3})
    for bad in (many["request_id"], many["request_id"] + "-3"):  # the block's own id, a row it never had
        status, body, _ = server.request("POST", "/v1/feedback", {"request_id": bad, "label": 1})
        assert status == 422 and _fields(body) == {"request_id"}, body


def test_client_request_ids_are_validated_and_logged_beside_the_servers(server: Server, project: Path,
                                                                       click: pa.Table) -> None:
    row = json.dumps(rows_of(click, 1)[0]).encode()
    status, body = _raw(server, "/v1/predict", row, {"content-type": "application/json", "x-request-id": "caf\xe9\xff"})
    assert status == 422 and _fields(body) == {"x-request-id"}, body
    status, body = _raw(server, "/v1/predict", row, {"content-type": "application/json", "x-request-id": "a" * 1000})
    assert status == 422 and _fields(body) == {"x-request-id"}
    ids = []
    for _ in range(3):
        status, body = _raw(server, "/v1/predict", row, {"content-type": "application/json", "x-request-id": "order-17"})
        assert status == 200
        ids.append(body["request_id"])
    assert len(set(ids)) == 3 and "order-17" not in ids
    pred_dir = Workspace.open(project).root / "logs" / "predictions"
    deadline = time.monotonic() + 30
    q = f"select request_id from read_parquet('{pred_dir}/*.parquet', union_by_name=true) where client_request_id = 'order-17'"
    while True:
        got = sorted(r[0] for r in duckdb.sql(q).fetchall()) if list(pred_dir.glob("*.parquet")) else []
        if got == sorted(ids) or time.monotonic() > deadline:
            break
        wait_written([pred_dir], timeout=2)
        time.sleep(0.2)
    assert got == sorted(ids)


def test_admin_bodies_are_strict_and_the_actor_comes_from_the_token(server: Server, project: Path) -> None:
    reg = Registry(Workspace.open(project))
    auth = {"authorization": f"Bearer {TOKEN}"}
    for body, field in (({"version": "v2", "force": "false"}, "force"), ({"version": "v2", "actor": "mallory"}, "actor"),
                        ({"version": 2}, "version"), ({}, "version")):
        status, resp, _ = server.request("POST", "/admin/promote", body, headers=auth)
        assert status == 422 and field in _fields(resp), resp
    status, resp = _raw(server, "/admin/promote", b'{"version": "v2"}', {"content-type": "text/plain", **auth})
    assert status == 415
    assert reg.production().version_id == "v1"  # type: ignore[union-attr]
    status, resp, _ = server.request("POST", "/admin/promote", {"version": "v2", "reason": "test"},
                                     headers={"authorization": f"Bearer {ALICE}"})
    assert status == 200 and resp["serving"] == "v2" and resp["actor"] == "alice", resp
    assert reg.history("v2")[-1].actor == "alice"
    status, resp, _ = server.request("POST", "/admin/rollback", {"reason": "back"}, headers=auth)
    assert status == 200 and resp["serving"] == "v1" and reg.history("v1")[-1].actor == "admin-api"


def _corrupt(project: Path, version: str) -> None:
    ws = Workspace.open(project)
    manifest = read_manifest(ws, Registry(ws).get(version).bundle_digest)
    digest = next(d for rel, d in manifest["files"].items() if "model" in rel)
    path = ws.artifacts.path_of(digest)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupted_version_is_never_promoted(tmp_path: Path, click: pa.Table, cli) -> None:  # type: ignore[no-untyped-def]
    project = make_project(tmp_path / "proj", click)
    _corrupt(project, "v2")
    reg = Registry(Workspace.open(project))
    history = len(reg.history("v2"))
    server = start_server(["--project", str(project), "--no-log"], tmp_path)
    try:
        status, body, _ = server.request("POST", "/admin/promote", {"version": "v2", "reason": "go"},
                                         headers={"authorization": f"Bearer {TOKEN}"})
        assert status == 422 and "v2" in body["error"] and "corrupted" in body["error"], body
        assert not _ABS.search(json.dumps(body)), body
        assert reg.production().version_id == "v1" and len(reg.history("v2")) == history  # type: ignore[union-attr]
        assert server.request("POST", "/v1/predict", rows_of(click, 1)[0])[1]["model_version"] == "v1"
    finally:
        server.stop()
    result = cli("models", "promote", "v2", "--reason", "go", "-p", str(project))
    assert result.returncode != 0 and "v2" in result.stderr + result.stdout
    assert reg.production().version_id == "v1" and len(reg.history("v2")) == history  # type: ignore[union-attr]


def test_unready_bodies_show_no_server_paths(tmp_path: Path, click: pa.Table) -> None:
    project = make_project(tmp_path / "proj", click)
    _corrupt(project, "v1")  # the production version cannot load: the server starts unready
    server = start_server(["--project", str(project), "--no-log"], tmp_path, env={"LOOPML_ADMIN_TOKEN": ""})
    try:
        for method, path, body in (("GET", "/ready", None), ("POST", "/v1/predict", rows_of(click, 1)[0]),
                                   ("GET", "/openapi.json", None), ("POST", "/admin/reload", {})):
            status, resp, _ = server.request(method, path, body)
            assert status in (401, 503), (path, resp)
            text = json.dumps(resp)
            assert not _ABS.search(text) and str(tmp_path) not in text, (path, text)
    finally:
        server.stop()


def test_feedback_can_require_its_own_token(tmp_path: Path, click: pa.Table) -> None:
    project = make_project(tmp_path / "proj", click)
    (project / "loopml.yaml").write_text(SPEC + "  feedback_token_env: FEEDBACK_TOKEN\n")
    server = start_server(["--project", str(project), "--no-log"], tmp_path, env={"FEEDBACK_TOKEN": "fb-secret"})
    try:
        rid = _issued(server, click)[0]
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Bearer {TOKEN}"}):
            status, body, _ = server.request("POST", "/v1/feedback", {"request_id": rid, "label": 1}, headers=headers)
            assert status == 401 and "feedback token" in body["error"], body
        status, body, _ = server.request("POST", "/v1/feedback", {"request_id": rid, "label": 1},
                                         headers={"authorization": "Bearer fb-secret"})
        assert (status, body) == (200, {"recorded": 1})
    finally:
        server.stop()
