"""`sbx run`: parse, build the runtime spec, launch, wait (forwarding signals), exit with the
command's status.  Imports only what this path needs: startup time is measured."""
import os
import sys

from ..errors import UsageError
from ..runtime import launch, spec as _spec
from . import runopts

FORWARD = (1, 2, 3, 10, 12, 15)  # SIGHUP SIGINT SIGQUIT SIGUSR1 SIGUSR2 SIGTERM


def exit_code(status):
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 125


def main(argv):
    opts, cmd = runopts.parse(argv)
    if opts["help"]:
        sys.stdout.write(runopts.help_text())
        return 0
    if not cmd and not (opts["rootfs"] is not None and opts["entrypoint"]):
        raise UsageError("'sbx run' requires at least 1 argument", hint=runopts.USAGE)
    # Everything the user typed is checked before anything is pulled or started.
    env = runopts.parse_env(opts, os.environ)
    security = runopts.security_opts(opts)
    hostname = runopts.hostname(opts)
    user = runopts.user(opts)
    group_add = runopts.group_add(opts)
    image = None
    if opts["rootfs"] is None:
        from ..runtime import image_root
        ref, cmd = cmd[0], cmd[1:]
        policy = opts["pull"] or "missing"
        image = image_root.prepare(ref, pull=policy, platform=opts["platform"],
                                   userns=opts["userns"], progress=_pull_progress(ref, policy), warn=_warn)
        image_root.hold(image.image_id)  # until sbx exits: rmi refuses a running image
    elif opts["entrypoint"] is not None:
        # As with an image (Docker's rule): the process is ENTRYPOINT followed by the command.
        cmd = ([opts["entrypoint"]] if opts["entrypoint"] else []) + cmd
    tty = bool(opts["tty"])
    if opts["detach"] and (tty or opts["interactive"]):
        raise UsageError("-d with -i or -t is not supported yet", hint="drop -i/-t; use 'sbx logs' to read the output")
    if tty and opts["interactive"] and not os.isatty(0):
        raise UsageError("the input device is not a TTY", hint="drop -t, or run from a terminal")
    spec = _spec.build(
        cmd, rootfs=opts["rootfs"], image=image, entrypoint=opts["entrypoint"] if image else None,
        env=env, cwd=opts["workdir"], user=user, volumes=opts["volume"], tmpfs=opts["tmpfs"],
        network=opts["network"] or "none", hostname=hostname, read_only=opts["read_only"],
        init=opts["init"], userns=opts["userns"], cap_add=opts["cap_add"], cap_drop=opts["cap_drop"],
        no_new_privileges=security["no_new_privileges"], ulimits=opts["ulimit"],
        group_add=group_add, terminal=tty, container_id=os.urandom(32).hex(),
        seccomp=security["seccomp"])
    claim = None
    if opts["name"] is not None:
        from ..runtime import names
        claim = names.claim(opts["name"], spec["sbx"]["id"])
    try:
        if opts["rm"] and not opts["detach"]:
            started = None if claim is None else (lambda pid: claim.started(spec, pid))
            return _run(spec, opts, tty, on_start=started)
        # Without --rm the container is kept: its changes go to a persistent upper directory.
        # A detached one is kept while it runs (logs, stop, exec find it), removed after if --rm.
        from ..runtime import containers
        store = containers.Store()
        if claim is not None and opts["detach"]:
            claim.release()  # the container's record holds the name from here
            claim = None
        c = store.create(spec, opts["name"], image.ref if image else None, cmd)
        if opts["detach"]:
            from . import detach
            return detach.start(store, c, remove=bool(opts["rm"]))
        return run_container(store, c, opts, tty)
    finally:
        if claim is not None:
            claim.release()


def run_container(store, c, opts, tty):
    """Run a stored container in the foreground, recording its state."""
    held = []
    code = 125
    try:
        code = _run(c.spec, opts, tty, on_start=lambda pid: held.append(store.mark_running(c, pid)))
        return code
    finally:
        if held:
            store.mark_exited(c, code)
            os.close(held[0])


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
    pid, cspec = _find_running(rest[0])
    tty = bool(opts["tty"])
    spec = _spec.build_exec(cspec, pid, rest[1:], env=runopts.parse_env(opts, os.environ),
                            cwd=opts["workdir"], user=runopts.user(opts), terminal=tty)
    return _run(spec, opts, tty)


def _find_running(ref):
    from ..runtime import containers, names
    hit = names.running(ref)
    if hit is not None:
        return hit
    c = containers.Store().get(ref)
    if not c.running():
        raise UsageError(f"container {c.name} is not running", hint=f"start it with 'sbx start -a {c.name}'")
    return c.doc["State"]["Pid"], c.spec


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


def _run(spec, opts, tty, on_start=None):
    if tty:
        from . import tty as _tty
        return _tty.run_with_pty(spec, interactive=bool(opts["interactive"]), on_start=on_start)

    # Hold the forwarded signals from here on: one arriving between launch and wait would
    # otherwise kill sbx instead of reaching the sandbox.  wait_forward takes them.
    import _signal
    _signal.pthread_sigmask(_signal.SIG_BLOCK, FORWARD)
    devnull = -1
    if not opts["interactive"]:
        devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        pid, pidfd = launch.start(spec, stdio=(devnull, -1, -1))
    finally:
        if devnull >= 0:
            os.close(devnull)
    if on_start is not None:
        on_start(pid)
    from .. import _native
    status = _native.wait_forward(pid, FORWARD)
    if pidfd >= 0:
        os.close(pidfd)
    return exit_code(status)
