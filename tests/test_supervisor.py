"""runtime.process.SandboxProcess, the one supervisor under `sbx run`, `sbx exec`, build RUN steps
and sandbox.Popen: exit codes (status, or 128 + signal), signals held from before the launch and
forwarded, timed waits, teardowns run once in reverse order, and the pty relay with Docker's
detach keys on a real terminal.  Real sandboxes throughout."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import sbxtest
from ptyrun import Terminal
from sandbox.errors import CommandNotFound
from sandbox.runtime import spec as specmod
from sandbox.runtime.process import SandboxProcess, _scan_detach, parse_detach_keys


def make_spec(rootfs, *argv, **kw):
    return specmod.build(list(argv), rootfs=str(rootfs), container_id=os.urandom(32).hex(), **kw)


def script(code, *args, **kw):
    """Run `code` as a supervisor process of its own (signals are sent to it, not to pytest)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=sbxtest.NEUTRAL_CWD,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def mask():
    return signal.pthread_sigmask(signal.SIG_BLOCK, ())


# --- exit codes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [0, 3, 255])
def test_wait_returns_the_exit_status(busybox_rootfs, code):
    before = mask()
    with SandboxProcess.launch(make_spec(busybox_rootfs, "sh", "-c", f"exit {code}")) as p:
        assert p.wait() == code
        assert p.poll() == code and p.returncode == code
    assert mask() == before  # the held signals are given back


def test_a_killed_process_gives_128_plus_the_signal(busybox_rootfs):
    with SandboxProcess.launch(make_spec(busybox_rootfs, "sleep", "60")) as p:
        assert p.poll() is None
        p.send_signal(signal.SIGKILL)
        assert p.wait() == 128 + signal.SIGKILL
        p.kill()  # reaped: a no-op, never a signal to a reused pid
        assert p.wait() == 137


def test_a_timed_wait_leaves_the_process_running(busybox_rootfs):
    with SandboxProcess.launch(make_spec(busybox_rootfs, "sleep", "60")) as p:
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=0.2)
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(forward=(), timeout=0.2)
        assert p.poll() is None
        p.kill()
        assert p.wait(timeout=30) == 137


def test_a_failed_launch_leaves_no_signal_held(busybox_rootfs):
    before = mask()
    with pytest.raises(CommandNotFound):
        SandboxProcess.launch(make_spec(busybox_rootfs, "no-such-command"))
    assert mask() == before


def test_signals_are_held_from_before_the_launch_and_forwarded(busybox_rootfs):
    """A SIGTERM that reaches the supervisor between launch and wait is not lost and does not
    kill it: the wait forwards it to the sandbox, whose trap exits 7."""
    p = script("""
        import os, signal, sys
        from sandbox.runtime import spec
        from sandbox.runtime.process import SandboxProcess
        r, w = os.pipe()
        s = spec.build(["sh", "-c", "trap 'echo got-TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done"],
                       rootfs=sys.argv[1], container_id=os.urandom(32).hex())
        p = SandboxProcess.launch(s, stdio=(-1, w, -1))
        os.close(w)
        f = os.fdopen(r)
        assert f.readline() == "ready\\n"
        os.kill(os.getpid(), signal.SIGTERM)   # held: pending until the wait takes it
        print("still-here", flush=True)
        code = p.wait()
        print(f.readline().strip(), "exit", code, flush=True)
        p.close()
    """, busybox_rootfs)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.splitlines() == ["still-here", "got-TERM exit 7"], out + err


def test_an_interrupted_plain_wait_kills_and_reaps_the_sandbox(busybox_rootfs):
    """wait(forward=()) is interruptible (a build's RUN step): Ctrl-C held since the launch is
    raised when the wait begins, and the sandbox is killed and reaped before it goes on."""
    p = script("""
        import os, signal, sys
        from sandbox.runtime import spec
        from sandbox.runtime.process import SandboxProcess
        s = spec.build(["sleep", "60"], rootfs=sys.argv[1], container_id=os.urandom(32).hex())
        p = SandboxProcess.launch(s, hold=(signal.SIGINT,))
        os.kill(os.getpid(), signal.SIGINT)
        print("launched", flush=True)
        try:
            p.wait(forward=())
        except KeyboardInterrupt:
            print("interrupted", p.returncode, flush=True)
        try:
            os.waitpid(p.pid, os.WNOHANG)
            print("child left")
        except ChildProcessError:
            print("reaped")
        p.close()
    """, busybox_rootfs)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.splitlines() == ["launched", "interrupted 137", "reaped"], out + err


# --- teardown -------------------------------------------------------------------------------------

