"""`sbx run -d`: a monitor process runs the container in the background.

The sbx process forks a monitor (new session, double fork, so it is nobody's child in the
caller's shell); the monitor launches the container with its stdout and stderr going to
log files beside the container, holds the container's running lock, waits for it, records
its exit status and removes it afterwards with --rm.  The foreground process prints the
container id once the monitor reports a successful launch (or the launch error) and exits.
`sbx logs`, `sbx stop`, `sbx kill`, `sbx exec` and `sbx ps` work from the records."""
import os
import sys

from ..errors import SandboxError


def log_paths(c):
    return os.path.join(c.dir, "stdout.log"), os.path.join(c.dir, "stderr.log")


def start(store, c, restart=False):
    """Run container `c` in the background; prints its id once it is up.  A `restart` (docker
    start) prints its name instead, and a failed launch keeps it: it existed before."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the intermediate: new session, fork the monitor, leave
        os.close(r)
        try:
            os.setsid()
            if os.fork() == 0:
                _monitor(store, c, w)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        reply = f.read()
    if not reply.startswith("ok"):
        msg, _, hint = reply.partition("\n")
        if not restart:
            store.remove_dir(c)  # a new container that never ran
        raise SandboxError(msg or "the background monitor failed", hint=hint or None)
    sys.stdout.write((c.name if restart else c.id) + "\n")
    return 0


def _monitor(store, c, report_fd):
    from .. import _native
    from ..containers.lifecycle import Supervision
    from ..runtime import launch
    code = 125
    try:
        out_path, err_path = log_paths(c)
        out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        try:
            sup = Supervision(store, c)
            pid, pidfd = launch.start(c.spec, stdio=(null, out, err))
        except SandboxError as e:
            os.write(report_fd, f"{e}\n{e.hint or ''}".encode())
            os._exit(1)
        sup.started(pid)
        os.write(report_fd, b"ok")
        os.close(report_fd)
        for fd in (out, err, null):
            os.close(fd)
        status = _native.wait_forward(pid, ())
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
        sup.exited(code)
        if pidfd >= 0:
            os.close(pidfd)
        sup.release()
    except BaseException:
        pass
    os._exit(0)
