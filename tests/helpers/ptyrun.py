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


class Terminal:
    """A command started on a fresh pty as its controlling terminal (sized rows x cols), driven
    step by step: write to `master`, read_until what it prints, finish() for its exit code."""

    def __init__(self, argv, *, rows=24, cols=80, cwd=None, env=None):
        import struct
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.termios_before = termios.tcgetattr(self.slave)

        def make_ctty():
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.p = subprocess.Popen(argv, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                  start_new_session=True, preexec_fn=make_ctty, cwd=cwd, env=env, close_fds=True)
        self.out = b""

    def read_until(self, needle: bytes, timeout=20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen; output so far: {self.out!r}")
            if not self._read(min(left, 0.2)) and self.p.poll() is not None and not self._read(0.2):
                raise AssertionError(f"{needle!r} not seen before exit {self.p.returncode}; output: {self.out!r}")
        return self.out

    def _read(self, timeout) -> bool:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:
            return False
        self.out += data
        return bool(data)

    def finish(self, timeout=20.0) -> tuple[int, str]:
        try:
            rc = self.p.wait(timeout=timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()
        while self._read(0.2):
            pass
        return rc, self.out.decode(errors="replace").replace("\r\n", "\n")

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        os.close(self.master)
        os.close(self.slave)
