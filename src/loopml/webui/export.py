"""Self-contained HTML reports from the web UI's templates and chart layer (uPlot and ``charts.js`` inlined).

The exported file needs no server and makes no request: styles and scripts are part of the page, chart data
sits in ``<script type="application/json">`` blocks, exactly as in the UI.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jinja2

from loopml.webui import views
from loopml.webui.app import STATIC, TEMPLATES, _tojson


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True)
    env.filters["fmt"] = views.fmt
    env.filters["when"] = views.when
    env.filters["tojson_safe"] = _tojson
    return env


@lru_cache(maxsize=1)
def inline_assets() -> dict[str, str]:
    """The CSS and the JavaScript of the chart layer, to inline in a page."""
    uplot = STATIC / "vendor" / "uplot"
    css = (uplot / "uPlot.min.css").read_text(encoding="utf-8") + "\n" + (STATIC / "app.css").read_text(encoding="utf-8")
    js = (uplot / "uPlot.iife.min.js").read_text(encoding="utf-8") + "\n" + (STATIC / "charts.js").read_text(encoding="utf-8")
    if "</script" in js.lower() or "</style" in css.lower():  # would end the element early
        raise ValueError("an inlined asset contains a closing tag")
    return {"css": css, "js": js}


def render(template: str, **ctx: Any) -> str:
    """Render ``template`` as a standalone page (its assets inlined)."""
    return _environment().get_template(template).render(assets=inline_assets(), **ctx)


def monitoring_report(data: dict[str, Any], psi_threshold: float) -> str:
    """The monitoring report (``loopml monitor report``) as one self-contained, interactive HTML page."""
    dists = data.get("distributions") or {}
    return render(
        "report_monitoring.html", data=data, charts=views.monitoring_charts(data, psi_threshold),
        feature_charts=views.feature_drift_charts(data, psi_threshold),
        dist_charts=[views.distribution_chart(name, d) for name, d in dists.items()],
        ops_charts=views.ops_charts(data),
    )
