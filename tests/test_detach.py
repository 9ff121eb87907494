"""Detached containers: run -d, ps, logs, exec, stop, kill, and --rm after a detached exit."""
import json
import time

import pytest

from sbxtest import sbx


@pytest.fixture(autouse=True)
def own_store(tmp_path, monkeypatch):
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))


def _state(name):
    for line in sbx("ps", "-a", "--format", "json").stdout.splitlines():
        c = json.loads(line)
        if c["Names"] == name:
            return c["Status"]
    return None


def _wait_for(pred, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_detached_lifecycle(busybox_rootfs):
    r = sbx("run", "-d", "--name", "bg", "--rootfs", str(busybox_rootfs), "sh", "-c",
            "echo started; echo to-stderr >&2; trap 'echo got-term; exit 7' TERM; "
            "while true; do sleep 0.05; done")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert len(cid) == 64
    assert _state("bg").startswith("Up")
    assert _wait_for(lambda: "started" in sbx("logs", "bg").stdout)
    logs = sbx("logs", "bg")
    assert logs.stdout == "started\n" and logs.stderr == "to-stderr\n"      # streams kept apart
    e = sbx("exec", "bg", "sh", "-c", "echo from-exec; exit 3")
    assert (e.returncode, e.stdout) == (3, "from-exec\n")
    s = sbx("stop", "-t", "10", cid[:12])
    assert s.returncode == 0, s.stderr
    assert _state("bg").startswith("Exited (7)")
    assert "got-term" in sbx("logs", "bg").stdout
    assert sbx("rm", "bg").returncode == 0


def test_stop_kills_after_the_timeout_and_kill_signals(busybox_rootfs):
    r = sbx("run", "-d", "--name", "stubborn", "--rootfs", str(busybox_rootfs), "sh", "-c",
            "trap '' TERM; while true; do sleep 0.05; done")
    assert r.returncode == 0, r.stderr
    t = time.monotonic()
    assert sbx("stop", "-t", "1", "stubborn").returncode == 0
    assert time.monotonic() - t >= 1
    assert _state("stubborn").startswith("Exited (137)")
    r = sbx("run", "-d", "--name", "k", "--rootfs", str(busybox_rootfs), "sh", "-c",
            "trap 'exit 42' USR1; while true; do sleep 0.05; done")
    assert r.returncode == 0
    assert sbx("kill", "-s", "USR1", "k").returncode == 0
    assert _wait_for(lambda: (_state("k") or "").startswith("Exited (42)"))
    r = sbx("kill", "k")
    assert r.returncode == 1 and "cannot kill container k: it is exited" in r.stderr


def test_detached_rm_is_removed_after_exit(busybox_rootfs):
    r = sbx("run", "-d", "--rm", "--name", "gone", "--rootfs", str(busybox_rootfs), "sh", "-c", "sleep 0.2")
    assert r.returncode == 0, r.stderr
    assert _wait_for(lambda: _state("gone") is None)


def test_detached_launch_errors_are_reported_and_the_container_kept_created(busybox_rootfs):
    """Docker's rule: the container exists before its start fails; it stays Created with the
    error recorded (and the command's code, 127), unless --rm."""
    r = sbx("run", "-d", "--name", "bad", "--rootfs", str(busybox_rootfs), "no-such-command")
    assert r.returncode == 127 and "not found" in r.stderr and "Traceback" not in r.stderr
    assert _state("bad") == "Created"
    doc = json.loads(sbx("inspect", "bad").stdout)[0]
    assert "not found" in doc["State"]["Error"]
    assert sbx("rm", "bad").returncode == 0
    r = sbx("run", "-d", "--rm", "--name", "bad2", "--rootfs", str(busybox_rootfs), "no-such-command")
    assert r.returncode == 127 and _state("bad2") is None
