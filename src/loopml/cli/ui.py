"""Terminal output: one console, tables, and the error printer.

On a terminal, tables fit the window as rich draws them. Piped or redirected (not a terminal),
nothing is cut: a table is drawn at its natural width however wide that is (no ``…``), and long
lines are not wrapped, so ``loopml runs | cat`` or ``| grep`` sees every id and number whole.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table


def _piped(stream: Any) -> bool:
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True


console = Console(soft_wrap=_piped(sys.stdout))
err_console = Console(stderr=True, soft_wrap=_piped(sys.stderr))

#: widest a table is ever drawn when not on a terminal
_MAX_PIPED_WIDTH = 100_000


class FullTable(Table):
    """A rich table that, when not on a terminal, is drawn at its natural width (never ellipsised)."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if console.is_terminal:
            yield from super().__rich_console__(console, options)
            return
        wide = options.update(width=_MAX_PIPED_WIDTH, max_width=_MAX_PIPED_WIDTH)
        natural = Measurement.get(console, wide, self).maximum
        yield from super().__rich_console__(console, options.update(width=natural, max_width=natural))


class Whole:
    """Any rich renderable (e.g. a table built elsewhere), drawn at its natural width when not on a terminal."""

    def __init__(self, renderable: Any) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if console.is_terminal:
            yield self.renderable
            return
        wide = options.update(width=_MAX_PIPED_WIDTH, max_width=_MAX_PIPED_WIDTH)
        natural = Measurement.get(console, wide, self.renderable).maximum
        yield from console.render(self.renderable, options.update(width=natural, max_width=natural))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A table with the given columns and rows (values turned to text); whole when piped."""
    t = FullTable(title=title, show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    return t


def fmt_time(ts: Any) -> str:
    """A timestamp as 'YYYY-MM-DD HH:MM:SS'."""
    if ts is None:
        return ""
    return ts.strftime("%Y-%m-%d %H:%M:%S") if hasattr(ts, "strftime") else str(ts)


class StageProgress:
    """Stage start/end lines for ``run`` and ``train``, and periodic lines while a long stage runs.

    On a terminal the runner's progress bars show the work inside a stage; elsewhere (CI logs,
    ``| tee``) a plain line is printed every ``$LOOPML_PROGRESS_SECONDS`` (30 s) while a stage runs.
    Use as a context manager around the run (it stops the ticker).
    """

    def __init__(self, out: Console, *, quiet: bool = False, interval_s: float | None = None) -> None:
        import os
        import threading

        self.out = out
        self.quiet = quiet
        env = os.environ.get("LOOPML_PROGRESS_SECONDS")
        self.interval_s = interval_s if interval_s is not None else float(env) if env else 30.0
        self._stage: str | None = None
        self._started = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StageProgress:
        import threading

        if not self.out.is_terminal and not self.quiet and self.interval_s > 0:
            self._thread = threading.Thread(target=self._tick, name="loopml-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _tick(self) -> None:
        import time

        while not self._stop.wait(self.interval_s):
            with self._lock:
                if self._stage is not None:
                    self.out.print(f"  {self._stage}: still running ({time.monotonic() - self._started:.0f}s)",
                                   highlight=False)

    def on_event(self, kind: str, payload: Any) -> None:
        """The runner's ``on_event`` callback."""
        import time

        if kind == "stage_start":
            with self._lock:
                self._stage, self._started = str(payload), time.monotonic()
            if not self.quiet:
                if self.out.is_terminal:
                    self.out.print(f"[bold]▶ {payload}[/bold] running…")
                else:
                    self.out.print(f"▶ {payload}: started", highlight=False)
        elif kind == "stage_end":
            with self._lock:
                self._stage = None
            style = {"success": "green", "cached": "cyan", "failed": "red"}.get(payload.status, "white")
            label = "cache hit" if payload.status == "cached" else payload.status
            self.out.print(f"[{style}]■ {payload.stage}: {label}[/{style}] ({payload.duration_s:.2f}s)")
