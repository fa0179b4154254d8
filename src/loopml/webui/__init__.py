"""`loopml ui`: a web UI over the whole loop — runs, data, models, monitoring and the design document.

Pages read the workspace, registry, validation and monitoring APIs (nothing is recomputed here);
templates are Jinja2, charts uPlot (vendored under ``static/vendor/uplot`` with its license), the
server Starlette on uvicorn, bound to 127.0.0.1 by default. Read-only unless the admin token of
``loopml serve`` is configured; promote and rollback then ask for it.
"""

from __future__ import annotations

from loopml.webui.app import create_app

__all__ = ["create_app"]
