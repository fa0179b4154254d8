"""Memory of a stage: its peak resident set size (RSS) measured, and capped when the spec says so.

Every stage runs inside a :class:`MemoryWatch` (see :func:`loopml.pipeline.executors.run_job`), in
whatever process the executor chose. The watch samples the RSS of that process every 50 ms and reads the
kernel's high-water mark (``VmHWM``) before and after the stage: when the stage raised it, the new mark is
the stage's exact peak; otherwise (an earlier stage of the same process peaked higher) the highest sample
is. That is the stage's ``peak_rss_bytes`` in the run record. The mark itself is never reset, so
``getrusage``'s ``ru_maxrss`` keeps meaning the peak of the whole process.

A cap (``requirements.scale.max_stage_memory_mb``, or ``stage_memory_mb.<stage>``) is checked twice:

* **before the stage loads anything**: the RSS the process already holds plus the stage's
  :meth:`~loopml.pipeline.stage.BaseStage.memory_floor` (a lower bound of what it must hold at once,
  estimated from the rows and columns of its input tables in their Parquet footers) must fit;
* **while it runs**: when a sample exceeds the cap, :class:`MemoryCapExceeded` is raised in the
  stage's thread (at its next Python instruction: a long C call finishes first); and when the
  high-water mark at the end exceeds it (a spike between two samples), the stage fails too.

Either way the stage fails with a :class:`~loopml.errors.StageError` naming the stage, the cap and
the spec field that set it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from loopml.errors import StageError

MB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Resident set size of this process now, in bytes."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: the high-water mark is the best we have
        return _maxrss()


def _maxrss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def peak_rss() -> int:
    """RSS high-water mark of this process since it started, in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _maxrss()


def release_freed_memory() -> None:
    """Give memory that is free but still held by the allocators back to the system.

    Arrow's pool (mimalloc/jemalloc) and glibc keep freed pages for reuse: after a stage that held a large
    table, the next stage would otherwise start (and peak) on top of them. Called before every stage.
    """
    with contextlib.suppress(ImportError, AttributeError):
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def mb(n: int | float | None) -> str:
    """Bytes as a short MB text (``1,234 MB``)."""
    return "?" if n is None else f"{n / MB:,.0f} MB" if n >= 10 * MB else f"{n / MB:,.2f} MB"


@dataclass(frozen=True)
class MemoryFloor:
    """A lower bound of the memory a stage must hold at once, and what it is made of (for the message)."""

    bytes: int
    what: str


def table_floor(path: str | Path, label: str, *, extra_float32_columns: int = 0) -> MemoryFloor:
    """The memory an input table takes once loaded whole, from its Parquet footer (nothing is read).

    ``extra_float32_columns`` adds a float32 matrix of that many columns over the same rows (a stage
    that builds a feature matrix from the table).
    """
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    rows, cols = meta.num_rows, meta.num_columns
    table = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    matrix = rows * extra_float32_columns * 4
    what = f"its input {label} ({rows:,} rows × {cols} columns, {mb(table)} uncompressed)"
    if matrix:
        what += f" and a float32 matrix of {rows:,} × {extra_float32_columns} ({mb(matrix)})"
    return MemoryFloor(table + matrix, what)


class MemoryCapExceeded(BaseException):
    """Raised in a stage's thread by its watch when the RSS crosses the cap.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that a stage's ``except Exception`` around a
    candidate or a trial does not swallow it; :class:`MemoryWatch` turns it into a ``StageError``.
    """


def _raise_in(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(MemoryCapExceeded))


