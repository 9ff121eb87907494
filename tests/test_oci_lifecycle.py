"""sbx-runc's OCI contract (runtime-spec runtime.md), run for real as each test user and root:
create -> created with a process that has not exec'd -> start -> running -> output -> stopped
-> delete; the operations that MUST fail without effect; signals by name and number; pid file."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from ocitest import rt  # noqa: F401 - the fixture
from ocitest import make_bundle, proc_exe, wait_file


def test_contract_sequence(rt, tmp_path):
    b = make_bundle(tmp_path / "b", ["sh", "-c", "echo ran as $$ > /ran; exec sleep 1000"])
    pid_file = tmp_path / "pid"
    rt("create", "--bundle", b, "--pid-file", pid_file, "c1", check=True)
    st = rt.state("c1")
    assert st["status"] == "created" and st["id"] == "c1" and st["bundle"] == str(b)
    pid = st["pid"]
    assert pid_file.read_text().strip() == str(pid)          # written before create returned
    assert os.path.exists(f"/proc/{pid}")
    assert "busybox" not in proc_exe(pid) and "sleep" not in proc_exe(pid)  # not exec'd yet
    assert not (b / "rootfs/ran").exists()
    rt("start", "c1", check=True)
    assert wait_file(b / "rootfs/ran") == "ran as 1\n"       # PID 1 of its own pid namespace
    st = rt.state("c1")
    assert st["status"] == "running" and st["pid"] == pid
    assert proc_exe(pid).endswith("busybox") or proc_exe(pid) == "sleep"
    rt("kill", "c1", "KILL", check=True)
    st = rt.wait_status("c1", "stopped")
    assert st["pid"] == 0
    rt("delete", "c1", check=True)
    cp = rt("state", "c1")
    assert cp.returncode == 1 and "container does not exist: c1" in cp.stderr
    assert not (tmp_path / "state/c1").exists()


def test_run_foreground_exit_code_and_output(rt, tmp_path):
    b = make_bundle(tmp_path / "b", ["sh", "-c", "echo out-$(cat /etc/marker); echo err >&2; exit 7"])
    cp = rt("run", "--bundle", b, "r1")
    assert cp.returncode == 7, cp.stderr
    assert cp.stdout == "out-sbx test rootfs marker\n" and cp.stderr == "err\n"
    assert rt("list", "-q").stdout == ""                      # run deletes what it created


def test_must_fail_without_effect(rt, tmp_path):
    b = make_bundle(tmp_path / "b", ["sh", "-c", "exec sleep 1000"])
    rt("create", "--bundle", b, "c2", check=True)
    pid = rt.state("c2")["pid"]

    # create with an existing id: refused, the first one untouched
    cp = rt("create", "--bundle", b, "c2")
    assert cp.returncode == 1 and "container with id exists: c2" in cp.stderr
    st = rt.state("c2")
    assert st["status"] == "created" and st["pid"] == pid

    rt("start", "c2", check=True)
    rt.wait_status("c2", "running")
    cp = rt("start", "c2")                                    # start twice
    assert cp.returncode == 1 and "cannot start a container that is running" in cp.stderr
    cp = rt("delete", "c2")                                   # delete running without --force
    assert cp.returncode == 1 and "not stopped: running" in cp.stderr
    assert rt.state("c2") == {**st, "status": "running"}

    for verb in (("state",), ("start",), ("kill",), ("delete",), ("exec",), ("ps",), ("pause",)):
        cp = rt(*verb, "nosuch", *(["true"] if verb == ("exec",) else []))
        assert cp.returncode == 1 and "container does not exist: nosuch" in cp.stderr, (verb, cp.stderr)
        assert "Traceback" not in cp.stderr
    assert rt("delete", "--force", "nosuch").returncode == 0  # runc: nothing to delete is fine

    rt("delete", "--force", "c2", check=True)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] in "ZX"
    cp = rt("kill", "c2", "KILL")
    assert cp.returncode == 1 and "does not exist" in cp.stderr


def test_kill_stopped_container_fails(rt, tmp_path):
    b = make_bundle(tmp_path / "b", ["true"])
    rt("create", "--bundle", b, "c3", check=True)
    rt("start", "c3", check=True)
    rt.wait_status("c3", "stopped")
    cp = rt("kill", "c3", "TERM")
    assert cp.returncode == 1 and "container not running: c3" in cp.stderr
    cp = rt("start", "c3")
    assert cp.returncode == 1 and "stopped" in cp.stderr
    rt("delete", "c3", check=True)


def test_delete_created_container_kills_it(rt, tmp_path):
    """runc's behaviour: a created (never started) container is deleted without --force."""
    b = make_bundle(tmp_path / "b", ["sh", "-c", "echo ran > /ran"])
    rt("create", "--bundle", b, "c4", check=True)
    pid = rt.state("c4")["pid"]
    rt("delete", "c4", check=True)
    time.sleep(0.1)
    assert not (b / "rootfs/ran").exists()
    alive = os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split(") ")[1][0] not in "ZX"
    assert not alive


