"""sbx top: a container's processes with host pids, as `ps -ef` shows them, or the host's ps
with the options given, filtered to the container (Docker's way)."""
import os
import re

import pytest

import sbxtest
from sbxtest import assert_sbx_error, ok, sbx


@pytest.fixture(autouse=True)
def own_store(tmp_path, monkeypatch):
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))


@pytest.fixture()
def busy(busybox_rootfs):
    """A running container with three processes: sh and two sleeps."""
    p = sbxtest.sbx_popen("run", "--name", "busy", "--rootfs", busybox_rootfs, "sh", "-c",
                          "sleep 1001 & sleep 1002 & echo up; wait")
    assert p.stdout.readline() == "up\n"
    yield p
    p.kill()
    p.wait()


def _cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


def _rows(out):
    lines = out.splitlines()
    return re.split(r"\s{2,}", lines[0].strip()), [re.split(r"\s{2,}", ln.strip()) for ln in lines[1:]]


def test_default_is_ps_ef_with_host_pids(busy):
    titles, rows = _rows(ok(sbx("top", "busy")))
    assert titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    cmds = sorted(r[-1] for r in rows)
    assert cmds == ["sh -c sleep 1001 & sleep 1002 & echo up; wait", "sleep 1001", "sleep 1002"]
    by_cmd = {r[-1]: r for r in rows}
    sh = by_cmd["sh -c sleep 1001 & sleep 1002 & echo up; wait"]
    for r in rows:
        assert _cmdline(int(r[1])) == r[-1]                      # the pid is the host's
        assert r[5] == "?" and re.fullmatch(r"\d\d:\d\d:\d\d", r[6])
    assert by_cmd["sleep 1001"][2] == by_cmd["sleep 1002"][2] == sh[1]   # children of sh, host pids
    assert str(os.getpid()) not in [r[1] for r in rows]
    assert ok(sbx("container", "top", "busy")).splitlines()[0].split() == titles


def test_ps_options_run_the_hosts_ps(busy):
    titles, rows = _rows(ok(sbx("top", "busy", "-o", "pid,args")))
    assert titles == ["PID", "COMMAND"]
    assert sorted(r[1] for r in rows) == ["sh -c sleep 1001 & sleep 1002 & echo up; wait", "sleep 1001",
                                          "sleep 1002"]
    titles, rows = _rows(ok(sbx("top", "busy", "aux")))          # BSD options: every process, filtered
    assert titles[:2] == ["USER", "PID"] and len(rows) == 3
    assert_sbx_error(sbx("top", "busy", "--no-such-option"), 125, "ps --no-such-option")


def test_top_of_a_stopped_container(busybox_rootfs):
    ok(sbx("run", "--name", "done", "--rootfs", busybox_rootfs, "true"))
    assert_sbx_error(sbx("top", "done"), 1, "cannot top container done: it is exited")
    assert_sbx_error(sbx("top", "nosuch"), 1, "No such container: nosuch")
