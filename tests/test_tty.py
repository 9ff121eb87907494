"""-t: the command runs on a real pty inside the sandbox, sized and resized like sbx's terminal."""

import fcntl
import os
import struct
import termios

import sbxtest
from ptyrun import Terminal
from sbxtest import sbx_argv


def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def PtyRun(*args, rows=24, cols=80):
    """sbx started on a fresh pty as its controlling terminal, like a shell would start it."""
    return Terminal(sbx_argv(*args), rows=rows, cols=cols, cwd=sbxtest.NEUTRAL_CWD)


def run_on_pty(*args, rows=24, cols=80, input: bytes | None = None, timeout=20.0):
    t = PtyRun(*args, rows=rows, cols=cols)
    try:
        if input is not None:
            os.write(t.master, input)
        rc, out = t.finish(timeout)
        return rc, out, t
    finally:
        t.close()


def test_tty_inside(busybox_rootfs):
    script = ("tty; test -t 0 && echo stdin-tty; test -t 1 && echo stdout-tty; test -t 2 && echo stderr-tty;"
              " echo TERM=$TERM; test -e \"$(tty)\" && echo tty-exists")
    rc, out, _ = run_on_pty("run", "-t", "--rootfs", busybox_rootfs, "sh", "-c", script)
    assert rc == 0, out
    lines = out.split()
    assert lines[0].startswith("/dev/pts/"), out
    for want in ("stdin-tty", "stdout-tty", "stderr-tty", "TERM=xterm", "tty-exists"):
        assert want in lines, out


def test_tty_size_follows_the_terminal(busybox_rootfs):
    rc, out, _ = run_on_pty("run", "-t", "--rootfs", busybox_rootfs, "stty", "size", rows=33, cols=97)
    assert rc == 0, out
    assert out.strip() == "33 97"


def test_tty_resize(busybox_rootfs):
    script = ("stty size; echo ready; i=0; while [ \"$(stty size)\" != '41 123' ] && [ $i -lt 200 ];"
              " do sleep 0.1; i=$((i+1)); done; echo now $(stty size)")
    t = PtyRun("run", "-t", "--rootfs", busybox_rootfs, "sh", "-c", script, rows=24, cols=80)
    try:
        t.read_until(b"ready")
        set_size(t.master, 41, 123)   # the kernel sends SIGWINCH to sbx, the terminal's foreground process
        rc, out = t.finish(timeout=30)
    finally:
        t.close()
    assert rc == 0, out
    assert out.splitlines()[0].strip() == "24 80", out
    assert "now 41 123" in out, out


def test_interactive_tty_input_and_exit_status(busybox_rootfs):
    t = PtyRun("run", "-it", "--rootfs", busybox_rootfs, "sh", "-c", "echo ready; read x; echo got:$x; exit 4")
    try:
        t.read_until(b"ready")
        os.write(t.master, b"hello\n")
        rc, out = t.finish()
    finally:
        t.close()
    assert rc == 4, out
    assert "got:hello" in out


def test_terminal_mode_is_restored(busybox_rootfs):
    t = PtyRun("run", "-i", "-t", "--rootfs", busybox_rootfs, "sh", "-c", "echo ready; read x; echo got:$x")
    try:
        t.read_until(b"ready")
        os.write(t.master, b"abc\n")
        rc, out = t.finish()
        after = termios.tcgetattr(t.slave)
    finally:
        t.close()
    assert rc == 0 and "got:abc" in out, out
    assert after == t.termios_before, "sbx left the terminal in a different mode"


def test_input_typed_before_the_sandbox_starts_is_kept(busybox_rootfs):
    """Keys typed ahead (a paste, a script feeding `sbx run -it`) reach the command: the switch of
    the terminal to raw mode must not flush them (TCSANOW, not TCSAFLUSH)."""
    t = PtyRun("run", "-it", "--rootfs", busybox_rootfs, "sh", "-c", "read x; echo got:$x; exit 3")
    try:
        os.write(t.master, b"early\n")  # before sbx has even started the sandbox
        rc, out = t.finish()
    finally:
        t.close()
    assert rc == 3 and "got:early" in out, out
