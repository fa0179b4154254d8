"""The leaderboard: a rich terminal table and a self-contained HTML page (the web UI's template and uPlot chart,
inlined; no CDN)."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def row_cells(c: dict[str, Any], winner: str) -> list[str]:
    """The cells of a candidate's row (terminal table and HTML page)."""
    ci = f"[{_num(c['ci_low'])}, {_num(c['ci_high'])}]" if c.get("ci_low") is not None else "–"
    status = "winner" if c["name"] == winner else ("eligible" if c["eligible"] else "not eligible")
    size = f"{c['size_mb']:.3f}" if c.get("size_mb") is not None else "–"
    trials = f"{c['n_trials']} ({c['n_pruned']} pruned)" if c.get("tuned") else "–"
    if c.get("tuned") and c.get("tuning_stopped_by") == "time cap":
        trials = f"{c['n_trials']} of {c.get('trials_planned')} (time cap)"
    p99 = _num(c.get("latency_p99_ms"), 3)
    if c.get("latency_p99_spread_ms") is not None and p99 != "–":
        p99 += f" ±{c['latency_p99_spread_ms']:.3f}"
    return [
        c["name"], c["model_type"], _num(c["value"]), ci, p99, size,
        f"{c['train_s']:.2f}", trials, status, "; ".join(c.get("reasons") or []),
    ]


COLUMNS = ["candidate", "model", "{metric}", "95% CI", "CPU p99 ms", "size MB", "train s", "trials", "status", "why not"]


def leaderboard_table(board: dict[str, Any]) -> Table:
    """A rich table of a leaderboard document (see :meth:`Selection.to_json`)."""
    t = Table(title=f"leaderboard ({board['metric']}, validation split)", header_style="bold", caption=board["why"])
    for col in COLUMNS:
        t.add_column(col.format(metric=board["metric"]))
    for c in board["candidates"]:
        cells = row_cells(c, board["winner"])
        style = "bold green" if c["name"] == board["winner"] else ("" if c["eligible"] else "dim")
        t.add_row(*cells, style=style)
    return t


DEVICE_COLUMNS = ["variant", "technique", "size KB", "device p99 ms", "{metric} [95% CI]", "lift kept", "fits"]


def device_rows(board: dict[str, Any]) -> list[list[str]]:
    """Cells of the on-device section: every variant's size, device latency, quality with interval, lift kept."""
    sec = board.get("on_device") or {}
    rows = []
    for v in sec.get("variants", []):
        lo, hi = v["interval"]
        fits = "winner" if v["name"] == sec.get("winner") else ("yes" if v["fits"] else "; ".join(v["reasons"]))
        rows.append([v["name"], v["technique"], f"{v['size_kb']:,.1f}", f"{v['p99_ms']:.3f}",
                     f"{v['value']:.4f} [{lo:.4f}, {hi:.4f}]", f"{v['lift_share']:.0%}", fits])
    return rows


def device_table(board: dict[str, Any]) -> Table | None:
    """A rich table of the leaderboard's ``on_device`` section (deployment_target on-device), or None."""
    sec = board.get("on_device")
    if not sec:
        return None
    t = Table(title=f"on-device variants ({sec['runtime']}, exported ONNX files, validation split)",
              header_style="bold", caption=sec["why"])
    for col in DEVICE_COLUMNS:
        t.add_column(col.format(metric=sec["metric"]))
    for cells in device_rows(board):
        t.add_row(*cells, style="bold green" if cells[-1] == "winner" else ("" if cells[-1] == "yes" else "dim"))
    return t


def leaderboard_html(board: dict[str, Any], title: str = "loopml leaderboard") -> str:
    """A self-contained, interactive HTML page of the leaderboard (the web UI's template, uPlot inlined)."""
    from loopml.webui.export import leaderboard_report

    return leaderboard_report(board, title)
