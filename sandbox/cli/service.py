"""`sbx system service`: the Docker Engine API on a unix socket (sandbox/server), so Docker
clients (docker-py, testcontainers, docker-compose, the docker CLI) drive sbx unchanged."""
import sys
from typing import Optional

import typer


def service(socket: Optional[str] = typer.Option(None, "--socket", help="unix://PATH to listen on "
                                                 "(default: unix://$XDG_RUNTIME_DIR/sbx/sbx.sock)."),
            timeout: float = typer.Option(0, "--timeout", "-t", min=0,
                                          help="Exit after this many idle seconds (0: never)."),
            verbose: bool = typer.Option(False, "--verbose", help="Log every request to stderr.")):
    """Serve the Docker Engine API on a unix socket (like 'podman system service')."""
    from .. import config
    from ..server import http
    ctx = config.current()
    path = http.parse_socket(socket) if socket else http.default_socket(ctx)

    def announce(where):
        print(f"sbx: serving the Docker API on unix://{where}", file=sys.stderr)
        print(f"export DOCKER_HOST=unix://{where}", flush=True)
    raise typer.Exit(http.serve(path, ctx, timeout, announce=announce, verbose=verbose))


def register(app):
    from .ps import group
    group(app, "system", "Store maintenance.").command("service")(service)
