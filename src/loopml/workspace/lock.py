"""The workspace run lock: one writer at a time, released by the OS if the holder dies."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from loopml.errors import WorkspaceLocked


class RunLock:
    """An exclusive ``flock`` on ``.loopml/run.lock``.

    The second ``loopml run`` waits up to ``wait_s`` seconds, then is refused with a
    message naming the holder. A killed holder releases the lock automatically.
    """

    def __init__(self, path: str | Path, wait_s: float = 0.0) -> None:
        self.path = Path(path)
        self.wait_s = wait_s
        self._fd: int | None = None

    def holder(self) -> str:
        """What the lock file says about its holder."""
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def acquire(self) -> None:
        """Take the lock or raise :class:`WorkspaceLocked`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise WorkspaceLocked(
                        f"workspace {self.path.parent} is in use by another run ({self.holder()})",
                        hint="wait for it to finish, or pass --wait SECONDS to queue behind it",
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd

    def fileno(self) -> int | None:
        """The descriptor holding the lock (``None`` when not held): a child process that inherits it holds the
        lock with this one, until both have closed it."""
        return self._fd

    def release(self) -> None:
        """Release the lock."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
