"""Workspace: artifact store atomicity and checksums, metadata database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loopml.errors import IntegrityError, NotFound, WorkspaceLocked
from loopml.workspace import Workspace
from loopml.workspace.artifacts import sha256_bytes


def test_artifact_content_addressed_and_verified(project: Path) -> None:
    ws = Workspace.open(project)
    d = ws.put_artifact_bytes(b"abc", kind="t", name="x")
    assert d == sha256_bytes(b"abc")
    assert ws.put_artifact_bytes(b"abc", kind="t", name="x") == d  # idempotent
    assert ws.artifacts.get_bytes(d) == b"abc"
    assert ws.artifact_info(d[:8])["name"] == "x"
    p = ws.artifacts.path_of(d)
    os.chmod(p, 0o644)
    p.write_bytes(b"abd")
    with pytest.raises(IntegrityError, match="corrupted"):
        ws.artifacts.get_bytes(d)
    with pytest.raises(IntegrityError):
        ws.artifacts.open_verified(d)


def test_failed_write_leaves_nothing(project: Path) -> None:
    ws = Workspace.open(project)
    with pytest.raises(RuntimeError), ws.artifacts.writer() as (f, _):
        f.write(b"half")
        raise RuntimeError("crash mid-write")
    assert list(ws.artifacts.tmp.iterdir()) == []
    stored = [p for p in ws.artifacts.root.rglob("*") if p.is_file() and ".tmp" not in p.parts]
    assert stored == []


def test_not_found_messages(project: Path) -> None:
    ws = Workspace.open(project)
    with pytest.raises(NotFound, match="not a sha256"):
        ws.artifacts.get_bytes("../../etc/passwd")
    with pytest.raises(NotFound, match="at least 6"):
        ws.artifact_info("ab")
    with pytest.raises(NotFound, match="not found"):
        ws.artifact_info("abcdef")


def test_lock_refuses_second_holder(project: Path) -> None:
    ws = Workspace.open(project)
    with ws.lock():
        with pytest.raises(WorkspaceLocked, match="in use by another run") as info:
            ws.lock(wait_s=0.2).acquire()
        assert f"pid {os.getpid()}" in str(info.value)
    with ws.lock():  # released: can be taken again
        pass
