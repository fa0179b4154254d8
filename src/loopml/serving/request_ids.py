"""Request ids the service issues, and the checks on the ids clients send.

An id is ``<process prefix><counter>`` followed by a 10-hex-digit keyed BLAKE2b tag (a MAC, about
a microsecond) under a key
kept in the workspace (``.loopml/serving/request_id.key``, mode 0600), so any server of the
project can tell, without state, whether it issued an id: feedback for an id it never issued
is refused (422). A many-row request gets the base id ``<prefix><counter>n<rows>`` + tag, and its
rows the ids ``<base>-<i>`` (``0 <= i < rows``); feedback names those row ids.

A client's own ``X-Request-Id`` never replaces the server's id (the log's key); it is checked
(printable ASCII, at most :data:`MAX_CLIENT_ID` characters) and stored beside it in the log
column ``client_request_id``.

Examples
--------
>>> ids = RequestIds(b"k" * 32)
>>> rid = ids.issue()
>>> ids.issued(rid), ids.issued(rid[:-1] + ("0" if rid[-1] != "0" else "1")), ids.issued("nope")
(True, False, False)
>>> ids.issued("\u00b8" * 20)
False
>>> base = ids.issue(rows=3)
>>> ids.issued(f"{base}-2"), ids.issued(f"{base}-3"), ids.issued(base)
(True, False, False)
>>> client_id(b"order-17"), client_id(b"caf\\xc3\\xa9")
('order-17', None)
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

TAG = 10  # hex digits of the HMAC tag (40 bits)
MAX_ID = 128  # longest request id accepted anywhere (feedback, headers)
MAX_CLIENT_ID = 128
_HEX = frozenset("0123456789abcdef")


def load_key(path: Path) -> bytes:
    """The id key of a workspace (created on first use, readable by its owner only)."""
    try:
        key = path.read_bytes()
        if len(key) >= 16:
            return key
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # the first server to create it wins; the others read that one
    except FileExistsError:
        key = path.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    return key


class RequestIds:
    """Issues signed request ids and recognises them."""

    __slots__ = ("_counter", "_key", "_mac", "_prefix")

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else os.urandom(32)
        self._prefix = os.urandom(4).hex()
        self._counter = 0
        self._mac = hashlib.blake2b(self._prefix.encode(), key=self._key, digest_size=TAG // 2)

    def _tag(self, body: str) -> str:
        return hashlib.blake2b(body.encode(), key=self._key, digest_size=TAG // 2).hexdigest()

    def issue(self, rows: int = 0) -> str:
        """A fresh id (``rows``: the number of rows of a many-row request, whose rows get ``<id>-<i>``)."""
        return self.sign(self.reserve(), rows)

    def reserve(self) -> int:
        """The next counter value (on the event loop: the counter is not locked)."""
        self._counter += 1
        return self._counter

    def sign(self, counter: int, rows: int = 0) -> str:
        """The id of a reserved counter value, once the row count is known (thread-safe)."""
        rest = f"{counter:x}" if not rows else f"{counter:x}n{rows:x}"
        mac = self._mac.copy()  # the MAC state after the prefix: only the counter is hashed per request
        mac.update(rest.encode())
        return self._prefix + rest + mac.hexdigest()

    def issued(self, rid: str) -> bool:
        """Did a server of this project issue ``rid`` (one prediction: a single-row id or a row id of a block)?"""
        if len(rid) > MAX_ID or not rid.isascii():  # (compare_digest refuses non-ASCII str: never ours anyway)
            return False
        base, dash, index = rid.partition("-")
        body, tag = base[:-TAG], base[-TAG:]
        if len(body) < 9 or not hmac.compare_digest(self._tag(body), tag):
            return False
        _, n, rows = body.partition("n")
        if not dash:
            return not n  # a block's base id names no single prediction
        if not n or not index.isascii() or not index.isdigit() or not rows or not set(rows) <= _HEX:
            return False
        return int(index) < int(rows, 16)


def client_id(value: bytes) -> str | None:
    """A client's ``X-Request-Id`` if acceptable (printable ASCII without spaces, at most 128), else ``None``."""
    if not value or len(value) > MAX_CLIENT_ID:
        return None
    for b in value:
        if b < 0x21 or b > 0x7E:
            return None
    return value.decode("ascii")
