"""`run -dit` + `sbx attach`: the monitor keeps the pty; attach relays a real terminal (raw mode,
window size) and Ctrl-P Ctrl-Q detaches leaving the container running.  Without a tty, attach
streams stdout and stderr apart, and with -i its stdin reaches the container."""
import json
import os
import subprocess
import time

import pytest

import sbxtest
from ptyrun import Terminal
from sbxtest import assert_sbx_error, ok, sbx


pytestmark = pytest.mark.usefixtures("own_container_store")


_inspect = sbxtest.inspect_container


_wait_for = sbxtest.wait_for


def _monitor_sockets(ref, attached=None):
    """How many sockets the container's monitor has open: one more once a client is attached.
    `attached=0`: once no client is left (a detached one is let go of)."""
    if attached == 0:
        base = _wait_for(lambda: _monitor_sockets(ref) == _LISTENING and _LISTENING)
        assert base, "a detached client was not let go of"
        return base
    with open(os.path.join(os.environ["SBX_ROOT"], "containers", _inspect(ref)["Id"], "container.json")) as f:
        pid = json.load(f)["State"]["MonitorPid"]
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


_LISTENING = 1  # the monitor's attach.sock listener


def _attached(name, *flags, rows=24, cols=80):
    """`sbx attach` on a fresh terminal, once the monitor has accepted it and the shell answers."""
    before = _monitor_sockets(name, attached=0)
    term = Terminal(sbxtest.sbx_argv("attach", *flags, name), rows=rows, cols=cols, cwd=sbxtest.NEUTRAL_CWD)
    assert _wait_for(lambda: _monitor_sockets(name) > before)
    os.write(term.master, b"echo ready-$((6*7))\r")
    term.read_until(b"ready-42")
    return term


def test_attach_a_terminal_detach_and_attach_again(busybox_rootfs):
    cid = ok(sbx("run", "-dit", "--name", "t", "--rootfs", busybox_rootfs, "sh")).strip()
    assert len(cid) == 64 and _inspect("t")["Config"]["Tty"]
    term = _attached("t", rows=33, cols=101)
    try:
        os.write(term.master, b"echo hi-$((40+2))\r")
        term.read_until(b"hi-42")
        os.write(term.master, b"stty size\r")
        term.read_until(b"33 101")                       # our window size reached its pty
        os.write(term.master, b"\x10\x11")               # Ctrl-P Ctrl-Q
        rc, out = term.finish()
        assert rc == 0, out
    finally:
        term.close()
    assert _inspect("t")["State"]["Status"] == "running"    # detached, not stopped
    term = _attached("t")
    try:
        os.write(term.master, b"echo again\r")
        term.read_until(b"again")
        os.write(term.master, b"exit 5\r")
        rc, out = term.finish()
        assert rc == 5, out                                 # attach ends with the container's code
    finally:
        term.close()
    st = _inspect("t")["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 5


def test_a_detach_key_prefix_followed_by_another_key_passes_through(busybox_rootfs):
    ok(sbx("run", "-dit", "--name", "keys", "--rootfs", busybox_rootfs, "sh"))
    term = _attached("keys", "--detach-keys", "ctrl-x")
    try:
        os.write(term.master, b"\x10echo still-$((1+1))\r")     # Ctrl-P is not the detach key now
        term.read_until(b"still-2")
        os.write(term.master, b"\x18")                       # ctrl-x detaches
        rc, _ = term.finish()
        assert rc == 0
    finally:
        term.close()
    assert _inspect("keys")["State"]["Status"] == "running"
    ok(sbx("rm", "-f", "keys"))


def test_attach_without_tty_streams_stdout_and_stderr(busybox_rootfs, tmp_path):
    os.mkfifo(tmp_path / "go")
    os.chmod(tmp_path / "go", 0o666)
    os.chmod(tmp_path, 0o777)
    ok(sbx("run", "-d", "--name", "s", "-v", f"{tmp_path}:/sync", "--rootfs", busybox_rootfs, "sh", "-c",
           "read x < /sync/go; echo out; echo err >&2; exit 3"))
    before = _monitor_sockets("s")
    p = sbxtest.sbx_popen("attach", "s")
    try:
        assert _wait_for(lambda: _monitor_sockets("s") > before)   # attached: now let it write
        fd = os.open(tmp_path / "go", os.O_WRONLY)
        os.write(fd, b"\n")
        os.close(fd)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
        p.wait()
    assert (p.returncode, out, err) == (3, "out\n", "err\n")


def test_attach_stdin_reaches_an_interactive_container(busybox_rootfs):
    ok(sbx("run", "-d", "-i", "--name", "cat", "--rootfs", busybox_rootfs, "cat"))
    assert _inspect("cat")["Config"]["OpenStdin"]
    r = sbx("attach", "cat", input="hello through attach\n")
    assert (r.returncode, r.stdout) == (0, "hello through attach\n"), r.stderr   # EOF ended cat
    assert _inspect("cat")["State"]["ExitCode"] == 0


def test_attach_refusals(busybox_rootfs):
    ok(sbx("run", "--name", "done", "--rootfs", busybox_rootfs, "true"))
    assert_sbx_error(sbx("attach", "done"), 1, "cannot attach container done: it is exited")
    assert_sbx_error(sbx("attach", "nothing"), 1, "No such container: nothing")
    p = sbxtest.sbx_popen("run", "--name", "fg", "--rootfs", busybox_rootfs, "sh", "-c", "echo up; sleep 60")
    try:
        assert p.stdout.readline() == "up\n"
        assert_sbx_error(sbx("attach", "fg"), 125, "foreground")
    finally:
        p.kill()
        p.wait()
