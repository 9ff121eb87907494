"""`sbx port CONTAINER [PRIVATE_PORT[/PROTO]]`: the host side of a container's published ports,
as Docker prints it ("80/tcp -> 0.0.0.0:8080"; with a port, only "0.0.0.0:8080")."""
import typer

from ..errors import UsageError


def port(container: str = typer.Argument(..., help="Container name or id."),
         private_port: str = typer.Argument(None, metavar="[PRIVATE_PORT[/PROTO]]", help="One container port.")):
    """List port mappings or a specific mapping for the container."""
    from ..containers import lifecycle
    from ..network import ports
    doc = lifecycle.inspect(None, container)
    which = None
    if private_port is not None:
        body, _, proto = private_port.partition("/")
        if not (body.isdigit() and 1 <= int(body) <= 65535) or proto not in ("", "tcp", "udp"):
            raise UsageError(f"invalid port {private_port!r}", hint="give PORT or PORT/tcp or PORT/udp")
        which = f"{int(body)}/{proto or 'tcp'}"
    lines = ports.lines(doc["NetworkSettings"].get("Ports"), which)
    if which is not None and not lines:
        raise UsageError(f"no public port '{which}' published for {doc['Name'].lstrip('/')}",
                         hint=f"'sbx port {container}' lists what is published")
    for line in lines:
        typer.echo(line)


def register(app):
    app.command("port")(port)
    from .ps import group
    group(app, "container", "Manage containers.").command("port")(port)
