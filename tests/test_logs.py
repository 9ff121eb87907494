"""`sbx logs`: one CRI log per container, stdout and stderr interleaved in the order written;
--tail, --since/--until (RFC 3339, unix time, Go durations), -t, -f.  Detached runs (the monitor)
and kept foreground runs (`sbx run` without --rm, `sbx start -a`) are logged, as Docker's; a
foreground run's output also reaches its caller, with signals, exit codes and large outputs as
without a log.  A foreground `--rm` run keeps the caller's fds and has no log."""
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import sbxtest
from ptyrun import Terminal
from sbxtest import Lines, assert_sbx_error, container_init_pid, ok, sbx, sbx_popen


pytestmark = pytest.mark.usefixtures("own_container_store")


def _log_file(ref):
    cid = json.loads(ok(sbx("inspect", ref)))[0]["Id"]
    return os.path.join(os.environ["SBX_ROOT"], "containers", cid, "container.log")


_wait_for = sbxtest.wait_for


def _logs_bytes(ref):
    return subprocess.run(sbxtest.sbx_argv("logs", ref), capture_output=True, cwd=sbxtest.NEUTRAL_CWD, timeout=120)


def _records(ref):
    """The log's records as (stream, tag, content)."""
    with open(_log_file(ref), "rb") as f:
        return [tuple(line.split(b" ", 3)[1:]) for line in f.read().splitlines()]


class Steps:
    """FIFOs the container reads before each step (/sync/go1, /sync/go2, ...: one each, so an
    early reader never sees the end of the previous step's writer), so the test decides when
    it writes next: the order of its writes is fixed without relying on timing."""

    def __init__(self, d, n):
        self.dir = d
        for i in range(1, n + 1):
            os.mkfifo(d / f"go{i}")
            os.chmod(d / f"go{i}", 0o666)
        os.chmod(d, 0o777)
        self.next = 1

    def go(self):
        fd = os.open(self.dir / f"go{self.next}", os.O_WRONLY)  # blocks until the container reads
        self.next += 1
        os.write(fd, b"\n")
        os.close(fd)


def test_stdout_and_stderr_interleave_in_the_order_written(busybox_rootfs, tmp_path):
    steps = Steps(tmp_path, 4)
    script = ("echo o1; read x < /sync/go1; echo e1 >&2; read x < /sync/go2; echo o2; read x < /sync/go3; "
              "echo e2 >&2; read x < /sync/go4; printf 'no-newline'")
    ok(sbx("run", "-d", "--name", "mix", "-v", f"{tmp_path}:/sync", "--rootfs", busybox_rootfs, "sh", "-c", script))
    expected = []
    for want in ("o1", "e1", "o2", "e2"):
        assert _wait_for(lambda: want in ok(sbx("logs", "mix")) + sbx("logs", "mix").stderr), want
        expected.append(want)
        steps.go()
    assert ok(sbx("wait", "mix")) == "0\n"
    r = sbx("logs", "mix")
    assert r.stdout == "o1\no2\nno-newline" and r.stderr == "e1\ne2\n"
    with open(_log_file("mix"), "rb") as f:
        records = [line.split(b" ", 3) for line in f.read().splitlines()]
    assert [(s, t, c) for _ts, s, t, c in records] == [
        (b"stdout", b"F", b"o1"), (b"stderr", b"F", b"e1"), (b"stdout", b"F", b"o2"), (b"stderr", b"F", b"e2"),
        (b"stdout", b"P", b"no-newline")]
    stamps = [ts for ts, *_ in records]
    assert stamps == sorted(stamps) and all(ts.endswith(b"Z") and len(ts) == 30 for ts in stamps)


def test_tail_since_until_and_timestamps(busybox_rootfs, tmp_path):
    steps = Steps(tmp_path, 5)  # one line at a time: each gets its own timestamp
    ok(sbx("run", "-d", "--name", "lines", "-v", f"{tmp_path}:/sync", "--rootfs", busybox_rootfs, "sh", "-c",
           "for i in 1 2 3 4 5; do echo line$i; read x < /sync/go$i; done"))
    for i in range(1, 6):
        assert _wait_for(lambda: f"line{i}" in ok(sbx("logs", "lines")))
        steps.go()
    ok(sbx("wait", "lines"))
    assert ok(sbx("logs", "--tail", "2", "lines")) == "line4\nline5\n"
    assert ok(sbx("logs", "-n", "0", "lines")) == ""
    assert ok(sbx("logs", "--tail", "all", "lines")).count("\n") == 5
    stamped = ok(sbx("logs", "-t", "lines")).splitlines()
    assert [s.split(" ", 1)[1] for s in stamped] == [f"line{i}" for i in range(1, 6)]
    t3 = stamped[2].split(" ")[0]
    assert ok(sbx("logs", "--since", t3, "lines")) == "line3\nline4\nline5\n"
    assert ok(sbx("logs", "--until", t3, "lines")) == "line1\nline2\nline3\n"
    assert ok(sbx("logs", "--since", "1h", "lines")).count("\n") == 5          # a Go duration
    assert ok(sbx("logs", "--until", "10m", "lines")) == ""                     # ten minutes ago: nothing yet
    assert ok(sbx("logs", "--since", str(int(time.time()) + 3600), "lines")) == ""   # unix time
    assert ok(sbx("logs", "--since", "2000-01-01", "lines")).count("\n") == 5
    assert_sbx_error(sbx("logs", "--since", "yesterday", "lines"), 125, "--since")
    assert_sbx_error(sbx("logs", "--tail", "x", "lines"), 125, "--tail")


