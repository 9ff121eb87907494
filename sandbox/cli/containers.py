"""Container verbs: they parse and print; containers.lifecycle does the work.  Exit codes are
Docker's: 1 for a container that is missing or in the wrong state (named with its state), 125
for bad input; with several containers each error gets its line and the others are still done.
`sbx container VERB` is the same set of functions."""
import json
from typing import List, Optional

import typer


def _store():
    from ..containers.store import ContainerStore
    return ContainerStore()


def _each(refs, fn, echo=True):
    """Docker's way with several containers: each one's error on its own line, the others
    still done, exit 1 if any failed (a single one: its own code); a success prints the name
    as given."""
    from . import report
    from ..errors import SandboxError
    failed = 0
    for ref in refs:
        try:
            out = fn(ref)
        except SandboxError as e:
            report(e)
            failed = e.exit_code if len(refs) == 1 else 1
            continue
        if echo:
            typer.echo(ref if out is None else out)
    if failed:
        raise typer.Exit(failed)


def _lc():
    from ..containers import lifecycle
    return lifecycle


def create(ctx: typer.Context):
    """Create a new container without starting it; prints its id (see 'sbx create --help')."""
    from .run import main as run_main
    raise typer.Exit(run_main(list(ctx.args), create_only=True))


def rm(containers: List[str] = typer.Argument(..., help="Containers (names or ids)."),
       force: bool = typer.Option(False, "-f", "--force", help="Kill a running container first."),
       volumes: bool = typer.Option(False, "-v", "--volumes",
                                    help="Remove anonymous volumes (sbx makes none: accepted for Docker's scripts).")):
    """Remove containers and their changes."""
    st = _store()
    _each(containers, lambda ref: _lc().remove(st, ref, force=force) and None)


def start(containers: List[str] = typer.Argument(..., help="Containers (names or ids)."),
          attach: bool = typer.Option(False, "-a", "--attach", help="Attach to its output (runs in the foreground)."),
          interactive: bool = typer.Option(False, "-i", "--interactive", help="Attach stdin.")):
    """Start stopped containers, with the changes they made before (in the background unless -a,
    as docker start; a running one is left as it is)."""
    lc = _lc()
    st = _store()
    if not attach:
        _each(containers, lambda ref: lc.start(st, ref) and None)
        return
    if len(containers) > 1:
        from ..errors import UsageError
        raise UsageError("you cannot start and attach multiple containers at once", hint="start them without -a")
    c = st.get(containers[0])
    if c.running:
        raise typer.Exit(_attach(st, c, stdin=interactive, detach_keys=None))
    from ..containers.state import transition
    transition(c, "start")
    tty = bool(c.config.get("Tty"))
    raise typer.Exit(lc.run_foreground(st, c, interactive=interactive or tty, terminal=tty))


def stop(containers: List[str] = typer.Argument(..., help="Containers (names or ids)."),
         timeout: Optional[int] = typer.Option(None, "-t", "--time", "--timeout",
                                               help="Seconds to wait before killing (default: --stop-timeout, "
                                                    "else 10; -1: for ever).")):
    """Stop running containers: their stop signal (--stop-signal, the image's STOPSIGNAL, else
    SIGTERM), then SIGKILL after the timeout.  Restart policies do not start them again."""
    st = _store()
    _each(containers, lambda ref: _lc().stop(st, ref, timeout=timeout) and None)


def kill(containers: List[str] = typer.Argument(..., help="Containers (names or ids)."),
         sig: str = typer.Option("KILL", "-s", "--signal", help="Signal to send (name or number).")):
    """Send a signal to running containers' main process."""
    lc = _lc()
    lc.signal_number(sig)  # a bad signal fails before any container is touched
    st = _store()
    _each(containers, lambda ref: lc.kill(st, ref, sig) and None)


def restart(containers: List[str] = typer.Argument(..., help="Containers (names or ids)."),
            timeout: Optional[int] = typer.Option(None, "-t", "--time", "--timeout",
                                                  help="Seconds to wait for the stop before killing.")):
    """Stop (as 'sbx stop') and start containers again, in the background."""
    st = _store()
    _each(containers, lambda ref: _lc().restart(st, ref, timeout=timeout) and None)


