"""Tiny inline SVG charts for self-contained reports (no JavaScript, no CDN, a few KB each)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#7f7f7f", "#2ca02c", "#9467bd", "#ff7f0e")
W, H, ML, MR, MT, MB = 360, 260, 48, 12, 24, 40


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    return [lo * (1 - i / (n - 1)) + hi * (i / (n - 1)) for i in range(n)]  # no overflow for any finite lo, hi


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _num(v: object) -> float | None:
    """``v`` as a finite float, else ``None`` (undefined metrics are ``None`` or NaN in reports)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _limits(lo: float | None, hi: float | None) -> tuple[float, float]:
    """A drawable axis range: finite, and wider than a point (degenerate data has one value)."""
    lo = 0.0 if lo is None else lo
    hi = lo + 1.0 if hi is None else hi
    if hi < lo:
        lo, hi = hi, lo
    if not hi > lo:
        pad = max(abs(lo) * 0.05, 0.5)
        return lo - pad, lo + pad
    return lo, hi  # the scales divide halves, so even a span beyond the float range (-1e308, 1e308) works


def line_chart(
    series: Sequence[tuple[str, Sequence[float | None], Sequence[float | None]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    diagonal: bool = False,
    markers: bool = False,
) -> str:
    """A line chart of named ``(x, y)`` series as an SVG string."""
    clean: list[tuple[str, list[tuple[float, float]]]] = []
    for name, xs, ys in series:
        ps: list[tuple[float, float]] = []
        for x, y in zip(xs, ys):
            fx, fy = _num(x), _num(y)
            if fx is not None and fy is not None:
                ps.append((fx, fy))
        clean.append((name, ps))
    pts = [p for _, ps in clean for p in ps]
    xs_ = [p[0] for p in pts] or [0.0, 1.0]
    ys_ = [p[1] for p in pts] or [0.0, 1.0]
    x0, x1 = _limits(*((_num(xlim[0]), _num(xlim[1])) if xlim is not None else (min(xs_), max(xs_))))
    y0, y1 = _limits(*((_num(ylim[0]), _num(ylim[1])) if ylim is not None else (min(ys_), max(ys_))))
    pw, ph = W - ML - MR, H - MT - MB

    def sx(x: float) -> float:
        return ML + min(max((x / 2 - x0 / 2) / (x1 / 2 - x0 / 2), -0.05), 1.05) * pw

    def sy(y: float) -> float:
        return MT + ph - min(max((y / 2 - y0 / 2) / (y1 / 2 - y0 / 2), -0.05), 1.05) * ph

    parts = [_frame(title, xlabel, ylabel)]
    for t in _ticks(x0, x1):
        parts.append(f'<line x1="{sx(t):.1f}" y1="{MT + ph}" x2="{sx(t):.1f}" y2="{MT + ph + 4}" stroke="#333"/>'
                     f'<text x="{sx(t):.1f}" y="{MT + ph + 15}" font-size="10" text-anchor="middle">{_fmt(t)}</text>')
    for t in _ticks(y0, y1):
        parts.append(f'<line x1="{ML - 4}" y1="{sy(t):.1f}" x2="{ML}" y2="{sy(t):.1f}" stroke="#333"/>'
                     f'<text x="{ML - 6}" y="{sy(t) + 3:.1f}" font-size="10" text-anchor="end">{_fmt(t)}</text>')
    if diagonal:
        parts.append(f'<line x1="{sx(x0):.1f}" y1="{sy(y0):.1f}" x2="{sx(x1):.1f}" y2="{sy(y1):.1f}" '
                     'stroke="#bbb" stroke-dasharray="4,3"/>')
    for i, (name, ps) in enumerate(clean):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ps)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{coords}"/>')
        if markers:
            parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>' for x, y in ps)
        parts.append(f'<rect x="{ML + 8}" y="{MT + 6 + 14 * i}" width="10" height="3" fill="{color}"/>'
                     f'<text x="{ML + 22}" y="{MT + 10 + 14 * i}" font-size="10">{escape(name)}</text>')
    return _svg(parts)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    title: str,
    xlabel: str,
    errors: Sequence[tuple[float | None, float | None]] | None = None,
    reference: float | None = None,
) -> str:
    """Horizontal bars (one per label), with optional interval whiskers and a reference line.

    Undefined values (``None``, NaN, infinities) draw no bar and no whisker.
    """
    n = max(len(labels), 1)
    row = 16
    height = MT + MB + row * n
    vals = [_num(v) for v in values]
    errs = [(_num(a), _num(b)) for a, b in errors] if errors is not None else None
    ref = _num(reference)
    finite = [v for v in vals if v is not None] + [v for e in errs or [] for v in e if v is not None]
    lo, hi = _limits(min([0.0, *finite]), max([*finite, 1e-12]))
    left = 150
    pw = W + 120 - left - MR - 16  # room for the last tick label

    def sx(x: float) -> float:
        return left + (x / 2 - lo / 2) / (hi / 2 - lo / 2) * pw

    parts = [f'<text x="{(W + 120) / 2}" y="14" font-size="12" text-anchor="middle" font-weight="bold">'
             f"{escape(title)}</text>"]
    for i, (lab, v) in enumerate(zip(labels, vals)):
        y = MT + i * row
        parts.append(f'<text x="{left - 4}" y="{y + 11}" font-size="10" text-anchor="end">{escape(lab[:28])}</text>')
        if v is not None:
            parts.append(f'<rect x="{min(sx(0), sx(v)):.1f}" y="{y + 2}" width="{abs(sx(v) - sx(0)):.1f}" '
                         f'height="{row - 5}" fill="{PALETTE[0]}" opacity="0.8"/>')
        if errs is not None and i < len(errs):
            a, b = errs[i]
            if a is not None and b is not None:
                parts.append(f'<line x1="{sx(a):.1f}" y1="{y + row / 2:.1f}" x2="{sx(b):.1f}" y2="{y + row / 2:.1f}" '
                             'stroke="#222" stroke-width="1.2"/>')
    if ref is not None:
        parts.append(f'<line x1="{sx(ref):.1f}" y1="{MT}" x2="{sx(ref):.1f}" y2="{MT + row * n}" '
                     'stroke="#d62728" stroke-dasharray="4,3"/>')
    base = MT + row * n
    parts.append(f'<line x1="{left}" y1="{base}" x2="{left + pw}" y2="{base}" stroke="#333"/>')
    for t in _ticks(lo, hi):
        parts.append(f'<text x="{sx(t):.1f}" y="{base + 14}" font-size="10" text-anchor="middle">{_fmt(t)}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{base + 30}" font-size="11" text-anchor="middle">{escape(xlabel)}</text>')
    return _svg(parts, W + 120, height)