def test_kill_signal_names_and_numbers(rt, tmp_path):
    script = ('trap "echo usr1 >> /sig" USR1; trap "echo hup >> /sig" HUP; trap "echo term >> /sig; exit 3" TERM; '
              'echo ready > /ready; while :; do sleep 0.05; done')
    b = make_bundle(tmp_path / "b", ["sh", "-c", script])
    rt("create", "--bundle", b, "k1", check=True)
    rt("start", "k1", check=True)
    wait_file(b / "rootfs/ready")
    sig = b / "rootfs/sig"
    expected = []
    for given, name in (("USR1", "usr1"), ("10", "usr1"), ("SIGHUP", "hup"), (str(int(signal.SIGHUP)), "hup"),
                        ("sigusr1", "usr1")):
        rt("kill", "k1", given, check=True)
        expected.append(name)
        deadline = time.monotonic() + 10
        while (sig.read_text().split() if sig.exists() else []) != expected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sig.read_text().split() == expected, given
    cp = rt("kill", "k1", "NOSUCHSIG")
    assert cp.returncode == 1 and "unknown signal" in cp.stderr
    assert rt.status("k1") == "running"
    rt("kill", "k1", check=True)                              # default: SIGTERM
    rt.wait_status("k1", "stopped")
    assert sig.read_text().split() == expected + ["term"]
    rt("delete", "k1", check=True)


def test_kill_all_reaches_every_process(rt, tmp_path):
    b = make_bundle(tmp_path / "b", ["sh", "-c", "sleep 1000 & sleep 1000 & echo up > /up; wait"])
    rt("run", "-d", "--bundle", b, "k2", check=True)
    wait_file(b / "rootfs/up")
    ps = json.loads(rt("ps", "--format", "json", "k2", check=True).stdout)
    assert len(ps) == 3 and rt.state("k2")["pid"] in ps
    table = rt("ps", "k2", check=True).stdout.splitlines()   # the host's `ps -ef`, its rows
    col = table[0].split().index("PID")
    assert sorted(int(row.split()[col]) for row in table[1:]) == sorted(ps)
    rt("kill", "--all", "k2", "KILL", check=True)
    rt.wait_status("k2", "stopped")
    for p in ps:
        assert not os.path.exists(f"/proc/{p}") or open(f"/proc/{p}/stat").read().split(") ")[1][0] in "ZX"
    rt("delete", "k2", check=True)


@pytest.mark.root
def test_root_container_has_no_user_namespace(rt, tmp_path):
    """As root, as runc: real root, the host's user namespace (none asked for in config.json)."""
    b = make_bundle(tmp_path / "b", ["sh", "-c", "cat /proc/self/uid_map; id -u"])
    cp = rt("run", "--bundle", b, "root1", check=True)
    assert cp.stdout.split() == ["0", "0", "4294967295", "0"]
