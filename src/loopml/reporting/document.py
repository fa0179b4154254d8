"""The design document as plain data (sections of blocks), rendered to Markdown and to HTML."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    """A table of text cells."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Bullets:
    """A bullet list."""

    items: list[str]


@dataclass
class Figure:
    """An inline SVG chart (HTML only; Markdown shows the caption)."""

    svg: str
    caption: str


@dataclass
class Note:
    """A plainly stated gap: a stage that has not run, a figure that could not be measured."""

    text: str


Block = str | Table | Bullets | Figure | Note


@dataclass
class Section:
    """One step of the design."""

    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    measured: bool = True

    def add(self, *blocks: Block) -> Section:
        """Append blocks; returns self."""
        self.blocks.extend(blocks)
        return self


@dataclass
class DesignDocument:
    """The system design of a project as built.

    >>> doc = DesignDocument("p: system design", "", "now", [("task", "binary")],
    ...                      [Section("data", "3. Data").add("rows: 10", Table(["a"], [["1"]]))])
    >>> print(doc.to_markdown().splitlines()[-3])
    | a |
    """

    title: str
    subtitle: str
    generated_at: str
    glance: list[tuple[str, str]]
    sections: list[Section]

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown."""
        out = [f"# {self.title}", "", f"_{self.subtitle}_", "", f"Generated {self.generated_at} from the workspace.", ""]
        if self.glance:
            out += ["| at a glance | |", "|---|---|"]
            out += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in self.glance]
            out.append("")
        for s in self.sections:
            out += [f"## {s.title}", ""]
            for b in s.blocks:
                out += _md_block(b)
                out.append("")
        return "\n".join(out).rstrip() + "\n"

    def to_html(self) -> str:
        """One self-contained HTML page (inline CSS and SVG; no scripts, no network)."""
        parts = [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body><main>",
            f"<h1>{html.escape(self.title)}</h1><p class='sub'>{html.escape(self.subtitle)}</p>",
            f"<p class='gen'>Generated {html.escape(self.generated_at)} from the workspace.</p>",
        ]
        if self.glance:
            parts.append("<div class='glance'>")
            for k, v in self.glance:
                parts.append(f"<div><span>{html.escape(k)}</span><b>{html.escape(v)}</b></div>")
            parts.append("</div>")
        parts.append(self.body_html())
        parts.append("</main></body></html>")
        return "".join(parts)

    def body_html(self) -> str:
        """The table of contents and the sections as HTML (what the web UI embeds)."""
        parts = ["<nav><ol>"]
        parts += [f"<li><a href='#{s.key}'>{html.escape(s.title)}</a></li>" for s in self.sections]
        parts.append("</ol></nav>")
        for s in self.sections:
            parts.append(f"<section id='{s.key}'><h2>{html.escape(s.title)}</h2>")
            parts += [_html_block(b) for b in s.blocks]
            parts.append("</section>")
        return "".join(parts)


def _md_cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _md_block(b: Block) -> list[str]:
    if isinstance(b, Table):
        lines = []
        if b.caption:
            lines += [f"**{b.caption}**", ""]
        lines.append("| " + " | ".join(_md_cell(c) for c in b.columns) + " |")
        lines.append("|" + "---|" * len(b.columns))
        lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows]
        return lines
    if isinstance(b, Bullets):
        return [f"- {i}" for i in b.items]
    if isinstance(b, Figure):
        return [f"_Figure: {b.caption} (in the HTML version)._"]
    if isinstance(b, Note):
        return [f"> **Not measured yet:** {b.text}"]
    return [b]


def _html_block(b: Block) -> str:
    if isinstance(b, Table):
        cap = f"<caption>{html.escape(b.caption)}</caption>" if b.caption else ""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in b.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in b.rows)
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Figure):
        return f"<figure>{b.svg}<figcaption>{html.escape(b.caption)}</figcaption></figure>"
    if isinstance(b, Note):
        return f"<p class='note'><b>Not measured yet:</b> {html.escape(b.text)}</p>"
    return f"<p>{html.escape(b)}</p>"


def bar_chart_svg(
    rows: Sequence[tuple[str, float, float | None, float | None, bool]], *, title: str, width: int = 640
) -> str:
    """Horizontal bars (label, value, CI low, CI high, highlighted) with interval whiskers, as inline SVG."""
    vals = [float(x) for _, v, lo, hi, _ in rows for x in (v, lo, hi) if x is not None and math.isfinite(x)]
    if not rows or not vals:
        return ""
    lo_v, hi_v = min(0.0, min(vals)), max(vals)
    span = (hi_v - lo_v) or 1.0
    left, right, bar_h, gap = 170, 70, 18, 8
    inner = width - left - right
    height = 30 + len(rows) * (bar_h + gap)

    def x(v: float) -> float:
        return left + (v - lo_v) / span * inner

    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
        f"aria-label='{html.escape(title)}'><text x='4' y='16' font-size='13' font-weight='bold'>"
        f"{html.escape(title)}</text>"
    ]
    for i, (label, v, lo, hi, hl) in enumerate(rows):
        y = 26 + i * (bar_h + gap)
        color = "#2b7a4b" if hl else "#8aa4c8"
        out.append(f"<text x='{left - 6}' y='{y + 13}' font-size='12' text-anchor='end'>{html.escape(label)}</text>")
        if math.isfinite(v):
            out.append(f"<rect x='{x(lo_v):.1f}' y='{y}' width='{max(1.0, x(v) - x(lo_v)):.1f}' height='{bar_h}' fill='{color}'/>")
            out.append(f"<text x='{x(v) + 4:.1f}' y='{y + 13}' font-size='11'>{v:.4f}</text>")
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            ym = y + bar_h / 2
            out.append(f"<line x1='{x(lo):.1f}' x2='{x(hi):.1f}' y1='{ym}' y2='{ym}' stroke='#222' stroke-width='1.5'/>")
            for xv in (lo, hi):
                out.append(f"<line x1='{x(xv):.1f}' x2='{x(xv):.1f}' y1='{ym - 5}' y2='{ym + 5}' stroke='#222'/>")
    out.append("</svg>")
    return "".join(out)


_CSS = """
body{font:15px/1.5 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#1d232b;background:#f6f7f9;margin:0}
main{max-width:980px;margin:0 auto;padding:24px 28px;background:#fff}
h1{margin-bottom:0}.sub{color:#55606e;margin-top:4px}.gen{color:#7a8591;font-size:13px}
h2{border-bottom:2px solid #e3e7ec;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:10px 0 16px;font-size:13px;width:100%}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid #dde2e8;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}tbody tr:nth-child(even){background:#fafbfc}
.note{background:#fff6e0;border-left:4px solid #e0a800;padding:6px 10px}
.glance{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:8px;margin:14px 0}
.glance div{background:#eef4fb;border-radius:6px;padding:8px 10px}.glance span{display:block;color:#55606e;font-size:12px}
nav ol{columns:2;font-size:14px}figure{margin:10px 0}figcaption{color:#55606e;font-size:12px}
code{background:#f0f2f5;padding:1px 4px;border-radius:3px}
"""
