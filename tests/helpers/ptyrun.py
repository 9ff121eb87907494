"""Run a command with a pty as stdin/stdout/stderr (its controlling terminal), as a shell
would start it, and collect everything it writes: progress shown only on a terminal is
tested this way.  Optionally stdout or stderr goes to a pipe instead."""
from __future__ import annotations

import fcntl
import os
import select
import subprocess
import termios
import time


def run(argv, *, env=None, cwd=None, timeout=120.0, stdout_pipe=False, stderr_pipe=False):
    """Run argv to its end; return (exit code, what the terminal got, what the pipe got)."""
    master, slave = os.openpty()
    rfd = wfd = -1
    if stdout_pipe or stderr_pipe:
        rfd, wfd = os.pipe()

    def make_ctty():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        p = subprocess.Popen(argv, stdin=slave, stdout=wfd if stdout_pipe else slave,
                             stderr=wfd if stderr_pipe else slave, start_new_session=True,
                             preexec_fn=make_ctty, env=env, cwd=cwd, close_fds=True)
    finally:
        os.close(slave)
        if wfd >= 0:
            os.close(wfd)
    term, piped = b"", b""
    fds = [master] + ([rfd] if rfd >= 0 else [])
    deadline = time.monotonic() + timeout
    try:
        while fds:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{argv} did not finish in {timeout}s; terminal: {term!r}")
            r, _, _ = select.select(fds, [], [], min(left, 0.5))
            for fd in r:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the pty's last user closed it
                    data = b""
                if not data:
                    fds.remove(fd)
                elif fd == master:
                    term += data
                else:
                    piped += data
        rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
        if rfd >= 0:
            os.close(rfd)
    return rc, term.decode(errors="replace"), piped.decode(errors="replace")
