"""`sbx logs`: one CRI log per detached container, stdout and stderr interleaved in the order
written; --tail, --since/--until (RFC 3339, unix time, Go durations), -t, -f."""
import json
import os
import threading
import time

import pytest

import sbxtest
from sbxtest import assert_sbx_error, ok, sbx


pytestmark = pytest.mark.usefixtures("own_container_store")


def _log_file(ref):
    cid = json.loads(ok(sbx("inspect", ref)))[0]["Id"]
    return os.path.join(os.environ["SBX_ROOT"], "containers", cid, "container.log")


_wait_for = sbxtest.wait_for


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


def test_a_foreground_run_writes_to_its_terminal_not_the_log(busybox_rootfs):
    r = sbx("run", "--name", "fg", "--rootfs", busybox_rootfs, "echo", "to-terminal")
    assert r.stdout == "to-terminal\n"
    assert ok(sbx("logs", "fg")) == ""
    assert "foreground" in ok(sbx("logs", "--help"))
    assert_sbx_error(sbx("logs", "nothing"), 1, "No such container: nothing")