def test_follow_ends_when_the_container_does(busybox_rootfs, tmp_path):
    steps = Steps(tmp_path, 1)
    ok(sbx("run", "-d", "--name", "f", "-v", f"{tmp_path}:/sync", "--rootfs", busybox_rootfs, "sh", "-c",
           "echo first; read x < /sync/go1; echo second; exit 4"))
    p = sbxtest.sbx_popen("logs", "-f", "f")
    got = sbxtest.Lines(p.stdout)
    got.wait_for("first")
    assert p.poll() is None                       # still following
    threading.Thread(target=steps.go, daemon=True).start()
    got.wait_for("second")
    p.wait(timeout=30)
    assert p.returncode == 0 and got.lines == ["first\n", "second\n"]


def test_a_foreground_run_is_logged_stream_by_stream_in_the_order_written(busybox_rootfs, tmp_path):
    steps = Steps(tmp_path, 3)
    script = ("echo o1; read x < /sync/go1; echo e1 >&2; read x < /sync/go2; echo o2; read x < /sync/go3; "
              "printf e2 >&2; exit 3")
    p = sbx_popen("run", "--name", "fg", "-v", f"{tmp_path}:/sync", "--rootfs", busybox_rootfs, "sh", "-c", script)
    try:
        out, err = Lines(p.stdout), Lines(p.stderr)
        out.wait_for("o1")   # each line reaches the caller while the container runs
        steps.go()
        err.wait_for("e1")
        steps.go()
        out.wait_for("o2")
        steps.go()
        err.wait_for("e2")
        assert p.wait(timeout=30) == 3
    finally:
        p.kill()
        p.wait()
    assert out.lines == ["o1\n", "o2\n"] and err.lines == ["e1\n", "e2"]
    r = sbx("logs", "fg")
    assert r.returncode == 0 and r.stdout == "o1\no2\n" and r.stderr == "e1\ne2"
    assert _records("fg") == [(b"stdout", b"F", b"o1"), (b"stderr", b"F", b"e1"), (b"stdout", b"F", b"o2"),
                              (b"stderr", b"P", b"e2")]
    assert_sbx_error(sbx("logs", "nothing"), 1, "No such container: nothing")


def test_start_attach_appends_to_the_log_of_the_earlier_runs(busybox_rootfs):
    script = "echo out; echo err >&2; exit 2"
    r = sbx("run", "--name", "again", "--rootfs", busybox_rootfs, "sh", "-c", script)
    assert (r.returncode, r.stdout, r.stderr) == (2, "out\n", "err\n")
    r = sbx("start", "-a", "again")
    assert (r.returncode, r.stdout, r.stderr) == (2, "out\n", "err\n")
    ok(sbx("start", "again"))          # the monitor writes the same log
    assert ok(sbx("wait", "again")) == "2\n"
    r = sbx("logs", "again")
    assert r.stdout == "out\n" * 3 and r.stderr == "err\n" * 3


def test_a_tty_foreground_run_is_logged_as_stdout(busybox_rootfs):
    t = Terminal(sbxtest.sbx_argv("run", "-t", "--name", "tty", "--rootfs", busybox_rootfs, "sh", "-c",
                                  "test -t 1 && echo on-a-tty; echo err >&2; exit 4"), cwd=sbxtest.NEUTRAL_CWD)
    try:
        rc, shown = t.finish(timeout=30)
    finally:
        t.close()
    assert rc == 4 and "on-a-tty" in shown and "err" in shown, shown
    r = _logs_bytes("tty")
    assert r.stdout == b"on-a-tty\r\nerr\r\n" and r.stderr == b""   # what the container's pty wrote, as Docker


