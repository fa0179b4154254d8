"""Content-addressed artifact store.

Files are named by their sha256 and written to a temporary name, fsynced and renamed,
so a crash never leaves a half artifact under a final name. Reads verify the checksum.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from loopml.errors import IntegrityError, NotFound

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Immutable files under ``root/ab/abcdef…``, addressed by sha256."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / ".tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)

    def path_of(self, digest: str) -> Path:
        """Where the artifact with this digest lives (it may not exist)."""
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise NotFound(f"artifact `{digest}`: not a sha256 digest (expected 64 lowercase hex characters)")
        return self.root / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        """Whether a complete artifact with this digest is stored."""
        return self.path_of(digest).exists()

    def clean_partial(self) -> int:
        """Remove temporary files left by a crash. Returns how many were removed."""
        n = 0
        for p in self.tmp.iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
        return n

    @contextmanager
    def writer(self) -> Iterator[tuple[BinaryIO, dict[str, str]]]:
        """Write an artifact through a file object; ``result['digest']`` is set on exit."""
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="w-")
        result: dict[str, str] = {}
        f = os.fdopen(fd, "wb")
        try:
            yield f, result
            f.flush()
            os.fsync(f.fileno())
            f.close()
            result["digest"] = self._commit(Path(tmp_name))
        except BaseException:
            f.close()
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def put_bytes(self, data: bytes) -> str:
        """Store bytes; returns the digest."""
        with self.writer() as (f, result):
            f.write(data)
        return result["digest"]

    def put_file(self, src: str | Path, *, move: bool = False) -> str:
        """Store a copy of a file (or move it in when it is on the same filesystem); returns the digest."""
        src = Path(src)
        digest = sha256_file(src)
        final = self.path_of(digest)
        if final.exists():
            if move:
                src.unlink()
            return digest
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="f-")
        os.close(fd)
        try:
            if move:
                os.replace(src, tmp_name)
            else:
                shutil.copyfile(src, tmp_name)
            with open(tmp_name, "rb") as f:
                os.fsync(f.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, final)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        return digest

    def new_temp_path(self, suffix: str = "") -> Path:
        """A fresh temporary path inside the store (same filesystem, cleaned after a crash)."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="t-", suffix=suffix)
        os.close(fd)
        return Path(name)

    def _commit(self, tmp: Path) -> str:
        digest = sha256_file(tmp)
        final = self.path_of(digest)
        if final.exists():
            tmp.unlink()
            return digest
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        return digest

    def get_bytes(self, digest: str, *, verify: bool = True) -> bytes:
        """Read an artifact, verifying its checksum."""
        p = self.path_of(digest)
        if not p.exists():
            raise NotFound(f"artifact `{digest[:12]}` not found in {self.root}")
        data = p.read_bytes()
        if verify and sha256_bytes(data) != digest:
            raise IntegrityError(
                f"artifact `{digest[:12]}` at {p} is corrupted: its sha256 is {sha256_bytes(data)[:12]}, expected {digest[:12]}"
            )
        return data

    def open_verified(self, digest: str) -> Path:
        """Path of an artifact after verifying its checksum (for readers that take a path)."""
        p = self.path_of(digest)
        if not p.exists():
            raise NotFound(f"artifact `{digest[:12]}` not found in {self.root}")
        actual = sha256_file(p)
        if actual != digest:
            raise IntegrityError(
                f"artifact `{digest[:12]}` at {p} is corrupted: its sha256 is {actual[:12]}, expected {digest[:12]}"
            )
        return p
