"""`sbx run`: parse, build the runtime spec, launch, wait (forwarding signals), exit with the
command's status.  Imports only what this path needs: startup time is measured."""
import os
import sys

from ..errors import UsageError
from . import runopts


def main(argv, create_only=False):
    """`sbx run` (and `sbx create` with create_only: the container is made, not started)."""
    opts, cmd = runopts.parse(argv)
    verb = "create" if create_only else "run"
    if opts["help"]:
        text = runopts.help_text()
        sys.stdout.write(text.replace("sbx run", "sbx create", 1).replace(
            "Run a command in a new rootless sandbox.", "Create a new container (start it with 'sbx start').")
            if create_only else text)
        return 0
    if not cmd and not (opts["rootfs"] is not None and opts["entrypoint"]):
        raise UsageError(f"'sbx {verb}' requires at least 1 argument", hint=runopts.USAGE.replace("run", verb, 1))
    # Everything the user typed is checked before anything is pulled or started.
    o = runopts.to_options(opts, cmd, os.environ, warn=_warn)
    detach = o.detach or create_only
    if o.restart.name != "no":
        if o.auto_remove:
            raise UsageError("Conflicting options: --restart and --rm",
                             hint="a container removed when it exits cannot be restarted: drop one of them")
        if not detach:
            raise UsageError(f"--restart {o.restart} needs -d",
                             hint="the background monitor carries out restart policies: add -d, then 'sbx logs -f'")
    tty = o.terminal
    if tty and o.interactive and not detach and not os.isatty(0):
        raise UsageError("the input device is not a TTY", hint="drop -t, or run from a terminal")
    image = None
    if o.image is not None:
        from ..runtime import image_root
        image = image_root.prepare(o.image, pull=o.pull, platform=o.platform,
                                   userns=o.userns, progress=_pull_progress(o.image, o.pull), warn=_warn)
        if not detach:
            image_root.hold(image.image_id)  # until sbx exits: rmi refuses a running image
    # Every run is a container (docs/engine.md): `ps` shows it, stop/exec/inspect find it.
    from ..containers import lifecycle
    store = lifecycle.store()
    rec = lifecycle.create(store, o, image=image, foreground=not detach)
    if create_only:
        sys.stdout.write(rec.id + "\n")
        return 0
    if detach:
        lifecycle.run_detached(store, rec)
        sys.stdout.write(rec.id + "\n")
        return 0
    return lifecycle.run_foreground(store, rec, o.interactive, tty)


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
    from ..containers import lifecycle
    from ..runtime import process
    if x.terminal:
        p = lifecycle.exec(None, rest[0], x, console_size=process.terminal_size(0))
        try:
            return p.relay_pty(stdin_fd=0 if x.interactive else -1, stdout_fd=1, detach_keys=None)
        finally:
            p.close()
    devnull = -1 if x.interactive else os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        p = lifecycle.exec(None, rest[0], x, stdio=(devnull, -1, -1))
    finally:
        if devnull >= 0:
            os.close(devnull)
    try:
        return p.wait()
    finally:
        p.close()


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