def heatmap(matrix: Sequence[Sequence[float]], labels: Sequence[str], *, title: str) -> str:
    """A confusion-matrix heatmap (rows: true class, columns: predicted), counts written in the cells."""
    k = max(len(labels), 1)
    cell = min(48, 220 // k)
    left, top = 70, 40
    cells = [[_num(v) for v in r] for r in matrix]  # an undefined cell is drawn empty, marked "–"
    vmax = max([v for r in cells for v in r if v is not None] + [1.0])
    parts = [f'<text x="{left + k * cell / 2}" y="14" font-size="12" text-anchor="middle" font-weight="bold">'
             f"{escape(title)}</text>",
             f'<text x="{left + k * cell / 2}" y="{top - 8}" font-size="10" text-anchor="middle">predicted</text>',
             f'<text x="12" y="{top + k * cell / 2}" font-size="10" transform="rotate(-90 12 {top + k * cell / 2})" '
             'text-anchor="middle">true</text>']
    for i, r in enumerate(cells):
        for j, v in enumerate(r):
            shade = 255 if v is None else int(255 - 180 * max(0.0, v / vmax))
            parts.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
                         f'fill="rgb({shade},{shade},255)" stroke="#fff"/>'
                         f'<text x="{left + j * cell + cell / 2}" y="{top + i * cell + cell / 2 + 4}" font-size="10" '
                         f'text-anchor="middle">{"–" if v is None else int(v)}</text>')
    for i, lab in enumerate(labels):
        parts.append(f'<text x="{left - 4}" y="{top + i * cell + cell / 2 + 4}" font-size="10" text-anchor="end">'
                     f"{escape(str(lab))}</text>"
                     f'<text x="{left + i * cell + cell / 2}" y="{top + k * cell + 12}" font-size="10" '
                     f'text-anchor="middle">{escape(str(lab))}</text>')
    return _svg(parts, left + k * cell + 20, top + k * cell + 24)


def _frame(title: str, xlabel: str, ylabel: str) -> str:
    pw, ph = W - ML - MR, H - MT - MB
    return (f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>'
            f'<text x="{ML + pw / 2}" y="14" font-size="12" text-anchor="middle" font-weight="bold">{escape(title)}</text>'
            f'<text x="{ML + pw / 2}" y="{H - 6}" font-size="11" text-anchor="middle">{escape(xlabel)}</text>'
            f'<text x="12" y="{MT + ph / 2}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 12 {MT + ph / 2})">{escape(ylabel)}</text>')


def _svg(parts: list[str], width: float = W, height: float = H) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif">' + "".join(parts) + "</svg>")
