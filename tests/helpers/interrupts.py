"""Interrupt an sbx command as a terminal's Ctrl-C does, and find what it left running.

The command starts in a process group (and, with tty=True, a session with a pty as its
controlling terminal) of its own.  Ctrl-C is SIGINT to that process group (with a pty: the
byte ^C written to the terminal, so the kernel's line discipline sends it).  What the command
started is known from a snapshot taken just before the interrupt: its descendants (sandboxes
and workers run in sessions of their own) and the processes whose command line holds one of the
given markers; afterwards none of them may exist, not even as a zombie left to init."""
from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import termios
import time


def _table():
    t = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        t[int(d)] = (fields[0], int(fields[1]), int(fields[2]), int(fields[3]), cmd)
    return t


class Interrupted:
    def __init__(self, argv, *, env=None, cwd=None, tty=False, markers=()):
        self.markers = tuple(markers)
        self.out = b""
        self.master = -1
        if tty:
            self.master, slave = os.openpty()

            def make_ctty():
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

            self.p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                      preexec_fn=make_ctty, env=env, cwd=cwd, close_fds=True)
            os.close(slave)
            self.fd = self.master
        else:
            self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, process_group=0, env=env, cwd=cwd)
            self.fd = self.p.stdout.fileno()
        self.started = set()

    def _read(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            data = b""
        self.out += data
        return bool(data)

    def wait_for(self, needle: bytes, timeout=120.0):
        deadline = time.monotonic() + timeout
        while needle not in self.out:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} not seen in {timeout}s; output: {self.out[-2000:]!r}"
            if not self._read(min(left, 0.2)):
                raise AssertionError(f"{needle!r} not seen before the output ended (exit {self.p.poll()}): "
                                     f"{self.out[-2000:]!r}")

    def family(self):
        """The command's process, its descendants, its group's and session's members, and the
        processes whose command line holds a marker: pid -> (state, ppid, pgrp, session, cmdline)."""
        t = _table()
        fam = {self.p.pid} | {pid for pid, v in t.items() if any(m in v[4] for m in self.markers)}
        grown = True
        while grown:
            grown = False
            for pid, (_, ppid, pgrp, sid, _) in t.items():
                if pid not in fam and (ppid in fam or pgrp == self.p.pid or sid == self.p.pid):
                    fam.add(pid)
                    grown = True
        return {pid: t[pid] for pid in fam if pid in t}

    def interrupt(self, bound: float):
        """Ctrl-C; wait for the exit (at most `bound` seconds); return (exit code, seconds)."""
        self.started = set(self.family())
        t0 = time.monotonic()
        if self.master >= 0:
            os.write(self.master, b"\x03")
        else:
            os.killpg(self.p.pid, signal.SIGINT)
        try:
            rc = self.p.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {bound}s after Ctrl-C; output: {self.out[-2000:]!r}") from None
        took = time.monotonic() - t0
        while self._read(0.1):
            pass
        return rc, took

    def leftovers(self):
        """What the command started that still exists (zombies included) now that it has exited:
        sbx reaps what it started before it exits, so there is no grace period."""
        t = _table()
        return {pid: t[pid] for pid in self.started | set(self.family()) if pid in t and pid != self.p.pid}

    def close(self):
        for pid in self.family():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        if self.master >= 0:
            os.close(self.master)
        elif self.p.stdout:
            self.p.stdout.close()
