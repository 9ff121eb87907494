"""Container verbs: ps, rm, start (containers kept by `sbx run` without --rm)."""
import json
import time
from typing import List, Optional

import typer


def _store():
    from ..containers.store import ContainerStore
    return ContainerStore()


# `ps --format` fields and their table headers (Docker's names).
PS_FIELDS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
             "RunningFor": "CREATED", "Status": "STATUS", "State": "STATE", "Names": "NAMES", "Ports": "PORTS",
             "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS"}


def ps(all_: bool = typer.Option(False, "-a", "--all", help="Show all containers (default: running ones)."),
       quiet: bool = typer.Option(False, "-q", "--quiet", help="Only print container ids."),
       no_trunc: bool = typer.Option(False, "--no-trunc", help="Do not truncate ids and commands."),
       fmt: Optional[str] = typer.Option(None, "--format",
                                         help="'json' (one object per line), or a Go template: "
                                              "'{{.Names}}', 'table {{.ID}}\\t{{.Status}}', '{{json .}}'.")):
    """List containers."""
    from . import format as _format
    from ..containers.state import ago as _ago, parse_time
    template = None if fmt == "json" else _format.compile(fmt, PS_FIELDS)  # a bad template fails first
    now = time.time()
    rows = []
    for c in _store().list():
        running = c.running
        if not all_ and not running:
            continue
        cmd = " ".join(c.config.get("Cmd") or c.spec["process"]["args"])
        created = parse_time(c.doc.get("Created")) or now
        rows.append({"ID": c.id, "Image": c.doc.get("Image", ""), "Command": cmd, "Created": created,
                     "Status": c.status_text(now), "Names": c.name, "Running": running,
                     "State": c.status})
    if quiet:
        for r in rows:
            typer.echo(r["ID"] if no_trunc else r["ID"][:12])
        return
    if fmt == "json":
        for r in rows:
            typer.echo(json.dumps({"ID": r["ID"], "Image": r["Image"], "Command": r["Command"],
                                   "CreatedAt": r["Created"], "Status": r["Status"], "Names": r["Names"]}))
        return
    shown = []
    for r in rows:
        cmd = r["Command"] if no_trunc or len(r["Command"]) <= 20 else r["Command"][:19] + "…"
        shown.append({"ID": r["ID"] if no_trunc else r["ID"][:12], "Image": r["Image"], "Command": f'"{cmd}"',
                      "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(r["Created"])),
                      "RunningFor": f"{_ago(now - r['Created'])} ago", "Status": r["Status"],
                      "State": r["State"],
                      "Names": r["Names"], "Ports": "", "Labels": "", "Mounts": "", "Networks": ""})
    if template is None:
        template = _format.Template("table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}",
                                    PS_FIELDS)
    for line in template.render(shown):
        typer.echo(line)


def _each(refs, fn):
    """Docker's way with several containers: each one's error on its own line, the others
    still done, exit 1 if any failed; a success prints the name as given."""
    from . import report
    from ..errors import SandboxError
    failed = 0
    for ref in refs:
        try:
            fn(ref)
        except SandboxError as e:
            report(e)
            failed = e.exit_code if len(refs) == 1 else 1
            continue
        typer.echo(ref)
    if failed:
        raise typer.Exit(failed)


def rm(containers: List[str] = typer.Argument(..., help="Containers (names or ids)."),
       force: bool = typer.Option(False, "-f", "--force", help="Kill a running container first.")):
    """Remove containers and their changes."""
    from ..containers import lifecycle
    st = _store()
    _each(containers, lambda ref: lifecycle.remove(st, ref, force=force))


