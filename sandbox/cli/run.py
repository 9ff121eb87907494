"""`sbx run`: parse, build the runtime spec, launch, wait (forwarding signals), exit with the
command's status.  Imports only what this path needs: startup time is measured."""
import os
import sys

from ..errors import UsageError
from ..runtime import process, spec as _spec
from ..runtime.process import SandboxProcess
from . import runopts


def main(argv):
    opts, cmd = runopts.parse(argv)
    if opts["help"]:
        sys.stdout.write(runopts.help_text())
        return 0
    if not cmd and not (opts["rootfs"] is not None and opts["entrypoint"]):
        raise UsageError("'sbx run' requires at least 1 argument", hint=runopts.USAGE)
    # Everything the user typed is checked before anything is pulled or started.
    o = runopts.to_options(opts, cmd, os.environ)
    if o.restart.name != "no":
        raise UsageError(f"--restart {o.restart} is not supported yet",
                         hint="drop --restart (or use --restart no); restart policies come with the container engine")
    image = None
    if o.image is not None:
        from ..runtime import image_root
        image = image_root.prepare(o.image, pull=o.pull, platform=o.platform,
                                   userns=o.userns, progress=_pull_progress(o.image, o.pull), warn=_warn)
        image_root.hold(image.image_id)  # until sbx exits: rmi refuses a running image
        cmd = list(o.argv)
    elif o.entrypoint is not None:
        # As with an image (Docker's rule): the process is ENTRYPOINT followed by the command.
        cmd = ([o.entrypoint] if o.entrypoint else []) + list(o.argv)
    tty = o.terminal
    if o.detach and (tty or o.interactive):
        raise UsageError("-d with -i or -t is not supported yet", hint="drop -i/-t; use 'sbx logs' to read the output")
    if tty and o.interactive and not os.isatty(0):
        raise UsageError("the input device is not a TTY", hint="drop -t, or run from a terminal")
    spec = _spec.from_options(o, image=image, container_id=os.urandom(32).hex())
    # Every run is a container (docs/engine.md): `ps` shows it, stop/exec/inspect find it.
    from ..containers import lifecycle
    from ..containers.state import ContainerError
    store = lifecycle.store()
    try:
        rec = lifecycle.new_container(store, spec, name=o.name, image=image.ref if image else None, command=cmd,
                                      auto_remove=o.auto_remove, foreground=not o.detach, labels=o.labels,
                                      restart=(o.restart.name, o.restart.max_retries), stop_signal=o.stop_signal,
                                      stop_timeout=o.stop_timeout, open_stdin=o.interactive)
    except ContainerError as e:
        e.exit_code = 125  # docker run's code for everything before the command runs
        raise
    if o.detach:
        from . import detach
        return detach.start(store, rec)
    return run_container(store, rec, o.interactive, tty)


def run_container(store, rec, interactive, tty):
    """Run a stored container in the foreground, recording its state."""
    from ..containers import lifecycle
    from ..errors import SandboxError
    private = rec.auto_remove  # a foreground --rm run: no fsync, removed at the end
    sup = lifecycle.Supervision(store, rec, sync=not private)
    try:
        try:
            code = _run(rec.spec, interactive, tty, on_start=sup.started)
        except SandboxError as e:
            if not private:
                sup.exited(e.exit_code, error=str(e))
            raise
        if not private:
            sup.exited(code)
        return code
    finally:
        sup.release()


EXEC_OPTIONS = {"env", "env_file", "workdir", "user", "interactive", "tty", "help"}


def exec_main(argv):
    """`sbx exec [OPTIONS] CONTAINER CMD [ARG...]`: one more process in a running sandbox."""
    opts, rest = runopts.parse(argv)
    if opts["help"]:
        sys.stdout.write("Usage: sbx exec [OPTIONS] CONTAINER COMMAND [ARG...]\n\n"
                         "Options: -e/--env, --env-file, -w/--workdir, -u/--user, -i, -t\n")
        return 0
    used = {k for k, v in opts.items() if v not in (None, [], False)}
    if used - EXEC_OPTIONS:
        raise UsageError(f"'sbx exec' does not take --{sorted(used - EXEC_OPTIONS)[0].replace('_', '-')}")
    if len(rest) < 2:
        raise UsageError("'sbx exec' requires at least 2 arguments", hint="sbx exec [OPTIONS] CONTAINER CMD [ARG...]")
    from ..runtime.options import ExecOptions
    x = ExecOptions(argv=tuple(rest[1:]), env=tuple(runopts.parse_env(opts, os.environ)), cwd=opts["workdir"],
                    user=runopts.user(opts), terminal=bool(opts["tty"]), interactive=bool(opts["interactive"]))
    pid, cspec = _find_running(rest[0])
    spec = _spec.build_exec(cspec, pid, list(x.argv), env=list(x.env), cwd=x.cwd, user=x.user, terminal=x.terminal)
    return _run(spec, x.interactive, x.terminal)


def _find_running(ref):
    from ..containers import lifecycle, state
    rec = lifecycle.store().get(ref)
    state.transition(rec, "exec")
    return rec.state["Pid"], rec.spec


def _warn(msg):
    sys.stderr.write(f"sbx: warning: {msg}\n")


def _pull_progress(ref, policy):
    """A missing image is pulled first, reported on stderr (stdout is the command's).  Under
    the default policy a pull means the image was not in the store (Docker's words)."""
    def progress(event, digest, amount=0, total=None):
        if event == "resolved":
            sys.stderr.write(f"Unable to find image '{ref}' locally\n" if policy == "missing" else f"Pulling {ref}\n")
        elif event in ("downloaded", "exists"):
            sys.stderr.write(f"{digest[7:19]}: {'Pull complete' if event == 'downloaded' else 'Already exists'}\n")
        elif event == "done":
            sys.stderr.write(f"Digest: {digest}\n")
    return progress


def _run(spec, interactive, tty, on_start=None):
    """Launch in the foreground and supervise to the end; returns Docker's exit code."""
    if tty:
        p = SandboxProcess.launch(spec, terminal=True, console_size=process.terminal_size(0))
        try:
            if on_start is not None:
                on_start(p.pid)
            # No detach keys: a foreground sandbox has no other supervisor to detach to.
            return p.relay_pty(stdin_fd=0 if interactive else -1, stdout_fd=1, detach_keys=None)
        finally:
            p.close()
    devnull = -1
    if not interactive:
        devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        # The forwarded signals are held from before the launch (launch's default): one that
        # arrives meanwhile reaches the sandbox instead of killing sbx.
        p = SandboxProcess.launch(spec, stdio=(devnull, -1, -1))
    finally:
        if devnull >= 0:
            os.close(devnull)
    try:
        if on_start is not None:
            on_start(p.pid)
        return p.wait()
    finally:
        p.close()
