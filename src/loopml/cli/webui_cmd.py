"""`loopml ui`: the web UI (runs, data, models, serving and experiments, monitoring, design document) of a project."""

from __future__ import annotations

from pathlib import Path

import typer

from loopml.cli.ui import console


def ui(
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (default 127.0.0.1: this machine only)."),
    port: int = typer.Option(8710, "--port", min=0, max=65535, help="Port (0 picks a free one)."),
    ready_file: Path | None = typer.Option(None, "--ready-file", help="Write 'HOST PORT' here once accepting requests."),
) -> None:
    """Browse runs, data, models, serving and experiments, monitoring and the design document in a web browser.

    The monitoring report is computed in the background and kept in .loopml/ui/ (keyed by the prediction
    log's segments): until the first one is ready the Monitoring page shows its progress. Read-only unless the admin token of `loopml serve` is set ($LOOPML_ADMIN_TOKEN, or the spec's
    deployment.token_env / admin_tokens) when the UI starts: promote and rollback then show the comparison
    first and ask for the token.

    Examples: `loopml ui -p shop` (then open http://127.0.0.1:8710), `LOOPML_ADMIN_TOKEN=s3cret loopml ui -p shop
    --port 9000`.
    """
    import socket

    import uvicorn

    from loopml.webui import create_app

    app = create_app(project)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)  # connections queue from now on: the ready file below is true
    bound = sock.getsockname()[:2]
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/yellow] binding {host}: the UI is reachable from other machines")
    mode = "admin actions need the token" if app.state.auth_enabled else "read-only"
    console.print(f"loopml ui: http://{bound[0]}:{bound[1]}  ({mode})", highlight=False)
    if ready_file is not None:  # written whole, then renamed: a reader never sees it empty
        tmp = ready_file.with_name(f".{ready_file.name}.tmp")
        tmp.write_text(f"{bound[0]} {bound[1]}\n")
        tmp.replace(ready_file)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def register(app: typer.Typer) -> None:
    """Add `ui` to the root command."""
    app.command("ui")(ui)