def wait(containers: List[str] = typer.Argument(..., help="Containers (names or ids).")):
    """Block until containers stop; print each one's exit code."""
    st = _store()
    _each(containers, lambda ref: str(_lc().wait(st, ref)))


def rename(container: str = typer.Argument(..., help="Container name or id."),
           new_name: str = typer.Argument(..., help="Its new name.")):
    """Rename a container (running or not)."""
    _lc().rename(_store(), container, new_name)


def pause(containers: List[str] = typer.Argument(..., help="Containers (names or ids).")):
    """Freeze every process of running containers (the cgroup v2 freezer: needs a delegated
    cgroup v2 subtree, refused elsewhere; 'sbx info' says which)."""
    st = _store()
    _each(containers, lambda ref: _lc().pause(st, ref) and None)


def unpause(containers: List[str] = typer.Argument(..., help="Containers (names or ids).")):
    """Thaw paused containers."""
    st = _store()
    _each(containers, lambda ref: _lc().unpause(st, ref) and None)


def attach(container: str = typer.Argument(..., help="Container name or id."),
           no_stdin: bool = typer.Option(False, "--no-stdin", help="Do not attach stdin."),
           detach_keys: Optional[str] = typer.Option(None, "--detach-keys",
                                                     help="Keys that detach, e.g. ctrl-p,ctrl-q (the default).")):
    """Attach to a detached container's terminal (or its output and stdin): Ctrl-P Ctrl-Q
    detaches and leaves it running; exits with its exit code when it ends."""
    from ..errors import UsageError
    keys = b"\x10\x11"
    if detach_keys is not None:
        from ..runtime.process import parse_detach_keys
        try:
            keys = parse_detach_keys(detach_keys)
        except ValueError as e:
            raise UsageError(str(e), hint="e.g. --detach-keys ctrl-p,ctrl-q or ctrl-x") from None
    st = _store()
    rec = st.get(container)
    from ..containers.state import transition
    transition(rec, "attach")
    raise typer.Exit(_attach(st, rec, stdin=not no_stdin, detach_keys=keys))


def _attach(st, rec, stdin, detach_keys):
    """Relay until the container ends (its exit code) or the detach keys (0)."""
    import os
    import sys
    from ..containers import attach as _attach_mod
    from ..errors import UsageError
    if not os.path.exists(rec.path(_attach_mod.SOCK)):
        raise UsageError(f"container {rec.name} runs in the foreground of another sbx process",
                         hint="only containers started in the background (run -d, start) can be attached")
    if rec.config.get("Tty"):
        if stdin and not os.isatty(0):
            raise UsageError("the input device is not a TTY", hint="use --no-stdin, or attach from a terminal")
        ended = _attach_mod.attach_terminal(rec.dir, stdin_fd=0 if stdin else -1, stdout_fd=1,
                                            detach_keys=detach_keys)
    else:
        sys.stdout.flush()
        ended = _attach_mod.attach_streams(rec.dir, stdin_fd=0 if stdin and rec.config.get("OpenStdin") else -1)
    if not ended:
        sys.stderr.write("read escape sequence\n")
        return 0
    return _lc().wait(st, rec.id)


def diff(container: str = typer.Argument(..., help="Container name or id.")):
    """List the changes a container made: A added, C changed, D deleted."""
    from ..containers.files import changes
    for kind, path in changes(_store(), container):
        typer.echo(f"{kind} {path}")


def commit(container: str = typer.Argument(..., help="Container name or id."),
           image: Optional[str] = typer.Argument(None, help="NAME[:TAG] for the new image."),
           change: List[str] = typer.Option([], "-c", "--change", help="Apply a Dockerfile instruction (CMD, ENV, ...)."),
           message: Optional[str] = typer.Option(None, "-m", "--message", help="Commit message."),
           author: Optional[str] = typer.Option(None, "-a", "--author", help="Author.")):
    """Make a new image from a container's changes."""
    from ..containers.commit import commit_container
    c = _store().get(container)
    if c.running:
        from ..errors import UsageError
        raise UsageError(f"container {c.name} is running", hint="commit it after it exits")
    img = commit_container(c, image, message=message, author=author, changes=change)
    typer.echo(img.id)