class MemoryWatch:
    """Measure (and cap) the peak RSS of the process while one stage runs in the calling thread.

    >>> with MemoryWatch("train") as watch:  # doctest: +SKIP
    ...     run_the_stage()
    >>> watch.peak_bytes  # doctest: +SKIP
    """

    interval_s = 0.05

    def __init__(self, stage: str, cap_bytes: int | None = None, cap_field: str = "") -> None:
        self.stage = stage
        self.cap_bytes = cap_bytes
        self.cap_field = cap_field
        self.start_bytes = 0
        self.peak_bytes: int | None = None
        self._sampled = 0
        self._over_at: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._target = threading.get_ident()
        self._hwm_before = 0
        self._refused = False

    def cap_text(self) -> str:
        """The cap and where it was set, for messages."""
        return f"memory cap {mb(self.cap_bytes)} ({self.cap_field})"

    def check_floor(self, floor: MemoryFloor | None) -> None:
        """Fail before the stage loads anything when what it already holds plus ``floor`` exceeds the cap."""
        if self.cap_bytes is None:
            return
        need = self.start_bytes + (floor.bytes if floor else 0)
        if need <= self.cap_bytes:
            return
        self._refused = True
        parts = [f"the process already holds {mb(self.start_bytes)} before the stage starts"]
        if floor is not None:
            parts.append(f"{floor.what} needs at least {mb(floor.bytes)} more")
        raise StageError(
            f"stage `{self.stage}`: the {self.cap_text()} cannot hold: {' and '.join(parts)} "
            f"(at least {mb(need)} in all); the stage was not started",
            hint=f"raise {self.cap_field}, or give the stage less data (training.sampling)",
        )

    def _sample(self) -> None:
        cap = self.cap_bytes
        while not self._stop.wait(self.interval_s):
            rss = current_rss()
            self._sampled = max(self._sampled, rss)
            if cap is not None and rss > cap and self._over_at is None:
                self._over_at = rss
                _raise_in(self._target)

    def __enter__(self) -> MemoryWatch:
        self._target = threading.get_ident()
        release_freed_memory()  # what earlier stages freed does not count against this one
        self._hwm_before = peak_rss()
        self.start_bytes = current_rss()
        self._sampled = self.start_bytes
        self._thread = threading.Thread(target=self._sample, name=f"memory-watch-{self.stage}", daemon=True)
        self._thread.start()
        return self

    def _over_message(self, peak: int) -> str:
        return (
            f"stage `{self.stage}`: the {self.cap_text()} was exceeded while it ran "
            f"(RSS reached {mb(peak)}, {mb(self.start_bytes)} when it started); the stage was stopped"
        )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        # an async exception set just before the stage ended may not have been delivered yet: clear it
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target), None)
        hwm = peak_rss()
        # a new process high-water mark was set during the stage: that is its exact peak
        peak = max(self._sampled, hwm if hwm > self._hwm_before else 0)
        self.peak_bytes = peak
        over = self.cap_bytes is not None and (self._over_at is not None or peak > self.cap_bytes)
        if exc is not None:
            exc.peak_rss_bytes = peak  # type: ignore[attr-defined]  # the runner records it with the failure
        if over and not self._refused and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            err = StageError(self._over_message(max(peak, self._over_at or 0)),
                             hint=f"raise {self.cap_field}, or give the stage less data (training.sampling)")
            err.peak_rss_bytes = peak  # type: ignore[attr-defined]
            raise err from (exc if isinstance(exc, Exception) else None)
        if isinstance(exc, MemoryCapExceeded):  # delivered although the cap was not crossed: cannot happen
            raise StageError(self._over_message(peak)) from None


def spare_memory_mb(spec: object, stage: str, share: float = 0.5) -> float | None:
    """``share`` of what ``stage``'s memory cap leaves above the RSS held now, in MB (``None``: no cap).

    What a stage hands to an engine that can spill (DuckDB's ``memory_limit``), so that it spills before
    the stage crosses its cap.
    """
    cap, _ = stage_cap(spec, stage)
    if cap is None:
        return None
    return max(0.0, (cap - current_rss()) * share / MB)


def stage_cap(spec: object, stage: str) -> tuple[int | None, str]:
    """The memory cap of ``stage`` in bytes (``None``: no cap) and the spec field that sets it."""
    scale = spec.requirements.scale  # type: ignore[attr-defined]
    per_stage: dict[str, float] = scale.stage_memory_mb
    if stage in per_stage:
        return int(per_stage[stage] * MB), f"requirements.scale.stage_memory_mb.{stage}"
    if scale.max_stage_memory_mb is not None:
        return int(scale.max_stage_memory_mb * MB), "requirements.scale.max_stage_memory_mb"
    return None, ""