def test_a_logged_container_sees_pipes_and_a_rm_run_sees_the_callers_fds(busybox_rootfs, tmp_path):
    """`--rm` foreground runs keep today's direct fds (and import nothing of the relay); a kept
    one's stdout and stderr are pipes of its own, as in Docker."""
    code = ("import sys\nfrom sandbox.cli import main\n"
            "sys.argv = ['sbx', 'run', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write('relay:%s\\n' % ('sandbox.containers.logs' in sys.modules))\n")
    seen = {}
    for how in ("--rm", "--name=kept"):
        r, w = os.pipe()
        p = subprocess.Popen([sys.executable, "-c", code, how, "--rootfs", busybox_rootfs, "sh", "-c",
                              "readlink /proc/$$/fd/1; readlink /proc/$$/fd/2"],
                             stdout=w, stderr=w, cwd=sbxtest.NEUTRAL_CWD)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            text = f.read().decode()
            ours = f"pipe:[{os.fstat(f.fileno()).st_ino}]"
        assert p.wait(timeout=30) == 0, text
        seen[how] = (text.split(), ours)
    (rm_out, ours) = seen["--rm"]
    assert rm_out == [ours, ours, "relay:False"]
    (kept_out, ours) = seen["--name=kept"]
    assert kept_out[2] == "relay:True"
    assert kept_out[0].startswith("pipe:[") and kept_out[1].startswith("pipe:[")
    assert len({kept_out[0], kept_out[1], ours}) == 3
    assert ok(sbx("logs", "kept")) == f"{kept_out[0]}\n{kept_out[1]}\n"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_to_a_logged_run_reach_the_container(busybox_rootfs, sig):
    p = sbx_popen("run", "--name", "sig", "--init", "--rootfs", busybox_rootfs, "sh", "-c", "echo ready; exec sleep 60")
    try:
        Lines(p.stdout).wait_for("ready")
        p.send_signal(sig)
        assert p.wait(timeout=20) == 128 + sig
    finally:
        p.kill()
        p.wait()
    assert ok(sbx("logs", "sig")) == "ready\n"
    assert sbxtest.inspect_container("sig")["State"]["ExitCode"] == 128 + sig


def test_ctrl_c_on_the_terminal_reaches_a_logged_container(busybox_rootfs):
    t = Terminal(sbxtest.sbx_argv("run", "--name", "cc", "--rootfs", busybox_rootfs, "sh", "-c",
                                  "trap 'echo got-int; exit 130' INT; echo ready; while :; do sleep 0.1; done"),
                 cwd=sbxtest.NEUTRAL_CWD)
    try:
        t.read_until(b"ready")
        os.write(t.master, b"\x03")
        rc, shown = t.finish(timeout=30)
    finally:
        t.close()
    assert rc == 130 and "got-int" in shown, shown
    assert ok(sbx("logs", "cc")) == "ready\ngot-int\n"


def test_a_large_output_reaches_the_caller_and_the_log_whole(busybox_rootfs, tmp_path):
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    os.chmod(out, 0o777)
    script = "head -c 15000000 /dev/urandom | tee /out/random | base64; echo done >&2"
    argv = sbxtest.sbx_argv("run", "--name", "big", "-v", f"{out}:/out", "--rootfs", busybox_rootfs,
                            "sh", "-c", script)
    r = subprocess.run(argv, capture_output=True, cwd=sbxtest.NEUTRAL_CWD, stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0 and r.stderr == b"done\n", r.stderr
    assert len(r.stdout) > 20_000_000 and base64.b64decode(r.stdout) == (out / "random").read_bytes()
    logged = _logs_bytes("big")
    assert logged.stdout == r.stdout and logged.stderr == b"done\n"


def test_a_process_holding_the_pipe_does_not_keep_the_run(busybox_rootfs, tmp_path):
    """Another process holds the container's stdout pipe open (it opened /proc/PID/fd/1) after
    the container exits: the run still ends, with everything the container wrote."""
    steps = Steps(tmp_path, 1)
    p = sbx_popen("run", "--name", "held", "-v", f"{tmp_path}:/sync", "--rootfs", busybox_rootfs, "sh", "-c",
                  "echo ready; read x < /sync/go1; echo bye; exit 5")
    held = []
    try:
        Lines(p.stdout).wait_for("ready")
        init = container_init_pid(p.pid)
        held = [os.open(f"/proc/{init}/fd/{n}", os.O_WRONLY) for n in (1, 2)]
        steps.go()
        assert p.wait(timeout=30) == 5
    finally:
        p.kill()
        p.wait()
        for fd in held:
            os.close(fd)
    assert ok(sbx("logs", "held")) == "ready\nbye\n"


def test_a_reader_that_goes_away_ends_a_logged_run_as_a_rm_one(busybox_rootfs):
    """The caller's reader exits: the container's next write fails as if it wrote to it directly."""
    results = []
    for how in ("--rm", "--name=gone"):
        p = subprocess.Popen(sbxtest.sbx_argv("run", how, "--rootfs", busybox_rootfs, "sh", "-c",
                                              "yes; echo yes-ended >&2"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                             cwd=sbxtest.NEUTRAL_CWD)
        assert p.stdout.read(4) == b"y\ny\n"
        p.stdout.close()
        rc = p.wait(timeout=30)
        results.append((rc, p.stderr.read().decode().splitlines()[-1]))
    assert results[0] == results[1] and results[0] == (0, "yes-ended"), results


def test_a_log_that_cannot_be_written_never_costs_the_output(busybox_rootfs):
    """The log's disk is full: the caller still gets every byte and the exit code, and sbx says
    the log is incomplete (never silently)."""
    ok(sbx("create", "--name", "full", "--rootfs", busybox_rootfs, "sh", "-c", "echo out; echo err >&2; exit 6"))
    os.symlink("/dev/full", _log_file("full"))      # every write fails with ENOSPC
    r = sbx("start", "-a", "full")
    assert r.returncode == 6 and r.stdout == "out\n", r.stderr
    assert r.stderr.splitlines()[0] == "err"
    assert r.stderr.splitlines()[1].startswith("sbx: warning: the log of container full is incomplete")