def logs(container: str = typer.Argument(..., help="Container name or id."),
         follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing output while it runs."),
         tail: str = typer.Option("all", "-n", "--tail", help="Only the last N lines ('all': every line)."),
         since: Optional[str] = typer.Option(None, "--since",
                                             help="Output since a time: RFC 3339, unix time, or a duration ago (10m)."),
         until: Optional[str] = typer.Option(None, "--until", help="Output until a time (as --since)."),
         timestamps: bool = typer.Option(False, "-t", "--timestamps", help="Show each line's timestamp.")):
    """Print a container's output, stdout and stderr in the order written (its stdout to
    stdout, its stderr to stderr; a tty's all on stdout).  Every run is logged, as Docker's:
    in the background (run -d, start) and in the foreground (run, start -a), whose output
    also went to the terminal.  Only a foreground run with --rm, removed when it ends, is not."""
    import sys
    import time as _time
    from ..containers import logs as _logs
    from ..errors import UsageError
    n = None
    if tail != "all":
        if not tail.lstrip("-").isdigit():
            raise UsageError(f"invalid value for --tail: {tail!r}", hint="give a number of lines, or 'all'")
        n = int(tail)
    now = _time.time()
    try:
        t_since = _logs.parse_time_arg(since, now, "--since") if since else None
        t_until = _logs.parse_time_arg(until, now, "--until") if until else None
    except ValueError as e:
        raise UsageError(str(e), hint="e.g. 2026-11-30T17:00:00Z, 1764522000, or 10m / 1h30m") from None
    st = _store()
    c = st.get(container)
    outs = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    for stream, ts, data in _logs.read(c.path(_logs.LOG), tail=n, since=t_since, until=t_until, follow=follow,
                                       running=c.supervised):
        out = outs.get(stream, sys.stdout.buffer)
        if timestamps:
            out.write(ts.encode() + b" ")
        out.write(data)
        if follow:
            out.flush()


def inspect(containers: List[str] = typer.Argument(..., help="Containers (names or ids)."),
            fmt: Optional[str] = typer.Option(None, "--format", "-f", help="Template, e.g. '{{.State.Status}}'.")):
    """Show containers' details as JSON (Docker's shape: State, Config, HostConfig, Mounts, ...)."""
    from . import format as _format
    st = _store()
    _format.show_each(containers, lambda ref: _lc().inspect(st, ref), fmt)


_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
VERBS = ("logs", "stop", "kill", "diff", "commit", "rm", "start", "restart", "wait", "rename", "pause",
         "unpause", "attach")


def register(app):  # ps, ls, list: cli/ps.py; cp, export, top, prune: cli/files.py
    app.command("create", context_settings=_PASSTHROUGH)(create)
    for verb in VERBS:
        app.command(verb)(globals()[verb])
    # `sbx container VERB`: the same functions (Docker's management command).
    group = typer.Typer(no_args_is_help=True, help="Manage containers.")
    group.command("create", context_settings=_PASSTHROUGH)(create)
    for verb in VERBS:
        group.command(verb)(globals()[verb])
    group.command("inspect")(inspect)

    @group.command("run", context_settings=_PASSTHROUGH)
    def run(ctx: typer.Context):
        """Run a command in a new container (see 'sbx run --help')."""
        from .run import main as run_main
        raise typer.Exit(run_main(list(ctx.args)))

    @group.command("exec", context_settings=_PASSTHROUGH)
    def exec_(ctx: typer.Context):
        """Run a command in a running container (see 'sbx exec --help')."""
        from .run import exec_main
        raise typer.Exit(exec_main(list(ctx.args)))
    app.add_typer(group, name="container")
