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
    """A chart (HTML only; Markdown shows the caption): a chart spec of the web UI's chart layer
    (:mod:`loopml.webui.export`), drawn by uPlot in the page."""

    chart: dict[str, Any]
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
        """One self-contained HTML page: inline CSS, the web UI's chart layer (uPlot and ``charts.js``) inlined
        with the charts' data; no network."""
        from loopml.webui.export import inline_assets

        assets = inline_assets()
        parts = [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title><style>{assets['css']}\n{_CSS}</style></head><body><main>",
            f"<h1>{html.escape(self.title)}</h1><p class='sub'>{html.escape(self.subtitle)}</p>",
            f"<p class='gen'>Generated {html.escape(self.generated_at)} from the workspace.</p>",
        ]
        if self.glance:
            parts.append("<div class='glance'>")
            for k, v in self.glance:
                parts.append(f"<div><span>{html.escape(k)}</span><b>{html.escape(v)}</b></div>")
            parts.append("</div>")
        parts.append(self.body_html())
        parts.append(f"</main><script>{assets['js']}</script></body></html>")
        return "".join(parts)

    def body_html(self) -> str:
        """The table of contents and the sections as HTML (what the web UI embeds)."""
        parts = ["<nav><ol>"]
        parts += [f"<li><a href='#{s.key}'>{html.escape(s.title)}</a></li>" for s in self.sections]
        parts.append("</ol></nav>")
        figures = 0
        for s in self.sections:
            parts.append(f"<section id='{s.key}'><h2>{html.escape(s.title)}</h2>")
            for b in s.blocks:
                if isinstance(b, Figure):
                    figures += 1
                    parts.append(_figure_html(b, f"design-figure-{figures}"))
                else:
                    parts.append(_html_block(b))
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
    if isinstance(b, Note):
        return f"<p class='note'><b>Not measured yet:</b> {html.escape(b.text)}</p>"
    if isinstance(b, Figure):
        return _figure_html(b, "design-figure")
    return f"<p>{html.escape(b)}</p>"


def _figure_html(b: Figure, chart_id: str) -> str:
    from loopml.webui.export import tojson_safe

    return (f'<figure><div class="chart" data-spec="{chart_id}" data-width="900"></div>'
            f'<script type="application/json" id="{chart_id}">{tojson_safe(b.chart)}</script>'
            f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")


def interval_chart(
    rows: Sequence[tuple[str, float, float | None, float | None, bool]], *, title: str
) -> dict[str, Any] | None:
    """Bars (label, value, CI low, CI high, highlighted) with their intervals as whiskers; a highlighted bar's
    label is starred. None without a finite value."""
    from loopml.webui.export import interval_bars

    rows = [r for r in rows if r[1] is not None and math.isfinite(r[1])]
    if not rows:
        return None
    return interval_bars(title, [("★ " if hl else "") + label for label, _, _, _, hl in rows], [r[1] for r in rows],
                         lower=[r[2] for r in rows], upper=[r[3] for r in rows], label="value")


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
