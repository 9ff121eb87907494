"""The detached monitor: restart policies with Docker's back-off and RestartCount, its own
session, its failures in monitor.log, and a container that never outlives a `kill -9` of it."""
import json
import os
import signal
import time

import pytest

import sbxtest
from sbxtest import assert_sbx_error, ok, sbx


pytestmark = pytest.mark.usefixtures("own_container_store")


_inspect = sbxtest.inspect_container


def _record(ref):
    """The engine's own record (container.json): State.MonitorPid is not in Docker's inspect."""
    cid = _inspect(ref)["Id"]
    with open(os.path.join(os.environ["SBX_ROOT"], "containers", cid, "container.json")) as f:
        return json.load(f)


def _wait_for(pred, timeout=60):
    return sbxtest.wait_for(pred, timeout)


def _settled(ref):
    """The container's state once its monitor is done with it (no restart pending)."""
    def done():
        st = _inspect(ref)["State"]
        return st if st["Status"] == "exited" and not _monitor_alive(ref) else None
    st = _wait_for(done)
    assert st, _inspect(ref)["State"]
    return st


def _monitor_alive(ref):
    pid = _record(ref)["State"].get("MonitorPid")
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _runs(ref):
    return ok(sbx("logs", ref)).count("run\n")


def test_on_failure_stops_after_n_retries(busybox_rootfs):
    ok(sbx("run", "-d", "--name", "fails", "--restart", "on-failure:2", "--rootfs", busybox_rootfs,
           "sh", "-c", "echo run; exit 3"))
    st = _settled("fails")
    assert st["ExitCode"] == 3
    doc = _inspect("fails")
    assert doc["RestartCount"] == 2 and _runs("fails") == 3    # the first run and two retries


def test_on_failure_does_not_restart_a_clean_exit(busybox_rootfs):
    ok(sbx("run", "-d", "--name", "clean", "--restart", "on-failure", "--rootfs", busybox_rootfs,
           "sh", "-c", "echo run; exit 0"))
    st = _settled("clean")
    assert st["ExitCode"] == 0 and _inspect("clean")["RestartCount"] == 0 and _runs("clean") == 1


def test_on_failure_restarts_a_crash(busybox_rootfs):
    # --init: the shell is not PID 1 of its namespace, so its own SIGSEGV kills it.
    ok(sbx("run", "-d", "--init", "--name", "crash", "--restart", "on-failure:1", "--rootfs", busybox_rootfs,
           "sh", "-c", "echo run; kill -SEGV $$"))
    st = _settled("crash")
    assert st["ExitCode"] == 139 and _inspect("crash")["RestartCount"] == 1 and _runs("crash") == 2


@pytest.mark.parametrize("policy", ["always", "unless-stopped"])
def test_always_restarts_until_stopped(busybox_rootfs, policy):
    ok(sbx("run", "-d", "--name", "again", "--restart", policy, "--rootfs", busybox_rootfs,
           "sh", "-c", "echo run; exit 0"))
    assert _wait_for(lambda: _inspect("again")["RestartCount"] >= 3)
    assert _runs("again") >= 3
    assert ok(sbx("stop", "again")) == "again\n"
    st = _settled("again")
    count = _inspect("again")["RestartCount"]
    assert st["Status"] == "exited"
    # Stopped means stopped: nothing starts it again.
    assert not _wait_for(lambda: _inspect("again")["State"]["Status"] != "exited", timeout=1.5)
    assert _inspect("again")["RestartCount"] == count
    assert ok(sbx("start", "again")) == "again\n"             # a manual start brings the policy back
    assert _wait_for(lambda: _inspect("again")["RestartCount"] > count)
    ok(sbx("rm", "-f", "again"))
    assert _wait_for(lambda: sbx("inspect", "again").returncode != 0)


def test_restart_that_cannot_launch_is_recorded_and_logged(busybox_rootfs):
    """The first run deletes its own shell from the container's layer, so the restart's launch
    fails: the monitor records the error, stops trying, and says so in monitor.log."""
    ok(sbx("run", "-d", "--name", "gone", "--restart", "on-failure:5", "--rootfs", busybox_rootfs,
           "sh", "-c", "rm /bin/sh; echo run; exit 1"))
    st = _settled("gone")
    assert "not found" in st["Error"], st
    assert _runs("gone") == 1
    rec = _record("gone")
    with open(os.path.join(os.environ["SBX_ROOT"], "containers", rec["Id"], "monitor.log")) as f:
        assert "restart failed" in f.read()
    ok(sbx("rm", "gone"))


def test_container_dies_with_a_killed_monitor(busybox_rootfs):
    marker = "monitor-kill-9-marker"
    ok(sbx("run", "-d", "--name", "orphan", "--restart", "always", "--rootfs", busybox_rootfs,
           "sh", "-c", f"echo {marker} > /dev/null; while true; do sleep 0.05; done"))
    rec = _record("orphan")
    mon, init = rec["State"]["MonitorPid"], rec["State"]["Pid"]
    assert os.getsid(mon) != os.getsid(0)                          # its own session
    assert sbxtest.host_pids_with(marker)
    os.kill(mon, signal.SIGKILL)
    assert _wait_for(lambda: not os.path.exists(f"/proc/{init}") and not sbxtest.host_pids_with(marker), 20), \
        "the container outlived its monitor"
    st = _inspect("orphan")["State"]
    assert st["Status"] == "exited" and not st["Running"] and "monitor ended unexpectedly" in st["Error"]
    assert_sbx_error(sbx("exec", "orphan", "true"), 1, "it is exited")
    assert ok(sbx("rm", "orphan")) == "orphan\n"
    assert not sbxtest.host_pids_with(marker)


def test_run_d_returns_at_once_and_the_monitor_is_not_its_child(busybox_rootfs):
    p = sbxtest.sbx_popen("run", "-d", "--name", "bg", "--rootfs", busybox_rootfs, "sleep", "300")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    rec = _record("bg")
    mon = rec["State"]["MonitorPid"]
    with open(f"/proc/{mon}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    assert ppid != p.pid and ppid != os.getpid()
    assert rec["Id"] == out.strip()
    ok(sbx("rm", "-f", "bg"))
    assert _wait_for(lambda: not os.path.exists(f"/proc/{mon}"), 20)


def test_sigterm_to_the_monitor_stops_the_container_for_good(busybox_rootfs):
    ok(sbx("run", "-d", "--name", "term", "--restart", "always", "--rootfs", busybox_rootfs, "sh", "-c",
           "trap 'exit 7' TERM; while true; do sleep 0.05; done"))
    os.kill(_record("term")["State"]["MonitorPid"], signal.SIGTERM)
    st = _settled("term")
    assert st["ExitCode"] == 7 and _inspect("term")["RestartCount"] == 0