def start(container: str = typer.Argument(..., help="Container name or id."),
          attach: bool = typer.Option(False, "-a", "--attach", help="Attach to its output (runs in the foreground)."),
          interactive: bool = typer.Option(False, "-i", "--interactive", help="Attach stdin.")):
    """Run a stopped container again, with the changes it made before (in the background
    unless -a, as docker start)."""
    st = _store()
    c = st.get(container)
    if c.running:
        typer.echo(container)  # Docker: starting a running container is a no-op
        return
    from ..containers.state import transition
    transition(c, "start")
    tty = bool(c.spec["process"].get("terminal"))
    if not attach:
        if tty or interactive:
            from ..errors import UsageError
            raise UsageError("starting a terminal container in the background is not supported yet",
                             hint=f"use 'sbx start -a {c.name}'")
        from .detach import start as start_detached
        raise typer.Exit(start_detached(st, c, restart=True) or 0)
    from .run import run_container
    raise typer.Exit(run_container(st, c, {"interactive": interactive or tty}, tty))


def diff(container: str = typer.Argument(..., help="Container name or id.")):
    """List the changes a container made: A added, C changed, D deleted."""
    from ..image.layer import changes
    c = _store().get(container)
    for kind, path in changes(c.upper, c.spec["sbx"]["lowers"]):
        typer.echo(f"{kind} {path}")


def commit(container: str = typer.Argument(..., help="Container name or id."),
           image: Optional[str] = typer.Argument(None, help="NAME[:TAG] for the new image."),
           change: List[str] = typer.Option([], "-c", "--change", help="Apply a Dockerfile instruction (CMD, ENV, ...)."),
           message: Optional[str] = typer.Option(None, "-m", "--message", help="Commit message."),
           author: Optional[str] = typer.Option(None, "-a", "--author", help="Author.")):
    """Make a new image from a container's changes."""
    from ..image.commit import commit_container
    c = _store().get(container)
    if c.running:
        from ..errors import UsageError
        raise UsageError(f"container {c.name} is running", hint="commit it after it exits")
    img = commit_container(c, image, message=message, author=author, changes=change)
    typer.echo(img.id)


def logs(container: str = typer.Argument(..., help="Container name or id."),
         follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing output while it runs.")):
    """Print a detached container's output (stdout and stderr)."""
    import os
    import sys
    from .detach import log_paths
    c = _store().get(container)
    paths = log_paths(c)
    if not any(os.path.exists(p) for p in paths):
        from ..errors import UsageError
        raise UsageError(f"container {c.name} has no logs", hint="only containers started with 'sbx run -d' have them")
    files = [open(p, "rb") if os.path.exists(p) else None for p in paths]
    outs = (sys.stdout.buffer, sys.stderr.buffer)
    try:
        while True:
            for f, out in zip(files, outs):
                if f is not None:
                    data = f.read()
                    if data:
                        out.write(data)
                        out.flush()
            if not follow or not c.supervised():
                if follow:  # what it wrote while stopping
                    for f, out in zip(files, outs):
                        if f is not None:
                            out.write(f.read())
                break
            time.sleep(0.1)
    finally:
        for f in files:
            if f is not None:
                f.close()


def stop(containers: List[str] = typer.Argument(..., help="Containers (names or ids)."),
         timeout: Optional[int] = typer.Option(None, "-t", "--time",
                                               help="Seconds to wait before killing (default: --stop-timeout, else 10).")):
    """Stop running containers: SIGTERM (or the image's STOPSIGNAL), then SIGKILL after -t seconds."""
    from ..containers import lifecycle
    st = _store()
    _each(containers, lambda ref: lifecycle.stop(st, ref, timeout=timeout))


def kill(containers: List[str] = typer.Argument(..., help="Containers (names or ids)."),
         sig: str = typer.Option("KILL", "-s", "--signal", help="Signal to send (name or number).")):
    """Send a signal to running containers' main process."""
    from ..containers import lifecycle
    lifecycle.signal_number(sig)  # a bad signal fails before any container is touched
    st = _store()
    _each(containers, lambda ref: lifecycle.kill(st, ref, sig))


def register(app):
    app.command("logs")(logs)
    app.command("stop")(stop)
    app.command("kill")(kill)
    app.command("diff")(diff)
    app.command("commit")(commit)
    app.command("ps")(ps)
    app.command("rm")(rm)
    app.command("start")(start)