def test_teardowns_run_once_in_reverse_order_after_exit(busybox_rootfs):
    ran = []
    p = SandboxProcess.launch(make_spec(busybox_rootfs, "true"))
    p.add_teardown(lambda: ran.append("first"))
    p.add_teardown(lambda: ran.append("second"))
    assert ran == []
    assert p.wait() == 0
    assert ran == ["second", "first"]
    p.add_teardown(lambda: ran.append("late"))  # after the exit: at once
    p.close()
    p.close()
    assert ran == ["second", "first", "late"]
    assert p.pidfd == -1


def test_close_kills_a_running_process_and_tears_down(busybox_rootfs):
    ran = []
    p = SandboxProcess.launch(make_spec(busybox_rootfs, "sleep", "60"))
    pid = p.pid
    p.add_teardown(lambda: ran.append(p.returncode))
    p.close()
    assert ran == [137]
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_every_teardown_runs_when_one_fails(busybox_rootfs):
    ran = []

    def bad():
        raise RuntimeError("teardown failed")

    p = SandboxProcess.launch(make_spec(busybox_rootfs, "true"))
    p.add_teardown(lambda: ran.append("a"))
    p.add_teardown(bad)
    p.add_teardown(lambda: ran.append("c"))
    with pytest.raises(RuntimeError, match="teardown failed"):
        p.wait()
    assert ran == ["c", "a"]
    assert p.wait() == 0
    p.close()
    assert ran == ["c", "a"]


class Hook:
    def __init__(self, name, log, fail=False):
        self.name, self.log, self.fail = name, log, fail

    def attach(self, pid):
        self.log.append(("attach", self.name, pid > 0))
        if self.fail:
            raise OSError(f"{self.name} cannot attach")

    def teardown(self):
        self.log.append(("teardown", self.name))


def test_hooks_attach_before_the_start_and_tear_down_once(busybox_rootfs):
    log = []
    p = SandboxProcess.launch(make_spec(busybox_rootfs, "true"), hooks=(Hook("a", log), Hook("b", log)))
    assert p.wait() == 0
    p.close()
    assert log == [("attach", "a", True), ("attach", "b", True), ("teardown", "b"), ("teardown", "a")]


def test_a_failing_hook_aborts_the_launch_and_tears_down_once(busybox_rootfs):
    log = []
    before = mask()
    with pytest.raises(Exception) as e:
        SandboxProcess.launch(make_spec(busybox_rootfs, "true"), hooks=(Hook("good", log), Hook("bad", log, fail=True)))
    assert "bad" in str(e.value)
    assert log.count(("teardown", "good")) == 1
    assert ("teardown", "bad") not in log or log.count(("teardown", "bad")) == 1
    assert mask() == before


# --- the pty relay ----------------------------------------------------------------------------------

RELAY = """
    import os, sys
    from sandbox.runtime import spec
    from sandbox.runtime.process import SandboxProcess, terminal_size
    s = spec.build(["sh", "-c", "echo ready; cat"], rootfs=sys.argv[1], terminal=True,
                   container_id=os.urandom(32).hex())
    p = SandboxProcess.launch(s, terminal=True, console_size=terminal_size(0))
    r = p.relay_pty(stdin_fd=0, stdout_fd=1)
    print("relay returned", r, "running" if p.poll() is None else "ended", flush=True)
    p.kill()
    print("exit", p.wait(), flush=True)
    p.close()
"""


def test_relay_detaches_on_ctrl_p_ctrl_q_and_passes_a_lone_ctrl_p(busybox_rootfs):
    t = Terminal([sys.executable, "-c", textwrap.dedent(RELAY), str(busybox_rootfs)], cwd=sbxtest.NEUTRAL_CWD)
    try:
        t.read_until(b"ready")
        os.write(t.master, b"abc\n")
        t.read_until(b"abc\r\nabc\r\n")        # the sandbox's pty echoes, cat copies
        os.write(t.master, b"\x10x\n")         # ctrl-p, then another key: both go through
        t.read_until(b"\x10x\r\n")             # cat's copy, the raw bytes
        os.write(t.master, b"\x10\x10")        # ctrl-p twice: the first goes through ...
        os.write(t.master, b"\x11")            # ... the second starts the sequence ctrl-q ends
        rc, out = t.finish(timeout=30)
        after = __import__("termios").tcgetattr(t.slave)
    finally:
        t.close()
    assert rc == 0, out
    assert "relay returned None running" in out, out
    assert "exit 137" in out, out
    assert after == t.termios_before, "the terminal was left in raw mode"


def test_relay_returns_the_exit_code(busybox_rootfs):
    code = RELAY.replace('"echo ready; cat"', '"echo ready; read x; exit $x"')
    t = Terminal([sys.executable, "-c", textwrap.dedent(code), str(busybox_rootfs)], cwd=sbxtest.NEUTRAL_CWD)
    try:
        t.read_until(b"ready")
        os.write(t.master, b"42\n")
        rc, out = t.finish(timeout=30)
    finally:
        t.close()
    assert rc == 0, out
    assert "relay returned 42 ended" in out, out


