"""Hooks of a two-phase launch (launch.create): work done for a sandbox's process after clone()
and before it mounts anything or execs (docs/engine.md, "Two-phase launch").

A hook is any object with
    name: str                 named in the error when attach fails
    attach(pid) -> None       runs while the child is held: it exists, is in its new namespaces
                              (/proc/PID/ns/*) with its id maps written, and has run nothing of
                              the sandbox yet.  Raising aborts the launch: the child is killed and
                              reaped, the hooks attached so far (this one included) are torn down.
    teardown() -> None        undoes attach; idempotent, and attach may be called again after it
                              (a launch retried with fuse-overlayfs attaches its hooks to the new
                              child).  The owner of the sandbox calls Launch.teardown() once it
                              has exited.
Hook points of later issues: network (start slirp4netns/pasta for the pid), cgroup (write the
pid to a leaf's cgroup.procs), OCI createRuntime/createContainer hooks.

`Hook` below is the protocol written as a base class (subclassing it is optional); this module
stays free of `typing`, which imports `re`, so a launcher with hooks starts as fast as one
without.
"""
import os


class Hook:
    """The hook protocol: `name`, `attach(pid)`, `teardown()`."""
    name = "hook"

    def attach(self, pid):
        raise NotImplementedError

    def teardown(self):
        raise NotImplementedError


class PidFile(Hook):
    """Write the sandbox's pid to `path` while it is held (as podman's --conmon-pidfile and
    Docker's --cidfile): whoever watches the file learns the pid before the command runs.
    Written whole (temporary file + rename); teardown removes it."""
    name = "pidfile"

    def __init__(self, path):
        self.path = os.fspath(path)
        self._written = False

    def attach(self, pid):
        tmp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, f"{pid}\n".encode())
        finally:
            os.close(fd)
        os.rename(tmp, self.path)
        self._written = True

    def teardown(self):
        if self._written:
            self._written = False
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
