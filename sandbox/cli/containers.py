"""Container verbs: ps, rm, start (containers kept by `sbx run` without --rm)."""
import json
import time
from typing import List, Optional

import typer


def _store():
    from ..runtime.containers import Store
    return Store()


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
    from ..runtime.containers import _ago
    template = None if fmt == "json" else _format.compile(fmt, PS_FIELDS)  # a bad template fails first
    now = time.time()
    rows = []
    for c in _store().list():
        running = c.running()
        if not all_ and not running:
            continue
        cmd = " ".join(c.doc.get("Command") or c.spec["process"]["args"])
        created = c.doc.get("Created") or now
        rows.append({"ID": c.id, "Image": c.doc.get("Image", ""), "Command": cmd, "Created": created,
                     "Status": c.status(now), "Names": c.name, "Running": running})
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
                      "State": "running" if r["Running"] else ("created" if r["Status"] == "Created" else "exited"),
                      "Names": r["Names"], "Ports": "", "Labels": "", "Mounts": "", "Networks": ""})
    if template is None:
        template = _format.Template("table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}",
                                    PS_FIELDS)
    for line in template.render(shown):
        typer.echo(line)


def rm(containers: List[str] = typer.Argument(..., help="Containers (names or ids)."),
       force: bool = typer.Option(False, "-f", "--force", help="Kill a running container first.")):
    """Remove containers and their changes."""
    st = _store()
    for ref in containers:
        c = st.get(ref)
        st.remove(c, force=force)
        typer.echo(ref)


def start(container: str = typer.Argument(..., help="Container name or id."),
          attach: bool = typer.Option(False, "-a", "--attach", help="Attach to its output (runs in the foreground)."),
          interactive: bool = typer.Option(False, "-i", "--interactive", help="Attach stdin.")):
    """Run a stopped container again, with the changes it made before (in the background
    unless -a, as docker start)."""
    st = _store()
    c = st.get(container)
    if c.running():
        from ..errors import UsageError
        raise UsageError(f"container {c.name} is already running")
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
    if c.running():
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
            if not follow or not c.running():
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
         timeout: int = typer.Option(10, "-t", "--time", help="Seconds to wait before killing.")):
    """Stop running containers: SIGTERM (or the image's STOPSIGNAL), then SIGKILL after -t seconds."""
    import os
    import signal
    st = _store()
    for ref in containers:
        c = st.get(ref)
        if c.running():
            sig = _signal_number(((c.doc.get("Spec") or {}).get("sbx") or {}).get("stop_signal") or "SIGTERM")
            pid = c.doc["State"]["Pid"]
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while c.running() and time.monotonic() < deadline:
                time.sleep(0.05)
            if c.running():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                while c.running():
                    time.sleep(0.05)
        typer.echo(ref)


def kill(containers: List[str] = typer.Argument(..., help="Containers (names or ids)."),
         sig: str = typer.Option("KILL", "-s", "--signal", help="Signal to send (name or number).")):
    """Send a signal to running containers' main process."""
    import os
    from ..errors import UsageError
    st = _store()
    n = _signal_number(sig)
    for ref in containers:
        c = st.get(ref)
        if not c.running():
            raise UsageError(f"container {c.name} is not running")
        os.kill(c.doc["State"]["Pid"], n)
        typer.echo(ref)


def _signal_number(sig):
    import signal
    from ..errors import UsageError
    s = str(sig).upper()
    if s.isdigit():
        n = int(s)
    else:
        s = s if s.startswith("SIG") else "SIG" + s
        n = getattr(signal, s, None)
        if not isinstance(n, signal.Signals):  # also refuses SIG_IGN, SIGRTMIN and the like
            raise UsageError(f"invalid signal {sig!r}", hint="give a name such as TERM or KILL, or a number")
    if not 1 <= n <= signal.SIGRTMAX:
        raise UsageError(f"invalid signal {sig!r}", hint=f"signal numbers are 1 to {int(signal.SIGRTMAX)}")
    return int(n)


def register(app):
    app.command("logs")(logs)
    app.command("stop")(stop)
    app.command("kill")(kill)
    app.command("diff")(diff)
    app.command("commit")(commit)
    app.command("ps")(ps)
    app.command("rm")(rm)
    app.command("start")(start)