@pytest.mark.parametrize("chunks, passed, detached", [
    ([b"\x10\x11"], b"", True),
    ([b"ab\x10", b"\x11"], b"ab", True),             # the sequence split across reads
    ([b"\x10", b"x"], b"\x10x", False),              # a lone ctrl-p passes with the next key
    ([b"\x10\x10\x11"], b"\x10", True),
    ([b"\x11\x10"], b"\x11", False),                 # ctrl-p held, waiting for the next key
])
def test_detach_sequence_scanning(chunks, passed, detached):
    held, out, done = b"", b"", False
    for c in chunks:
        o, held, done = _scan_detach(held, c, b"\x10\x11")
        out += o
        if done:
            break
    assert (out, done) == (passed, detached)


def test_detach_keys_in_dockers_notation():
    assert parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert parse_detach_keys("ctrl-a,x") == b"\x01x"
    with pytest.raises(ValueError, match="ctrl-"):
        parse_detach_keys("ctrl-")


def test_a_launch_that_fails_after_its_hooks_tears_them_down_once(busybox_rootfs):
    log = []
    before = mask()
    with pytest.raises(CommandNotFound):
        SandboxProcess.launch(make_spec(busybox_rootfs, "no-such-command"), hooks=(Hook("a", log), Hook("b", log)))
    assert [e for e in log if e[0] == "teardown"] == [("teardown", "b"), ("teardown", "a")]
    assert mask() == before


def test_wait_start_holds_the_exec_until_start(busybox_rootfs, tmp_path):
    log = []
    spec = make_spec(busybox_rootfs, "touch", "/out/started", volumes=[f"{tmp_path}:/out"])
    p = SandboxProcess.launch(spec, hooks=(Hook("h", log),), wait_start=True)
    try:
        assert p.poll() is None
        assert not (tmp_path / "started").exists()
        p.start()
        assert p.wait() == 0
        assert (tmp_path / "started").exists()
        assert log.count(("teardown", "h")) == 1
    finally:
        p.close()
    assert log.count(("teardown", "h")) == 1


def test_closing_a_process_that_never_started_tears_down_once(busybox_rootfs, tmp_path):
    log = []
    spec = make_spec(busybox_rootfs, "touch", "/out/started", volumes=[f"{tmp_path}:/out"])
    p = SandboxProcess.launch(spec, hooks=(Hook("h", log),), wait_start=True)
    p.close()
    p.close()
    assert log.count(("teardown", "h")) == 1
    assert p.returncode == 128 + signal.SIGKILL
    assert not (tmp_path / "started").exists()


def test_another_process_starts_it_through_the_fifo(busybox_rootfs, tmp_path):
    """OCI create/start: the FIFO in the state directory; any process of the user starts it."""
    out = tmp_path / "out"
    out.mkdir()
    spec = make_spec(busybox_rootfs, "touch", "/out/started", volumes=[f"{out}:/out"])
    with SandboxProcess.launch(spec, wait_start=True, start_dir=str(tmp_path)) as p:
        assert p.start_fifo == str(tmp_path / "start.fifo") and os.path.exists(p.start_fifo)
        assert not (out / "started").exists()
        cp = subprocess.run([sys.executable, "-c", "import sys; from sandbox.runtime import launch; "
                             "launch.start_fifo(sys.argv[1])", p.start_fifo], cwd=sbxtest.NEUTRAL_CWD,
                            capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        p.wait_exec()
        assert p.wait() == 0
    assert (out / "started").exists()


def test_a_held_launch_gets_its_pty_too(busybox_rootfs):
    log = []
    spec = make_spec(busybox_rootfs, "sh", "-c", "test -t 1 && echo on-a-tty", terminal=True)
    with SandboxProcess.launch(spec, terminal=True, hooks=(Hook("h", log),)) as p:
        assert p.pty_master >= 0
        out = b""
        while True:
            try:
                data = os.read(p.pty_master, 4096)
            except OSError:  # EIO: the sandbox closed its side
                break
            if not data:
                break
            out += data
        assert p.wait() == 0
    assert b"on-a-tty" in out
    assert log.count(("teardown", "h")) == 1


def test_close_reports_a_failing_teardown_after_running_the_others(busybox_rootfs):
    ran = []

    def bad():
        raise RuntimeError("teardown failed")

    p = SandboxProcess.launch(make_spec(busybox_rootfs, "sleep", "60"))
    p.add_teardown(lambda: ran.append("a"))
    p.add_teardown(bad)
    with pytest.raises(RuntimeError, match="teardown failed"):
        p.close()
    assert ran == ["a"] and p.returncode == 137 and p.pidfd == -1
