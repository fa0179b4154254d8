"""The leaderboard: a rich terminal table and a self-contained HTML page (inline SVG, no CDN)."""

from __future__ import annotations

import html
import math
from typing import Any

from rich.table import Table


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def _row_cells(c: dict[str, Any], winner: str) -> list[str]:
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
        cells = _row_cells(c, board["winner"])
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


def _device_html(board: dict[str, Any]) -> str:
    sec = board.get("on_device")
    if not sec:
        return ""
    head = "".join(f"<th>{html.escape(c.format(metric=sec['metric']))}</th>" for c in DEVICE_COLUMNS)
    body = "".join(
        f'<tr class="{"winner" if r[-1] == "winner" else ("" if r[-1] == "yes" else "out")}">'
        + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in device_rows(board))
    return (f"<h2>On-device variants</h2><p class=\"why\">{html.escape(sec['why'])}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _svg_chart(board: dict[str, Any]) -> str:
    """Horizontal bars of the metric with CI whiskers; ineligible candidates greyed out."""
    rows = [c for c in board["candidates"] if c.get("value") is not None and not math.isnan(c["value"])]
    if not rows:
        return ""
    vals = [c["value"] for c in rows] + [c["ci_low"] for c in rows if c.get("ci_low") is not None] + [
        c["ci_high"] for c in rows if c.get("ci_high") is not None]
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.05 or 0.01
    lo, hi = lo - pad, hi + pad
    width, left, bar_h, gap = 720, 170, 18, 8
    height = len(rows) * (bar_h + gap) + 40

    def x(v: float) -> float:
        return float(left + (v - lo) / (hi - lo) * (width - left - 20))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(board["metric"])} by candidate">']
    for i, c in enumerate(rows):
        y = 10 + i * (bar_h + gap)
        color = "#2e7d32" if c["name"] == board["winner"] else ("#5c6bc0" if c["eligible"] else "#bdbdbd")
        parts.append(f'<text x="{left - 8}" y="{y + bar_h - 4}" text-anchor="end" font-size="12">'
                     f'{html.escape(c["name"])}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{max(1.0, x(c["value"]) - left):.1f}" height="{bar_h}" '
                     f'fill="{color}"><title>{html.escape(c["name"])}: {c["value"]:.4f}</title></rect>')
        if c.get("ci_low") is not None and c.get("ci_high") is not None:
            cy = y + bar_h / 2
            parts.append(f'<line x1="{x(c["ci_low"]):.1f}" x2="{x(c["ci_high"]):.1f}" y1="{cy}" y2="{cy}" '
                         'stroke="#000" stroke-width="1.5"/>')
    axis_y = height - 22
    parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{axis_y}" y2="{axis_y}" stroke="#666"/>')
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        parts.append(f'<text x="{x(v):.1f}" y="{axis_y + 14}" text-anchor="middle" font-size="10">{v:.3f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def leaderboard_html(board: dict[str, Any], title: str = "loopml leaderboard") -> str:
    """A self-contained HTML page of the leaderboard."""
    head = "".join(f"<th>{html.escape(c.format(metric=board['metric']))}</th>" for c in COLUMNS)
    body = []
    for c in board["candidates"]:
        cls = "winner" if c["name"] == board["winner"] else ("" if c["eligible"] else "out")
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in _row_cells(c, board["winner"]))
        body.append(f'<tr class="{cls}">{cells}</tr>')
    cons = board.get("constraints") or {}
    budget = ", ".join(f"{k} = {v}" for k, v in cons.items() if v is not None) or "none"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in board.get("notes") or [])
    params = "".join(
        f"<tr><td>{html.escape(c['name'])}</td><td><code>{html.escape(str(c['params']))}</code></td></tr>"
        for c in board["candidates"]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; font-size: 13px; }}
th {{ background: #f5f5f5; }}
tr.winner td {{ background: #e8f5e9; font-weight: 600; }}
tr.out td {{ color: #888; }}
.why {{ font-size: 15px; padding: 8px 12px; background: #fffde7; border-left: 4px solid #fbc02d; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="why">{html.escape(board['why'])}</p>
<p>Metric: <b>{html.escape(board['metric'])}</b> on the validation split
({'higher' if board.get('higher_is_better', True) else 'lower'} is better), 95% bootstrap intervals.
Requirements: {html.escape(budget)}. Latency is the single-row p99 of
<code>Bundle.predict_row</code> (transform + model) on this machine:
{html.escape(str((board.get('latency_measurement') or {}).get('method') or 'wall clock'))}
(± the spread between rounds).</p>
{_svg_chart(board)}
<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
{_device_html(board)}
<h2>Parameters</h2><table><thead><tr><th>candidate</th><th>parameters</th></tr></thead><tbody>{params}</tbody></table>
{f'<h2>Dataset notes</h2><ul>{notes}</ul>' if notes else ''}
</body></html>
"""
